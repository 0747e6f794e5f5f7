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
    assert "maxProperties" not in bounded(schema)  # it names its properties: strict decoding closes it
    free = {"type": "object", "properties": {"d": {"type": "object", "additionalProperties": {"type": "integer"}}},
            "required": ["d"]}
    grammar = schema_grammar(free)
    many = {f"k{i}": i for i in range(GUIDED_MAX_PROPERTIES + 1)}
    assert accepts(grammar, json.dumps({"d": dict(list(many.items())[:GUIDED_MAX_PROPERTIES])}))
    assert not accepts(grammar, json.dumps({"d": many}))  # the loop of new keys ends too
