"""slm_platform.evals.bfcl_ast: BFCL's AST match, rule by rule, then on the real BFCL files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from slm_platform.data.sources import bfcl_function_to_tool
from slm_platform.evals.bfcl_ast import ast_match, normalize_string

BFCL = Path(__file__).resolve().parents[2] / "shared" / "external" / "bfcl"

# one BFCL-style function exercising every type the files use
FN = {
    "name": "trip.plan",
    "description": "Plan a trip.",
    "parameters": {
        "type": "dict",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "budget": {"type": "float"},
            "pets": {"type": "boolean"},
            "stops": {"type": "array", "items": {"type": "string"}},
            "scores": {"type": "array", "items": {"type": "integer"}},
            "point": {"type": "tuple", "items": {"type": "float"}},
            "prefs": {"type": "dict", "properties": {"seat": {"type": "string"}, "meal": {"type": "string"}}},
            "legs": {"type": "array", "items": {"type": "dict", "properties": {"from": {"type": "string"},
                                                                               "to": {"type": "string"}}}},
            "note": {"type": "any"},
            "extra": {"type": "string"},
        },
        "required": ["city", "days"],
    },
}
OTHER = {"name": "weather.get", "parameters": {"type": "dict", "properties": {"city": {"type": "string"}},
                                               "required": ["city"]}}
GT = [{"trip.plan": {
    "city": ["New York, NY", "NYC"],
    "days": [3],
    "budget": [1500.0, ""],
    "pets": [False, ""],
    "stops": [["Boston", "Philadelphia"], ""],
    "scores": [[1, 2, 3], ""],
    "point": [[1.5, 2.5], ""],
    "prefs": [{"seat": ["window", ""], "meal": ["veg"]}, ""],
    "legs": [[{"from": ["NYC"], "to": ["Boston"]}, {"from": ["Boston"], "to": ["Philly", "Philadelphia"]}], ""],
    "note": ["hello", ""],
}}]
FUNCS = [FN, OTHER]


def call(**arguments):
    return {"name": "trip.plan", "arguments": arguments}


def check(c, strict=False, funcs=FUNCS, gt=GT):
    return ast_match(c, gt, funcs, strict=strict)


BASE = call(city="NYC", days=3)


@pytest.fixture(params=["bfcl", "openai"])
def funcs(request):
    """Every rule holds with the original BFCL functions and with the converted OpenAI tools."""
    return FUNCS if request.param == "bfcl" else [bfcl_function_to_tool(f) for f in FUNCS]


def test_base_call_passes(funcs):
    assert check(BASE, funcs=funcs) == (True, "")
    assert check(BASE, strict=True, funcs=funcs) == (True, "")


# rule 1: decode
@pytest.mark.parametrize("bad", [None, "trip.plan(city='NYC')", {"name": "trip.plan"},
                                 {"name": "trip.plan", "arguments": "{\"city\": \"NYC\"}"},
                                 {"name": 3, "arguments": {}},
                                 {"name": "trip.plan", "arguments": {"city": "NYC", "days": 3}, "id": "x"}])
def test_rule1_decode_failures(bad):
    ok, why = check(bad)
    assert not ok and why.startswith("decode")


# rule 2: call count
def test_rule2_call_count():
    assert check([BASE])[0]
    ok, why = check([BASE, BASE])
    assert not ok and "call count" in why
    ok, why = check([])
    assert not ok and "call count" in why


def test_rule10_parallel_any_order():
    gt2 = GT + [{"weather.get": {"city": ["Boston"]}}]
    w = {"name": "weather.get", "arguments": {"city": "boston"}}
    assert check([w, BASE], gt=gt2)[0]
    assert check([BASE, w], gt=gt2)[0]
    assert not check([BASE, BASE], gt=gt2)[0]


# rule 3: the gold's function is the one checked; a distractor fails
def test_rule3_distractor_fails(funcs):
    ok, why = check({"name": "weather.get", "arguments": {"city": "NYC"}}, funcs=funcs)
    assert not ok and "function name" in why
    ok, why = check(BASE, funcs=[OTHER])
    assert not ok and "not among the offered functions" in why


# rule 4: names, with the '.' -> '_' convention on both sides, case-sensitive otherwise
def test_rule4_name(funcs):
    assert check({"name": "trip_plan", "arguments": BASE["arguments"]}, funcs=funcs)[0]
    assert check({"name": "trip.plan", "arguments": BASE["arguments"]}, funcs=funcs)[0]
    ok, why = check({"name": "Trip.plan", "arguments": BASE["arguments"]}, funcs=funcs)
    assert not ok and "function name" in why


# rule 5: required parameters
def test_rule5_required(funcs):
    ok, why = check(call(city="NYC"), funcs=funcs)
    assert not ok and why == "missing required parameter 'days'"


# rule 6: no extra parameters (undeclared, or declared but not in the gold)
def test_rule6_extra(funcs):
    ok, why = check(call(city="NYC", days=3, color="red"), funcs=funcs)
    assert not ok and "not declared" in why
    ok, why = check(call(city="NYC", days=3, extra="x"), funcs=funcs)
    assert not ok and "not in the ground truth" in why


# rule 7: types (Python semantics), int->float leniency, variable escape, array items
def test_rule7_types(funcs):
    assert not check(call(city="NYC", days=True), funcs=funcs)[0]  # bool is not int
    assert not check(call(city="NYC", days="3"), funcs=funcs)[0]
    ok, why = check(call(city="NYC", days=3.0), funcs=funcs)
    assert not ok and "type" in why
    assert check(call(city="NYC", days=3, budget=1500), funcs=funcs)[0]  # int -> float
    assert check(call(city="NYC", days=3, budget=1500.0), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, budget="1500"), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, pets=0), funcs=funcs)[0]
    assert check(call(city="NYC", days=3, point=[1.5, 2.5]), funcs=funcs)[0]  # tuple -> list
    ok, why = check(call(city="NYC", days=3, stops=["Boston", 2]), funcs=funcs)
    assert not ok and "array items" in why
    assert check(call(city="NYC", days=3, note="Hello"), funcs=funcs)[0]  # any -> str
    assert not check(call(city="NYC", days=3, note=5), funcs=funcs)[0]


def test_rule7_variable_escape(funcs):
    # the schema says string, the gold says boolean (BFCL simple_python_307): a boolean passes
    fn = {"name": "g", "parameters": {"type": "dict", "properties": {"venue": {"type": "string"}}}}
    gt = [{"g": {"venue": ["", True]}}]
    fs = [fn] if funcs is FUNCS else [bfcl_function_to_tool(fn)]
    assert ast_match({"name": "g", "arguments": {"venue": True}}, gt, fs)[0]
    assert not ast_match({"name": "g", "arguments": {"venue": 1}}, gt, fs)[0]
    # integer schema, gold holds a float: a float is checked as-is
    fn2 = {"name": "h", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}}}
    assert ast_match({"name": "h", "arguments": {"x": 2.5}}, [{"h": {"x": [2.5]}}], [fn2])[0]


# rule 8: values
def test_normalize_string():
    assert normalize_string("New York, NY") == "newyorkny"
    assert normalize_string("2024-04-01") == normalize_string("20240401")
    assert normalize_string("it's") == 'it"s'
    assert normalize_string("a_b*c^d/e.f") == "abcdef"


def test_rule8_strings(funcs):
    assert check(call(city="new york ny", days=3), funcs=funcs)[0]
    assert check(call(city="N.Y.C.", days=3), funcs=funcs)[0]
    assert not check(call(city="New York!", days=3), funcs=funcs)[0]  # other punctuation matters
    assert not check(call(city="NY, New York", days=3), funcs=funcs)[0]  # word order matters
    d = {"name": "d", "parameters": {"type": "dict", "properties": {"date": {"type": "string"}}}}
    gt = [{"d": {"date": ["2024-04-01"]}}]
    assert ast_match({"name": "d", "arguments": {"date": "20240401"}}, gt, [d])[0]
    assert not ast_match({"name": "d", "arguments": {"date": "04/01/2024"}}, gt, [d])[0]


def test_rule8_lists_ordered(funcs):
    assert check(call(city="NYC", days=3, stops=["boston", "PHILADELPHIA"]), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, stops=["Philadelphia", "Boston"]), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, stops=["Boston"]), funcs=funcs)[0]
    assert check(call(city="NYC", days=3, scores=[1, 2, 3]), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, scores=[1, 2, 4]), funcs=funcs)[0]


def test_rule8_flat_dict(funcs):
    assert check(call(city="NYC", days=3, prefs={"seat": "Window", "meal": "veg"}), funcs=funcs)[0]
    assert check(call(city="NYC", days=3, prefs={"meal": "veg"}), funcs=funcs)[0]  # seat may be omitted
    ok, why = check(call(city="NYC", days=3, prefs={"seat": "window"}), funcs=funcs)
    assert not ok and "'meal' is missing" in why
    assert not check(call(city="NYC", days=3, prefs={"meal": "veg", "wifi": "yes"}), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, prefs={"meal": "vegan"}), funcs=funcs)[0]
    # alternative acceptable dicts
    gt = copy.deepcopy(GT)
    gt[0]["trip.plan"]["prefs"] = [{"meal": ["veg"]}, {"meal": ["fish"], "seat": ["aisle"]}]
    assert check(call(city="NYC", days=3, prefs={"meal": "fish", "seat": "aisle"}), gt=gt, funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, prefs={"meal": "fish"}), gt=gt, funcs=funcs)[0]


def test_rule8_list_of_dicts(funcs):
    legs = [{"from": "NYC", "to": "Boston"}, {"from": "boston", "to": "philly"}]
    assert check(call(city="NYC", days=3, legs=legs), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, legs=legs[::-1]), funcs=funcs)[0]  # pairwise, in order
    assert not check(call(city="NYC", days=3, legs=legs[:1]), funcs=funcs)[0]  # lengths must match
    bad = [legs[0], {"from": "Boston", "to": "Chicago"}]
    assert not check(call(city="NYC", days=3, legs=bad), funcs=funcs)[0]


def test_rule8_numbers_bools_no_tolerance(funcs):
    assert check(call(city="NYC", days=3, budget=1500.0, pets=False), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, pets=True), funcs=funcs)[0]
    assert not check(call(city="NYC", days=4), funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, budget=1500.0001), funcs=funcs)[0]
    n = {"name": "n", "parameters": {"type": "dict", "properties": {"x": {"type": "float"},
                                                                      "y": {"type": "string"}}}}
    assert ast_match({"name": "n", "arguments": {"x": 3.14159}}, [{"n": {"x": [3.14159]}}], [n])[0]
    assert not ast_match({"name": "n", "arguments": {"x": 3.14159}}, [{"n": {"x": [3.1416]}}], [n])[0]
    # null by membership (variable escape: the gold's type is None)
    assert ast_match({"name": "n", "arguments": {"y": None}}, [{"n": {"y": [None, ""]}}], [n])[0]


# rule 9: omitted parameters need "" in their list
def test_rule9_omission(funcs):
    gt = copy.deepcopy(GT)
    gt[0]["trip.plan"]["budget"] = [1500.0]  # no "": must be given
    ok, why = check(BASE, gt=gt, funcs=funcs)
    assert not ok and "'budget' omitted" in why
    assert check(call(city="NYC", days=3, budget=1500), gt=gt, funcs=funcs)[0]
    # a list holding only "" means the parameter must not be given
    gt[0]["trip.plan"]["note"] = [""]
    assert not check(call(city="NYC", days=3, budget=1500, note="hello"), gt=gt, funcs=funcs)[0]


# strict: the args_exact variant
def test_strict_variant(funcs):
    assert check(call(city="NYC", days=3, budget=1500.0, stops=["Boston", "Philadelphia"]), strict=True,
                 funcs=funcs)[0]
    assert not check(call(city="nyc", days=3), strict=True, funcs=funcs)[0]  # no normalisation
    assert not check(call(city="NYC", days=3, budget=1500), strict=True, funcs=funcs)[0]  # no int->float
    assert not check(call(city="NYC", days=3, stops=["boston", "Philadelphia"]), strict=True, funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, prefs={"meal": "Veg"}), strict=True, funcs=funcs)[0]
    assert check(call(city="NYC", days=3, prefs={"meal": "veg"}), strict=True, funcs=funcs)[0]
    assert not check(call(city="NYC", days=3, legs=[{"from": "nyc", "to": "Boston"},
                                                    {"from": "Boston", "to": "Philly"}]), strict=True, funcs=funcs)[0]
    assert not check(call(city="NYC"), strict=True, funcs=funcs)[0]  # omission still needs ""
    f = {"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "float"}}}}
    assert not ast_match({"name": "f", "arguments": {"x": 5.0}}, [{"f": {"x": [5]}}], [f], strict=True)[0]
    assert ast_match({"name": "f", "arguments": {"x": 5.0}}, [{"f": {"x": [5]}}], [f])[0]  # Python 5.0 == 5


# --- the real BFCL files -------------------------------------------------------------------------
def _rows(category):
    q = BFCL / f"BFCL_v4_{category}.json"
    a = BFCL / "possible_answer" / f"BFCL_v4_{category}.json"
    if not q.is_file() or not a.is_file():
        pytest.skip(f"BFCL data not found under {BFCL}")
    with open(a, encoding="utf-8") as fh:
        answers = {r["id"]: r for r in map(json.loads, filter(str.strip, fh))}
    with open(q, encoding="utf-8") as fh:
        return [(row, answers[row["id"]]["ground_truth"]) for row in map(json.loads, filter(str.strip, fh))]


def _concrete(value):
    """A concrete value from BFCL's acceptable-value form: first choice per key, omitting keys with ""."""
    if isinstance(value, dict):
        return {k: _concrete(c[0]) for k, c in value.items() if "" not in c}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [_concrete(v) for v in value]
    return value


