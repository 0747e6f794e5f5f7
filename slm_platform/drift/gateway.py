"""Schema validity and fallback rate at the gateway, read from what the capture rows carry.

The gateway's `Exchange` (serving/hooks.py) knows both: `validity` (the evals.metrics scores of the
answer the first route gave, e.g. `schema_valid_rate`) and `fallbacks` (one "<route>:<reason>" per
route passed over). A capture row is expected to carry them as `meta.validity` and
`meta.fallbacks`. Rows without them (seed-era capture, simulated traffic, another writer) are not
counted; when no row has them the rate is "not measured", never 0% or 100%.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slm_platform.drift.report import MIN_ROWS, Measure

VALIDITY_FIELD = "validity"
VALIDITY_METRIC = "schema_valid_rate"
FALLBACKS_FIELD = "fallbacks"


def _rate(flags: list[bool], total: int, field: str) -> Measure:
    if not flags:
        return Measure.missing("not_measured", 0, f"no captured row of {total} carries meta.{field}")
    note = f"{len(flags)} of {total} rows carry meta.{field}"
    if len(flags) < MIN_ROWS:
        return Measure.missing("insufficient_data", len(flags), note + f"; needs {MIN_ROWS}")
    return Measure(value=sum(flags) / len(flags), n=len(flags), note=note)


def gateway_rates(turns: Sequence[dict[str, Any]]) -> tuple[Measure, Measure]:
    """(schema_valid_rate, fallback_rate) over the rows that recorded them."""
    valid: list[bool] = []
    fell_back: list[bool] = []
    for turn in turns:
        meta = turn.get("meta") or {}
        validity = meta.get(VALIDITY_FIELD)
        if isinstance(validity, dict) and isinstance(validity.get(VALIDITY_METRIC), bool):
            valid.append(validity[VALIDITY_METRIC])
        fallbacks = meta.get(FALLBACKS_FIELD)
        if isinstance(fallbacks, list):
            fell_back.append(bool(fallbacks))
    return (_rate(valid, len(turns), f"{VALIDITY_FIELD}.{VALIDITY_METRIC}"),
            _rate(fell_back, len(turns), FALLBACKS_FIELD))
