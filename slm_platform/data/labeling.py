"""Labeling per the domain's label policy: collect every source's label, pick the truth, cross-check.

Each turn keeps all labels side by side (gold, capture, teacher, oracle). The truth is the first
present source in `labels.truth`; every `cross_check` source that also labeled the turn is compared
with it by canonical JSON, and a disagreement is handled by `on_disagreement` (keep the truth, drop
the row, or send it to review). Agreement counts feed the dataset card.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from slm_platform.config.models import LabelPolicy
from slm_platform.domain.contract import RoleContract
from slm_platform.records import LABEL_SOURCES, canonical_json


@dataclass
class LabelStats:
    chosen: Counter = field(default_factory=Counter)  # label_source -> rows
    present: Counter = field(default_factory=Counter)  # source -> rows that had that label
    compared: Counter = field(default_factory=Counter)  # cross-check source -> rows compared
    agreed: Counter = field(default_factory=Counter)  # cross-check source -> rows agreeing
    oracle_errors: int = 0

    def agreement(self) -> dict[str, float]:
        return {s: self.agreed[s] / n for s, n in self.compared.items() if n}


@dataclass(frozen=True)
class Decision:
    keep: bool
    reason: str | None = None  # why a row is dropped or sent to review
    review: bool = False
    kind: str | None = None  # the quarantine kind of a dropped row: unlabeled | disagreement | needs_review


class Labeler:
    def __init__(self, policy: LabelPolicy, contracts: dict[str, RoleContract]):
        self.policy = policy
        self.contracts = contracts
        self.stats = LabelStats()

    def add_oracle_label(self, turn: dict[str, Any]) -> None:
        """Run the role's deterministic oracle on the (already redacted) input."""
        contract = self.contracts[turn["role"]]
        if contract.oracle is None or "oracle" not in self._used_sources():
            return
        try:
            label = contract.oracle(turn["input"])
        except Exception:  # a user oracle that crashes on one row must not stop the stage
            self.stats.oracle_errors += 1
            label = None
        if label is not None:
            turn.setdefault("labels", {})["oracle"] = label

    def decide(self, turn: dict[str, Any]) -> Decision:
        """Set `output` and `label_source` from the policy; say whether the row is kept."""
        labels = {k: v for k, v in (turn.get("labels") or {}).items() if v is not None and k in LABEL_SOURCES}
        for source in labels:
            self.stats.present[source] += 1
        truth_source = next((s for s in self.policy.truth if s in labels), None)
        if truth_source is None:
            return Decision(False, f"no label from any of {self.policy.truth}", kind="unlabeled")
        truth = labels[truth_source]
        truth_key = canonical_json(truth)
        disagreeing = []
        for source in self.policy.cross_check:
            if source == truth_source or source not in labels:
                continue
            self.stats.compared[source] += 1
            if canonical_json(labels[source]) == truth_key:
                self.stats.agreed[source] += 1
            else:
                disagreeing.append(source)
        turn["output"] = truth
        turn["label_source"] = truth_source
        self.stats.chosen[truth_source] += 1
        if disagreeing and self.policy.on_disagreement != "prefer_truth":
            reason = f"{truth_source} label disagrees with {', '.join(disagreeing)}"
            review = self.policy.on_disagreement == "review"
            return Decision(False, reason, review=review, kind="needs_review" if review else "disagreement")
        return Decision(True)

    def _used_sources(self) -> set[str]:
        return set(self.policy.truth) | set(self.policy.cross_check)
