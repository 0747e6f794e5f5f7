"""The guided-decoding grammar admits exactly the renderer's layout (`domain.grammar`): every target
training writes is accepted, and the layouts a model could wander into (newlines, indentation,
compact separators, keys out of schema order) are not, for every role of the shipped domains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from xgrammar.testing import _is_grammar_accept_string as accepts

from slm_platform.domain import Domain
from slm_platform.domain.grammar import schema_grammar
from slm_platform.domain.render import render_target

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["support_triage", "travel"])
def test_the_grammar_accepts_every_rendered_target_and_no_other_layout(name):
    domain = Domain.load(ROOT / "domains" / name)
    seen = {}
    for turn in domain.simulator().simulate(60, seed=5):
        contract = domain.role(turn["role"])
        grammar = schema_grammar(contract.guided_schema())
        target = render_target(contract, turn["output"])
        assert accepts(grammar, target), (turn["role"], target)
        seen[turn["role"]] = (grammar, target)
    assert set(seen) == set(domain.roles)  # the simulator covers every role
    for role, (grammar, target) in seen.items():
        value = json.loads(target)
        for other in (json.dumps(value, indent=2, ensure_ascii=False),  # newlines and indentation
                      json.dumps(value, separators=(",", ":"), ensure_ascii=False),  # compact
                      target + "\n", " " + target, target.replace(": ", ":  ", 1)):
            assert not accepts(grammar, other), (role, other)
        if len(value) > 1:  # keys in another order than the schema's
            assert not accepts(grammar, json.dumps(dict(reversed(list(value.items()))), ensure_ascii=False)), role


def test_the_grammar_bounds_what_the_schema_leaves_unbounded_and_keeps_its_own_bounds():
    """A model cannot repeat an item or a character until max_tokens; every bounded answer is still
    valid under the schema, and a bound the schema sets is never loosened."""
    from slm_platform.domain.grammar import GUIDED_MAX_ITEMS, GUIDED_MAX_PROPERTIES, GUIDED_MAX_STRING_CHARS, bounded

    schema = {"type": "object", "required": ["ids", "note", "tags", "kind"], "properties": {
        "ids": {"type": "array", "items": {"type": "integer"}},
        "note": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
        "kind": {"type": "string", "enum": ["a", "b"]}}}
    grammar = schema_grammar(schema)

    def answer(ids: int, note: int, tags: list[str]) -> str:
        return json.dumps({"ids": [1] * ids, "note": "x" * note, "tags": tags, "kind": "a"})

    assert accepts(grammar, answer(GUIDED_MAX_ITEMS, GUIDED_MAX_STRING_CHARS, ["abc", "de"]))
    assert not accepts(grammar, answer(GUIDED_MAX_ITEMS + 1, 5, []))  # the loop "1, 1, 1, ..." ends
    assert not accepts(grammar, answer(3, GUIDED_MAX_STRING_CHARS + 1, []))  # and "C:C:C:..."
    assert not accepts(grammar, answer(3, 5, ["abcd"])) and not accepts(grammar, answer(3, 5, ["a", "b", "c"]))
    assert "maxLength" not in bounded(schema)["properties"]["kind"]  # an enum is bounded already
    assert bounded(schema) != schema and "maxItems" not in schema["properties"]["ids"]  # a copy
    assert bounded({"type": "array", "minItems": 40})["maxItems"] == 40  # never below what the schema demands
    assert bounded({"type": "string", "minLength": 300})["maxLength"] == 300
    assert "maxProperties" not in bounded(schema)  # it names its properties: strict decoding closes it
    free = {"type": "object", "properties": {"d": {"type": "object", "additionalProperties": {"type": "integer"}}},
            "required": ["d"]}
    grammar = schema_grammar(free)
    many = {f"k{i}": i for i in range(GUIDED_MAX_PROPERTIES + 1)}
    assert accepts(grammar, json.dumps({"d": dict(list(many.items())[:GUIDED_MAX_PROPERTIES])}))
    assert not accepts(grammar, json.dumps({"d": many}))  # the loop of new keys ends too


def test_numbers_are_bounded_in_digits_but_admit_any_int64_and_any_double_written_out():
    from slm_platform.domain.grammar import GUIDED_MAX_FRACTION_DIGITS, GUIDED_MAX_INTEGER_DIGITS

    grammar = schema_grammar({"type": "object", "required": ["i", "n"],
                              "properties": {"i": {"type": "integer"}, "n": {"type": "number"}}})

    def answer(i: str, n: str) -> str:
        return '{"i": ' + i + ', "n": ' + n + "}"

    for i, n in [(str(2**63 - 1), "6.022e+23"), ("-12", "1.6e-19"), ("0", "-0.5"), ("7", "3")]:
        assert accepts(grammar, answer(i, n)), (i, n)
    assert not accepts(grammar, answer("1" * (GUIDED_MAX_INTEGER_DIGITS + 1), "1"))  # "11111..." ends
    assert not accepts(grammar, answer("1", "0." + "0" * GUIDED_MAX_FRACTION_DIGITS + "1"))  # "0.0000..." too
    assert not accepts(grammar, answer("1", "1e1000"))


def test_token_budget_is_the_longest_answer_in_bytes_and_none_where_a_value_is_unbounded():
    from slm_platform.domain.grammar import token_budget

    schema = {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string", "maxLength": 3}, "b": {"enum": ["no", "yes"]}, "c": {"type": "boolean"},
        "d": {"type": "array", "items": {"type": "null"}, "maxItems": 2}}}
    # {"a": "xxx", "b": "yes", "c": false, "d": [null, null]}: 3 characters of at most 4 bytes each
    longest = '{"a": "' + "\U0001F600" * 3 + '", "b": "yes", "c": false, "d": [null, null]}'
    assert token_budget(schema) == len(longest.encode("utf-8"))
    assert accepts(schema_grammar(schema), longest)
    assert token_budget({"type": "string", "pattern": r"^\d{4}-\d\d-\d\d$"}) == 2 + 6 * 10
    assert token_budget({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 30}]}) == 2 + 4 * 30
    assert token_budget({"$defs": {"n": {"type": "boolean"}}, "type": "array", "items": {"$ref": "#/$defs/n"},
                         "maxItems": 1}) == 2 + 5
    # keys an object does not name are bounded too: 16 of '"<64 characters>": <20-byte integer>, '
    assert token_budget({"type": "object", "additionalProperties": {"type": "integer"}}) == 2 + 16 * (2 + 4 * 64 + 2 + 20
                                                                                                      + 2)
    assert token_budget({"type": "string", "format": "no-such-format"}) == 2 + 4 * 200  # a plain bounded string
    for unbounded in ({"type": "string", "format": "duration"},  # xgrammar's own grammar, no length bound
                      {"type": "object", "additionalProperties": True},  # values of any type
                      {},  # any value
                      {"$defs": {"t": {"type": "object", "properties": {"k": {"$ref": "#/$defs/t"}}}},
                       "$ref": "#/$defs/t"}):  # recursion
        assert token_budget(unbounded) is None, unbounded


@pytest.mark.parametrize("name", ["support_triage", "travel"])
def test_every_role_of_the_shipped_domains_has_a_budget_and_no_target_exceeds_it(name):
    from slm_platform.domain.grammar import token_budget

    domain = Domain.load(ROOT / "domains" / name)
    budgets = {role: token_budget(contract.guided_schema()) for role, contract in domain.roles.items()}
    assert None not in budgets.values(), budgets
    for turn in domain.simulator().simulate(60, seed=7):
        target = render_target(domain.role(turn["role"]), turn["output"])
        assert len(target.encode("utf-8")) <= budgets[turn["role"]]


def test_an_unbounded_pattern_gets_bounds_whose_matches_all_match_the_original():
    import re

    from slm_platform.domain.grammar import GUIDED_MAX_STRING_CHARS, bounded_pattern

    email = r"^(\S+@\S+\.\w+|<EMAIL(_\d+)?>)$"
    bounded_email = bounded_pattern(email)
    assert bounded_email == r"^(\S{1,50}@\S{1,50}\.\w{1,50}|<EMAIL(_\d{1,50})?>)$"
    for text in ["a@b.co", "<EMAIL_2>", "x" * 50 + "@y.z"]:
        assert re.fullmatch(bounded_email, text) and re.fullmatch(email, text)
    assert not re.fullmatch(bounded_email, "x" * 51 + "@y.z")
    assert bounded_pattern(r"[+*]x*") == r"[+*]x{0,100}"  # quantifier characters in a class stay
    assert bounded_pattern(r"\+\d{3,}") == r"\+\d{3,100}" and bounded_pattern(r"^\d{4}$") == r"^\d{4}$"
    grammar = schema_grammar({"type": "string", "pattern": email})
    assert accepts(grammar, '"a@b.co"')
    assert not accepts(grammar, '"' + "x" * (GUIDED_MAX_STRING_CHARS + 1) + '@b.co"')


def test_an_object_that_names_no_properties_admits_keys_as_json_schema_says():
    """Strict decoding closes an object to the keys it names; one that names none is free-form
    (a BFCL `dict` argument such as a grade book), not the empty object."""
    grammar = schema_grammar({"type": "object", "properties": {"grades": {"type": "object"}}, "required": ["grades"]})
    assert accepts(grammar, '{"grades": {"math": 90, "art": [1, 2]}}') and accepts(grammar, '{"grades": {}}')


def test_bfcl_types_map_to_json_schema_that_admits_what_bfcl_accepts():
    from slm_platform.data.sources import bfcl_function_to_tool

    tool = bfcl_function_to_tool({"name": "f.g", "parameters": {"type": "dict", "required": ["a"], "properties": {
        "a": {"type": "float"}, "b": {"type": "any"}, "c": {"type": "tuple", "items": {"type": "integer"}},
        "d": {"type": "dict", "description": "a dict"}, "e": {"type": "integer", "default": 3, "optional": True}}}})
    params = tool["function"]["parameters"]
    assert tool["function"]["name"] == "f_g" and params["type"] == "object"
    assert params["properties"]["a"] == {"type": "number"} and params["properties"]["b"] == {}
    assert params["properties"]["c"]["type"] == "array" and params["properties"]["e"] == {"type": "integer", "default": 3}
    grammar = schema_grammar(params)
    for args in ({"a": 2}, {"a": 2.5, "b": "x"}, {"a": 1, "b": [1, {"k": None}]}, {"a": 1, "c": [1, 2], "d": {"k": 1}}):
        assert accepts(grammar, json.dumps(args)), args
    assert not accepts(grammar, json.dumps({"a": "2"}))


def test_guided_requests_run_until_the_grammar_closes_where_it_is_bounded_and_to_the_cap_where_not():
    from slm_platform.domain.contract import RoleContract
    from slm_platform.inference.types import requests_for
    from slm_platform.inference.vllm_engine import VLLMEngine
    from slm_platform.config.models import Role

    def contract(schema):
        return RoleContract(Role(id="r", kind="structured", system_prompt="x", output_schema="x.json"), "x", output_schema=schema)

    bounded_role = contract({"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]})
    open_role = contract({"type": "object", "properties": {"k": {"type": "string", "format": "duration"}}})
    (bounded_req,) = requests_for(bounded_role, [{"messages": [{"role": "user", "content": "hi"}]}], max_tokens=64)
    (open_req,) = requests_for(open_role, [{"messages": [{"role": "user", "content": "hi"}]}], max_tokens=64)
    (unguided,) = requests_for(bounded_role, [{"messages": [{"role": "user", "content": "hi"}]}], max_tokens=64,
                               guided=False)
    assert (bounded_req.max_tokens, open_req.max_tokens, unguided.max_tokens) == (None, 64, 64)
    engine = VLLMEngine("http://127.0.0.1:9", "m")
    assert "max_tokens" not in engine.body(bounded_req)  # vLLM's chat default: the rest of the context
    assert engine.body(open_req)["max_tokens"] == 64
    engine.close()


def test_bounded_patterns_compile_against_a_vocabulary_as_vllm_compiles_them():
    """xgrammar 0.2.8 fails a check compiling `[0-9a-f]{1,129}`: no bound we write reaches it."""
    import xgrammar

    info = xgrammar.TokenizerInfo([chr(c) for c in range(32, 127)] + ["</s>"], stop_token_ids=[95])
    compiler = xgrammar.GrammarCompiler(info)
    for pattern in (r"[0-9a-fA-F]+", r"\S+", r"^(\S+@\S+\.\w+|<EMAIL(_\d+)?>)$", r"a{3,}", r"^[0-9a-z_-]{1,255}$"):
        compiler.compile_grammar(schema_grammar({"type": "string", "pattern": pattern}))
        compiler.compile_grammar(schema_grammar({"type": "object", "patternProperties": {pattern: {"type": "integer"}},
                                                 "additionalProperties": False}))


def test_lengths_beside_a_pattern_go_into_the_pattern_and_required_keys_are_always_named():
    """Two things xgrammar's converter drops and the grammar now keeps (found on JSONSchemaBench):
    minLength/maxLength beside a pattern, and a required key that `properties` does not name."""
    hex_id = {"type": "object", "required": ["id"],
              "properties": {"id": {"type": "string", "pattern": "[0-9a-f]+", "minLength": 4, "maxLength": 4}}}
    grammar = schema_grammar(hex_id)
    assert accepts(grammar, '{"id": "ab12"}')
    assert not accepts(grammar, '{"id": "ab1"}') and not accepts(grammar, '{"id": "ab123"}')
    loose = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]}
    grammar = schema_grammar(loose)
    assert accepts(grammar, '{"a": 1, "b": [true]}') and not accepts(grammar, '{"a": 1}')


FORMAT_EXAMPLES = {
    "date": ["2026-12-01"], "time": ["23:59:59Z", "08:30:00.123456+05:30"],
    "date-time": ["2026-12-01T08:30:00Z", "2026-12-01T08:30:00.5-07:00"],
    "email": ["a.b+c@example.co.uk", "x@y.io"], "hostname": ["api.example.com", "localhost"],
    "uri": ["https://example.com/a/b-c/d.json", "http://localhost"], "uri-reference": ["http://a.b/c"],
    "uuid": ["123e4567-e89b-12d3-a456-426614174000"], "ipv4": ["255.255.0.1", "10.0.0.1"],
    "ipv6": ["2001:db8:0:0:0:0:2:1"],
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_EXAMPLES))
def test_a_string_format_decodes_through_a_bounded_pattern_whose_matches_are_in_the_format(fmt):
    """xgrammar's own grammars for these formats repeat without bound (an email's local part, a
    date-time's fraction of a second): a 135M model looped in them until max_tokens on JSONSchemaBench.
    The bounded pattern admits typical values, refuses what the format refuses, compiles against a
    vocabulary, and gives the schema a token budget; the format keyword still validates."""
    import jsonschema
    import xgrammar

    from slm_platform.domain.grammar import FORMAT_PATTERNS, token_budget

    schema = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}, "required": ["v"]}
    grammar = schema_grammar(schema)
    info = xgrammar.TokenizerInfo([chr(c) for c in range(32, 127)] + ["</s>"], stop_token_ids=[95])
    xgrammar.GrammarCompiler(info).compile_grammar(grammar)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for value in FORMAT_EXAMPLES[fmt]:
        assert accepts(grammar, json.dumps({"v": value})), value
        jsonschema.Draft202012Validator(schema, format_checker=checker).validate({"v": value})
    for wrong in ("", "x" * 600, "2026-13-01", "not an email", "no scheme here", "1.2.3", "2026-12-01T08:30:00.1234567Z"):
        if not (fmt == "hostname" and wrong in ("2026-13-01", "1.2.3")):  # both are host names
            assert not accepts(grammar, json.dumps({"v": wrong})), wrong
    assert token_budget(schema) is not None
    # a schema that bounds the string itself keeps xgrammar's format grammar (and no budget is claimed)
    assert token_budget({"type": "string", "format": fmt, "maxLength": 40}) is None
    assert FORMAT_PATTERNS[fmt].startswith("^") and FORMAT_PATTERNS[fmt].endswith("$")
