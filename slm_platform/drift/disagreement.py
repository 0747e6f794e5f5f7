"""Champion-vs-oracle disagreement: how often what was served differs from the role's oracle.

None of the drift libraries measure this, yet it is the label-side signal: when traffic moves
somewhere the model never saw, its answers and the deterministic oracle part ways more often.
The oracle is a floor, not the truth, so the number is read against the same disagreement on the
training data (training label vs oracle): the report flags the day when it is `DISAGREEMENT_MARGIN`
above the reference and beyond two standard errors of the difference.

Rows are sampled deterministically by id (at most `SAMPLE` per side) so that a day's number does
not change on a re-run and a big day stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from slm_platform.domain import RoleContract
from slm_platform.drift.categorical import served_output
from slm_platform.drift.report import DISAGREEMENT_MARGIN, MIN_ROWS, Measure
from slm_platform.evals.metrics import agreement_rate
from slm_platform.records import stable_hash

SAMPLE = 300
MIN_ANSWERED = 30  # the oracle may abstain (None); fewer answered rows than this is insufficient data


def sample(turns: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most `limit` turns, the same ones every time (ordered by a hash of their id)."""
    if len(turns) <= limit:
        return list(turns)
    return sorted(turns, key=lambda t: stable_hash(str(t.get("id"))))[:limit]


def _pairs(contract: RoleContract, turns: Sequence[dict[str, Any]], served: bool) -> tuple[list[tuple[Any, Any]], int]:
    pairs, errors = [], 0
    for turn in turns:
        try:
            oracle = contract.oracle(turn.get("input") or {})
        except Exception:  # a user oracle crashing on one row must not stop the report
            errors += 1
            continue
        answer = served_output(turn) if served else turn.get("output")
        if oracle is not None and answer is not None:
            pairs.append((answer, oracle))
    return pairs, errors


def _measure(pairs: list[tuple[Any, Any]], sampled: int, errors: int) -> Measure:
    note = f"{len(pairs)} of {sampled} sampled rows answered by the oracle" + (f", {errors} oracle errors" if errors else "")
    if len(pairs) < MIN_ANSWERED:
        return Measure.missing("insufficient_data", len(pairs), note)
    return Measure(value=1.0 - agreement_rate(pairs), n=len(pairs), note=note)


def oracle_disagreement(contract: RoleContract, reference: Sequence[dict[str, Any]],
                        current: Sequence[dict[str, Any]]) -> tuple[Measure, Measure]:
    """(current, reference): disagreement of the served answer (current) and the training label
    (reference) with the oracle."""
    if contract.oracle is None:
        none = Measure.missing("not_measured", 0, f"role {contract.id!r} has no oracle")
        return none, none
    if len(current) < MIN_ROWS or len(reference) < MIN_ROWS:
        note = f"needs {MIN_ROWS} rows on each side"
        return (Measure.missing("insufficient_data", len(current), note, n_reference=len(reference)),
                Measure.missing("insufficient_data", len(reference), note))
    cur_rows, ref_rows = sample(current, SAMPLE), sample(reference, SAMPLE)
    cur_pairs, cur_err = _pairs(contract, cur_rows, True)
    ref_pairs, ref_err = _pairs(contract, ref_rows, False)
    cur, ref = _measure(cur_pairs, len(cur_rows), cur_err), _measure(ref_pairs, len(ref_rows), ref_err)
    if cur.value is None or ref.value is None:
        return cur, ref
    se = math.sqrt(cur.value * (1 - cur.value) / cur.n + ref.value * (1 - ref.value) / ref.n)
    delta = cur.value - ref.value
    drifted = delta > DISAGREEMENT_MARGIN and delta > 2 * se
    cur = cur.model_copy(update={"n_reference": ref.n, "threshold": ref.value + DISAGREEMENT_MARGIN, "drifted": drifted,
                                 "note": cur.note + f"; reference {ref.value:.3f} (n={ref.n})"})
    return cur, ref
