"""The code location: one asset group per domain folder under `domains/` (or $SLM_DOMAINS).

Adding a domain is adding a folder; nothing here changes. Each folder loads in isolation: a
broken one cannot take the others down. It shows in the UI as its own group holding one
`config_error` asset whose description lists every problem (file, field path, found, expected),
and `slm validate` exits 1 on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from slm_platform import settings
from slm_platform.config import ConfigError, Problem, discover_domains
from slm_platform.domain import Domain
from slm_platform.orchestration.factory import build_domain_defs
from slm_platform.orchestration.resources import resources_for


@dataclass(frozen=True)
class BrokenDomain:
    folder: Path
    problems: list[Problem]

    @property
    def group(self) -> str:
        """A valid Dagster name for the folder (`my-domain` -> `my_domain`)."""
        name = re.sub(r"[^A-Za-z0-9_]", "_", self.folder.name)
        return name if re.match(r"[A-Za-z_]", name) else f"domain_{name}"


def load_domains(folders: list[Path]) -> tuple[list[Domain], list[BrokenDomain]]:
    """Every folder that loads, and every one that does not with its problems."""
    good, broken = [], []
    for folder in folders:
        try:
            good.append(Domain.load(folder))
        except ConfigError as exc:
            broken.append(BrokenDomain(folder, exc.problems))
        except Exception as exc:  # noqa: BLE001 - any failure of one folder stays in that folder
            broken.append(BrokenDomain(folder, [Problem(str(folder), "", f"{type(exc).__name__}: {exc}",
                                                        "a domain folder that loads")]))
    return good, broken


def broken_domain_defs(broken: BrokenDomain) -> dg.Definitions:
    """One asset that cannot be materialized and says why, in the broken folder's own group."""
    lines = [str(p) for p in broken.problems]
    spec = dg.AssetSpec(
        [broken.group, "config_error"], group_name=broken.group, kinds={"yaml"},
        tags={"slm/config": "invalid"},
        description=f"The domain folder {broken.folder} does not load (run `slm validate {broken.folder}`):\n\n"
                    + "\n".join(f"- {line}" for line in lines),
        metadata={"folder": str(broken.folder), "problems": dg.MetadataValue.json([p.__dict__ for p in broken.problems])},
    )
    return dg.Definitions(assets=[spec])


def build_definitions(domains_dir: Path | None = None, env: str | None = None) -> dg.Definitions:
    good, broken = load_domains(discover_domains(domains_dir or settings.domains_dir()))
    per_domain = [build_domain_defs(domain) for domain in good] + [broken_domain_defs(b) for b in broken]
    return dg.Definitions.merge(*per_domain, dg.Definitions(resources=resources_for(env)))


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
