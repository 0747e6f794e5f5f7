"""`slm run`: one lifecycle pass for a domain, in-process, on the real Dagster instance.

It materializes the same asset definitions the UI shows (so every run appears there with its
metadata and checks). On the embedded defaults the domain's simulator stands in for production
traffic: it fills today's capture inbox when that is empty.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from slm_platform import settings
from slm_platform.assets.factory import build_domain_defs, versions_partitions
from slm_platform.domain import Domain
from slm_platform.resources import resources_for


@dataclass
class PassResult:
    domain: str
    version: str
    success: bool
    metadata: dict[str, Any]
    checks: dict[str, bool]
    card: str


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def simulate_inbox(domain: Domain, day: str, n: int | None = None) -> Path | None:
    """Write `n` simulated raw turns for `day` into the inbox unless that day already has files."""
    folder = settings.inbox_dir(domain.name, domain.config.data.capture.inbox) / f"date={day}"
    n = domain.config.data.simulate_per_day if n is None else n
    if n <= 0 or (folder.exists() and any(folder.iterdir())):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    seed = int(day.replace("-", ""))
    target = folder / "simulated.jsonl"
    with open(target.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        for turn in domain.simulator().simulate(n, seed=seed, day=day):
            f.write(json.dumps(turn, ensure_ascii=False) + "\n")
    target.with_suffix(".tmp").rename(target)
    return target


def next_version(instance: dg.DagsterInstance, domain: str) -> str:
    existing = instance.get_dynamic_partitions(versions_partitions(domain).name)
    numbers = [int(k[1:]) for k in existing if k[:1] == "v" and k[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1:04d}"


def run_data_pass(domain: Domain, instance: dg.DagsterInstance, *, day: str | None = None,
                  simulate: int | None = None) -> PassResult:
    """Capture today's traffic and build a new dataset version through Dagster."""
    day = day or today()
    simulate_inbox(domain, day, simulate)
    defs = build_domain_defs(domain)
    assets = list(defs.assets or [])
    checks = list(defs.asset_checks or [])
    resources = resources_for()
    capture = dg.materialize(assets, selection=[dg.AssetKey([domain.name, "captured_traffic"])], partition_key=day,
                             instance=instance, resources=resources, tags={"slm/trigger": "slm-run"})
    version = next_version(instance, domain.name)
    instance.add_dynamic_partitions(versions_partitions(domain.name).name, [version])
    result = dg.materialize([*assets, *checks], selection=[dg.AssetKey([domain.name, "dataset"])],
                            partition_key=version, instance=instance, resources=resources,
                            tags={"slm/trigger": "slm-run"}, raise_on_error=False)
    mats = result.asset_materializations_for_node(f"{domain.name}__dataset")
    metadata = {k: v.value for k, v in mats[0].metadata.items()} if mats else {}
    check_status = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    return PassResult(domain.name, version, capture.success and result.success, metadata, check_status,
                      str(metadata.get("card", "")))
