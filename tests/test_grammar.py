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
