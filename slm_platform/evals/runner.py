"""Evaluate one predictor on a list of Turns: predictions, per-example scores, a report.

The report is `metrics.aggregate` over all turns plus one per role, so a two-role domain shows
both its roles and the blend. Predictions are kept row by row (JSONL) for later inspection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slm_platform.domain.contract import RoleContract
from slm_platform.evals.metrics import aggregate, score_example
from slm_platform.evals.predictors import Predictor


@dataclass
class EvalResult:
    name: str
    report: dict[str, Any]  # aggregate over all turns, plus "by_role"
    rows: list[dict[str, Any]]  # one per turn: id, role, prediction, gold, scores, latency

    def metric(self, name: str) -> float | None:
        return self.report["metrics"].get(name)


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
                "completion_tokens": pred.completion_tokens,
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
    errors = sum(1 for r in done if r["error"])
    report["errors"] = errors
    return EvalResult(predictor.name, report, done)
