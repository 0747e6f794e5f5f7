"""Seal-Tools as BFCL-shaped Turns, and the split by function that holds whole APIs out of training."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from slm_platform.data.bfcl import bfcl_contract, load_bfcl, shared_functions, split_by_function
from slm_platform.data.seal_tools import load_seal_tools
from slm_platform.evals.bfcl_ast import ast_match

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"
SEAL = EXTERNAL / "seal-tools"
BFCL = EXTERNAL / "bfcl"

# read in place beside the checkout (never copied into the repo); a clone elsewhere skips, as the BFCL tests do
pytestmark = pytest.mark.skipif(not (SEAL / "test_in_domain.jsonl").is_file() or not BFCL.is_dir(),
                                reason=f"Seal-Tools / BFCL data not found under {EXTERNAL}")


def _seal(**kw):
    return load_seal_tools(SEAL / "test_in_domain.jsonl", SEAL / "tool_test_in_domain_subset.jsonl", **kw)


def test_every_seal_tools_row_is_kept_or_rejected_with_a_reason():
    turns, rejected = _seal()
    assert len(turns) + len(rejected) == 700
    assert len(turns) == 200  # the single-call rows; every gold call fits its tool once numbers are numbers
    assert {r.reason.split(";")[0] for r in rejected} == {f"needs {n} calls" for n in range(2, 7)}
    for turn in turns:
        tools = turn["input"]["tools"]
        assert len(tools) == 4 and turn["labels"]["gold"]["name"] in [t["function"]["name"] for t in tools]
        gold = turn["labels"]["gold"]
        schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == gold["name"])
        jsonschema.validate(gold["arguments"], schema)  # "85" for an int became 85
        assert ast_match(gold, turn["meta"]["bfcl"]["ground_truth"], [t["function"] for t in tools]) == (True, "")
        assert bfcl_contract(turn).tools  # the per-row contract builds, as for BFCL rows


def test_numbers_written_as_strings_are_converted_and_other_mismatches_rejected(tmp_path):
    tools = tmp_path / "tools.jsonl"
    tools.write_text("\n".join(json.dumps({"api_name": name, "api_description": "d", "field": "f",
                                           "parameters": {"n": {"type": "int", "description": "a count"}},
                                           "required": ["n"]}) for name in ("countA", "countB")) + "\n")
    queries = tmp_path / "q.jsonl"
    rows = [{"id": "ok", "query": "q", "calling": [{"api": "countA", "parameters": {"n": "85"}}]},
            {"id": "word", "query": "q", "calling": [{"api": "countA", "parameters": {"n": "many"}}]},
            {"id": "extra", "query": "q", "calling": [{"api": "countA", "parameters": {"n": 1, "m": 2}}]},
            {"id": "missing", "query": "q", "calling": [{"api": "countA", "parameters": {}}]},
            {"id": "unknown", "query": "q", "calling": [{"api": "nope", "parameters": {}}]}]
    queries.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    turns, rejected = load_seal_tools(queries, tools, distractors=1)
    assert [t["labels"]["gold"]["arguments"] for t in turns] == [{"n": 85}]
    assert [(r.location, r.reason) for r in rejected] == [
        ("q.jsonl:2", "argument 'n' is not of type int, as countA declares"),
        ("q.jsonl:3", "argument 'm' is not a parameter of countA"),
        ("q.jsonl:4", "required argument 'n' of countA is missing"),
        ("q.jsonl:5", "the called API is not in the tool file")]


def test_distractors_come_only_from_the_gold_tools_group():
    def side(name: str) -> str:
        return "a" if name < "m" else "b"

    turns, _ = _seal(group=side)
    for turn in turns:
        names = [t["function"]["name"] for t in turn["input"]["tools"]]
        assert {side(n) for n in names} == {side(turn["labels"]["gold"]["name"])}


def test_split_by_function_holds_whole_functions_out_of_training():
    turns = []
    for name in ("BFCL_v4_simple_python.json", "BFCL_v4_multiple.json"):
        turns += load_bfcl(BFCL / name, BFCL / "possible_answer" / name)[0]
    train, val, test = split_by_function(turns, 0.3)
    assert len(train) + len(val) + len(test) == len(turns)
    assert 0.25 * len(turns) <= len(test) <= 0.3 * len(turns)
    assert {t["meta"]["slice"]["category"] for t in test} == {"simple_python", "multiple"}
    assert shared_functions(train + val, test) == []
    # the check can fail: a split by rows alone offers eval functions in training
    by_row = turns[::3], [t for i, t in enumerate(turns) if i % 3]
    assert len(shared_functions(*by_row)) > 50
