"""The code location: one asset group per domain folder under `domains/` (or $SLM_DOMAINS).

Adding a domain is adding a folder; nothing here changes.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from slm_platform import settings
from slm_platform.assets.factory import build_domain_defs
from slm_platform.config import discover_domains
from slm_platform.domain import Domain
from slm_platform.resources import resources_for


def build_definitions(domains_dir: Path | None = None, env: str | None = None) -> dg.Definitions:
    folders = discover_domains(domains_dir or settings.domains_dir())
    per_domain = [build_domain_defs(Domain.load(folder)) for folder in folders]
    return dg.Definitions.merge(*per_domain, dg.Definitions(resources=resources_for(env)))


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
