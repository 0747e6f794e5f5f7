"""slm_platform.evals.metrics: handcrafted examples with known expected rates."""

from __future__ import annotations

import json
import math
import random
import time

import numpy as np
import pytest

from slm_platform.config.models import Role
from slm_platform.domain.contract import RoleContract
from slm_platform.evals.metrics import (
    agreement_rate,
    aggregate,
    compare,
    cost,
    distribution_distance,
    field_paths,
    latency_summary,
    parse_output,
    psi,
    score_example,
    slice_regressions,
    token_totals,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "priority": {"enum": ["low", "high"]},
        "slot_updates": {"type": "object", "properties": {"destination": {"type": "string"}}},
        "tool_requests": {"type": "array", "items": {"type": "object", "properties": {"tool": {"type": "string"}}}},
    },
    "required": ["priority"],
    "additionalProperties": False,
}
GOLD = {"priority": "high", "slot_updates": {"destination": "Paris"}, "tool_requests": [{"tool": "search"}]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "book_flight", "parameters": {
        "type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}}},
]


def structured_contract():
    role = Role(id="triage", kind="structured", system_prompt="p.md", output_schema="s.json")
    return RoleContract(role, "You triage.", output_schema=SCHEMA)


def tool_contract():
    role = Role(id="act", kind="tool_call", system_prompt="p.md", tools="tools.json")
    return RoleContract(role, "You act.", tools=TOOLS)


# --- parse_output --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('  \n{"a": 1}\n ', {"a": 1}),
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('```\n{"a": 1}\n```', {"a": 1}),
    ('  ```json {"a": 1} ```  ', {"a": 1}),
    ('Here it is: {"a": 1}', None),
    ('{"a": 1} {"b": 2}', None),
    ('[{"a": 1}]', None),
    ('"a"', None),
    ('{"a": NaN}', None),
    ("{'a': 1}", None),
    ('```json\n{"a": 1}\n``` and more', None),
    ("", None),
    (None, None),
])
def test_parse_output(text, expected):
    assert parse_output(text) == expected


# --- structured ----------------------------------------------------------------------------------
def test_field_paths():
    assert [p for p, _, _ in field_paths(GOLD)] == ["priority", "slot_updates.destination", "tool_requests[0].tool"]
    assert [p for p, _, _ in field_paths({"a": {}, "b": [], "c": [1, [2]]})] == ["a", "b", "c[0]", "c[1][0]"]


@pytest.mark.parametrize("validator", ["contract", "schema", "callable"])
def test_structured_rates(validator):
    v = {"contract": structured_contract(), "schema": SCHEMA,
         "callable": lambda out: structured_contract().validate_output(out)}[validator]
    preds = [
        "not json at all",  # invalid JSON
        json.dumps({"priority": "urgent"}),  # JSON, but schema-invalid
        json.dumps(GOLD),  # exact
        "```json\n" + json.dumps({**GOLD, "slot_updates": {"destination": "Rome"}}) + "\n```",  # one field wrong
    ]
    examples = [score_example("structured", v, p, GOLD) for p in preds]
    assert examples[0] == {"json_valid_rate": False, "schema_valid_rate": False, "exact_match_rate": False,
                           "field_accuracy/priority": False, "field_accuracy/slot_updates.destination": False,
                           "field_accuracy/tool_requests[0].tool": False}
    assert examples[1]["json_valid_rate"] and not examples[1]["schema_valid_rate"]
    assert examples[2]["exact_match_rate"] and examples[2]["schema_valid_rate"]
    assert not examples[3]["exact_match_rate"] and examples[3]["field_accuracy/priority"]
    assert not examples[3]["field_accuracy/slot_updates.destination"]
    r = aggregate(examples)
    assert r["n"] == 4
    m = r["metrics"]
    assert m["json_valid_rate"] == 0.75
    assert m["schema_valid_rate"] == 0.5
    assert m["exact_match_rate"] == 0.25
    assert m["field_accuracy/priority"] == 0.5
    assert m["field_accuracy/slot_updates.destination"] == 0.25
    assert m["field_accuracy/tool_requests[0].tool"] == 0.5


def test_structured_field_accuracy_is_type_strict_and_missing_is_wrong():
    gold = {"n": 1, "flag": True, "items": [{"x": "a"}, {"x": "b"}]}
    s = score_example("structured", None, {"n": 1.0, "flag": 1, "items": [{"x": "a"}]}, gold)
    assert s == {"json_valid_rate": True, "exact_match_rate": False, "field_accuracy/n": False,
                 "field_accuracy/flag": False, "field_accuracy/items[0].x": True, "field_accuracy/items[1].x": False}
    # key order does not matter for exact match; no gold -> no exact/field metrics
    assert score_example("structured", None, '{"b": 2, "a": 1}', {"a": 1, "b": 2})["exact_match_rate"]
    assert score_example("structured", SCHEMA, '{"priority": "low"}', None) == {"json_valid_rate": True,
                                                                                 "schema_valid_rate": True}


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown role kind"):
        score_example("chat", None, "{}", None)


