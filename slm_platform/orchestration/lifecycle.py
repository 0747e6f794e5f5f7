"""`slm run`: one lifecycle pass for a domain, in-process, on the real Dagster instance.

It materializes the same asset definitions the UI shows (so every run appears there with its
metadata and checks), in the order of the graph: capture day -> base models -> a new candidate
version's dataset -> baseline eval -> adapter -> eval report -> package (only when every gate
passed: the gates are blocking checks). On the embedded defaults the
domain's simulator stands in for production traffic: it fills today's capture inbox when empty.

A pass that packaged its version ends with a release decision, per `improvement.promotion`:
`auto` promotes it to champion; `approval` makes it the challenger, waiting for
`slm registry approve`. Either is a recorded event on the release asset (actor, reason, gate
evidence); a refusal (say, a champion promoted meanwhile) is reported, never hidden.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals.report import EvalReport
from slm_platform.layout import baseline_eval_dir, candidate_eval_dir
from slm_platform.orchestration.factory import build_domain_defs
from slm_platform.orchestration.partitions import next_version, versions_partitions
from slm_platform.orchestration.model_assets import candidates_partitions
from slm_platform.orchestration.registry import ReleaseRefused, promote
from slm_platform.orchestration.resources import resources_for

# the version-partitioned stages, in graph order; `slm run --until <stage>` stops after one
VERSION_STAGES = ("dataset", "baseline_eval", "adapter", "eval_report", "package")
# the terminal shows INFO and up (asset logs, failures); every event is in the instance for the UI
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class PassResult:
    domain: str
    version: str
    success: bool
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> metadata values
    checks: dict[str, bool] = field(default_factory=dict)  # "stage.check" -> passed
    stages: list[str] = field(default_factory=list)
    baseline: EvalReport | None = None  # the published reports, read back typed (None: not reached)
    candidate: EvalReport | None = None
    release: str | None = None  # what became of a packaged version: champion, challenger, or refused (why)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds its steps ran, in graph order
    wall_s: float = 0.0  # the whole pass, capture to release

    def time_shares(self) -> list[tuple[str, float, float]]:
        """(stage, seconds, share of the pass) in graph order, plus "other" (Dagster, release, cards)."""
        rows = [(stage, s, s / self.wall_s if self.wall_s else 0.0) for stage, s in self.seconds.items()]
        other = max(0.0, self.wall_s - sum(self.seconds.values()))
        return [*rows, ("other", other, other / self.wall_s if self.wall_s else 0.0)]

    @property
    def card(self) -> str:
        return str(self.metadata.get("dataset", {}).get("card", ""))


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def yesterday() -> str:
    """`slm run`'s first day: the closed day a daily capture ingests (today is the loop day's)."""
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).date().isoformat()


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


def step_seconds(instance: dg.DagsterInstance, run_id: str, domain: str) -> dict[str, float]:
    """Seconds each of the run's asset steps ran (its checks included), by stage name.

    An asset's checks are its own `check_specs`, so one asset is one step, keyed by the asset key's
    Python identifier (`support_triage__dataset`).
    """
    prefix = dg.AssetKey([domain, ""]).to_python_identifier()
    out: dict[str, float] = {}
    for stats in instance.get_run_step_stats(run_id):
        if stats.start_time is not None and stats.end_time is not None:
            stage = stats.step_key.removeprefix(prefix)
            out[stage] = out.get(stage, 0.0) + stats.end_time - stats.start_time
    return out


def _values(metadata: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


class DomainAssets:
    """A domain's asset definitions, materialized in-process on the instance: the same definitions the
    UI shows, so every run `slm run` makes appears there with its metadata and checks."""

    def __init__(self, domain: Domain, instance: dg.DagsterInstance, tags: dict[str, str]):
        defs = build_domain_defs(domain)
        self.domain, self.instance, self.tags = domain, instance, tags
        self.everything = [*(defs.assets or []), *(defs.asset_checks or [])]
        self.resources = {**resources_for(), **(defs.resources or {})}

    @property
    def store(self) -> ArtifactStore:
        return self.resources["artifacts"].store()

    def materialize(self, keys: list[str], partition: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(self.everything, selection=[dg.AssetKey([self.domain.name, k]) for k in keys],
                              partition_key=partition, instance=self.instance, resources=self.resources,
                              tags=self.tags, raise_on_error=False, run_config=QUIET)


def run_pass(domain: Domain, instance: dg.DagsterInstance, *, day: str | None = None, simulate: int | None = None,
             until: str = "package", log=print, capture: bool = True, tags: dict[str, str] | None = None,
             release_as: str | None = None, release_reason: str | None = None,
             assets: DomainAssets | None = None) -> PassResult:
    """Capture `day`'s traffic (`capture=False`: the day is already in), build a new version and take it
    as far as `until`; a packaged version is released as `release_as` (default: `improvement.promotion`).
    `assets`: the domain's definitions already built by the caller (their tags apply, not `tags`)."""
    if until not in VERSION_STAGES:
        raise ValueError(f"until must be one of {VERSION_STAGES}, found {until!r}")
    started = time.perf_counter()
    day = day or today()
    assets = assets or DomainAssets(domain, instance, tags or {"slm/trigger": "slm-run"})
    materialize = assets.materialize
    runs = []
    capture_run = None
    if capture:
        simulate_inbox(domain, day, simulate)
        log(f"[{domain.name}] capture day {day}")
        capture_run = materialize(["captured_traffic"], day)
        runs.append(capture_run)
    stages = list(VERSION_STAGES[: VERSION_STAGES.index(until) + 1])
    if "baseline_eval" in stages:
        for key in candidates_partitions(domain).get_partition_keys():
            log(f"[{domain.name}] base model {key}")
            runs.append(materialize(["base_model"], key))
    version = next_version(instance, domain.name)
    instance.add_dynamic_partitions(versions_partitions(domain.name).name, [version])
    log(f"[{domain.name}] candidate version {version}: {' -> '.join(stages)}")
    result = materialize(stages, version)
    runs.append(result)
    out = PassResult(domain.name, version, all(r.success for r in runs), stages=stages)
    for run in runs:
        for stage, seconds in step_seconds(instance, run.run_id, domain.name).items():
            out.seconds[stage] = out.seconds.get(stage, 0.0) + seconds
    for run in (r for r in (capture_run, result) if r is not None):
        for event in run.get_asset_materialization_events():
            out.metadata[event.asset_key.path[-1]] = _values(event.materialization.metadata)
        for evaluation in run.get_asset_check_evaluations():
            out.checks[f"{evaluation.asset_key.path[-1]}.{evaluation.check_name}"] = evaluation.passed
    store = assets.store
    out.baseline = _published_report(store, baseline_eval_dir(domain.name, version))
    out.candidate = _published_report(store, candidate_eval_dir(domain.name, version))
    if "package" in out.metadata and out.success:
        out.release = release_version(domain, instance, store, version, alias=release_as, reason=release_reason)
        log(f"[{domain.name}] {version}: {out.release}")
    out.wall_s = time.perf_counter() - started
    return out