def perfect_call(gt, *, omit=True):
    ((name, params),) = gt[0].items()
    args = {}
    for p, choices in params.items():
        if omit and "" in choices:
            continue
        pick = next((c for c in choices if c != ""), None)
        if pick is not None:  # a list holding only "" means: must not be given
            args[p] = _concrete(pick)
    return {"name": name, "arguments": args}


@pytest.fixture(scope="module")
def real_rows():
    return [("simple_python", *r) for r in _rows("simple_python")] + [("multiple", *r) for r in _rows("multiple")]


def test_real_data_perfect_calls_pass(real_rows):
    exceptions = {}
    for cat, row, gt in real_rows:
        tools = [bfcl_function_to_tool(f) for f in row["function"]]
        c = perfect_call(gt)
        ok, why = ast_match(c, gt, row["function"])
        ok_converted, _ = ast_match(c, gt, tools)
        assert ok == ok_converted, row["id"]  # converted tools give the same verdict
        ok_strict, _ = ast_match(c, gt, row["function"], strict=True)
        assert ok_strict == ok, row["id"]  # the first acceptable values are exact
        if not ok:
            exceptions[row["id"]] = why
    rate = 1 - len(exceptions) / len(real_rows)
    print(f"\nperfect-call AST pass: {len(real_rows) - len(exceptions)}/{len(real_rows)} ({rate:.2%}); "
          f"exceptions: {exceptions}")
    assert rate >= 0.99
    # the known exceptions: the gold lists "" for a parameter the schema requires
    assert set(exceptions) <= {"simple_python_17", "simple_python_200"}


