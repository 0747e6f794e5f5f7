"""What the shadow sensor does with the challenger next: judge it again on the pairs so far, promote
it (shadow passed and `improvement.promotion: auto`), reject it (a decided report with a failed
gate: it can never be promoted, so it stops costing the champion's vLLM shadow requests), or hold
it (passed under `approval`: a human decides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slm_platform.artifacts import ArtifactError, ArtifactStore
from slm_platform.shadow.report import read_shadow_report

Step = Literal["judge", "promote", "reject", "hold", "wait"]


@dataclass(frozen=True)
class ShadowStep:
    step: Step
    version: str | None
    reason: str


def next_shadow_step(store: ArtifactStore, domain: str, challengers: dict[str, str], promotion: str, *,
                     judging: list[str]) -> ShadowStep:
    """`challengers`: role -> the challenger awaiting approval; `judging`: shadow runs in progress."""
    if not challengers:
        return ShadowStep("wait", None, "no challenger to shadow")
    version = max(challengers.values())  # one package serves every role: the newest challenger
    if judging:
        return ShadowStep("wait", version, f"a shadow_report run is in progress ({', '.join(judging)})")
    try:
        report = read_shadow_report(store, domain, version)
    except ArtifactError:
        report = None  # a report that does not verify is judged again, never trusted
    if report is None or not report.decided:
        pairs = "no report yet" if report is None else ", ".join(
            f"{r.role} {r.pairs}/{report.min_pairs} pairs" for r in report.roles.values()) or "no pairs yet"
        return ShadowStep("judge", version, f"judge {version} on the pairs so far ({pairs})")
    if not report.passed:
        failed = "; ".join(f"{g.name}: {g.detail}" for g in report.gates.values() if not g.passed)
        return ShadowStep("reject", version, f"failed its shadow gates: {failed}")
    pairs = ", ".join(f"{r.role} {r.pairs}" for r in report.roles.values())
    if promotion == "auto":
        return ShadowStep("promote", version, f"shadow passed on {pairs} pairs (improvement.promotion: auto)")
    return ShadowStep("hold", version, f"shadow passed on {pairs} pairs; awaiting approval "
                                       f"(slm registry approve {domain} {version} --reason TEXT)")
