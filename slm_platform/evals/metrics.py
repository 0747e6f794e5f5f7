"""The one metrics module: eval, shadow, gateway and drift all score with these functions.

Pure Python + numpy; no model imports.

Per example
-----------
`score_example(kind, contract_or_validator, predicted, gold, ...)` returns one dict whose keys
are the metric names themselves (the aggregate of key `k` over examples is metric `k`):

structured roles
  `json_valid_rate`   the text decodes to a JSON object (`parse_output`)
  `schema_valid_rate` the object validates against the role's output schema
  `exact_match_rate`  canonical JSON equal to the gold (only when a gold is given)
  `field_accuracy/<path>` one key per leaf path of the gold (`priority`,
                      `slot_updates.destination`, `tool_requests[0].tool`): the prediction has the
                      same value (same JSON type) at that path; missing is wrong
tool-call roles (an output is `{"name", "arguments"}`)
  `json_valid_rate`   as above
  `valid_call_rate`   exactly the keys `name` (a string) and `arguments` (an object), and the
                      name is one of the offered tools (when a catalog is known)
  `name_match_rate`   the name equals the gold's (`.`->`_` convention on both sides)
  `args_exact_rate`   the name matches AND the arguments equal the gold's: canonical-JSON equality
                      for a single gold object; with BFCL ground truth, `ast_match(strict=True)`
  `bfcl_ast_rate`     only with BFCL ground truth: `ast_match` (rules 1-9)
  `schema_valid_rate` the arguments validate against that tool's parameter schema
  `exact_match_rate`  the whole call is the gold's (= `args_exact_rate`), so a domain's primary
                      metric is defined for every role kind

A metric that cannot be measured for an example (no gold, no validator) is left out of its dict,
so it does not count in that metric's denominator.

Many examples
-------------
`aggregate(examples, slice_keys=[...])` averages every key that ends in `_rate` or starts with
`field_accuracy/`, overall and per slice value. An example may carry, next to its scores,
`slice` (dict) and `cluster`, or `meta: {slice, cluster}` as in a Turn; and optionally
`latency_ms`, `prompt_tokens`, `completion_tokens`. The report:

    {"n": N, "metrics": {name: mean}, "support": {name: count},
     "by_slice": {key: {value: {"n": n, "metrics": {...}}}},
     "latency_ms": {p50, p95, mean}, "tokens": {...}, "cost": float}   # the last three when present

Slice values are reported as strings (strings as-is, numbers via `str`, booleans and objects as
canonical JSON; a missing key or null is `"<missing>"`), so the report is plain JSON. The slice
key `cluster` reads the example's `cluster` (or `meta.cluster`). No NaN is ever written into a report: a metric with no measurements is
absent.

Comparisons and drift
---------------------
`compare`, `slice_regressions` (gates, shadow), `agreement_rate` (shadow, labeling),
`distribution_distance` (Jensen-Shannon divergence, base 2), `js_distance` (its square root, as
Evidently reports it) and `psi` (drift).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator

from slm_platform.data.sources import bfcl_function_to_tool, bfcl_tool_name
from slm_platform.evals.bfcl_ast import ast_match, strict_equal
from slm_platform.records import canonical_json

__all__ = [
    "FIELD_PREFIX",
    "MISSING_SLICE",
    "agreement_rate",
    "aggregate",
    "compare",
    "cost",
    "distribution_distance",
    "field_paths",
    "is_metric_key",
    "js_distance",
    "latency_summary",
    "parse_output",
    "psi",
    "score_example",
    "slice_regressions",
    "token_totals",
]

FIELD_PREFIX = "field_accuracy/"
MISSING_SLICE = "<missing>"
_SLACK = 1e-9  # float noise allowed when comparing a delta with a tolerance

# --- decoding ------------------------------------------------------------------------------------
_FENCE = re.compile(r"\A\s*```(?:json|JSON)?[ \t]*\r?\n?(.*?)\r?\n?[ \t]*```\s*\Z", re.DOTALL)


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_output(text: Any) -> dict[str, Any] | None:
    """A model's raw text -> the JSON object it holds, or None.

    Accepted: one JSON object (strict `json.loads`; NaN/Infinity refused), optionally surrounded
    by whitespace, or wrapped in one Markdown code fence (```json ... ``` or ``` ... ```).
    Anything else (prose around the object, two objects, an array, a scalar) gives None.
    """
    if not isinstance(text, str):
        return None
    for candidate in (text, None):
        if candidate is None:
            m = _FENCE.match(text)
            if m is None:
                return None
            candidate = m.group(1)
        try:
            value = json.loads(candidate, parse_constant=_bad_constant)
        except (ValueError, RecursionError):
            continue
        return value if isinstance(value, dict) else None
    return None


def _as_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return parse_output(value)
    return None


# --- field paths ---------------------------------------------------------------------------------
def field_paths(gold: Any) -> list[tuple[str, tuple[Any, ...], Any]]:
    """Every leaf of `gold` as (dotted path, path tokens, value); lists give `[i]` tokens.

    A leaf is a scalar or an empty object/array.
    """
    out: list[tuple[str, tuple[Any, ...], Any]] = []

    def walk(node: Any, path: str, tokens: tuple[Any, ...]) -> None:
        if type(node) is dict and node:
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k), tokens + (k,))
        elif type(node) is list and node:
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]", tokens + (i,))
        elif tokens:
            out.append((path, tokens, node))

    walk(gold, "", ())
    return out


_ABSENT = object()


def _at(obj: Any, tokens: tuple[Any, ...]) -> Any:
    for t in tokens:
        if type(t) is int:
            if type(obj) is not list or t >= len(obj):
                return _ABSENT
        elif type(obj) is not dict or t not in obj:
            return _ABSENT
        obj = obj[t]
    return obj


# --- validation ----------------------------------------------------------------------------------
_VALIDATORS: dict[str, Draft202012Validator] = {}


def _validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    key = canonical_json(schema)
    v = _VALIDATORS.get(key)
    if v is None:
        if len(_VALIDATORS) >= 4096:
            _VALIDATORS.clear()
        v = _VALIDATORS[key] = Draft202012Validator(schema)
    return v


def _is_valid(validator: Any, value: Any) -> bool | None:
    """Run any supported validator: a RoleContract, a JSON Schema dict, a jsonschema validator,
    or a callable returning a list of errors (empty = valid) or a bool; raising means invalid."""
    if validator is None:
        return None
    if hasattr(validator, "validate_output"):
        return not validator.validate_output(value)
    if isinstance(validator, dict):
        return _validator_for(validator).is_valid(value)
    if hasattr(validator, "is_valid") and hasattr(validator, "iter_errors"):
        return bool(validator.is_valid(value))
    if callable(validator):
        try:
            result = validator(value)
        except Exception:
            return False
        if isinstance(result, bool):
            return result
        return not result
    raise TypeError(f"unsupported validator {type(validator).__name__}; expected a RoleContract, a JSON Schema "
                    "dict, a jsonschema validator or a callable")


def _tool_params(tools: Sequence[dict[str, Any]] | None, contract: Any) -> dict[str, dict[str, Any]] | None:
    """Offered tool name (`.`->`_` applied) -> its JSON Schema parameters; None when unknown."""
    if tools is None:
        if contract is not None and hasattr(contract, "tool_parameters"):
            return {bfcl_tool_name(k): v for k, v in contract.tool_parameters().items()}
        return None
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        body = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        params = body.get("parameters")
        if isinstance(params, dict) and params.get("type") == "dict":  # a BFCL-style function
            body = bfcl_function_to_tool(body)["function"]
            params = body["parameters"]
        if isinstance(body.get("name"), str):
            out[bfcl_tool_name(body["name"])] = params if isinstance(params, dict) else {"type": "object"}
    return out


# --- per example ---------------------------------------------------------------------------------
def score_example(
    kind: str,
    contract_or_validator: Any,
    predicted: Any,
    gold: Any,
    *,
    bfcl_ground_truth: list[dict[str, Any]] | None = None,
    tools: Sequence[dict[str, Any]] | None = None,
) -> dict[str, bool]:
    """Score one prediction (raw text or an already-decoded object) of a `structured` or
    `tool_call` role. See the module docstring for the keys.

    `contract_or_validator`: a `RoleContract`, a JSON Schema dict (the output schema; for tool
    calls, the schema of the whole call), a jsonschema validator, a callable, or None (then
    `schema_valid_rate` is measured only for tool calls with known `tools`). For tool calls,
    `tools` (OpenAI tools or BFCL functions, e.g. a Turn's `input.tools`) is the offered catalog
    and the source of the parameter schemas; without it the contract's catalog is used.
    `gold` is the gold output (object or JSON text) or None.
    """
    pred = _as_object(predicted)
    gold_obj = _as_object(gold) if gold is not None else None
    if kind == "structured":
        return _score_structured(contract_or_validator, pred, gold_obj)
    if kind == "tool_call":
        return _score_tool_call(contract_or_validator, pred, gold_obj, bfcl_ground_truth, tools)
    raise ValueError(f"unknown role kind {kind!r}; expected 'structured' or 'tool_call'")


def _score_structured(validator: Any, pred: dict[str, Any] | None, gold: dict[str, Any] | None) -> dict[str, bool]:
    out: dict[str, bool] = {"json_valid_rate": pred is not None}
    if validator is not None:
        out["schema_valid_rate"] = pred is not None and bool(_is_valid(validator, pred))
    if gold is not None:
        out["exact_match_rate"] = pred is not None and canonical_json(pred) == canonical_json(gold)
        for path, tokens, value in field_paths(gold):
            got = _at(pred, tokens) if pred is not None else _ABSENT
            out[FIELD_PREFIX + path] = got is not _ABSENT and strict_equal(got, value)
    return out


def _score_tool_call(validator: Any, pred: dict[str, Any] | None, gold: dict[str, Any] | None,
                     truth: list[dict[str, Any]] | None, tools: Sequence[dict[str, Any]] | None) -> dict[str, bool]:
    out: dict[str, bool] = {"json_valid_rate": pred is not None}
    catalog = _tool_params(tools, validator)
    shaped = (pred is not None and set(pred) == {"name", "arguments"} and isinstance(pred["name"], str)
              and isinstance(pred["arguments"], dict))
    name = bfcl_tool_name(pred["name"]) if shaped else None
    out["valid_call_rate"] = shaped and (catalog is None or name in catalog)
    # schema validity of the arguments against the called tool's parameters
    if catalog is not None:
        out["schema_valid_rate"] = out["valid_call_rate"] and _validator_for(catalog[name]).is_valid(pred["arguments"])
    elif validator is not None:
        out["schema_valid_rate"] = pred is not None and bool(_is_valid(validator, pred))
    if truth:
        first = truth[0]
        gname = next(iter(first)) if isinstance(first, dict) and len(first) == 1 else None
        out["name_match_rate"] = shaped and gname is not None and name == bfcl_tool_name(gname)
        fns = list(tools) if tools is not None else _catalog_as_tools(catalog)
        out["bfcl_ast_rate"] = shaped and ast_match(pred, truth, fns)[0]
        out["args_exact_rate"] = shaped and ast_match(pred, truth, fns, strict=True)[0]
        out["exact_match_rate"] = out["args_exact_rate"]
    elif gold is not None:
        gname = gold.get("name")
        out["name_match_rate"] = shaped and isinstance(gname, str) and name == bfcl_tool_name(gname)
        out["args_exact_rate"] = bool(out["name_match_rate"]) and canonical_json(pred["arguments"]) == canonical_json(
            gold.get("arguments"))
        out["exact_match_rate"] = out["args_exact_rate"]  # the whole call equals the gold's
    return out


def _catalog_as_tools(catalog: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": k, "parameters": v}} for k, v in (catalog or {}).items()]


def is_metric_key(key: str) -> bool:
    """Keys that `aggregate` averages: `*_rate` and `field_accuracy/*`."""
    return key.endswith("_rate") or key.startswith(FIELD_PREFIX)


# --- aggregation ---------------------------------------------------------------------------------
def _slice_lookup(ex: dict[str, Any], key: str) -> Any:
    """The slice value of one example: top-level `slice`/`cluster`, else the Turn-style `meta`."""
    meta = ex.get("meta") if isinstance(ex.get("meta"), dict) else {}
    if key == "cluster":
        for holder in (ex, meta):
            if holder.get("cluster") is not None:
                return holder["cluster"]
    for sl in (ex.get("slice"), meta.get("slice")):
        if isinstance(sl, dict) and sl.get(key) is not None:
            return sl[key]
    return None


def _slice_label(v: Any) -> str:
    if v is None:
        return MISSING_SLICE
    if isinstance(v, str):
        return v
    return canonical_json(v) if isinstance(v, (bool, dict, list)) else str(v)


def _slice_labels(examples: list[dict[str, Any]], key: str) -> list[str]:
    if key == "cluster":
        vals = [ex.get("cluster") for ex in examples]
    else:
        vals = [sl.get(key) if type(sl := ex.get("slice")) is dict else None for ex in examples]
    out = []
    cache: dict[tuple[type, Any], str] = {}
    for ex, v in zip(examples, vals):
        if type(v) is str:
            out.append(v)
            continue
        if v is None:
            v = _slice_lookup(ex, key)
        if isinstance(v, (dict, list)):
            out.append(_slice_label(v))
            continue
        ck = (type(v), v)
        label = cache.get(ck)
        if label is None:
            label = cache[ck] = _slice_label(v)
        out.append(label)
    return out


def _column(examples: list[dict[str, Any]], key: str) -> np.ndarray:
    vals = [ex.get(key) for ex in examples]
    try:
        return np.array(vals, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([math.nan if v is None else v for v in vals], dtype=np.float64)


def aggregate(
    examples: list[dict[str, Any]],
    *,
    slice_keys: Sequence[str] = (),
    pricing: Mapping[str, float] | Any | None = None,
) -> dict[str, Any]:
    """Every metric overall and by slice (see the module docstring for the report's shape)."""
    n = len(examples)
    keys: set[str] = set().union(*examples) if examples else set()
    metric_keys = sorted(k for k in keys if isinstance(k, str) and is_metric_key(k))
    report: dict[str, Any] = {"n": n, "metrics": {}, "support": {}, "by_slice": {}}
    groups: list[tuple[str, list[str], np.ndarray]] = []
    for key in slice_keys:
        labels = _slice_labels(examples, key)
        index: dict[str, int] = {}
        raw = np.fromiter((index.setdefault(lab, len(index)) for lab in labels), dtype=np.int64, count=n)
        names = sorted(index)
        remap = np.empty(len(names), dtype=np.int64)
        for new_id, name in enumerate(names):
            remap[index[name]] = new_id
        gid = remap[raw] if n else raw
        groups.append((key, names, gid))
        counts = np.bincount(gid, minlength=len(names))
        report["by_slice"][key] = {name: {"n": int(c), "metrics": {}} for name, c in zip(names, counts)}
    for mk in metric_keys:
        col = _column(examples, mk)
        have = ~np.isnan(col)
        count = int(have.sum())
        if count == 0:
            continue
        vals = np.where(have, col, 0.0)
        report["metrics"][mk] = float(vals.sum() / count)
        report["support"][mk] = count
        for key, names, gid in groups:
            sums = np.bincount(gid, weights=vals, minlength=len(names))
            cnts = np.bincount(gid, weights=have.astype(np.float64), minlength=len(names))
            target = report["by_slice"][key]
            for i, name in enumerate(names):
                if cnts[i] > 0:
                    target[name]["metrics"][mk] = float(sums[i] / cnts[i])
    if "latency_ms" in keys:
        report["latency_ms"] = latency_summary(ex.get("latency_ms") for ex in examples)
    if "prompt_tokens" in keys or "completion_tokens" in keys:
        report["tokens"] = token_totals(examples)
        if pricing is not None:
            report["cost"] = cost(report["tokens"]["prompt_tokens"], report["tokens"]["completion_tokens"], pricing)
    return report


# --- latency, tokens, cost -----------------------------------------------------------------------
def latency_summary(latencies_ms: Iterable[float | None]) -> dict[str, float | None]:
    """{p50, p95, mean} in ms. Percentiles use linear interpolation between closest ranks
    (numpy's default, Hyndman-Fan type 7 / Excel PERCENTILE.INC). None and NaN are skipped; with
    no values every field is None."""
    arr = np.fromiter((math.nan if v is None else v for v in latencies_ms), dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"p50": None, "p95": None, "mean": None}
    p50, p95 = np.percentile(arr, [50, 95])
    return {"p50": float(p50), "p95": float(p95), "mean": float(arr.mean())}


def token_totals(examples: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Sum of `prompt_tokens` and `completion_tokens` over examples (missing counts as 0)."""
    prompt = completion = 0
    for ex in examples:
        prompt += int(ex.get("prompt_tokens") or 0)
        completion += int(ex.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def cost(prompt_tokens: float, completion_tokens: float, pricing: Mapping[str, float] | Any) -> float:
    """Cost from token counts and `{input_per_1m, output_per_1m}` (a dict or the config's Pricing)."""
    def get(name: str) -> float:
        v = pricing.get(name, 0.0) if isinstance(pricing, Mapping) else getattr(pricing, name, 0.0)
        return float(v or 0.0)

    return prompt_tokens / 1e6 * get("input_per_1m") + completion_tokens / 1e6 * get("output_per_1m")


# --- comparisons ---------------------------------------------------------------------------------
def _metric(container: Mapping[str, Any] | None, metric: str) -> float | None:
    """A metric from a report (`metrics` inside) or a flat dict; dotted paths like `latency_ms.p95`."""
    if not isinstance(container, Mapping):
        return None
    inner = container.get("metrics")
    if isinstance(inner, Mapping) and metric in inner:
        v = inner[metric]
    elif metric in container:
        v = container[metric]
    else:
        v = container
        for part in metric.split("."):
            if not isinstance(v, Mapping) or part not in v:
                return None
            v = v[part]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def compare(
    candidate: Mapping[str, Any],
    reference: Mapping[str, Any],
    metric: str,
    tolerance: float,
    *,
    higher_is_better: bool = True,
) -> tuple[bool, float]:
    """(passed, delta = candidate - reference). Passed when the candidate is no worse than the
    reference by more than `tolerance` (a 1e-9 slack absorbs float noise). Reports or flat metric
    dicts are accepted. A metric the reference lacks passes (nothing to regress from) and a
    metric the candidate lacks fails; delta is NaN in both cases."""
    c, r = _metric(candidate, metric), _metric(reference, metric)
    if r is None:
        return True, math.nan
    if c is None:
        return False, math.nan
    delta = c - r
    passed = delta >= -tolerance - _SLACK if higher_is_better else delta <= tolerance + _SLACK
    return passed, delta


def _slice_tables(by_slice: Mapping[str, Any]) -> dict[str | None, Mapping[str, Any]]:
    """Normalise to {slice key (or None): {slice value: group}} from a report, its `by_slice`,
    or one key's {value: group}."""
    if isinstance(by_slice.get("by_slice"), Mapping):
        by_slice = by_slice["by_slice"]
    values = [v for v in by_slice.values() if isinstance(v, Mapping)]
    if values and all("n" in v or "metrics" in v for v in values):
        return {None: by_slice}
    return {k: v for k, v in by_slice.items() if isinstance(v, Mapping)}


def slice_regressions(
    candidate_by_slice: Mapping[str, Any],
    reference_by_slice: Mapping[str, Any],
    metric: str,
    tolerance: float | Mapping[str, float],
    min_n: int = 30,
    *,
    higher_is_better: bool = True,
) -> list[dict[str, Any]]:
    """The slices where the candidate regresses beyond tolerance, worst first.

    Inputs: whole reports, their `by_slice`, or one key's `{value: {"n", "metrics"}}`.
    `tolerance` is a number, or `{slice key: tolerance}` (as in `eval.slices`; keys not named are
    skipped). A slice counts only when it has at least `min_n` examples on both sides and both
    measured the metric. Each item: {key, slice, n, reference_n, candidate, reference, delta}.
    """
    cand, ref = _slice_tables(candidate_by_slice), _slice_tables(reference_by_slice)
    out: list[dict[str, Any]] = []
    for key, groups in cand.items():
        if isinstance(tolerance, Mapping):
            if key not in tolerance:
                continue
            tol = float(tolerance[key])
        else:
            tol = float(tolerance)
        ref_groups = ref.get(key, {})
        for value, group in groups.items():
            other = ref_groups.get(value)
            if not isinstance(group, Mapping) or not isinstance(other, Mapping):
                continue
            n, rn = int(group.get("n", 0)), int(other.get("n", 0))
            if n < min_n or rn < min_n:
                continue
            passed, delta = compare(group, other, metric, tol, higher_is_better=higher_is_better)
            if passed or math.isnan(delta):
                continue
            out.append({"key": key, "slice": value, "n": n, "reference_n": rn, "candidate": _metric(group, metric),
                        "reference": _metric(other, metric), "delta": delta})
    out.sort(key=lambda r: r["delta"] if higher_is_better else -r["delta"])
    return out


def agreement_rate(pairs: Iterable[tuple[Any, Any]]) -> float:
    """Share of (a, b) pairs whose outputs are equal by canonical JSON (text is decoded with
    `parse_output` first). A side that does not decode never agrees, not even with another
    failure. NaN for no pairs."""
    n = agree = 0
    for a, b in pairs:
        n += 1
        oa, ob = _as_object(a), _as_object(b)
        if oa is not None and ob is not None and canonical_json(oa) == canonical_json(ob):
            agree += 1
    return agree / n if n else math.nan


# --- drift ---------------------------------------------------------------------------------------
def _proportions(p_counts: Mapping[Any, float], q_counts: Mapping[Any, float],
                 eps: float) -> tuple[np.ndarray, np.ndarray]:
    keys = list(dict.fromkeys([*p_counts, *q_counts]))
    p = np.array([float(p_counts.get(k, 0) or 0) for k in keys], dtype=np.float64)
    q = np.array([float(q_counts.get(k, 0) or 0) for k in keys], dtype=np.float64)
    if (p < 0).any() or (q < 0).any():
        raise ValueError("counts must be non-negative")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("both distributions need at least one count")
    p, q = p / p.sum(), q / q.sum()
    if eps > 0:
        p = (p + eps) / (1 + eps * len(keys))
        q = (q + eps) / (1 + eps * len(keys))
    return p, q


def distribution_distance(p_counts: Mapping[Any, float], q_counts: Mapping[Any, float], *, eps: float = 0.0) -> float:
    """Jensen-Shannon divergence, base 2, between two categorical count tables: 0 for identical
    distributions, 1 for disjoint ones. Categories missing on one side count 0. JS is finite
    without smoothing (0·log 0 = 0); `eps` > 0 adds that much probability to every category
    (then renormalises) to damp categories seen a handful of times. Raises ValueError when a
    side has no counts."""
    p, q = _proportions(p_counts, q_counts, eps)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return min(1.0, max(0.0, (kl(p) + kl(q)) / 2))


def js_distance(p_counts: Mapping[Any, float], q_counts: Mapping[Any, float], *, eps: float = 0.0) -> float:
    """Jensen-Shannon distance, base 2: the square root of `distribution_distance`, in [0, 1]. It is
    a metric (the triangle inequality holds). Evidently thresholds the same distance at 0.1 in
    scipy's natural-log base; in base 2 a value is 1/sqrt(ln 2) = 1.2x larger, so 0.1 here is stricter."""
    return math.sqrt(distribution_distance(p_counts, q_counts, eps=eps))


def psi(p_counts: Mapping[Any, float], q_counts: Mapping[Any, float], *, eps: float = 1e-4) -> float:
    """Population stability index, sum((q - p) * ln(q / p)), of `q` (actual) against `p`
    (expected). A category empty on one side would make it infinite, so `eps` (default 1e-4) is
    added to every category's proportion (then renormalised). Rule of thumb: < 0.1 stable,
    0.1-0.25 moderate shift, > 0.25 large shift. Raises ValueError when a side has no counts."""
    p, q = _proportions(p_counts, q_counts, max(eps, 1e-12))
    return float(np.sum((q - p) * np.log(q / p)))
