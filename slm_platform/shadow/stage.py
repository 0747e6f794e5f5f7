"""`build_shadow_report`: read challenger v's pairs and the captured turns they answered, judge, publish.

The report is re-published (overwrite) each time it is materialized: pairs accumulate while the
challenger is shadowed, and the latest report is what the gates read. The captured turns give the
truth labels (gold, teacher) and the slices; a pair whose turn was not captured (capture sampling)
still counts for validity, agreement and latency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slm_platform.artifacts import ArtifactStore
from slm_platform.data.stages import captured_rows
from slm_platform.domain import Domain
from slm_platform.layout import shadow_report_dir
from slm_platform.shadow.pairs import read_pairs
from slm_platform.shadow.report import ShadowReport, judge_challenger, shadow_markdown


@dataclass(frozen=True)
class ShadowResult:
    rel: str
    uri: str
    manifest_hash: str
    report: ShadowReport
    markdown: str


def build_shadow_report(domain: Domain, store: ArtifactStore, version: str,
                        log: Callable[[str], None] | None = None) -> ShadowResult:
    log = log or (lambda _m: None)
    read = read_pairs(store, domain.name, version)
    wanted = {p.request_id for p in read.pairs}
    turns = {}
    if read.days:
        for row in captured_rows(store, domain.name, since_day=read.days[0]):
            rid = (row.get("meta") or {}).get("request_id")
            if rid in wanted:
                turns[rid] = row
    log(f"shadow of {domain.name} {version}: {len(read.pairs)} pairs on {len(read.days)} days "
        f"({read.other_versions} of other challengers, {len(read.rejected)} unreadable), "
        f"{len(turns)} joined to captured turns")
    report = judge_challenger(domain, version, read, turns)
    rel = shadow_report_dir(domain.name, version)
    markdown = shadow_markdown(report)
    with store.publish(rel, kind="shadow_report", version=version, overwrite=True,
                       producer="slm_platform.shadow.stage.build_shadow_report") as staging:
        report.write(staging)
        (staging / "report.md").write_text(markdown, encoding="utf-8")
    return ShadowResult(rel, store.uri(rel), store.manifest_hash(rel), report, markdown)
