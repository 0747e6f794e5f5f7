"""Drift of categorical keys: distributions (JS distance, PSI) and values never seen in training.

The keys are the rows' `meta.slice` keys (language, category, intent, ...) and the low-cardinality
fields of the answers (`output.<path>`: a tool call's `name` is the tool, a category, a city): a
field is categorical when it is present in at least `PRESENT_MIN` of the reference rows and takes
at most `CARDINALITY_MAX` distinct values there, and is not mostly ISO dates (dates, free text
and ids are left out, or every new day would look like a new entity).

Small samples make JS distance noisy (two samples of one distribution rarely give 0; at 300 rows
a side the noise alone often passes 0.1), so each key also gets a noise floor: the JS distance of
two same-size samples drawn from the reference itself (`NULL_DRAWS` draws). A key is drifted only
above both the threshold and its floor. The floor is the (1 - 0.05/k) quantile for a role with k
keys (Bonferroni), so an undrifted day raises a false alarm on any of its keys about 5% of the time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import numpy as np

from slm_platform.drift.report import JS_THRESHOLD, MIN_ROWS, PSI_THRESHOLD, Measure, SliceDrift
from slm_platform.evals.metrics import MISSING_SLICE, field_paths, js_distance, psi
from slm_platform.records import canonical_json

EPS = 1e-4  # probability added to every bin (then renormalised): empty bins stay finite for PSI
NULL_DRAWS = 1000
FAMILY_ALPHA = 0.05
PRESENT_MIN = 0.2
CARDINALITY_MAX = 30
TOP_VALUES = 12  # values kept per side in the report (the chart and table show the largest)


def label(value: Any) -> str:
    """A value as a category: strings as they are, anything else as canonical JSON."""
    if value is None:
        return MISSING_SLICE
    return value if isinstance(value, str) else canonical_json(value)


def served_output(turn: dict[str, Any]) -> dict[str, Any] | None:
    """What was answered for a captured turn: the captured answer, else the turn's output."""
    labels = turn.get("labels") or {}
    return labels.get("capture") or turn.get("output")


def output_values(turn: dict[str, Any], *, served: bool) -> dict[str, str]:
    """`output.<path>` -> value label for every scalar leaf of the answer."""
    out = served_output(turn) if served else turn.get("output")
    if not isinstance(out, dict):
        return {}
    return {f"output.{path}": label(value) for path, _, value in field_paths(out)
            if not isinstance(value, (dict, list))}


def row_values(turn: dict[str, Any], *, served: bool) -> dict[str, str]:
    """Every categorical candidate of one row: its slice keys and its answer's leaves."""
    sl = (turn.get("meta") or {}).get("slice") or {}
    values = {str(k): label(v) for k, v in sl.items()}
    values.update(output_values(turn, served=served))
    return values


def _mostly_dates(values: Iterable[str]) -> bool:
    values = list(values)
    dates = 0
    for v in values:
        try:
            date.fromisoformat(v[:10])
            dates += 1
        except ValueError:
            pass
    return dates > len(values) / 2