# --- tool calls ----------------------------------------------------------------------------------
def call(name, **arguments):
    return json.dumps({"name": name, "arguments": arguments})


def test_tool_call_rates_with_contract():
    gold = {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}
    preds = [
        "get_weather(city='Paris')",  # not JSON
        call("get_news", city="Paris"),  # unknown tool
        call("book_flight", to="Paris"),  # valid call, wrong name
        call("get_weather", city="Paris", days="2"),  # right name, schema-invalid args
        call("get_weather", city="Paris", days=2),  # exact
        json.dumps({"name": "get_weather", "arguments": {"days": 2, "city": "Paris"}, "id": "c1"}),  # extra key
    ]
    ex = [score_example("tool_call", tool_contract(), p, gold) for p in preds]
    m = aggregate(ex)["metrics"]
    assert m["json_valid_rate"] == pytest.approx(5 / 6)
    assert m["valid_call_rate"] == pytest.approx(3 / 6)
    assert m["name_match_rate"] == pytest.approx(2 / 6)
    assert m["args_exact_rate"] == pytest.approx(1 / 6)
    assert m["schema_valid_rate"] == pytest.approx(2 / 6)
    assert "bfcl_ast_rate" not in m
    # the per-row `tools` override the contract's catalog
    s = score_example("tool_call", tool_contract(), call("other", q=1), {"name": "other", "arguments": {"q": 1}},
                      tools=[{"type": "function", "function": {"name": "other", "parameters": {
                          "type": "object", "properties": {"q": {"type": "integer"}}}}}])
    assert s["valid_call_rate"] and s["schema_valid_rate"] and s["args_exact_rate"]


def test_tool_call_with_bfcl_ground_truth():
    fn = {"name": "math.hypot", "parameters": {"type": "dict", "properties": {
        "x": {"type": "integer"}, "y": {"type": "integer"}, "unit": {"type": "string"}}, "required": ["x", "y"]}}
    truth = [{"math.hypot": {"x": [4], "y": [5], "unit": ["cm", ""]}}]
    from slm_platform.data.sources import bfcl_function_to_tool

    tools = [bfcl_function_to_tool(fn)]
    cases = {
        call("math_hypot", x=4, y=5): (True, True, True, True, True),
        call("math_hypot", x=4, y=5, unit="CM "): (True, True, True, True, False),  # AST normalises; strict not
        call("math_hypot", x=4, y=6): (True, True, True, False, False),
        call("math_hypot", x=4): (True, True, False, False, False),  # schema: y required
        call("hypot", x=4, y=5): (False, False, False, False, False),
    }
    for pred, (valid, name, schema, ast, exact) in cases.items():
        for t in (tools, [fn]):  # converted tools or the original BFCL function
            s = score_example("tool_call", None, pred, None, bfcl_ground_truth=truth, tools=t)
            got = (s["valid_call_rate"], s["name_match_rate"], s["schema_valid_rate"], s["bfcl_ast_rate"],
                   s["args_exact_rate"])
            assert got == (valid, name, schema, ast, exact), pred


def test_tool_call_no_catalog_checks_shape_only():
    s = score_example("tool_call", None, call("anything", a=1), {"name": "anything", "arguments": {"a": 1}})
    assert s == {"json_valid_rate": True, "valid_call_rate": True, "name_match_rate": True, "args_exact_rate": True,
                 "exact_match_rate": True}
    s = score_example("tool_call", None, '{"name": "x", "arguments": "{}"}', None)
    assert s == {"json_valid_rate": True, "valid_call_rate": False}


