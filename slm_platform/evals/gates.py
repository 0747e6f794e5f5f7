"""Promotion gates on a candidate's eval: pure functions from reports to pass/fail with reasons.

The reference a candidate must not regress against is the current release when there is one
(re-evaluated on the candidate's own test split, so both are measured on the same turns), else the
chosen base model zero-shot from the baseline of the same dataset version.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from slm_platform.config.models import EvalBlock
from slm_platform.domain import Domain
from slm_platform.evals.metrics import compare, slice_regressions
from slm_platform.evals.runner import EntryReport

GATES = {
    "beats_floor": "The candidate beats the deterministic floor (oracle) on the primary metric.",
    "schema_valid": "100% of the candidate's test-split outputs are schema-valid.",
    "no_regression": "No regression on the primary metric beyond eval.regression_tolerance against the reference "
                     "(the current release, else the chosen base model).",
    "no_slice_regression": "No configured slice regresses beyond its tolerance against the reference.",
}


class GateResult(BaseModel):
    """One gate's verdict, written into the candidate's report.json and read back through this type."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    passed: bool
    detail: str
    value: float | None = None
    reference: float | None = None


def has_floor(domain: Domain) -> bool:
    """The floor exists when the config asks for the oracle and every role has one."""
    return domain.config.eval.floor == "oracle" and all(r.oracle for r in domain.roles.values())


def gate_names(domain: Domain) -> list[str]:
    """The gates a domain's candidates face (`beats_floor` only where a floor exists)."""
    return [g for g in GATES if g != "beats_floor" or has_floor(domain)]


def evaluate_gates(cfg: EvalBlock, candidate: EntryReport, *, floor: EntryReport | None,
                   reference: EntryReport | None, reference_name: str) -> dict[str, GateResult]:
    primary = cfg.primary_metric
    value = candidate.metric(primary)
    out: dict[str, GateResult] = {}
    if floor is not None:
        f = floor.metric(primary)
        passed = value is not None and f is not None and value > f
        out["beats_floor"] = GateResult(name="beats_floor", passed=passed,
                                        detail=f"{primary} {_pct(value)} vs floor {_pct(f)}", value=value, reference=f)
    schema = candidate.metric("schema_valid_rate")
    out["schema_valid"] = GateResult(name="schema_valid", passed=schema == 1.0,
                                     detail=f"schema_valid_rate {_pct(schema)} (needs 100%)", value=schema,
                                     reference=1.0)
    if reference is None:
        out["no_regression"] = GateResult(name="no_regression", passed=False,
                                          detail=f"no reference eval ({reference_name}) to compare")
        out["no_slice_regression"] = GateResult(name="no_slice_regression", passed=False,
                                                detail="no reference eval to compare")
        return out
    cand, ref_report = candidate.model_dump(), reference.model_dump()
    ref = reference.metric(primary)
    if ref is None:  # nothing measured to regress from is not a pass: the comparison did not happen
        out["no_regression"] = GateResult(name="no_regression", passed=False, value=value,
                                          detail=f"{reference_name} has no {primary}: nothing to compare with")
    else:
        passed, delta = compare(cand, ref_report, primary, cfg.regression_tolerance)
        out["no_regression"] = GateResult(
            name="no_regression", passed=passed,
            detail=f"{primary} {_pct(value)} vs {reference_name} {_pct(ref)} (delta {delta:+.3f}, tolerance "
                   f"{cfg.regression_tolerance:.3f})", value=value, reference=ref)
    regressions = []
    for s in cfg.slices:
        regressions += slice_regressions(cand, ref_report, primary, {s.key: s.tolerance}, min_n=MIN_SLICE_N)
    judged, small = _slice_counts(candidate, reference, [s.key for s in cfg.slices], primary)
    if regressions:
        detail = f"vs {reference_name}: " + "; ".join(
            f"{r['key']}={r['slice']}: {_pct(r['candidate'])} vs {_pct(r['reference'])} (n={r['n']})"
            for r in regressions[:5])
    else:
        detail = (f"no slice of {[s.key for s in cfg.slices] or 'none configured'} regresses vs {reference_name} "
                  f"({judged} slices judged; {small} below {MIN_SLICE_N} turns not judged)")
    out["no_slice_regression"] = GateResult(name="no_slice_regression", passed=not regressions, detail=detail)
    return out


MIN_SLICE_N = 10  # turns on both sides before a slice's rate is compared (smaller ones are counted, not judged)


def _slice_counts(candidate: EntryReport, reference: EntryReport, keys: list[str], metric: str) -> tuple[int, int]:
    """(slices compared, slices too small to compare) over the configured keys."""
    judged = small = 0
    for key in keys:
        ref_groups = (reference.by_slice or {}).get(key, {})
        for value, group in ((candidate.by_slice or {}).get(key, {})).items():
            other = ref_groups.get(value)
            if not isinstance(group, dict) or not isinstance(other, dict):
                continue
            if min(int(group.get("n", 0)), int(other.get("n", 0))) >= MIN_SLICE_N:
                judged += 1
            else:
                small += 1
    return judged, small


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