def categorical_keys(reference: Sequence[dict[str, str]]) -> list[str]:
    """Keys worth comparing: every slice key, and output fields that behave like categories."""
    n = len(reference)
    present: Counter = Counter()
    distinct: dict[str, set[str]] = {}
    for row in reference:
        for k, v in row.items():
            present[k] += 1
            distinct.setdefault(k, set()).add(v)
    keys = []
    for k in present:
        if not k.startswith("output."):
            keys.append(k)
        elif (present[k] >= PRESENT_MIN * n and len(distinct[k]) <= min(CARDINALITY_MAX, max(2, n // 3))
              and not _mostly_dates(distinct[k])):
            keys.append(k)
    return sorted(keys, key=lambda k: (k.startswith("output."), k))


def _top(counts: Counter) -> dict[str, int]:
    return dict(counts.most_common(TOP_VALUES))


def noise_quantile(keys: int) -> float:
    """The percentile of the null JS distances that a role with `keys` keys uses as the floor."""
    return 100.0 * (1.0 - FAMILY_ALPHA / max(1, keys))


def _noise_floor(ref: Counter, n_ref: int, n_cur: int, rng: np.random.Generator, quantile: float) -> float:
    """`quantile` percentile of the JS distance between two samples (sizes n_ref, n_cur) of the reference."""
    names = list(ref)
    p = np.array([ref[k] for k in names], dtype=np.float64)
    p /= p.sum()
    a = rng.multinomial(n_ref, p, size=NULL_DRAWS)
    b = rng.multinomial(n_cur, p, size=NULL_DRAWS)
    values = [js_distance(dict(zip(names, x)), dict(zip(names, y)), eps=EPS) for x, y in zip(a, b)]
    return float(np.percentile(values, quantile))


def slice_drift(key: str, reference: Sequence[dict[str, str]], current: Sequence[dict[str, str]],
                rng: np.random.Generator, quantile: float = 95.0) -> SliceDrift:
    """JS distance, PSI and the unseen share of one key (see `_values` for rows without it)."""
    ref, cur = Counter(_values(key, reference)), Counter(_values(key, current))
    n_ref, n_cur = sum(ref.values()), sum(cur.values())
    if n_ref < MIN_ROWS or n_cur < MIN_ROWS:
        note = (f"needs {MIN_ROWS} rows on each side" if n_cur or not current
                else f"not recorded on any of the {len(current)} captured turns")
        status = "not_measured" if current and not n_cur else "insufficient_data"
        miss = Measure.missing(status, n_cur, note, n_reference=n_ref)
        return SliceDrift(key=key, js=miss.model_copy(update={"threshold": JS_THRESHOLD}),
                          psi=miss.model_copy(update={"threshold": PSI_THRESHOLD}), unseen_share=miss,
                          reference=_top(ref), current=_top(cur))
    js = js_distance(ref, cur, eps=EPS)
    floor = _noise_floor(ref, n_ref, n_cur, rng, quantile)
    unseen = Counter({v: c for v, c in cur.items() if v not in ref})
    share = sum(unseen.values()) / n_cur
    return SliceDrift(
        key=key,
        js=Measure(value=js, n=n_cur, n_reference=n_ref, threshold=JS_THRESHOLD, drifted=js > max(JS_THRESHOLD, floor),
                   note=f"noise floor (p{quantile:.4g} of the reference against itself) {floor:.3f}"),
        psi=Measure(value=psi(ref, cur, eps=EPS), n=n_cur, n_reference=n_ref, threshold=PSI_THRESHOLD),
        js_noise_floor=floor,
        unseen_share=Measure(value=share, n=n_cur, n_reference=n_ref),
        unseen_values=[v for v, _ in unseen.most_common(5)],
        reference=_top(ref), current=_top(cur))


def _values(key: str, rows: Sequence[dict[str, str]]) -> list[str]:
    """The key's value per row. An answer field a row lacks is the value `<missing>` (a tool call
    to another tool has no `destination`: that is part of the answer's shape). A slice key a row
    lacks is left out: a gateway turn carries no simulator or upstream slice such as `channel`, and
    counting it as `<missing>` made all gateway traffic "unseen". A recorded null is `<missing>`."""
    if key.startswith("output."):
        return [row.get(key, MISSING_SLICE) for row in rows]
    return [row[key] for row in rows if key in row]


def unseen_rows(keys: Sequence[str], reference: Sequence[dict[str, str]], current: Sequence[dict[str, str]]) -> list[bool]:
    """Per current row: does any of `keys` hold a value the reference never had (`_values` rules)?"""
    seen = {k: set(_values(k, reference)) for k in keys}

    def new(row: dict[str, str], k: str) -> bool:
        if k.startswith("output."):
            return row.get(k, MISSING_SLICE) not in seen[k]
        return k in row and bool(seen[k]) and row[k] not in seen[k]

    return [any(new(row, k) for k in keys) for row in current]
