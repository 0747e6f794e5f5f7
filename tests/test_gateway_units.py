"""The gateway's parts without a model: the breaker, keys and rate limit, the hooks, and the app
in-process on the shipped domains (no champion, so the oracle answers)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import BreakerBlock
from slm_platform.serving.auth import KeyRing, RateLimiter, fingerprint
from slm_platform.serving.fallback import Breaker
from slm_platform.serving.hooks import Exchange
from slm_platform.serving.protocol import APIError
from slm_platform.serving.server import GatewayConfigError, build_app, check_bind

ROOT = Path(__file__).resolve().parent.parent
TICKET = "I was charged twice for my subscription this month, please refund the second payment."


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_failures_in_a_row_then_lets_one_trial_through():
    clock = Clock()
    b = Breaker(BreakerBlock(failures=3, reset_s=10), clock)
    for _ in range(2):
        assert b.allow()
        b.record(False)
    b.record(True)  # a success resets the count
    for _ in range(3):
        assert b.allow()
        b.record(False)
    assert b.state == "open" and not b.allow()
    clock.t = 10.0
    assert b.state == "half_open" and b.allow() and not b.allow()  # one trial at a time
    b.record(False)  # the trial failed: open again for reset_s
    assert b.state == "open" and not b.allow()
    clock.t = 20.0
    assert b.allow()
    b.record(True)
    assert b.state == "closed" and b.allow()


def test_keys_are_compared_whole_and_known_by_fingerprint_only():
    ring = KeyRing(["sk-alpha", "sk-beta"])
    assert ring.identify("Bearer sk-beta") == fingerprint("sk-beta") and "sk-beta" not in fingerprint("sk-beta")
    for header in (None, "", "Bearer", "Bearer ", "Basic sk-alpha", "Bearer sk-alph", "Bearer sk-alphaX"):
        with pytest.raises(APIError) as info:
            ring.identify(header)
        assert info.value.status == 401 and "sk-alpha" not in info.value.message
    assert KeyRing([]).identify(None) == "anonymous"


def test_rate_limit_is_a_token_bucket_per_key():
    clock = Clock()
    limiter = RateLimiter(rps=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(APIError) as info:
        limiter.check("a")
    assert info.value.status == 429 and info.value.headers["retry-after"] == "1"
    limiter.check("b")  # another key has its own bucket
    clock.t = 0.5  # one token back
    limiter.check("a")
    with pytest.raises(APIError):
        limiter.check("a")


def test_no_key_means_loopback_only():
    check_bind("127.0.0.1", KeyRing([]))
    check_bind("0.0.0.0", KeyRing(["k"]))
    with pytest.raises(GatewayConfigError, match="loopback only"):
        check_bind("0.0.0.0", KeyRing([]))


@pytest.fixture
def app(tmp_path):
    return build_app(ArtifactStore(tmp_path), None, domains_dir=ROOT / "domains", keys=KeyRing(["k"]))


def test_hooks_get_a_typed_exchange_after_the_answer_and_a_slow_hook_delays_nothing(app):
    seen: list[Exchange] = []
    release = threading.Event()

    def slow(exchange: Exchange) -> None:
        release.wait(5)
        seen.append(exchange)

    def broken(exchange: Exchange) -> None:
        raise RuntimeError("a hook that fails")

    app.state.hooks.register(slow)
    app.state.hooks.register(broken)
    with TestClient(app) as c:
        t0 = time.perf_counter()
        r = c.post("/v1/chat/completions", headers={"Authorization": "Bearer k", "x-request-id": "req-abc"},
                   json={"model": "support_triage/triage", "messages": [{"role": "user", "content": TICKET}]})
        assert r.status_code == 200 and time.perf_counter() - t0 < 1.0  # the hook is still blocked
        assert seen == []
        release.set()
    # leaving the client ran the app's shutdown: the hooks were drained
    [ex] = seen
    assert (ex.request_id, ex.domain, ex.role, ex.route, ex.version) == ("req-abc", "support_triage", "triage",
                                                                          "oracle", "oracle")
    assert ex.input == {"messages": [{"role": "user", "content": TICKET}]}
    assert ex.messages[0]["role"] == "system" and ex.prompt_token_ids is None
    assert ex.output["category"] == "billing" and all(ex.validity.values())
    assert ex.fallbacks == ("slm:unavailable",) and ex.latency_ms > 0 and not ex.stream
    assert app.state.gateway.metrics.hook_errors._value.get() == 1


def test_unexpected_errors_are_a_500_in_openai_shape_without_a_traceback(app, monkeypatch):
    def boom(*a, **k):
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(app.state.gateway, "chat", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/chat/completions", headers={"Authorization": "Bearer k"},
                   json={"model": "support_triage/triage", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert r.headers["x-slm-route"] == "none"


class RestartingVLLM:
    """Speaks the part of vLLM's HTTP API the gateway uses (models, runtime LoRA loading,
    completions); `restart()` forgets every loaded adapter, as a restarted server does, and a
    completion for an unknown model is vLLM's 404."""

    def __init__(self) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.loaded: set[str] = set()
        self.loads: list[str] = []
        self.max_tokens: list[int | None] = []  # of every completion request
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply(200, {"data": [{"id": m, "max_model_len": 1024} for m in ["base", *sorted(fake.loaded)]]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if self.path == "/v1/load_lora_adapter":
                    fake.loaded.add(body["lora_name"])
                    fake.loads.append(body["lora_name"])
                    return self._reply(200, {})
                fake.max_tokens.append(body.get("max_tokens"))
                if body["model"] not in fake.loaded:
                    return self._reply(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
                self._reply(200, {"choices": [{"text": '{"a": 1}', "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 5}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def restart(self) -> None:
        self.loaded.clear()


def test_an_adapter_lost_by_a_vllm_restart_is_loaded_again_after_one_fallback(tmp_path):
    import asyncio

    from slm_platform.serving.upstreams import UpstreamFailure, VLLMUpstream

    vllm = RestartingVLLM()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

    async def scenario() -> tuple[str, dict, int]:
        upstream = VLLMUpstream(vllm.url)
        try:
            await asyncio.to_thread(upstream.ensure_adapter, "d--v0001--abc", tmp_path)
            ask = lambda: upstream.complete("d--v0001--abc", [1, 2, 3], schema, max_tokens=8, temperature=0.0,
                                            timeout_s=10)
            assert (await ask()).output == {"a": 1}
            vllm.restart()
            with pytest.raises(UpstreamFailure) as failed:
                await ask()  # this one falls back; the adapter is loaded again behind it
            for _ in range(100):
                if "d--v0001--abc" in vllm.loaded:
                    break
                await asyncio.sleep(0.05)
            answer = await ask()
            return failed.value.detail, answer.output, failed.value.reason
        finally:
            await upstream.aclose()

    try:
        detail, output, reason = asyncio.run(scenario())
    finally:
        vllm.server.shutdown()
    assert reason == "error" and "does not know adapter d--v0001--abc (restarted?)" in detail
    assert output == {"a": 1} and vllm.loads == ["d--v0001--abc", "d--v0001--abc"]


def test_a_bounded_answer_may_use_the_rest_of_the_context_and_a_client_cap_is_kept(tmp_path):
    """max_tokens None (the grammar closes the answer) reaches vLLM's completions API as the room
    left in the server's context, not its default of 16 tokens; a client's own cap is sent as is."""
    import asyncio

    from slm_platform.serving.upstreams import VLLMUpstream

    vllm = RestartingVLLM()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

    async def scenario() -> None:
        upstream = VLLMUpstream(vllm.url)
        try:
            await asyncio.to_thread(upstream.ensure_adapter, "d--v0001--abc", tmp_path)
            for cap in (None, 8):
                await upstream.complete("d--v0001--abc", [1, 2, 3], schema, max_tokens=cap, temperature=0.0,
                                        timeout_s=10)
        finally:
            await upstream.aclose()

    try:
        asyncio.run(scenario())
    finally:
        vllm.server.shutdown()
    assert vllm.max_tokens == [1024 - 3, 8]
