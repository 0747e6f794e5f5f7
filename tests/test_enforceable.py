"""`domain.enforceable` says truly what guided decoding enforces: every keyword it lists as not
enforced lets a violating answer through the installed xgrammar, every format it lists as enforced
does not, and `slm validate` names the gaps of a role."""

from __future__ import annotations

import json

import pytest
from xgrammar.testing import _is_grammar_accept_string as accepts

from slm_platform.domain.enforceable import ENFORCED_FORMATS, NOT_ENFORCED, unenforced
from slm_platform.domain.grammar import schema_grammar

_AB = {"a": {"type": "integer"}, "b": {"type": "integer"}}
# keyword -> (a schema using it, an answer that breaks only that keyword)
VIOLATIONS = {
    "uniqueItems": ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, [1, 1]),
    "contains": ({"type": "array", "items": {"type": "integer"}, "contains": {"const": 5}}, [1]),
    "not": ({"type": "object", "properties": _AB, "not": {"required": ["a"]}}, {"a": 1}),
    "if": ({"type": "object", "properties": _AB, "if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"a": 1}),
    "then": ({"type": "object", "properties": _AB, "if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"a": 1}),
    "else": ({"type": "object", "properties": _AB, "if": {"required": ["a"]}, "else": {"required": ["b"]}}, {}),
    "dependentRequired": ({"type": "object", "properties": _AB, "dependentRequired": {"a": ["b"]}}, {"a": 1}),
    "dependencies": ({"type": "object", "properties": _AB, "dependencies": {"a": ["b"]}}, {"a": 1}),
    "dependentSchemas": ({"type": "object", "properties": _AB, "dependentSchemas": {"a": {"required": ["b"]}}},
                         {"a": 1}),
    "oneOf": ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 1),
    "allOf": ({"allOf": [{"type": "integer"}, {"minimum": 3}]}, 1),
    "unevaluatedProperties": ({"type": "object", "properties": {"a": {"type": "integer"}},
                               "additionalProperties": True, "unevaluatedProperties": False}, {"a": 1, "b": 2}),
    "unevaluatedItems": ({"type": "array", "prefixItems": [{"type": "integer"}], "items": True,
                          "unevaluatedItems": False}, [1, 2]),
}
# format -> an answer of another shape
BAD_FORMATTED = {"date": "2020-1-1", "time": "x", "date-time": "x", "duration": "x", "email": "x", "hostname": "a b",
                 "ipv4": "1.2", "ipv6": "x", "uri": "x y", "uri-reference": "a b", "uri-template": "{",
                 "uuid": "x", "json-pointer": "x", "relative-json-pointer": "x"}


@pytest.mark.parametrize("keyword", sorted(NOT_ENFORCED))
def test_a_keyword_listed_as_not_enforced_lets_a_violating_answer_through(keyword):
    schema, answer = VIOLATIONS[keyword]
    assert accepts(schema_grammar(schema), json.dumps(answer)), keyword
    assert keyword in {u.keyword for u in unenforced(schema)}


@pytest.mark.parametrize("fmt", sorted(ENFORCED_FORMATS))
def test_a_format_listed_as_enforced_is(fmt):
    assert not accepts(schema_grammar({"type": "string", "format": fmt}), json.dumps(BAD_FORMATTED[fmt]))


@pytest.mark.parametrize("schema, answer", [
    ({"type": "integer", "multipleOf": 3}, 4),
    ({"type": "object", "properties": _AB, "minProperties": 1}, {}),
    ({"type": "object", "properties": _AB, "maxProperties": 1}, {"a": 1, "b": 2}),
    ({"type": "object", "patternProperties": {"^a": {"type": "integer"}}, "additionalProperties": False}, {"a": "x"}),
    ({"type": "number", "minimum": 0.5}, 0.25),
    ({"type": "integer", "exclusiveMinimum": 0}, 0),
    ({"type": "string", "minLength": 3}, "ab"),
    ({"type": "string", "pattern": "^a"}, "b"),
    ({"const": {"a": 1}}, {"a": 2}),
    ({"type": "array", "prefixItems": [{"type": "integer"}], "items": False}, [1, 2]),
])
def test_keywords_not_listed_are_enforced_and_not_reported(schema, answer):
    assert not accepts(schema_grammar(schema), json.dumps(answer))
    assert unenforced(schema) == []


def test_gaps_are_named_with_where_they_sit_and_unknown_formats_count():
    schema = {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "format": "color"}, "uniqueItems": True},
        "when": {"type": "string", "format": "date"}}}
    assert [str(u) for u in unenforced(schema, "output")] == [
        "uniqueItems at output.properties.tags (items may repeat)",
        "format: color at output.properties.tags.items (an unknown format is not constrained)"]


def test_slm_validate_names_a_role_s_gaps_and_its_token_budget(tmp_path):
    from test_cli_validate import make_domain, slm

    folder = make_domain(tmp_path, "minimal")
    path = folder / "contracts" / "classify.schema.json"
    schema = json.loads(path.read_text())
    rc, out, _ = slm("validate", folder)
    assert rc == 0 and "enforces all" in out and "tokens" in out
    schema["properties"]["labels"] = {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3,
                                      "uniqueItems": True}
    path.write_text(json.dumps(schema))
    rc, out, err = slm("validate", folder)
    assert rc == 0, err
    assert "1 keyword(s) not enforced" in out
    assert "classify: uniqueItems at output.properties.labels (items may repeat): validated after decoding" in out
