"""A real vLLM CPU server from the dedicated virtualenv (`settings.vllm_venv()`), the session's shared
`vllm_server` (tests/conftest.py):
health, concurrent guided decoding, order, token counts, LoRA adapters loaded at run time,
and a server that cannot start (clear error with the log tail).

Startup takes ~40 s with a warm `~/.cache/vllm` (a few minutes the first time on a machine).
"""

from __future__ import annotations

import os

from pathlib import Path

import pytest

from slm_platform import settings
from slm_platform.inference import GenerationRequest, make_engine, requests_for
from slm_platform.inference.vllm_engine import VLLMEngine, VLLMServer, VLLMServerError

from conftest import NO_VLLM_REASON, SERVED_NAME, vllm_venv_missing  # tests/conftest.py
from engine_cases import (TOOL_ASKS, TOOLS, TRIAGE_SCHEMA, assert_valid, make_random_lora,  # noqa: F401
                          tools_contract, triage_contract, user)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(vllm_venv_missing(), reason=NO_VLLM_REASON),
]

TICKETS = [
    "My card was charged twice this month, please refund me!",
    "The app crashes every time I open the settings page.",
    "How do I change my password?",
    "Please cancel my subscription at the end of the month.",
    "Someone logged into my account from another country.",
    "I would love a dark mode.",
    "The invoice for March shows the wrong company name.",
    "I can't log in since yesterday, it says my account is locked.",
    "Where can I download my receipts?",
    "Your last update deleted all my folders!!!",
    "Can I pay by bank transfer instead of card?",
    "Export to PDF produces blank pages.",
    "How do I add a second user to my plan?",
    "Stop charging me, I closed my account in January.",
    "The search button does nothing on Firefox.",
    "Is there a student discount?",
]



@pytest.fixture(scope="module")
def adapters(smollm2_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora")
    return {"static": make_random_lora(smollm2_dir, root / "static", seed=0),
            "dynamic": make_random_lora(smollm2_dir, root / "dynamic", seed=1)}


@pytest.fixture(scope="module")
def server(vllm_server):
    """The session's shared server (tests/conftest.py): served name "base", LoRA enabled."""
    return vllm_server


@pytest.fixture(scope="module")
def engine(server):
    eng = make_engine("vllm", base_url=server.base_url, model_name=SERVED_NAME, concurrency=16, timeout_s=300)
    yield eng
    eng.close()


# runs first in the session (conftest moves it), before the shared server starts: never two at once
@pytest.mark.own_vllm_server
def test_server_that_cannot_start_reports_its_log_tail(tmp_path):
    bad = tmp_path / "not_a_model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")  # no model_type: vLLM refuses it at startup
    srv = VLLMServer(bad, log_path=tmp_path / "dead.log", startup_timeout_s=300)
    with pytest.raises(VLLMServerError) as err:
        srv.start()
    msg = str(err.value)
    assert "exited with code" in msg and "last 50 log lines" in msg and str(tmp_path / "dead.log") in msg
    assert "model_type" in msg  # vLLM's own reason, from the log tail
    assert not srv.running()


def test_missing_venv_is_a_clear_error(tmp_path, smollm2_dir):
    with pytest.raises(VLLMServerError, match="no vLLM virtualenv"):
        VLLMServer(smollm2_dir, venv=tmp_path / "nothing").start()


def test_health_and_models(server, engine):
    assert server.running() and engine.health()
    assert SERVED_NAME in engine.models()


def test_guided_concurrent_requests_are_schema_valid_and_in_order(engine, smollm2_dir):
    from transformers import AutoTokenizer

    contract = triage_contract()
    reqs = requests_for(contract, [user(t) for t in TICKETS], max_tokens=200,
                        request_ids=[f"r{i}" for i in range(len(TICKETS))])
    results = engine.generate(reqs)
    assert len(results) == 16
    assert [r.request_id for r in results] == [q.request_id for q in reqs]
    assert_valid(results, contract)
    # in order: each prompt's token count is the one of its own request
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    for q, r in zip(reqs, results):
        prompt = tok.apply_chat_template(q.messages, tokenize=False, add_generation_prompt=True)
        assert r.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"]), q.request_id


