"""The gateway's prompt tokenization: remembered pieces between special tokens give exactly training's ids,
and the live check turns the shortcut off the moment they would not."""

from __future__ import annotations

import logging
from pathlib import Path

from slm_platform.domain import Domain
from slm_platform.serving.render import VERIFY_EVERY, PromptRenderer, rendered
from slm_platform.training.data import prompt_ids

ROOT = Path(__file__).resolve().parent.parent


def _prompts(n: int) -> list[list[dict]]:
    out = []
    for name in ("support_triage", "travel"):
        domain = Domain.load(ROOT / "domains" / name)
        for turn in domain.simulator().simulate(n, seed=21, drift=1.0):  # languages, typos, PII, chat
            out += [rendered(contract, turn["input"]) for contract in domain.roles.values()]
    return out


def test_remembered_pieces_give_training_ids_for_every_prompt(smollm2_dir):
    renderer = PromptRenderer(smollm2_dir)
    assert renderer._split is not None  # SmolLM2's special tokens strip nothing: the shortcut is on
    prompts = _prompts(60)
    for messages in prompts + prompts:  # the second round comes from the remembered pieces
        assert renderer.prompt_ids(messages) == prompt_ids(renderer._tokenizer, messages)
    assert renderer._piece.cache_info().hits > len(prompts)


def test_a_mismatch_turns_the_shortcut_off_and_answers_with_the_whole_prompt(smollm2_dir, caplog):
    renderer = PromptRenderer(smollm2_dir)
    messages = _prompts(1)[0]
    truth = prompt_ids(renderer._tokenizer, messages)
    assert renderer.prompt_ids(messages) == truth
    renderer._piece = lambda text: (7,)  # pieces that no longer add up
    for _ in range(VERIFY_EVERY - 1):  # unchecked calls in between use the (now wrong) pieces...
        renderer.prompt_ids(messages)
    with caplog.at_level(logging.ERROR, logger="slm_platform.serving"):
        assert renderer.prompt_ids(messages) == truth  # ...the next checked one catches it
    assert renderer._split is None and "tokenizing every prompt whole" in caplog.text
    assert renderer.prompt_ids(messages) == truth
