"""slm_platform.data.sources: every capture/seed format mapped into the Turn record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from pii_cases import BROKEN_LINES, CHAT_CASES, LANGFUSE_CASES, PII, TURN_CASES, leaks, pii_turn  # tests/pii_cases.py
from slm_platform.data.sources import Rejected, bfcl_function_to_tool, bfcl_gold, read_source
from slm_platform.records import Turn, turn_id

FIX = Path(__file__).parent / "fixtures" / "sources"
BFCL = Path(__file__).resolve().parents[2] / "shared" / "external" / "bfcl"


def split(items):
    turns = [i for i in items if not isinstance(i, Rejected)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    return turns, rejected


def by_location(rejected):
    return {r.location: r for r in rejected}


def assert_valid_turns(turns):
    for t in turns:
        Turn.model_validate(t)  # every yielded dict is a valid Turn


# --- jsonl ---------------------------------------------------------------------------------------
def test_jsonl_counts_and_good_rows():
    turns, rejected = split(list(read_source(FIX / "turns.jsonl", "jsonl", domain="support", source="seed",
                                             role="triage")))
    assert len(turns) == 4
    assert len(rejected) == 12
    assert_valid_turns(turns)
    assert all(t["meta"]["source"] == "seed" for t in turns)

    full, minimal, router, teacher = turns
    assert full["id"] == "t-1" and full["labels"] == {"gold": {"category": "billing"}}
    assert full["label_source"] == "gold"
    assert full["meta"]["captured_at"] == "2024-05-01T00:00:00Z" and full["meta"]["slice"] == {"lang": "en"}

    # domain, role and id are filled in; the id is content-derived
    assert minimal["domain"] == "support" and minimal["role"] == "triage"
    assert minimal["id"] == turn_id("support", "triage", minimal["input"])
    assert minimal["output"] is None and minimal["labels"] == {}

    # the row's own role wins; an output without labels is kept and no label is invented
    assert router["role"] == "router"
    assert router["output"] == {"name": "track_parcel", "arguments": {"parcel_id": "12"}}
    assert router["labels"] == {}

    # a null label is the same as an absent one
    assert teacher["labels"] == {"teacher": {"category": "other"}}


def test_jsonl_rejections_name_line_and_expectation():
    items = list(read_source(FIX / "turns.jsonl", "jsonl", domain="support", source="seed", role="triage"))
    rej = by_location(split(items)[1])
    assert sorted(rej, key=lambda loc: int(loc.split(":")[1])) == [f"turns.jsonl:{n}" for n in range(5, 17)]
    assert all(r.source == "seed" for r in rej.values())

    assert rej["turns.jsonl:5"].reason.startswith("line is not valid JSON (Expecting ',' delimiter at col ")
    assert rej["turns.jsonl:5"].raw.startswith('{"id": "t-5"')
    assert rej["turns.jsonl:6"].reason == "line is a JSON array; expected an object (one Turn per line)"
    assert rej["turns.jsonl:7"].reason == "field 'input' missing; expected an object"
    assert rej["turns.jsonl:8"].reason == "field 'input' is string; expected an object"
    # the reasons name the field and what was expected; the value is in the (redacted) raw row only
    assert rej["turns.jsonl:9"].reason == "field 'domain' is not 'support' (the domain this source belongs to)"
    assert rej["turns.jsonl:10"].reason == ("unknown field 'human' in 'labels'; "
                                            "expected only gold, capture, teacher, oracle")
    assert rej["turns.jsonl:11"].reason == "field 'labels.gold' is string; expected an object"
    assert rej["turns.jsonl:12"].reason == "field 'output' is string; expected an object"
    assert "unknown field(s) 'prediction'" in rej["turns.jsonl:13"].reason
    assert rej["turns.jsonl:14"].reason == ("field 'label_source' is string; "
                                            "expected 'gold', 'capture', 'teacher' or 'oracle'")
    assert rej["turns.jsonl:15"].reason == "field 'meta.slice' is array; expected an object"
    assert rej["turns.jsonl:16"].reason == "field 'id' is number; expected a string"
    assert rej["turns.jsonl:9"].value["domain"] == "retail" and all(r.kind == "parse_error" for r in rej.values())
    for loc, value in (("turns.jsonl:9", "retail"), ("turns.jsonl:14", "human"), ("turns.jsonl:16", "16")):
        assert value not in rej[loc].reason


def test_jsonl_missing_role_without_source_role_is_rejected():
    turns, rejected = split(list(read_source(FIX / "turns.jsonl", "jsonl", domain="support", source="seed",
                                             role=None)))
    assert len(turns) == 3 and len(rejected) == 13
    reason = by_location(rejected)["turns.jsonl:2"].reason
    assert reason.startswith("field 'role' missing and the source names no role; expected a role id")


def test_jsonl_streams_and_never_raises_on_bad_bytes(tmp_path):
    f = tmp_path / "cap.jsonl"
    good = json.dumps({"role": "r", "input": {"q": 1}})
    f.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\r\n" + b'{"role": "r", "input": {"q": "\xff"}}\n'
                  + b'{"role": "r", "input": {"q": NaN}}\n' + b"[[[[" * 50_000 + b"\n" + good.encode())
    it = read_source(f, "jsonl", domain="d", source="s", role=None)
    assert isinstance(it, Iterator)
    first = next(it)  # the BOM and CRLF are tolerated
    assert first["input"] == {"q": 1}
    rest = list(it)
    assert [type(x).__name__ for x in rest] == ["Rejected", "Rejected", "Rejected", "dict"]
    assert rest[0].location == "cap.jsonl:2" and "not valid UTF-8" in rest[0].reason
    assert rest[1].reason == "line is not valid JSON (NaN is not valid JSON)"
    assert len(rest[2].raw) == 65536  # RAW_SCAN: cut to RAW_LIMIT only after redaction (pipeline.quarantine_row)


def test_folder_reads_json_and_jsonl_sorted_and_missing_path_raises(tmp_path):
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "b", "role": "r", "input": {}}) + "\n")
    (tmp_path / "a.json").write_text(json.dumps({"id": "a", "role": "r", "input": {}}) + "\n")
    (tmp_path / "notes.txt").write_text("ignored")
    ids = [t["id"] for t in read_source(tmp_path, "jsonl", domain="d", source="s", role=None)]
    assert ids == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_source(tmp_path / "nope.jsonl", "jsonl", domain="d", source="s", role=None)
    with pytest.raises(ValueError, match="unknown source format"):
        read_source(tmp_path, "csv", domain="d", source="s", role=None)


# --- openai_chat ---------------------------------------------------------------------------------
def test_openai_chat_fixture():
    items = list(read_source(FIX / "chat.jsonl", "openai_chat", domain="support", source="prod_logs",
                             role="triage"))
    turns, rejected = split(items)
    assert len(turns) == 5 and len(rejected) == 3
    assert_valid_turns(turns)
    structured, tool, unanswered, flat, flat_unanswered = turns

    assert structured["id"] == "chatcmpl-001" and structured["role"] == "triage"
    assert structured["input"] == {"messages": [{"role": "user", "content": "My card was charged twice for order 1182."}]}
    assert structured["output"] == {"category": "billing", "priority": "high"}
    assert structured["labels"] == {"capture": {"category": "billing", "priority": "high"}}
    assert structured["meta"]["captured_at"] == "2024-05-01T12:00:00Z"
    assert structured["meta"]["source"] == "prod_logs"
    assert structured["meta"]["slice"] == {"channel": "email"}

    assert tool["role"] == "router"  # metadata.role wins over the source's role
    assert tool["output"] == {"name": "track_parcel", "arguments": {"parcel_id": "7731"}}
    assert tool["labels"]["capture"] == tool["output"]
    assert tool["meta"]["captured_at"] == "2024-05-01T12:01:01Z"

    # a request with no response is valid unlabeled traffic
    assert unanswered["output"] is None and unanswered["labels"] == {}
    assert unanswered["input"]["messages"] == [{"role": "user", "content": "Please delete my account."}]
    assert unanswered["id"] == turn_id("support", "triage", unanswered["input"])

    # flat variant; the gateway's model name "<domain>/<role>" names the role
    assert flat["id"] == "chatcmpl-007" and flat["role"] == "triage"
    assert flat["output"] == {"category": "bug", "priority": "medium"}
    assert flat_unanswered["output"] is None and flat_unanswered["role"] == "triage"

    rej = by_location(rejected)
    assert set(rej) == {"chat.jsonl:3", "chat.jsonl:5", "chat.jsonl:7"}
    assert rej["chat.jsonl:3"].reason.startswith("line is not valid JSON (Expecting ',' delimiter")
    assert rej["chat.jsonl:5"].reason == (
        "assistant content in response.choices[0].message is not valid JSON (Expecting value at col 1); "
        "expected a JSON object (free text is not an answer of this role)")
    assert rej["chat.jsonl:7"].reason == ("2 tool calls in response.choices[0].message; "
                                          "this role expects exactly one")
    assert '"chatcmpl-006"' in rej["chat.jsonl:7"].raw


def test_openai_chat_more_rejections(tmp_path):
    rows = [
        {"request": {"messages": [{"role": "system", "content": "only a system prompt"}]}},
        {"request": {"messages": [{"role": "user", "content": "hi"}]},
         "response": {"created": 1, "choices": [{"message": {"role": "assistant", "content": "[1, 2]"}}]}},
        {"request": {"messages": [{"role": "user", "content": "hi"}]},
         "response": {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
             {"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}}]}},
        {"request": {"messages": [{"role": "user", "content": "hi"}]},
         "response": {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "I can't"}}]}},
        {"prompt": "legacy completions"},
        {"request": {"messages": [{"role": "user", "content": "hi"}]}, "response": {"created": "yesterday",
                                                                                     "choices": []}},
        {"request": {"messages": [{"role": "user", "content": "hi"}]}, "response": {"error": {"code": 429}}},
    ]
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    turns, rejected = split(list(read_source(f, "openai_chat", domain="d", source="s", role="r")))
    assert len(turns) == 1 and turns[0]["output"] is None  # the rate-limited call is unlabeled traffic
    reasons = {r.location: r.reason for r in rejected}
    assert reasons["c.jsonl:1"] == "request.messages has no non-system message; expected at least one user message"
    assert reasons["c.jsonl:2"] == ("assistant content in response.choices[0].message is a JSON array; "
                                    "expected an object")
    assert reasons["c.jsonl:3"].startswith("tool call in response.choices[0].message: arguments are not valid "
                                           "JSON (Expecting property name")
    assert "has no content and no tool call (a refusal)" in reasons["c.jsonl:4"]
    assert reasons["c.jsonl:5"].startswith("no 'request' object and no 'messages' array; expected an OpenAI chat log")
    assert reasons["c.jsonl:6"] == "response.created is string; expected unix seconds (a number)"

    turns, rejected = split(list(read_source(f, "openai_chat", domain="d", source="s", role=None)))
    assert any(r.reason.startswith("no role: the row names none") for r in rejected)


# --- langfuse ------------------------------------------------------------------------------------
def test_langfuse_fixture():
    items = list(read_source(FIX / "langfuse.json", "langfuse", domain="support", source="lf", role="triage"))
    turns, rejected = split(items)
    assert len(turns) == 2 and len(rejected) == 1  # the SPAN is skipped, not rejected
    assert_valid_turns(turns)
    gen1, gen2 = turns

    assert gen1["id"] == "obs-gen-1" and gen1["role"] == "triage"
    assert gen1["input"] == {"messages": [{"role": "user", "content": "I was charged twice for my subscription."}]}
    assert gen1["output"] == gen1["labels"]["capture"] == {"category": "billing", "priority": "high"}
    assert gen1["meta"]["captured_at"] == "2024-05-02T09:15:00.100Z"
    assert gen1["meta"]["trace_id"] == "trace-1" and gen1["meta"]["slice"] == {"channel": "chat"}

    assert gen2["id"] == "obs-gen-2" and gen2["role"] == "router"  # from the trace's metadata.role
    assert gen2["input"]["messages"] == [{"role": "user", "content": "Where is parcel 99?"}]
    assert gen2["output"] == {"name": "track_parcel", "arguments": {"parcel_id": "99"}}
    assert gen2["meta"]["captured_at"] == "2024-05-02T08:00:00.250Z"  # normalised to UTC

    (bad,) = rejected
    assert bad.location == "langfuse.json:[1].observations[1]"
    assert bad.reason.startswith("assistant content in output is not valid JSON (Expecting value at col 1); ")
    assert "welcome" not in bad.reason and bad.value["id"] == "obs-gen-3"
    assert '"obs-gen-3"' in bad.raw


def test_langfuse_other_shapes(tmp_path):
    traces = json.loads((FIX / "langfuse.json").read_text())
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": traces, "meta": {"page": 1, "totalItems": 2}}))
    assert [type(x).__name__ for x in read_source(wrapped, "langfuse", domain="support", source="lf",
                                                  role="triage")] == ["dict", "dict", "Rejected"]

    lines = tmp_path / "traces.jsonl"  # JSON Lines; one line is a bare observation (observations export)
    bare = dict(traces[0]["observations"][1], id="obs-bare")
    lines.write_text("\n".join([json.dumps(traces[0]), json.dumps(bare), "{broken"]))
    items = list(read_source(lines, "langfuse", domain="support", source="lf", role="triage"))
    assert [x["id"] for x in items if isinstance(x, dict)] == ["obs-gen-1", "obs-bare"]
    (bad,) = split(items)[1]
    assert bad.location == "traces.jsonl:3" and bad.reason.startswith("line is not valid JSON")

    ids_only = tmp_path / "list.json"  # the trace list API gives observation ids only
    ids_only.write_text(json.dumps([dict(traces[0], observations=["obs-span-1", "obs-gen-1"])]))
    items = list(read_source(ids_only, "langfuse", domain="support", source="lf", role="triage"))
    assert len(items) == 2 and all(isinstance(x, Rejected) for x in items)
    assert items[0].location == "list.json:[0].observations[0]"
    assert "an observation id only" in items[0].reason

    gen = traces[0]["observations"][1]
    variants = tmp_path / "variants.json"  # LangChain tool call, the answer object itself, no output yet
    variants.write_text(json.dumps({"id": "t", "timestamp": "2024-05-02T00:00:00Z", "observations": [
        dict(gen, id="lc", output={"role": "assistant", "content": "",
                                   "tool_calls": [{"name": "f", "args": {"x": 1}, "id": "1", "type": "tool_call"}]}),
        dict(gen, id="obj", output={"category": "bug"}),
        dict(gen, id="none", output=None, startTime=None),
        dict(gen, id="bad_time", startTime="last tuesday")]}))
    items = list(read_source(variants, "langfuse", domain="support", source="lf", role="triage"))
    turns, rejected = split(items)
    assert_valid_turns(turns)
    assert [t["output"] for t in turns] == [{"name": "f", "arguments": {"x": 1}}, {"category": "bug"}, None]
    assert turns[2]["meta"]["captured_at"] == "2024-05-02T00:00:00Z"  # falls back to the trace timestamp
    assert [r.reason for r in rejected] == ["startTime is not an ISO-8601 timestamp; expected e.g. 2024-05-01T12:00:00Z"]

    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "t"')
    (bad,) = list(read_source(broken, "langfuse", domain="d", source="lf", role="r"))
    assert bad.location == "broken.json" and bad.reason.startswith("file is not valid JSON")


# --- bfcl ----------------------------------------------------------------------------------------
def test_bfcl_function_to_tool_converts_types_recursively():
    fn = {"name": "geo.distance", "description": "d", "parameters": {"type": "dict", "optional": True, "properties": {
        "a": {"type": "tuple", "items": {"type": "float"}},
        "b": {"type": "dict", "properties": {"x": {"type": "any"}, "y": {"type": "bool", "optional": True},
                                             "z": {"type": "list", "items": {"type": "dict", "properties": {
                                                 "w": {"type": "float"}}}}}},
        "c": {"type": "integer", "enum": [1, 2], "default": 1, "optional": True}}, "required": ["a"]}}
    tool = bfcl_function_to_tool(fn)
    assert tool["type"] == "function" and tool["function"]["name"] == "geo_distance"
    params = tool["function"]["parameters"]
    assert params == {"type": "object", "required": ["a"], "properties": {
        "a": {"type": "array", "items": {"type": "number"}},
        "b": {"type": "object", "properties": {"x": {}, "y": {"type": "boolean"},
                                               "z": {"type": "array", "items": {"type": "object", "properties": {
                                                   "w": {"type": "number"}}}}}},
        "c": {"type": "integer", "enum": [1, 2], "default": 1}}}
    Draft202012Validator.check_schema(params)


def test_bfcl_gold_picks_first_acceptable_value_and_omits_empty_only():
    call = {"m.f": {"a": [10], "b": ["", 3], "c": [""], "d": [[1, 2], [2, 1]],
                    "e": [{"k": ["x", "y"], "opt": [""]}], "g": [[{"f": ["age"], "v": ["", 5]}]]}}
    assert bfcl_gold(call) == {"name": "m_f", "arguments": {"a": 10, "b": 3, "d": [1, 2], "e": {"k": "x"},
                                                            "g": [{"f": "age", "v": 5}]}}


def test_bfcl_question_without_answer_and_missing_role(tmp_path):
    q = tmp_path / "BFCL_v4_simple_python.json"
    fn = {"name": "f", "description": "", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}}}
    q.write_text("\n".join(json.dumps({"id": f"simple_python_{i}", "question": [[{"role": "user", "content": "q"}]],
                                       "function": [fn]}) for i in range(3)))
    a = tmp_path / "answers.json"
    a.write_text(json.dumps({"id": "simple_python_0", "ground_truth": [{"f": {"x": [1]}}]}) + "\n"
                 + json.dumps({"id": "simple_python_2", "ground_truth": [{"f": {"x": [1]}}, {"f": {"x": [2]}}]}))
    items = list(read_source(q, "bfcl", domain="d", source="bfcl", role="call", answers=a))
    turns, rejected = split(items)
    assert [t["id"] for t in turns] == ["simple_python_0"]
    rej = by_location(rejected)
    assert rej["BFCL_v4_simple_python.json:2"].reason == (
        "question has no answer in the possible-answer file; expected a row with the same id")
    assert rej["BFCL_v4_simple_python.json:3"].reason == "answer has 2 expected calls; this role expects exactly one"
    items = list(read_source(q, "bfcl", domain="d", source="bfcl", role=None, answers=a))
    assert all(isinstance(x, Rejected) and x.reason.startswith("no role") for x in items)
    with pytest.raises(FileNotFoundError, match="BFCL answers"):
        read_source(q, "bfcl", domain="d", source="bfcl", role="call")  # no possible_answer/ beside it


def has_key(schema, key):
    if isinstance(schema, dict):
        props = schema.get("properties")
        if key in schema or (isinstance(props, dict) and any(has_key(p, key) for p in props.values())):
            return True
        return has_key(schema.get("items"), key)
    return False


needs_bfcl = pytest.mark.skipif(not BFCL.is_dir(), reason="shared BFCL data not present")


@needs_bfcl
@pytest.mark.parametrize("category,rows", [("simple_python", 400), ("multiple", 200)])
def test_bfcl_real_files(category, rows):
    items = list(read_source(BFCL / f"BFCL_v4_{category}.json", "bfcl", domain="tools", source="bfcl",
                             role="call", answers=BFCL / "possible_answer" / f"BFCL_v4_{category}.json"))
    turns, rejected = split(items)
    assert len(turns) == rows and rejected == []
    assert_valid_turns(turns[:20])
    valid = 0
    failures = []
    for t in turns:
        assert t["meta"]["slice"] == {"category": category}
        assert t["meta"]["bfcl"]["category"] == category
        assert len(t["input"]["messages"]) == 1 and t["input"]["messages"][0]["role"] == "user"
        tools = {tool["function"]["name"]: tool["function"]["parameters"] for tool in t["input"]["tools"]}
        for params in tools.values():
            Draft202012Validator.check_schema(params)
            assert params["type"] == "object" and not has_key(params, "optional")
        gold = t["labels"]["gold"]
        assert gold["name"] in tools and "." not in gold["name"]
        errors = list(Draft202012Validator(tools[gold["name"]]).iter_errors(gold["arguments"]))
        if errors:
            failures.append((t["id"], errors[0].message))
        else:
            valid += 1
    rate = valid / len(turns)
    print(f"BFCL {category}: gold arguments schema-valid {valid}/{len(turns)} = {rate:.2%}; failures {failures}")
    assert rate >= 0.95


@needs_bfcl
def test_bfcl_first_row_and_dotted_name():
    items = read_source(BFCL / "BFCL_v4_multiple.json", "bfcl", domain="tools", source="bfcl", role="call",
                        answers=BFCL / "possible_answer")  # a folder: the same file name inside
    first = next(iter(items))
    assert first["id"] == "multiple_0"
    assert first["labels"]["gold"] == {"name": "triangle_properties_get",
                                       "arguments": {"side1": 5, "side2": 4, "side3": 3, "get_area": True,
                                                     "get_perimeter": True, "get_angles": True}}
    assert first["meta"]["bfcl"]["ground_truth"][0]["triangle_properties.get"]["get_area"] == ["", True]
    names = [t["function"]["name"] for t in first["input"]["tools"]]
    assert names[0] == "triangle_properties_get" and len(names) >= 2
    assert first["output"] is None and first["label_source"] is None


# --- PII never in a reason -----------------------------------------------------------------------
# Every path that used to build its reason from a value, fed PII in that value. The reason names the
# field and what was expected; the value travels only in the Rejected's raw row, which the caller
# redacts (pipeline.quarantine_row). Rows come from outside and may carry PII in any field.
ROLES = ["router", "triage"]
TURN_REASONS = {
    "domain": "field 'domain' is not 'support' (the domain this source belongs to)",
    "role": "field 'role' is not one of ['router', 'triage']",
    "role_type": "field 'role' is array; expected a string",
    "id_text": "field 'id' is not an id (1-256 printable characters, no spaces)",
    "id_number": "field 'id' is number; expected a string",
    "label_source": "field 'label_source' is string; expected 'gold', 'capture', 'teacher' or 'oracle'",
    "label_key": "unknown field (name not shown) in 'labels'; expected only gold, capture, teacher, oracle",
    "label_value": "field 'labels.gold' is string; expected an object",
    "output": "field 'output' is string; expected an object",
    "captured_at": "field 'meta.captured_at' is not an ISO-8601 timestamp",
    "cluster": "field 'meta.cluster' is string; expected an integer",
    "slice": "field 'meta.slice' is array; expected an object",
    "dup_group": "field 'meta.dup_group' is number; expected a string",
    "unknown_field": ("unknown field(s) (name not shown); a Turn has only id, domain, role, input, output, labels, "
                      "label_source, meta"),
    "input": "field 'input' is string; expected an object",
}
CHAT_REASONS = {
    "created_text": "response.created is string; expected unix seconds",
    "created_range": "response.created is out of range; expected unix seconds",
    "tool_arguments": "tool call in response.choices[0].message: arguments are not valid JSON (",
    "content_not_json": ("assistant content in response.choices[0].message is not valid JSON (Expecting value at "
                         "col 1); expected a JSON object"),
    "refusal": "assistant message in response.choices[0].message has no content and no tool call (a refusal)",
    "metadata_role": "field 'role' is not one of ['router', 'triage']",
    "response_id": "field 'id' is not an id",
}
LANGFUSE_REASONS = {
    "start_time": "startTime is not an ISO-8601 timestamp",
    "output_text": "assistant content in output is not valid JSON",
    "metadata_role": "field 'role' is not one of ['router', 'triage']",
    "observation_id": "field 'id' is not an id",
}


def _one_rejected(tmp_path: Path, fmt: str, rows: list, **kwargs) -> Rejected:
    f = tmp_path / ("rows.json" if fmt == "langfuse" else "rows.jsonl")
    f.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    items = list(read_source(f, fmt, domain="support", source="s", role="triage", roles=ROLES, **kwargs))
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert len(items) == len(rejected) == 1, items
    return rejected[0]


@pytest.mark.parametrize("name,changes,kind", TURN_CASES, ids=[c[0] for c in TURN_CASES])
def test_turn_line_reasons_quote_no_value(tmp_path: Path, name: str, changes: dict, kind: str) -> None:
    row = pii_turn("t-1", **changes)
    bad = _one_rejected(tmp_path, "jsonl", [row])
    assert bad.reason == TURN_REASONS[name] and bad.kind == kind
    assert leaks(bad.reason) == [] and bad.value == row  # the value is in the raw row (redacted on write) only


@pytest.mark.parametrize("line", BROKEN_LINES, ids=["not_json", "array"])
def test_broken_line_reasons_quote_no_value(tmp_path: Path, line: str) -> None:
    bad = _one_rejected(tmp_path, "jsonl", [line])
    assert bad.reason.startswith("line is") and leaks(bad.reason) == [] and leaks(bad.raw)


@pytest.mark.parametrize("name,row,kind", CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
def test_openai_chat_reasons_quote_no_value(tmp_path: Path, name: str, row: dict, kind: str) -> None:
    bad = _one_rejected(tmp_path, "openai_chat", [row])
    assert bad.reason.startswith(CHAT_REASONS[name]) and bad.kind == kind
    assert leaks(bad.reason) == [] and bad.value == row


@pytest.mark.parametrize("name,trace,kind", LANGFUSE_CASES, ids=[c[0] for c in LANGFUSE_CASES])
def test_langfuse_reasons_quote_no_value(tmp_path: Path, name: str, trace: dict, kind: str) -> None:
    bad = _one_rejected(tmp_path, "langfuse", [json.dumps([trace])])
    assert bad.reason.startswith(LANGFUSE_REASONS[name]) and bad.kind == kind
    assert leaks(bad.reason) == [] and bad.value == trace["observations"][0]


def test_bfcl_reasons_quote_no_value(tmp_path: Path) -> None:
    fn = {"name": "f", "description": "", "parameters": {"type": "dict", "properties": {"x": {"type": "string"}}}}
    qids = [f"q_{PII['email']}", "q_1"]
    q = tmp_path / "BFCL_v4_simple.json"
    q.write_text("\n".join(json.dumps({"id": i, "question": [[{"role": "user", "content": "q"}]], "function": [fn]})
                           for i in qids))
    a = tmp_path / "answers.json"
    a.write_text(json.dumps({"id": "q_1", "ground_truth": [{PII["phone"]: PII["card"]}]}))
    items = list(read_source(q, "bfcl", domain="support", source="b", role="triage", answers=a, roles=ROLES))
    assert [i.reason for i in items] == [
        "question has no answer in the possible-answer file; expected a row with the same id",
        "answer parameters are string; expected an object"]
    assert all(leaks(i.reason) == [] for i in items)


def test_a_valid_row_passes_the_turn_check_and_roles_are_enforced_only_when_given(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({"id": "t-1", "role": "summarize", "input": {"messages": []},
                             "meta": {"captured_at": "2024-05-01T12:00:00+02:00"}}) + "\n")
    (turn,) = read_source(f, "jsonl", domain="support", source="s", role=None)
    assert turn["role"] == "summarize"
    (bad,) = read_source(f, "jsonl", domain="support", source="s", role=None, roles=ROLES)
    assert bad.kind == "unknown_role" and bad.reason == "field 'role' is not one of ['router', 'triage']"