def release_version(domain: Domain, instance: dg.DagsterInstance, store: ArtifactStore, version: str, *,
                    alias: str | None = None, reason: str | None = None) -> str:
    """Promote a packaged version as the domain's `improvement.promotion` says (or to `alias`: the loop
    day makes a retrained version the challenger, to be shadowed first); returns what happened."""
    mode = domain.config.improvement.promotion
    alias = alias or ("champion" if mode == "auto" else "challenger")
    reason = reason or (f"slm run: passed every gate and packaged (improvement.promotion: {mode}"
                        + (")" if mode == "auto" else "; awaiting approval)"))
    try:
        moved = promote(instance, store, domain.name, version, alias=alias, actor=getpass.getuser(), reason=reason)
    except ReleaseRefused as exc:
        return "not released: " + "; ".join(exc.reasons)
    roles = ", ".join(m.event.role for m in moved)
    if alias == "champion":
        return f"champion of {roles}"
    if mode == "auto":
        return f"challenger of {roles}"
    return (f"challenger of {roles}, awaiting approval: "
            f"slm registry approve {domain.name} {version} --reason TEXT")


def _published_report(store: ArtifactStore, rel: str) -> EvalReport | None:
    return EvalReport.read(store.open_verified(rel)) if store.exists(rel) else None