# --- aggregation by slice ------------------------------------------------------------------------
def test_aggregate_by_slice_and_cluster():
    examples = [
        {"exact_match_rate": True, "slice": {"lang": "en"}, "cluster": 0, "latency_ms": 100, "prompt_tokens": 10,
         "completion_tokens": 5},
        {"exact_match_rate": False, "slice": {"lang": "en"}, "cluster": 1, "latency_ms": 200, "prompt_tokens": 10,
         "completion_tokens": 5},
        {"exact_match_rate": True, "meta": {"slice": {"lang": "fr"}, "cluster": 1}, "latency_ms": 300},
        {"exact_match_rate": True, "json_valid_rate": True, "slice": {}, "cluster": None},
    ]
    r = aggregate(examples, slice_keys=["lang", "cluster"], pricing={"input_per_1m": 1.0, "output_per_1m": 2.0})
    assert r["n"] == 4
    assert r["metrics"] == {"exact_match_rate": 0.75, "json_valid_rate": 1.0}
    assert r["support"] == {"exact_match_rate": 4, "json_valid_rate": 1}
    lang = r["by_slice"]["lang"]
    assert lang["en"] == {"n": 2, "metrics": {"exact_match_rate": 0.5}}
    assert lang["fr"] == {"n": 1, "metrics": {"exact_match_rate": 1.0}}
    assert lang["<missing>"] == {"n": 1, "metrics": {"exact_match_rate": 1.0, "json_valid_rate": 1.0}}
    cl = r["by_slice"]["cluster"]
    assert cl["0"]["n"] == 1 and cl["1"] == {"n": 2, "metrics": {"exact_match_rate": 0.5}}
    assert r["latency_ms"] == {"p50": 200.0, "p95": 290.0, "mean": 200.0}
    assert r["tokens"] == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    assert r["cost"] == pytest.approx(20 / 1e6 + 20 / 1e6)
    json.dumps(r, allow_nan=False)  # plain JSON


def test_aggregate_empty():
    assert aggregate([], slice_keys=["lang"]) == {"n": 0, "metrics": {}, "support": {}, "by_slice": {"lang": {}}}


def test_aggregate_100k_is_fast():
    rng = random.Random(0)
    examples = [{"json_valid_rate": rng.random() < 0.9, "schema_valid_rate": rng.random() < 0.8,
                 "exact_match_rate": rng.random() < 0.5, "field_accuracy/a": rng.random() < 0.7,
                 "field_accuracy/b.c": rng.random() < 0.6, "slice": {"lang": rng.choice("abcde")},
                 "cluster": rng.randrange(20), "latency_ms": rng.random() * 100} for _ in range(100_000)]
    elapsed = []
    for _ in range(2):  # best of two: a busy machine should not fail the test
        t = time.perf_counter()
        r = aggregate(examples, slice_keys=["lang", "cluster"])
        elapsed.append(time.perf_counter() - t)
    assert min(elapsed) < 2.0, elapsed
    assert r["n"] == 100_000 and len(r["by_slice"]["cluster"]) == 20
    assert r["metrics"]["json_valid_rate"] == pytest.approx(np.mean([e["json_valid_rate"] for e in examples]))


# --- latency, tokens, cost -----------------------------------------------------------------------
def test_latency_summary_linear_interpolation():
    s = latency_summary(range(1, 101))  # 1..100
    assert s == {"p50": 50.5, "p95": pytest.approx(95.05), "mean": 50.5}
    assert latency_summary([10, None, 30]) == {"p50": 20.0, "p95": 29.0, "mean": 20.0}
    assert latency_summary([]) == {"p50": None, "p95": None, "mean": None}
    assert latency_summary([7]) == {"p50": 7.0, "p95": 7.0, "mean": 7.0}


