"""The retrain triggers of `improvement.triggers`, each judged on typed evidence with its threshold.

A trigger whose evidence is missing (no drift report yet, no labelled rows, a package built before
contracts were fingerprinted) is `not measured`: it never fires on a guess and never hides as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from slm_platform.config.models import TriggersBlock


@dataclass(frozen=True)
class LiveQuality:
    """The champion's primary metric on captured rows that carry a truth label, vs its offline value."""

    value: float
    n: int
    offline: float


@dataclass(frozen=True)
class TriggerInputs:
    """What the triggers read, gathered by `improvement.inputs.gather_inputs` (or built by a test)."""

    now: datetime
    champion: str | None = None
    drift_day: str | None = None  # the latest drift report's day
    drift_note: str | None = None  # why the latest drift report measures nothing here (another reference)
    unseen_share: dict[str, float] = field(default_factory=dict)  # role -> share (drift report, measured only)
    input_auc: dict[str, float] = field(default_factory=dict)  # role -> domain classifier ROC AUC (drift report)
    schema_valid_rate: dict[str, float] = field(default_factory=dict)  # role -> rate at the gateway
    live_quality: dict[str, LiveQuality] = field(default_factory=dict)  # role -> champion on labelled live rows
    new_labelled_rows: int | None = None  # truth-labelled captured rows since the champion's dataset
    contract_changed: list[str] | None = None  # roles whose contract differs from the champion's; None: unknown
    last_version_at: datetime | None = None  # when the newest dataset version was built


@dataclass(frozen=True)
class TriggerResult:
    name: str
    fired: bool
    measured: bool
    value: str  # what was found, readable ("6.1% unseen on plan_turn")
    threshold: str

    @property
    def line(self) -> str:
        state = "FIRED" if self.fired else ("ok" if self.measured else "not measured")
        return f"{self.name}: {state}: {self.value} (threshold {self.threshold})"


def _off(name: str) -> TriggerResult:
    return TriggerResult(name, False, False, "off in improvement.triggers", "-")


def _drift_trigger(name: str, limit: float | None, by_role: dict[str, float], found: Callable[[str, float], str],
                   threshold: str | None, note: str | None = None) -> TriggerResult:
    """A drift-report trigger: the worst role's value above `limit` fires; no report is not measured."""
    if limit is None or threshold is None:
        return _off(name)
    if not by_role:
        return TriggerResult(name, False, False, note or "no drift report with enough rows", threshold)
    role, got = max(by_role.items(), key=lambda kv: kv[1])
    return TriggerResult(name, got > limit, True, found(role, got), threshold)


def evaluate_triggers(policy: TriggersBlock, inputs: TriggerInputs) -> list[TriggerResult]:
    """Every configured trigger, fired or not, in a fixed order (the sensor tags the fired ones)."""
    out: list[TriggerResult] = []

    drop = policy.quality_drop_points
    if drop is None:
        out.append(_off("quality_regression"))
    elif not inputs.live_quality:
        out.append(TriggerResult("quality_regression", False, False, "no truth-labelled captured rows answered by "
                                 "the champion", f"> {drop:g} points below offline"))
    else:
        worst_role, q = max(inputs.live_quality.items(), key=lambda kv: kv[1].offline - kv[1].value)
        points = 100 * (q.offline - q.value)
        out.append(TriggerResult("quality_regression", points > drop, True,
                                 f"{worst_role}: live {100 * q.value:.1f}% on {q.n} rows vs offline "
                                 f"{100 * q.offline:.1f}% ({points:+.1f} points drop)", f"> {drop:g} points"))

    floor = policy.min_schema_validity
    if floor is None:
        out.append(_off("schema_validity"))
    elif not inputs.schema_valid_rate:
        out.append(TriggerResult("schema_validity", False, False, "the drift report measured no gateway validity",
                                 f"< {100 * floor:.1f}%"))
    else:
        role, rate = min(inputs.schema_valid_rate.items(), key=lambda kv: kv[1])
        out.append(TriggerResult("schema_validity", rate < floor, True, f"{role}: {100 * rate:.2f}% valid",
                                 f"< {100 * floor:.1f}%"))

    share = policy.max_unseen_share
    out.append(_drift_trigger("distribution_drift", share, inputs.unseen_share,
                              lambda role, got: f"{role}: {100 * got:.1f}% unseen (drift report {inputs.drift_day})",
                              None if share is None else f"> {100 * share:.1f}% unseen", inputs.drift_note))
    auc = policy.max_input_auc
    out.append(_drift_trigger("input_drift", auc, inputs.input_auc,
                              lambda role, got: f"{role}: today's inputs told from training's at AUC {got:.3f} "
                                                f"(drift report {inputs.drift_day})",
                              None if auc is None else f"> {auc:.2f} AUC", inputs.drift_note))

    rows = policy.min_new_labelled_rows
    if rows is None:
        out.append(_off("new_labelled_rows"))
    elif inputs.new_labelled_rows is None:
        out.append(TriggerResult("new_labelled_rows", False, False, "no champion dataset to count from", f">= {rows}"))
    else:
        out.append(TriggerResult("new_labelled_rows", inputs.new_labelled_rows >= rows, True,
                                 f"{inputs.new_labelled_rows} truth-labelled rows captured since the champion's "
                                 "dataset", f">= {rows}"))

    if not policy.contract_change:
        out.append(_off("contract_changed"))
    elif inputs.contract_changed is None:
        out.append(TriggerResult("contract_changed", False, False, "no champion package with contract fingerprints",
                                 "any change"))
    else:
        changed = inputs.contract_changed
        out.append(TriggerResult("contract_changed", bool(changed), True,
                                 f"changed: {', '.join(changed)}" if changed else "unchanged", "any change"))

    days = policy.max_days_since_version
    if days is None:
        out.append(_off("staleness"))
    elif inputs.last_version_at is None:
        out.append(TriggerResult("staleness", inputs.champion is None, True, "no version was ever built",
                                 f"> {days} days"))
    else:
        age = (inputs.now - inputs.last_version_at).total_seconds() / 86400
        out.append(TriggerResult("staleness", age > days, True, f"{age:.1f} days since the last version",
                                 f"> {days} days"))
    return out
