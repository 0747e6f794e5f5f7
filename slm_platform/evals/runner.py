"""Evaluate one predictor on a list of Turns: predictions, per-example scores, a report.

The report is `metrics.aggregate` over all turns plus one per role, so a two-role domain shows
both its roles and the blend. Predictions are kept row by row (JSONL) for later inspection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from slm_platform.domain.contract import RoleContract
from slm_platform.evals.metrics import aggregate, score_example
from slm_platform.evals.predictors import Predictor


class EntryReport(BaseModel):
    """One entry's scores on a set of turns (`metrics.aggregate`, plus `by_role` when several roles).

    The shape eval reports store per entry and gates, decisions and summaries read back.
    """

    model_config = ConfigDict(extra="allow")
    n: int
    metrics: dict[str, float | None] = Field(default_factory=dict)
    support: dict[str, int] = Field(default_factory=dict)
    by_slice: dict[str, dict[str, Any]] = Field(default_factory=dict)  # key -> value -> {n, metrics}
    by_role: dict[str, "EntryReport"] | None = None
    latency_ms: dict[str, float | None] | None = None
    errors: int = 0
    # answers that ran into max_tokens without a complete object: counted, never a silent truncation
    truncated: int = 0

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)

    def role_metric(self, role: str, name: str) -> float | None:
        """A role's value; a one-role report is that role's report."""
        if self.by_role is None:
            return self.metric(name)
        sub = self.by_role.get(role)
        return sub.metric(name) if sub is not None else None


@dataclass
class EvalResult:
    name: str
    report: EntryReport  # aggregate over all turns, plus by_role
    rows: list[dict[str, Any]]  # one per turn: id, role, prediction, gold, scores, latency

    def metric(self, name: str) -> float | None:
        return self.report.metric(name)


def evaluate(turns: list[dict[str, Any]], contract_for: Callable[[dict[str, Any]], RoleContract],
             predictor: Predictor, *, slice_keys: list[str] | None = None, pricing: Any = None,
             input_for: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> EvalResult:
    """Group turns by contract (role, or per-row catalog for BFCL), predict, score, aggregate."""
    input_for = input_for or (lambda t: t["input"])
    groups: dict[int, list[int]] = defaultdict(list)
    contracts: dict[int, RoleContract] = {}
    for i, turn in enumerate(turns):
        contract = contract_for(turn)
        contracts[id(contract)] = contract
        groups[id(contract)].append(i)
    rows: list[dict[str, Any] | None] = [None] * len(turns)
    batches = [(contracts[key], [input_for(turns[i]) for i in indices]) for key, indices in groups.items()]
    if hasattr(predictor, "predict_groups"):  # one engine call across all contracts (concurrent requests)
        per_group = predictor.predict_groups(batches)
    else:
        per_group = [predictor.predict(contract, inputs) for contract, inputs in batches]
    for (key, indices), predictions in zip(groups.items(), per_group):
        contract = contracts[key]
        for i, pred in zip(indices, predictions):
            turn = turns[i]
            bfcl = (turn.get("meta") or {}).get("bfcl") or {}
            scores = score_example(contract.kind, contract, pred.text if pred.output is None else pred.output,
                                   turn.get("output"), bfcl_ground_truth=bfcl.get("ground_truth"),
                                   tools=(turn["input"].get("tools") if bfcl else None))
            rows[i] = {
                "id": turn["id"], "role": turn["role"], "prediction": pred.output, "text": pred.text,
                "gold": turn.get("output"), "error": pred.error, "scores": scores,
                "meta": {"slice": (turn.get("meta") or {}).get("slice", {}),
                         "cluster": (turn.get("meta") or {}).get("cluster")},
                "latency_ms": pred.latency_ms, "prompt_tokens": pred.prompt_tokens,
                "completion_tokens": pred.completion_tokens, "finish_reason": pred.finish_reason,
            }
    done = [r for r in rows if r is not None]
    examples = [{**r["scores"], "meta": r["meta"], "latency_ms": r["latency_ms"],
                 "prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"]} for r in done]
    report = aggregate(examples, slice_keys=slice_keys or [], pricing=pricing)
    by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row, ex in zip(done, examples):
        by_role[row["role"]].append(ex)
    if len(by_role) > 1:
        report["by_role"] = {role: aggregate(exs, slice_keys=slice_keys or [], pricing=pricing)
                             for role, exs in sorted(by_role.items())}
    report["errors"] = sum(1 for r in done if r["error"])
    report["truncated"] = sum(1 for r in done if r["finish_reason"] == "length" and r["prediction"] is None)
    return EvalResult(predictor.name, EntryReport.model_validate(report), done)
