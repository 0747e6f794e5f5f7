"""Promotion gates on a candidate's eval: pure functions from reports to pass/fail with reasons.

The reference a candidate must not regress against is the current release when there is one
(re-evaluated on the candidate's own test split, so both are measured on the same turns), else the
chosen base model zero-shot from the baseline of the same dataset version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slm_platform.config.models import EvalBlock
from slm_platform.evals.metrics import compare, slice_regressions

GATES = {
    "beats_floor": "The candidate beats the deterministic floor (oracle) on the primary metric.",
    "schema_valid": "100% of the candidate's test-split outputs are schema-valid.",
    "no_regression": "No regression on the primary metric beyond eval.regression_tolerance against the reference "
                     "(the current release, else the chosen base model).",
    "no_slice_regression": "No configured slice regresses beyond its tolerance against the reference.",
}


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str
    value: float | None = None
    reference: float | None = None


def evaluate_gates(cfg: EvalBlock, candidate: dict[str, Any], *, floor: dict[str, Any] | None,
                   reference: dict[str, Any] | None, reference_name: str) -> dict[str, GateResult]:
    primary = cfg.primary_metric
    value = candidate["metrics"].get(primary)
    out: dict[str, GateResult] = {}
    if floor is not None:
        f = floor["metrics"].get(primary)
        passed = value is not None and f is not None and value > f
        out["beats_floor"] = GateResult("beats_floor", passed,
                                        f"{primary} {_pct(value)} vs floor {_pct(f)}", value, f)
    schema = candidate["metrics"].get("schema_valid_rate")
    out["schema_valid"] = GateResult("schema_valid", schema == 1.0, f"schema_valid_rate {_pct(schema)} (needs 100%)",
                                     schema, 1.0)
    if reference is None:
        out["no_regression"] = GateResult("no_regression", False, f"no reference eval ({reference_name}) to compare")
        out["no_slice_regression"] = GateResult("no_slice_regression", False, "no reference eval to compare")
        return out
    passed, delta = compare(candidate, reference, primary, cfg.regression_tolerance)
    ref = reference["metrics"].get(primary)
    out["no_regression"] = GateResult(
        "no_regression", passed,
        f"{primary} {_pct(value)} vs {reference_name} {_pct(ref)} (delta {delta:+.3f}, tolerance "
        f"{cfg.regression_tolerance:.3f})", value, ref)
    regressions = []
    for s in cfg.slices:
        regressions += slice_regressions(candidate, reference, primary, {s.key: s.tolerance}, min_n=10)
    detail = "; ".join(f"{r['key']}={r['slice']}: {_pct(r['candidate'])} vs {_pct(r['reference'])} (n={r['n']})"
                       for r in regressions[:5]) or \
        f"no slice of {[s.key for s in cfg.slices] or 'none configured'} regresses vs {reference_name}"
    out["no_slice_regression"] = GateResult("no_slice_regression", not regressions, detail)
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