def test_real_data_first_values_without_omission(real_rows):
    """Every parameter given with its first non-empty acceptable value: AST passes everywhere,
    but simple_python_307's `venue: true` (a boolean against a string schema, accepted by the
    variable escape) fails JSON Schema validation of the converted tool."""
    failed, schema_invalid = [], []
    for _, row, gt in real_rows:
        c = perfect_call(gt, omit=False)
        if not ast_match(c, gt, row["function"])[0]:
            failed.append(row["id"])
        tool = next(t for t in (bfcl_function_to_tool(f) for f in row["function"])
                    if t["function"]["name"] == c["name"].replace(".", "_"))
        if not Draft202012Validator(tool["function"]["parameters"]).is_valid(c["arguments"]):
            schema_invalid.append(row["id"])
    print(f"\nfirst-value calls: AST failures {failed}; schema-invalid {schema_invalid}")
    assert len(failed) / len(real_rows) <= 0.01
    assert "simple_python_307" in schema_invalid and len(schema_invalid) <= 3


def test_real_data_mangled_name_fails_everywhere(real_rows):
    for _, row, gt in real_rows:
        c = perfect_call(gt)
        c["name"] = c["name"] + "_v2"
        ok, why = ast_match(c, gt, row["function"])
        assert not ok and "function name" in why, row["id"]