def test_tokens_and_cost():
    assert token_totals([{"prompt_tokens": 3}, {"completion_tokens": 4, "prompt_tokens": None}]) == {
        "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert cost(2_000_000, 500_000, {"input_per_1m": 0.5, "output_per_1m": 2.0}) == pytest.approx(2.0)
    from slm_platform.config.models import Pricing

    assert cost(1_000_000, 1_000_000, Pricing(input_per_1m=1, output_per_1m=3)) == pytest.approx(4.0)


# --- compare, slices, agreement ------------------------------------------------------------------
def test_compare():
    cand, ref = {"metrics": {"acc": 0.90, "latency": 120.0}}, {"acc": 0.92, "latency": 100.0}
    passed, delta = compare(cand, ref, "acc", 0.02)
    assert passed and delta == pytest.approx(-0.02)  # exactly at tolerance passes
    assert compare(cand, ref, "acc", 0.01) == (False, pytest.approx(-0.02))
    assert compare({"acc": 0.95}, ref, "acc", 0.0) == (True, pytest.approx(0.03))
    assert compare(cand, ref, "latency", 10.0, higher_is_better=False)[0] is False
    assert compare(cand, ref, "latency", 25.0, higher_is_better=False)[0] is True
    p, d = compare(cand, {}, "acc", 0.0)
    assert p and math.isnan(d)  # nothing to regress from
    p, d = compare({}, ref, "acc", 0.0)
    assert not p and math.isnan(d)
    assert compare({"latency_ms": {"p95": 80}}, {"latency_ms": {"p95": 100}}, "latency_ms.p95", 0,
                   higher_is_better=False) == (True, -20.0)


def _report(groups):
    return {"by_slice": {"lang": {k: {"n": n, "metrics": {"acc": v}} for k, (n, v) in groups.items()}}}


def test_slice_regressions():
    ref = _report({"en": (100, 0.9), "fr": (100, 0.8), "de": (5, 0.9), "es": (50, 0.7)})
    cand = _report({"en": (100, 0.89), "fr": (100, 0.6), "de": (5, 0.1), "es": (50, 0.5), "it": (100, 0.1)})
    out = slice_regressions(cand, ref, "acc", 0.05, min_n=20)
    assert [(r["slice"], r["n"]) for r in out] == [("fr", 100), ("es", 50)]  # de too small, it has no reference
    assert out[0] == {"key": "lang", "slice": "fr", "n": 100, "reference_n": 100, "candidate": 0.6,
                      "reference": 0.8, "delta": pytest.approx(-0.2)}
    # the same from one key's table, and with per-key tolerances
    assert [r["slice"] for r in slice_regressions(cand["by_slice"]["lang"], ref["by_slice"]["lang"], "acc", 0.05,
                                                  min_n=20)] == ["fr", "es"]
    assert slice_regressions(cand, ref, "acc", {"lang": 0.25}, min_n=20) == []
    assert slice_regressions(cand, ref, "acc", {"other": 0.0}, min_n=20) == []
    assert [r["slice"] for r in slice_regressions(cand, ref, "acc", 0.05, min_n=1)] == ["de", "fr", "es"]


def test_slice_regressions_from_aggregate_reports():
    def exs(rate_en, rate_fr, n=40):
        return ([{"exact_match_rate": i < rate_en * n, "slice": {"lang": "en"}} for i in range(n)]
                + [{"exact_match_rate": i < rate_fr * n, "slice": {"lang": "fr"}} for i in range(n)])

    ref = aggregate(exs(0.9, 0.9), slice_keys=["lang"])
    cand = aggregate(exs(0.9, 0.5), slice_keys=["lang"])
    out = slice_regressions(cand, ref, "exact_match_rate", 0.05, min_n=30)
    assert [(r["key"], r["slice"], r["n"]) for r in out] == [("lang", "fr", 40)]
    assert out[0]["delta"] == pytest.approx(-0.4)


def test_agreement_rate():
    pairs = [
        ({"a": 1, "b": 2}, '{"b": 2, "a": 1}'),  # same object, different key order / text
        ({"a": 1}, {"a": 1.0}),  # canonical JSON differs (1 vs 1.0)
        ("not json", "not json"),  # failures never agree
        ('```json\n{"x": [1]}\n```', {"x": [1]}),
    ]
    assert agreement_rate(pairs) == 0.5
    assert math.isnan(agreement_rate([]))


# --- drift ---------------------------------------------------------------------------------------
def test_js_divergence():
    assert distribution_distance({"a": 5, "b": 5}, {"a": 50, "b": 50}) == 0.0
    assert distribution_distance({"a": 3}, {"b": 7}) == pytest.approx(1.0)
    assert distribution_distance({"a": 3}, {"b": 7}, eps=1e-6) == pytest.approx(1.0, abs=1e-3)
    d = distribution_distance({"a": 1, "b": 1}, {"a": 1, "c": 1})
    assert 0 < d < 1 and d == pytest.approx(0.5)  # half the mass moved to a disjoint category
    assert distribution_distance({"a": 1, "b": 3}, {"a": 3, "b": 1}) == pytest.approx(
        distribution_distance({"a": 3, "b": 1}, {"a": 1, "b": 3}))  # symmetric
    with pytest.raises(ValueError):
        distribution_distance({}, {"a": 1})
    with pytest.raises(ValueError):
        distribution_distance({"a": -1}, {"a": 1})


def test_psi():
    assert psi({"a": 10, "b": 10}, {"a": 1, "b": 1}) == pytest.approx(0.0)
    # hand-computed: p = (0.5, 0.5), q = (0.8, 0.2)
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi({"a": 5, "b": 5}, {"a": 8, "b": 2}) == pytest.approx(expected, rel=1e-3)
    # a category absent on one side stays finite thanks to smoothing
    v = psi({"a": 10}, {"a": 5, "b": 5})
    assert math.isfinite(v) and v > 0.25
    assert psi({"a": 9, "b": 1}, {"a": 1, "b": 9}) > psi({"a": 6, "b": 4}, {"a": 4, "b": 6}) > 0
