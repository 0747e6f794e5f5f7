"""`build_drift_report`: one capture day against the serving model's training data, published.

This is what the `drift_report[day]` asset, the CLI and the tests call. It reads the day and each
role's reference, measures every role (`roles.compare_role`), and publishes `<domain>/drift/<day>/`
atomically (report.json typed, report.md, chart.png) with the capture day and the reference
datasets as parents. Re-running a day replaces its report, as re-ingesting replaces the capture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.drift.embeddings import Embedder, default_embedder
from slm_platform.drift.inputs import ReferenceLoader, load_capture_day
from slm_platform.drift.render import render_chart, render_markdown
from slm_platform.drift.report import REPORT_FILE, DriftReport
from slm_platform.drift.roles import compare_role
from slm_platform.layout import drift_dir
from slm_platform.records import stable_hash


@dataclass(frozen=True)
class DriftResult:
    rel: str
    uri: str
    manifest_hash: str
    report: DriftReport
    markdown: str
    chart_png: bytes


def build_drift_report(domain: Domain, day: str, store: ArtifactStore, *, embedder: Embedder | None = None,
                       log: Callable[[str], None] | None = None) -> DriftResult:
    log = log or (lambda _m: None)
    capture = load_capture_day(domain, day, store)
    loader = ReferenceLoader(domain, store)

    def embed(texts: list[str]) -> np.ndarray:  # the model loads only when a role has enough rows
        return (embedder or default_embedder()).encode(texts)

    roles = {}
    for role_id, contract in domain.roles.items():
        reference = loader.for_role(role_id)
        turns = capture.by_role.get(role_id, [])
        log(f"drift of {domain.name}/{role_id} on {day}: {len(turns)} captured turns vs {reference.ref.rows} "
            f"training turns of {reference.ref.version} ({reference.ref.source})")
        rng = np.random.default_rng(int(stable_hash(f"{day}|{role_id}", 16), 16))  # same day, same numbers
        roles[role_id] = compare_role(contract, reference, turns, embed, rng)
    report = DriftReport(domain=domain.name, day=day, capture=capture.ref, roles=roles)
    parents = [capture.ref.rel, *dict.fromkeys(r.reference.rel for r in roles.values())]
    rel = drift_dir(domain.name, day)
    with store.publish(rel, kind="drift_report", version=day, parents=parents, overwrite=True,
                       producer="slm_platform.drift.stage.build_drift_report") as staging:
        (staging / REPORT_FILE).write_text(report.model_dump_json(indent=2), encoding="utf-8")
        markdown = render_markdown(report)
        (staging / "report.md").write_text(markdown, encoding="utf-8")
        render_chart(staging / "chart.png", report)
        png = (staging / "chart.png").read_bytes()
    return DriftResult(rel, store.uri(rel), store.manifest_hash(rel), report, markdown, png)