def test_guided_tool_call_is_one_valid_catalog_call(engine):
    contract = tools_contract()
    results = engine.generate(requests_for(contract, [user(t) for t in TOOL_ASKS], max_tokens=200))
    assert_valid(results, contract)


def test_unguided_request_and_budget(engine):
    (r,) = engine.generate([GenerationRequest([{"role": "user", "content": "Tell me a long story."}], None,
                                              max_tokens=8)])
    assert r.error is None and r.completion_tokens == 8 and r.finish_reason == "length" and r.text


def test_lora_adapters_at_run_time(server, engine, adapters):
    """Both adapters load at run time (the shared server starts without --lora-modules; the command
    line for adapters at start is covered by test_server_command_and_environment)."""
    contract = triage_contract()
    server.load_lora_adapter("static", adapters["static"])
    (static,) = engine.generate(requests_for(contract, [user(TICKETS[0])], max_tokens=200, adapter="static"))
    assert_valid([static], contract)

    server.load_lora_adapter("dynamic", adapters["dynamic"])  # POST /v1/load_lora_adapter
    assert "dynamic" in engine.models()
    (dynamic,) = engine.generate(requests_for(contract, [user(TICKETS[0])], max_tokens=200, adapter="dynamic"))
    assert_valid([dynamic], contract)

    free = [GenerationRequest([{"role": "user", "content": "Say hi."}], None, max_tokens=12, adapter=a)
            for a in (None, "static", "dynamic")]
    base, with_static, with_dynamic = engine.generate(free)
    assert all(r.error is None for r in (base, with_static, with_dynamic))
    assert len({base.text, with_static.text, with_dynamic.text}) > 1  # random adapters change the output

    (unknown,) = engine.generate(requests_for(contract, [user("x")], adapter="nope"))
    assert unknown.error and "404" in unknown.error and "nope" in unknown.error


def test_engine_against_a_dead_url_reports_errors():
    with VLLMEngine("http://127.0.0.1:9", "m", concurrency=2, timeout_s=5) as eng:
        results = eng.generate([GenerationRequest([{"role": "user", "content": "x"}], None)] * 2)
        assert not eng.health()
    assert all(r.error and "127.0.0.1:9" in r.error and r.text == "" for r in results)



def test_server_command_and_environment(tmp_path):
    srv = VLLMServer(tmp_path, served_model_name="m", port=8123, dtype="float32", max_model_len=1024,
                     lora_modules={"a": tmp_path / "a"}, max_lora_rank=8, max_loras=2, kv_cache_gib=3)
    cmd = srv.command()
    assert cmd[:3] == [str(settings.vllm_venv() / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    flags = " ".join(cmd)
    for part in ("--model " + str(tmp_path), "--served-model-name m", "--port 8123", "--max-model-len 1024",
                 "--dtype float32", "--enable-lora", "--max-lora-rank 8", "--max-loras 2",
                 f"--lora-modules a={tmp_path / 'a'}"):
        assert part in flags
    env = srv.environment()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "--enable-lora" not in VLLMServer(tmp_path).command()


def test_small_machines_give_vllm_every_core(tmp_path, monkeypatch):
    # vLLM-CPU reserves a core for its API server by default: on 2 cores that halves the compute
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert VLLMServer(tmp_path).environment()["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in VLLMServer(tmp_path).environment()
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "2")  # an operator's choice wins
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert VLLMServer(tmp_path).environment()["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "2"


def test_make_engine_arguments():
    with pytest.raises(ValueError, match="base_url .* or model_dir"):
        make_engine("vllm")
    with pytest.raises(ValueError, match="unknown engine kind"):
        make_engine("llama.cpp")  # type: ignore[arg-type]
    eng = make_engine("vllm", base_url="http://example.invalid:8000/v1", model_name="m")
    assert isinstance(eng, VLLMEngine) and eng.root == "http://example.invalid:8000" and eng.model_name == "m"
    eng.close()