def test_real_data_dropped_required_param_fails_everywhere(real_rows):
    checked = 0
    for _, row, gt in real_rows:
        ((gname, _),) = gt[0].items()
        fn = next(f for f in row["function"] if f["name"] == gname)
        required = fn["parameters"].get("required") or []
        if not required:
            continue
        full = perfect_call(gt, omit=False)
        for r in required:
            c = copy.deepcopy(full)
            c["arguments"].pop(r, None)
            ok, why = ast_match(c, gt, row["function"])
            assert not ok and f"missing required parameter {r!r}" == why, row["id"]
            checked += 1
    assert checked > 1000


def test_real_data_string_respelling_passes_ast_fails_strict(real_rows):
    altered_rows = 0
    for _, row, gt in real_rows:
        c = perfect_call(gt)
        key = next((k for k, v in c["arguments"].items() if isinstance(v, str) and v), None)
        if key is None:
            continue
        c["arguments"][key] = " " + c["arguments"][key].swapcase() + " "
        ok, why = ast_match(c, gt, row["function"])
        ok_strict, why_strict = ast_match(c, gt, row["function"], strict=True)
        if row["id"] in ("simple_python_17", "simple_python_200"):
            continue  # fails anyway (required parameter the gold lets be omitted)
        assert ok, (row["id"], why)
        assert not ok_strict and "not one of the acceptable values" in why_strict, row["id"]
        altered_rows += 1
    assert altered_rows > 400
