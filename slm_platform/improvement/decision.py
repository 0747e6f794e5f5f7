"""The retrain decision: fire (a new version, tagged with its triggers), defer (over budget:
recorded), or wait (nothing fired, a training run of the domain is still going, or a challenger is
still being shadowed or awaits approval: its verdict comes before another version)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from slm_platform.improvement.budget import BudgetVerdict
from slm_platform.improvement.triggers import TriggerResult

Action = Literal["retrain", "defer", "wait"]


@dataclass(frozen=True)
class RetrainDecision:
    action: Action
    fired: list[TriggerResult]
    triggers: list[TriggerResult]
    budget: BudgetVerdict
    reason: str

    @property
    def evidence(self) -> str:
        """The fired triggers as one line: what the sensor's run tags and deferral records carry."""
        return "; ".join(f"{t.name}: {t.value}" for t in self.fired)


def decide_retrain(triggers: list[TriggerResult], budget: BudgetVerdict, *, running: list[str],
                   challengers: Sequence[str] = ()) -> RetrainDecision:
    """`running`: version runs in progress; `challengers`: versions holding the challenger alias."""
    fired = [t for t in triggers if t.fired]
    if not fired:
        return RetrainDecision("wait", fired, triggers, budget, "no trigger fired")
    if running:
        return RetrainDecision("wait", fired, triggers, budget,
                               f"a training run of this domain is in progress ({', '.join(running)}): one at a time")
    if challengers:
        return RetrainDecision("wait", fired, triggers, budget,
                               f"challenger {', '.join(sorted(set(challengers)))} is shadowed or awaits approval: "
                               "its verdict comes before another version")
    if not budget.allowed:
        return RetrainDecision("defer", fired, triggers, budget, f"over budget: {budget.detail}")
    return RetrainDecision("retrain", fired, triggers, budget, "fired: " + ", ".join(t.name for t in fired))
