"""Teacher clients: the OpenAI-compatible one end to end through the real `openai` SDK against a
real HTTP server (tests/fake_openai_server.py), the Vertex Gemini one through an injected transport
(and the real google-genai SDK when it is installed), and the shared machinery: retries, rate
limit, cache, cost, budget, secrets."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from slm_platform.config.models import Pricing, Role, TeacherBlock
from slm_platform.domain.contract import RoleContract
from slm_platform.domain.render import render_messages
from slm_platform.teachers import registry
from slm_platform.teachers import Teacher, TeacherBudgetExceeded, TeacherError, teacher_from_config
from slm_platform.teachers.cache import ResponseCache, cache_key
from slm_platform.teachers.client import RequestFailure, RetryPolicy, Scrubber, TokenBucket, parse_retry_after
from slm_platform.teachers.openai_compatible import (
    OpenAICompatibleTeacher,
    is_azure_deployment_url,
    split_base_url,
)
from slm_platform.teachers.vertex_gemini import VertexGeminiTeacher, failure_from_exception, to_gemini_schema

try:
    from tests.fake_openai_server import FakeOpenAIServer, Recorded, Reply, completion, error, json_reply, tool_call_reply
except ImportError:  # tests/ on sys.path instead of the repo root
    from fake_openai_server import FakeOpenAIServer, Recorded, Reply, completion, error, json_reply, tool_call_reply

ROOT = Path(__file__).resolve().parent.parent

# --- contracts ------------------------------------------------------------------------------------
TRIAGE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "category": {"enum": ["bug", "billing", "other"]},
        "priority": {"type": "string", "enum": ["low", "high"]},
    },
    "required": ["category", "priority"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {
        "name": "search_flights", "description": "Search flights.",
        "parameters": {"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}},
                       "required": ["origin", "destination"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "minLength": 2}},
                       "required": ["city"], "additionalProperties": False}}},
]
GOOD = {"category": "bug", "priority": "high"}


def structured_contract() -> RoleContract:
    role = Role(id="triage", kind="structured", system_prompt="prompts/triage.md", output_schema="contracts/t.json")
    return RoleContract(role=role, system_prompt="Classify the support ticket.", output_schema=TRIAGE_SCHEMA)


def tool_contract() -> RoleContract:
    role = Role(id="call_tool", kind="tool_call", system_prompt="prompts/call.md", tools="contracts/tools.json")
    return RoleContract(role=role, system_prompt="Call the right tool.", tools=TOOLS)


def inputs(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"ticket number {i:03d}: the app crashes"}]} for i in range(n)]


def cfg(url: str, **kw: Any) -> TeacherBlock:
    base = dict(provider="openai_compatible", model="fake-model", base_url=url, rate_limit_rps=1000.0,
                max_retries=3, timeout_s=5.0, budget=100.0)
    base.update(kw)
    return TeacherBlock(**base)


class Sleeps:
    """A `sleep` that records and returns at once (retries and rate-limit waits without waiting)."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.calls.append(seconds)


def teacher(server_or_url: Any, tmp_path: Path, *, block: TeacherBlock | None = None, **kw: Any) -> OpenAICompatibleTeacher:
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    kw.setdefault("cache", ResponseCache(tmp_path / "teacher_cache"))
    kw.setdefault("backoff_base_s", 0.001)
    kw.setdefault("rng", random.Random(0))
    return OpenAICompatibleTeacher(block or cfg(url), **kw)


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


def chat_posts(server: FakeOpenAIServer) -> list[Recorded]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


# --- structured, end to end -----------------------------------------------------------------------
def test_structured_labeling_end_to_end(server, tmp_path):
    server.responder = lambda req: json_reply(GOOD, usage=(40, 8))
    contract = structured_contract()
    t = teacher(server, tmp_path)
    assert isinstance(t, Teacher)
    xs = inputs(3) + [{"messages": [{"role": "user", "content": "refund please"}], "plan": "pro"}]
    out = t.label(contract, xs)
    assert out == [GOOD] * 4
    posts = chat_posts(server)
    assert len(posts) == 4
    by_content = {json.dumps(p.body["messages"]): p for p in posts}
    for x in xs:  # the one renderer builds the prompt (context fields included)
        body = by_content[json.dumps(render_messages(contract, x))].body
        assert body["model"] == "fake-model"
        assert body["temperature"] == 0.0
        assert body["max_completion_tokens"] == 1024
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "triage", "schema": contract.guided_schema(), "strict": True}}
        assert "tools" not in body
    assert {p.headers["authorization"] for p in posts} == {"Bearer EMPTY"}  # no api_key_env configured
    s = t.stats.to_dict()
    assert (s["requests"], s["labeled"], s["invalid_outputs"], s["failures"], s["retries"]) == (4, 4, 0, 0, 0)
    assert (s["prompt_tokens"], s["completion_tokens"]) == (160, 32)


def test_invalid_outputs_are_none_and_counted(server, tmp_path):
    server.script(json_reply({"category": "bug"}),  # missing priority
                  completion("this is not json"),
                  completion(None, refusal="I can't help with that"),
                  completion("```json\n" + json.dumps(GOOD) + "\n```"),  # fenced JSON is accepted
                  Reply(body={"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}))
    t = teacher(server, tmp_path, concurrency=1)
    out = t.label(structured_contract(), inputs(5))
    assert out == [None, None, None, GOOD, None]
    assert t.stats.invalid_outputs == 4 and t.stats.labeled == 1 and t.stats.failures == 0


# --- tool calls -----------------------------------------------------------------------------------
def test_tool_call_mode_reads_tool_calls_and_falls_back_to_content(server, tmp_path):
    server.script(tool_call_reply("search_flights", {"origin": "Berlin", "destination": "Rome"}),
                  json_reply({"name": "get_weather", "arguments": {"city": "Oslo"}}),  # no tool_calls: content
                  tool_call_reply("book_hotel", {"city": "Oslo"}),  # not in the catalog: invalid
                  tool_call_reply("get_weather", {"city": "O"}))  # breaks minLength: invalid
    contract = tool_contract()
    t = teacher(server, tmp_path, concurrency=1)
    out = t.label(contract, inputs(4))
    assert out == [{"name": "search_flights", "arguments": {"origin": "Berlin", "destination": "Rome"}},
                   {"name": "get_weather", "arguments": {"city": "Oslo"}}, None, None]
    body = chat_posts(server)[0].body
    assert body["tools"] == TOOLS and body["tool_choice"] == "required"
    assert "response_format" not in body
    assert t.stats.invalid_outputs == 2 and t.active_tool_mode == "tools"


def _no_tools_server(req: Recorded) -> Reply:
    if "tools" in req.body:
        return error(400, "tool_choice 'required' is not supported by this server")
    return json_reply({"name": "get_weather", "arguments": {"city": "Paris"}})


@pytest.mark.parametrize("concurrency", [1, 4])
def test_tool_choice_required_rejected_switches_to_json_schema_once(server, tmp_path, caplog, concurrency):
    server.responder = _no_tools_server
    contract = tool_contract()
    t = teacher(server, tmp_path, concurrency=concurrency)
    caplog.set_level(logging.INFO, logger="slm_platform.teachers")
    out = t.label(contract, inputs(6))
    assert out == [{"name": "get_weather", "arguments": {"city": "Paris"}}] * 6
    assert t.active_tool_mode == "json_schema"
    posts = chat_posts(server)
    tool_posts = [p for p in posts if "tools" in p.body]
    schema_posts = [p for p in posts if "response_format" in p.body]
    assert 1 <= len(tool_posts) <= concurrency and len(schema_posts) == 6
    assert schema_posts[0].body["response_format"]["json_schema"]["schema"] == contract.guided_schema()
    switches = [r for r in caplog.records if "rejected tools" in r.getMessage()]
    assert len(switches) == 1  # logged once
    assert t.stats.failures == 0 and t.stats.retries == 0
    # the rest of the run goes straight to json_schema
    t.label(contract, [{"messages": [{"role": "user", "content": "weather?"}]}])
    assert "response_format" in chat_posts(server)[-1].body


def test_forced_tools_mode_does_not_fall_back(server, tmp_path):
    server.responder = _no_tools_server
    t = teacher(server, tmp_path, tool_mode="tools")
    assert t.label(tool_contract(), inputs(1)) == [None]
    assert t.stats.failures == 1 and len(server.requests) == 1


def test_json_schema_tool_mode_from_the_start(server, tmp_path):
    server.responder = _no_tools_server
    t = teacher(server, tmp_path, tool_mode="json_schema")
    assert t.label(tool_contract(), inputs(2)) == [{"name": "get_weather", "arguments": {"city": "Paris"}}] * 2
    assert all("tools" not in p.body for p in server.requests)


# --- retries --------------------------------------------------------------------------------------
def test_429_with_retry_after_twice_then_ok(server, tmp_path):
    server.script(error(429, "rate limited", headers={"Retry-After": "2"}),
                  error(429, "rate limited", headers={"retry-after-ms": "1500"}),
                  json_reply(GOOD))
    sleeps = Sleeps()
    t = teacher(server, tmp_path, sleep=sleeps)
    assert t.label(structured_contract(), inputs(1)) == [GOOD]
    assert (t.stats.requests, t.stats.retries, t.stats.failures) == (3, 2, 0)
    assert len(server.requests) == 3
    retry_waits = [s for s in sleeps.calls if s >= 1.0]
    assert retry_waits == [2.0, 1.5]  # Retry-After honoured (backoff base is 1 ms here)
    assert t.stats.retry_wait_s == pytest.approx(3.5)


def test_500_is_retried_and_gives_up_after_max_retries(server, tmp_path):
    server.script(error(500, "boom", type_="server_error"), json_reply(GOOD))
    t = teacher(server, tmp_path, sleep=Sleeps())
    assert t.label(structured_contract(), inputs(1)) == [GOOD]
    assert (t.stats.requests, t.stats.retries) == (2, 1)

    server.responder = lambda req: error(503, "unavailable", type_="server_error")
    t2 = teacher(server, tmp_path, block=cfg(server.url, max_retries=2), sleep=Sleeps())
    assert t2.label(structured_contract(), [{"messages": [{"role": "user", "content": "other"}]}]) == [None]
    assert (t2.stats.requests, t2.stats.retries, t2.stats.failures) == (3, 2, 1)


def test_backoff_is_exponential_with_jitter():
    policy = RetryPolicy(max_retries=5, base_s=1.0, max_s=8.0, rng=random.Random(1))
    for attempt, full in enumerate([1, 2, 4, 8, 8, 8]):
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert policy.delay(0, retry_after=5.0) == 5.0
    assert RetryPolicy(max_retry_after_s=10.0).delay(0, retry_after=3600) == 10.0


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a past date
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_timeout_is_retried(server, tmp_path):
    server.script(Reply(body=completion(json.dumps(GOOD)).body, delay=1.5))
    server.responder = lambda req: json_reply(GOOD)
    t = teacher(server, tmp_path, block=cfg(server.url, timeout_s=0.3), sleep=Sleeps())
    assert t.label(structured_contract(), inputs(1)) == [GOOD]
    assert (t.stats.requests, t.stats.retries) == (2, 1)


def test_connection_error_is_retried_then_counted(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    t = teacher(url, tmp_path, block=cfg(url, max_retries=2), sleep=Sleeps())
    assert t.label(structured_contract(), inputs(1)) == [None]
    assert (t.stats.requests, t.stats.retries, t.stats.failures) == (3, 2, 1)


@pytest.mark.parametrize("status", [400, 422])
def test_no_retry_on_400(server, tmp_path, caplog, status):
    server.script(error(status, "prompt too long for this model"), json_reply(GOOD))
    t = teacher(server, tmp_path, sleep=Sleeps(), concurrency=1)
    caplog.set_level(logging.WARNING, logger="slm_platform.teachers")
    assert t.label(structured_contract(), inputs(2)) == [None, GOOD]
    assert (t.stats.requests, t.stats.retries, t.stats.failures) == (2, 0, 1)
    assert any(f"HTTP {status}: prompt too long" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status,hint", [(401, "API key was rejected"), (403, "no access"), (404, "does not exist")])
def test_auth_and_not_found_stop_the_run_without_retry(server, tmp_path, monkeypatch, status, hint):
    monkeypatch.setenv("SLM_TEST_KEY_VAR", "sk-some-key-0000")
    server.responder = lambda req: error(status, "nope")
    t = teacher(server, tmp_path, block=cfg(server.url, api_key_env="SLM_TEST_KEY_VAR"), sleep=Sleeps(), concurrency=1)
    with pytest.raises(TeacherError) as info:
        t.label(structured_contract(), inputs(3))
    assert hint in str(info.value) and "SLM_TEST_KEY_VAR" in str(info.value) and f"HTTP {status}" in str(info.value)
    assert len(server.requests) == 1 and t.stats.retries == 0  # stopped, other inputs never sent


def test_repeated_rejections_stop_the_run(server, tmp_path):
    server.responder = lambda req: error(400, "response_format is invalid")
    t = teacher(server, tmp_path, concurrency=1, max_rejections_in_a_row=3)
    with pytest.raises(TeacherError, match="last 3 requests were all rejected"):
        t.label(structured_contract(), inputs(10))
    assert len(server.requests) == 3


# --- rate limit -----------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_computed_waits():
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(9)]  # sequential callers
    assert waits[0] == 0.0 and waits[1:] == pytest.approx([0.25] * 8)
    assert clock.now - 100.0 == pytest.approx(8 / 4.0)  # N requests at R rps take (N-1)/R
    clock.now += 10.0  # idle: the bucket refills, but only to its capacity (1)
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.25, 0.5])  # concurrent callers queue


def test_rate_limit_spaces_requests_across_threads(server, tmp_path):
    n, rps = 6, 20.0
    server.responder = lambda req: json_reply(GOOD)
    t = teacher(server, tmp_path, block=cfg(server.url, rate_limit_rps=rps), concurrency=4)
    start = time.monotonic()
    assert t.label(structured_contract(), inputs(n)) == [GOOD] * n
    elapsed = time.monotonic() - start
    assert elapsed >= (n - 1) / rps * 0.95
    arrivals = sorted(r.at for r in server.requests)
    assert arrivals[-1] - arrivals[0] >= (n - 1) / rps * 0.9
    assert t.stats.rate_limit_wait_s >= (n - 1) / rps * 0.95  # at least the last caller's wait


# --- cache ----------------------------------------------------------------------------------------
def test_cache_hit_on_repeat_costs_nothing(server, tmp_path):
    server.responder = lambda req: json_reply(GOOD, usage=(100, 10))
    block = cfg(server.url, pricing=Pricing(input_per_1m=1000.0, output_per_1m=1000.0))
    first = teacher(server, tmp_path, block=block)
    assert first.label(structured_contract(), inputs(3)) == [GOOD] * 3
    assert first.stats.cost == pytest.approx(3 * 0.11)
    files = sorted((tmp_path / "teacher_cache").rglob("*.json"))
    assert len(files) == 3 and all(f.parent.name == f.stem[:2] for f in files)
    entry = json.loads(files[0].read_text())
    assert entry["scope"] == {"provider": "openai_compatible", "model": "fake-model",
                              "host": f"127.0.0.1:{server.url.split(':')[-1].split('/')[0]}/v1"}
    assert entry["key"] == cache_key(entry["scope"], entry["request"]) == files[0].stem
    assert not list((tmp_path / "teacher_cache").rglob("*.tmp"))  # atomic writes leave no temp files

    second = teacher(server, tmp_path, block=block)  # a new run, same cache
    assert second.label(structured_contract(), inputs(3)) == [GOOD] * 3
    assert len(server.requests) == 3  # the server saw each request once
    s = second.stats.to_dict()
    assert (s["cache_hits"], s["requests"], s["cost"], s["prompt_tokens"]) == (3, 0, 0.0, 0)

    other_model = teacher(server, tmp_path, block=cfg(server.url, model="other-model"))
    other_model.label(structured_contract(), inputs(1))
    assert len(server.requests) == 4  # the model is part of the key


def test_unreadable_cache_entry_is_a_miss(server, tmp_path):
    server.responder = lambda req: json_reply(GOOD)
    t = teacher(server, tmp_path)
    t.label(structured_contract(), inputs(1))
    (file,) = (tmp_path / "teacher_cache").rglob("*.json")
    file.write_text("{ truncated")
    t2 = teacher(server, tmp_path)
    assert t2.label(structured_contract(), inputs(1)) == [GOOD]
    assert len(server.requests) == 2 and t2.stats.cache_hits == 0


def test_cache_defaults_to_slm_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    t = OpenAICompatibleTeacher(cfg("http://127.0.0.1:9/v1"))
    assert t.cache is not None and t.cache.root == (tmp_path / "home" / "teacher_cache").resolve()
    assert OpenAICompatibleTeacher(cfg("http://127.0.0.1:9/v1"), cache=False).cache is None


# --- cost and budget ------------------------------------------------------------------------------
def test_cost_accounting_from_usage(server, tmp_path):
    server.responder = lambda req: json_reply(GOOD, usage=(1000, 200))
    block = cfg(server.url, pricing=Pricing(input_per_1m=2.0, output_per_1m=8.0))
    t = teacher(server, tmp_path, block=block)
    t.label(structured_contract(), inputs(3))
    s = t.stats.to_dict()
    assert (s["prompt_tokens"], s["completion_tokens"]) == (3000, 600)
    assert s["cost"] == pytest.approx(3 * (1000 * 2.0 + 200 * 8.0) / 1e6)
    assert t.budget.spent == pytest.approx(s["cost"]) and t.budget.reserved == pytest.approx(0.0)


def test_response_without_usage_is_charged_an_estimate(server, tmp_path):
    body = json_reply(GOOD).body
    del body["usage"]
    server.responder = lambda req: Reply(body=body)
    t = teacher(server, tmp_path, block=cfg(server.url, pricing=Pricing(input_per_1m=1e3, output_per_1m=1e3)))
    assert t.label(structured_contract(), inputs(1)) == [GOOD]
    s = t.stats.to_dict()
    assert s["usage_estimated"] == 1 and s["prompt_tokens"] > 20 and s["completion_tokens"] > 10
    assert s["cost"] == pytest.approx((s["prompt_tokens"] + s["completion_tokens"]) / 1000)


def _budget_setup(server, tmp_path, n_fit: int, concurrency: int):
    server.responder = lambda req: json_reply(GOOD, usage=(50, 10))
    pricing = Pricing(input_per_1m=1000.0, output_per_1m=1000.0)  # 0.001 per token
    probe = teacher(server, tmp_path, block=cfg(server.url, pricing=pricing), max_tokens=100)
    estimate = probe.estimate_cost(probe.build_request(structured_contract(), inputs(1)[0]))
    actual = 0.06
    budget = (n_fit - 1) * actual + estimate + actual / 2  # room for n_fit requests, not n_fit + 1
    return teacher(server, tmp_path, block=cfg(server.url, pricing=pricing, budget=budget), max_tokens=100,
                   concurrency=concurrency), budget


def test_budget_stop_raises_with_a_clear_message(server, tmp_path):
    t, budget = _budget_setup(server, tmp_path, n_fit=2, concurrency=1)
    with pytest.raises(TeacherBudgetExceeded) as info:
        t.label(structured_contract(), inputs(5))
    exc = info.value
    msg = str(exc)
    assert f"spent 0.120000 of budget {budget:.6f}" in msg
    assert "Of 5 inputs in this call 2 were labeled, 0 invalid, 0 failed and 3 left unlabeled" in msg
    assert exc.outputs == [GOOD, GOOD, None, None, None]
    assert exc.counts == {"labeled": 2, "invalid": 0, "failed": 0, "unlabeled": 3} and exc.unlabeled == 3
    assert len(server.requests) == 2 and t.stats.requests == 2
    assert t.stats.cost == pytest.approx(0.12) and t.stats.unlabeled == 3 and t.stats.labeled == 2


def test_budget_with_threads_never_overspends_and_counts_add_up(server, tmp_path):
    t, budget = _budget_setup(server, tmp_path, n_fit=3, concurrency=4)
    with pytest.raises(TeacherBudgetExceeded) as info:
        t.label(structured_contract(), inputs(12))
    c = info.value.counts
    assert sum(c.values()) == 12 and c["unlabeled"] > 0
    assert c["labeled"] == len(server.requests) == sum(o is not None for o in info.value.outputs)
    assert t.budget.spent <= budget


def test_budget_allows_cache_hits_after_it_ran_out(server, tmp_path):
    t, _ = _budget_setup(server, tmp_path, n_fit=2, concurrency=1)
    with pytest.raises(TeacherBudgetExceeded):
        t.label(structured_contract(), inputs(4))
    t2, _ = _budget_setup(server, tmp_path, n_fit=2, concurrency=1)
    with pytest.raises(TeacherBudgetExceeded) as info:  # 2 from the cache (free), 2 paid, then out again
        t2.label(structured_contract(), inputs(6))
    assert info.value.outputs == [GOOD] * 4 + [None, None]
    assert t2.stats.cache_hits == 2 and t2.stats.requests == 2


# --- secrets --------------------------------------------------------------------------------------
SECRET = "sk-LEAKCHECK-7f3a9c2e5b1d4e6f8a0b"


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def test_api_key_never_leaks(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SLM_TEST_TEACHER_KEY", SECRET)
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    echo = f"Incorrect API key provided: {SECRET}. Bearer {SECRET}"
    block = cfg(server.url, api_key_env="SLM_TEST_TEACHER_KEY", max_retries=1,
                pricing=Pricing(input_per_1m=1.0, output_per_1m=1.0))
    server.script(json_reply(GOOD),  # labeled and cached
                  error(429, echo, headers={"Retry-After": "0"}), json_reply(GOOD),  # retry path (info log)
                  error(400, echo),  # per-input failure (warning log)
                  completion(f"not json {SECRET}"))  # invalid output (debug log)
    t = teacher(server, tmp_path, block=block, concurrency=1, sleep=Sleeps())
    assert t.label(structured_contract(), inputs(4)) == [GOOD, GOOD, None, None]
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {SECRET}"}  # it was used

    server.script(error(401, echo))
    t2 = teacher(server, tmp_path, block=block, concurrency=1, sleep=Sleeps())
    with pytest.raises(TeacherError) as info:
        t2.label(structured_contract(), [{"messages": [{"role": "user", "content": "new"}]}])

    texts = [caplog.text, *(r.getMessage() for r in caplog.records), json.dumps(t.stats.to_dict()),
             json.dumps(t2.stats.to_dict()), repr(t), repr(t2), t.name]
    for exc in _chain(info.value):
        texts += [str(exc), repr(exc), repr(exc.args)]
    texts += [f.read_text() for f in (tmp_path / "teacher_cache").rglob("*") if f.is_file()]
    assert len(list((tmp_path / "teacher_cache").rglob("*.json"))) == 3
    assert "***" in str(info.value) or "rejected" in str(info.value)
    for text in texts:
        assert SECRET not in text


def test_missing_key_env_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("SLM_TEST_NOT_SET", raising=False)
    with pytest.raises(TeacherError, match="SLM_TEST_NOT_SET.*not set"):
        teacher("http://127.0.0.1:9/v1", tmp_path, block=cfg("http://127.0.0.1:9/v1", api_key_env="SLM_TEST_NOT_SET"))


def test_scrubber_masks_plain_and_url_quoted_forms():
    scrub = Scrubber("a/b+c=d-secret")
    assert scrub("x a/b+c=d-secret y a%2Fb%2Bc%3Dd-secret") == "x *** y ***"
    assert Scrubber(None)("text") == "text" and Scrubber("EMPTY")("EMPTY") == "EMPTY"


# --- Azure ----------------------------------------------------------------------------------------
def test_azure_deployment_url_query_and_header(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_TEST_AZURE_KEY", SECRET)
    url = f"{server.root}/openai/deployments/gpt4o-prod?api-version=2024-10-21"
    assert split_base_url(url) == (f"{server.root}/openai/deployments/gpt4o-prod", {"api-version": "2024-10-21"})
    server.responder = lambda req: json_reply(GOOD)
    t = teacher(url, tmp_path, block=cfg(url, model="gpt4o-prod", api_key_env="SLM_TEST_AZURE_KEY"))
    assert t.label(structured_contract(), inputs(1)) == [GOOD]
    (req,) = server.requests
    assert req.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert req.query == {"api-version": "2024-10-21"}
    assert is_azure_deployment_url("https://myres.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21")
    assert not is_azure_deployment_url("https://myres.openai.azure.com/openai/v1/")  # v1 API: Bearer key is enough
    assert not is_azure_deployment_url(url)
    azure = OpenAICompatibleTeacher(cfg("https://myres.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
                                        api_key_env="SLM_TEST_AZURE_KEY"), cache=False)
    assert azure._client.default_headers.get("api-key") == SECRET
    assert dict(azure._client.default_query) == {"api-version": "2024-10-21"}
    assert SECRET not in repr(azure)


# --- registry -------------------------------------------------------------------------------------
def test_registry_and_teacher_from_config(tmp_path):
    assert teacher_from_config(TeacherBlock()) is None
    built = teacher_from_config(cfg("http://127.0.0.1:9/v1"))
    assert isinstance(built, OpenAICompatibleTeacher) and built.name == "openai_compatible:fake-model"
    built = registry.build(cfg("http://127.0.0.1:9/v1"), concurrency=2, cache=False)
    assert built.concurrency == 2 and built.cache is None
    vertex = TeacherBlock(provider="vertex_gemini", model="gemini-2.5-flash", project="p", region="us-central1")
    assert isinstance(registry.build(vertex, transport=lambda req: {}, cache=False), VertexGeminiTeacher)


def test_vertex_without_sdk_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.genai", None)  # import fails, installed or not
    vertex = TeacherBlock(provider="vertex_gemini", model="gemini-2.5-flash", project="p", region="us-central1")
    with pytest.raises(TeacherError, match=r"pip install -e '\.\[vertex\]'"):
        teacher_from_config(vertex)


# --- Vertex Gemini: schema conversion -------------------------------------------------------------
GEMINI_KEYS = {"type", "format", "title", "description", "nullable", "enum", "items", "properties", "required",
               "propertyOrdering", "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum",
               "minProperties", "maxProperties", "anyOf"}


def _walk_schema(node: Any) -> None:
    """Every keyword is one Gemini's Schema has; property names are not keywords."""
    assert isinstance(node, dict)
    assert set(node) <= GEMINI_KEYS, set(node) - GEMINI_KEYS
    if "type" in node:
        assert node["type"] in {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
    if "enum" in node:
        assert node.get("type") == "STRING" and all(isinstance(v, str) for v in node["enum"])
    for sub in (node.get("properties") or {}).values():
        _walk_schema(sub)
    for sub in node.get("anyOf") or []:
        _walk_schema(sub)
    if "items" in node:
        _walk_schema(node["items"])


def test_to_gemini_schema_basic_conversion():
    assert to_gemini_schema(TRIAGE_SCHEMA) == {
        "type": "OBJECT",
        "properties": {"category": {"type": "STRING", "enum": ["bug", "billing", "other"]},
                       "priority": {"type": "STRING", "enum": ["low", "high"]}},
        "required": ["category", "priority"],
        "propertyOrdering": ["category", "priority"],
    }


def test_to_gemini_schema_keywords():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "title": "T", "type": "object",
        "$defs": {"City": {"type": "string", "minLength": 2, "description": "a city"}},
        "properties": {
            "type": {"const": "flight"},  # a property named like a keyword
            "const": {"type": ["integer", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 10},
            "city": {"$ref": "#/$defs/City"},
            "maybe": {"anyOf": [{"type": "number", "minimum": 0.5}, {"type": "null"}], "description": "d"},
            "either": {"oneOf": [{"type": "string", "format": "email"}, {"type": "integer", "format": "int64"}]},
            "multi": {"type": ["string", "boolean"]},
            "when": {"type": "string", "format": "date-time", "default": "now", "examples": ["x"]},
            "level": {"enum": [1, 2, 3]},
            "flag": {"const": True},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3, "uniqueItems": True},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
            "meta": {"type": "object", "additionalProperties": {"type": "string"}},
            "both": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                               {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
        },
        "required": ["type", "city", "ghost"],
        "additionalProperties": False,
    }
    out = to_gemini_schema(schema)
    _walk_schema(out)
    p = out["properties"]
    assert out["title"] == "T" and out["required"] == ["type", "city"]
    assert out["propertyOrdering"] == list(schema["properties"])
    assert p["type"] == {"type": "STRING", "enum": ["flight"]}
    assert p["const"] == {"type": "INTEGER", "nullable": True, "minimum": 1, "maximum": 9}
    assert p["city"] == {"type": "STRING", "description": "a city", "minLength": 2}
    assert p["maybe"] == {"type": "NUMBER", "minimum": 0.5, "nullable": True, "description": "d"}
    assert p["either"] == {"anyOf": [{"type": "STRING"}, {"type": "INTEGER", "format": "int64"}]}
    assert p["multi"] == {"anyOf": [{"type": "STRING"}, {"type": "BOOLEAN"}]}
    assert p["when"] == {"type": "STRING", "format": "date-time"}
    assert p["level"] == {"type": "INTEGER"}  # Gemini enums are strings: dropped, validation still checks
    assert p["flag"] == {"type": "BOOLEAN"}
    assert p["tags"] == {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1, "maxItems": 3}
    assert p["pair"] == {"type": "ARRAY", "items": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}}
    assert p["meta"] == {"type": "OBJECT"}
    assert p["both"]["required"] == ["a", "b"] and set(p["both"]["properties"]) == {"a", "b"}
    kept = to_gemini_schema(schema, keep_additional_properties=True)
    assert kept["properties"]["meta"]["additionalProperties"] == {"type": "STRING"}


def test_to_gemini_schema_rejects_what_gemini_cannot_express():
    recursive = {"$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
                 "$ref": "#/$defs/Node"}
    with pytest.raises(ValueError, match="recursive"):
        to_gemini_schema(recursive)
    with pytest.raises(ValueError, match="local"):
        to_gemini_schema({"$ref": "https://example.com/s.json"})


def test_to_gemini_schema_on_the_shipped_domain_contracts():
    files = sorted(ROOT.glob("domains/*/contracts/*.json"))
    assert files
    for file in files:
        data = json.loads(file.read_text())
        schemas = [t.get("function", t).get("parameters", {}) for t in data] if isinstance(data, list) else [data]
        for schema in schemas:
            _walk_schema(to_gemini_schema(schema))


def test_tool_call_guided_schema_converts():
    out = to_gemini_schema(tool_contract().guided_schema())
    _walk_schema(out)
    assert [v["properties"]["name"] for v in out["anyOf"]] == [
        {"type": "STRING", "enum": ["search_flights"]}, {"type": "STRING", "enum": ["get_weather"]}]


# --- Vertex Gemini: requests, responses, errors ---------------------------------------------------
class FakeGenaiError(Exception):
    """The shape of google.genai.errors.APIError (ClientError / ServerError): code, status, message."""

    def __init__(self, code: int, status: str, message: str, headers: dict[str, str] | None = None):
        self.code, self.status, self.message = code, status, message
        self.details = {"error": {"code": code, "message": message, "status": status}}
        self.response = SimpleNamespace(headers=headers or {})
        super().__init__(f"{code} {status}. {self.details}")


class ReadTimeout(Exception):
    """Named like httpx's timeout: classified by name, no httpx import."""


class FakeTransport:
    def __init__(self, *replies: Any, default: Any = None):
        self.replies = list(replies)
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests.append(json.loads(json.dumps(request)))
            reply = self.replies.pop(0) if self.replies else self.default
        if isinstance(reply, BaseException):
            raise reply
        return reply


def gemini_text(text: str, usage: tuple[int, int, int] = (30, 7, 0), finish: str = "STOP") -> dict[str, Any]:
    """A generateContent response in the documented REST shape."""
    meta = {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1], "totalTokenCount": sum(usage)}
    if usage[2]:
        meta["thoughtsTokenCount"] = usage[2]
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish}],
            "usageMetadata": meta, "modelVersion": "gemini-2.5-flash"}


def gemini_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": args}}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 80, "candidatesTokenCount": 12, "totalTokenCount": 92}}


def vertex_teacher(transport: FakeTransport, tmp_path: Path, **kw: Any) -> VertexGeminiTeacher:
    block = TeacherBlock(provider="vertex_gemini", model="gemini-2.5-flash", project="my-proj", region="europe-west4",
                         rate_limit_rps=1000.0, max_retries=kw.pop("max_retries", 3),
                         pricing=kw.pop("pricing", Pricing()))
    kw.setdefault("cache", ResponseCache(tmp_path / "teacher_cache"))
    kw.setdefault("sleep", Sleeps())
    kw.setdefault("backoff_base_s", 0.001)
    return VertexGeminiTeacher(block, transport=transport, **kw)


def test_vertex_structured_request_and_response(tmp_path):
    transport = FakeTransport(default=gemini_text(json.dumps(GOOD)))
    t = vertex_teacher(transport, tmp_path)
    x = {"messages": [{"role": "system", "content": "ignored: the role's prompt is used"},
                      {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "app crashes"}, {"role": "user", "content": "on login"}],
         "plan": "pro"}
    assert t.label(structured_contract(), [x]) == [GOOD]
    assert transport.requests == [{
        "model": "gemini-2.5-flash",
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "app crashes"}, {"text": 'Context:\n{"plan": "pro"}\n\non login'}]},
        ],
        "config": {
            "system_instruction": "Classify the support ticket.",
            "temperature": 0.0,
            "max_output_tokens": 1024,
            "response_mime_type": "application/json",
            "response_schema": to_gemini_schema(TRIAGE_SCHEMA),
        },
    }]
    assert t.stats.prompt_tokens == 30 and t.stats.completion_tokens == 7


def test_vertex_response_json_schema_mode(tmp_path):
    transport = FakeTransport(default=gemini_text(json.dumps(GOOD)))
    t = vertex_teacher(transport, tmp_path, schema_field="response_json_schema")
    t.label(structured_contract(), inputs(1))
    config = transport.requests[0]["config"]
    assert config["response_json_schema"] == TRIAGE_SCHEMA and "response_schema" not in config


def test_vertex_tool_call_request_and_response(tmp_path):
    transport = FakeTransport(gemini_call("get_weather", {"city": "Oslo"}),
                              gemini_text(json.dumps({"name": "get_weather", "arguments": {"city": "Rome"}})),
                              gemini_call("launch_rocket", {}))
    t = vertex_teacher(transport, tmp_path, concurrency=1)
    contract = tool_contract()
    out = t.label(contract, inputs(3))
    assert out == [{"name": "get_weather", "arguments": {"city": "Oslo"}},
                   {"name": "get_weather", "arguments": {"city": "Rome"}}, None]
    config = transport.requests[0]["config"]
    assert config["system_instruction"] == render_messages(contract, inputs(1)[0])[0]["content"]
    assert config["tools"] == [{"function_declarations": [
        {"name": "search_flights", "description": "Search flights.", "parameters": {
            "type": "OBJECT", "properties": {"origin": {"type": "STRING"}, "destination": {"type": "STRING"}},
            "required": ["origin", "destination"], "propertyOrdering": ["origin", "destination"]}},
        {"name": "get_weather", "description": "Weather for a city.", "parameters": {
            "type": "OBJECT", "properties": {"city": {"type": "STRING", "minLength": 2}}, "required": ["city"]}},
    ]}]
    assert config["tool_config"] == {"function_calling_config": {
        "mode": "ANY", "allowed_function_names": ["search_flights", "get_weather"]}}
    assert "response_schema" not in config and "response_mime_type" not in config
    assert t.stats.invalid_outputs == 1


def test_vertex_response_parsing_edge_cases(tmp_path):
    contract = structured_contract()
    t = vertex_teacher(FakeTransport(), tmp_path)
    thinking = gemini_text(json.dumps(GOOD), usage=(10, 5, 40))
    thinking["candidates"][0]["content"]["parts"].insert(0, {"text": "let me think", "thought": True})
    out, usage = t.parse(contract, thinking)
    assert out == GOOD and (usage.prompt_tokens, usage.completion_tokens) == (10, 45)  # thoughts billed as output
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}
    assert t.parse(contract, blocked)[0] is None and t.parse(contract, blocked)[1].prompt_tokens == 9
    assert t.parse(contract, gemini_text('{"category": "bug", "prio', finish="MAX_TOKENS"))[0] is None
    snake = {"candidates": [{"content": {"parts": [{"function_call": {"name": "get_weather", "args": {"city": "X"}}}]}}],
             "usage_metadata": {"prompt_token_count": 3, "candidates_token_count": 2}}
    out, usage = t.parse(tool_contract(), snake)  # the SDK's snake_case dump reads the same
    assert out == {"name": "get_weather", "arguments": {"city": "X"}} and usage.completion_tokens == 2


def test_vertex_quota_429_is_retried(tmp_path):
    quota = FakeGenaiError(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/generate_content")
    transport = FakeTransport(quota, quota, ReadTimeout("read timed out"), gemini_text(json.dumps(GOOD)))
    t = vertex_teacher(transport, tmp_path)
    assert t.label(structured_contract(), inputs(1)) == [GOOD]
    assert (t.stats.requests, t.stats.retries, t.stats.failures) == (4, 3, 0)


def test_vertex_400_is_not_retried_and_says_why(tmp_path, caplog):
    bad = FakeGenaiError(400, "INVALID_ARGUMENT", "response_schema.properties: should be non-empty for OBJECT type")
    transport = FakeTransport(bad, default=gemini_text(json.dumps(GOOD)))
    t = vertex_teacher(transport, tmp_path, concurrency=1)
    caplog.set_level(logging.WARNING, logger="slm_platform.teachers")
    assert t.label(structured_contract(), inputs(2)) == [None, GOOD]
    assert (t.stats.requests, t.stats.retries, t.stats.failures) == (2, 0, 1)
    (record,) = [r for r in caplog.records if "request failed" in r.getMessage()]
    assert "HTTP 400: INVALID_ARGUMENT: response_schema.properties: should be non-empty" in record.getMessage()
    assert "not retried" in record.getMessage()


def test_vertex_permission_denied_and_sdk_refusal_stop_the_run(tmp_path):
    denied = FakeGenaiError(403, "PERMISSION_DENIED", "Permission 'aiplatform.endpoints.predict' denied")
    t = vertex_teacher(FakeTransport(default=denied), tmp_path, concurrency=1)
    with pytest.raises(TeacherError, match="no access.*PERMISSION_DENIED.*Application Default Credentials"):
        t.label(structured_contract(), inputs(3))
    assert t.stats.requests == 1
    refused = ValueError("Extra inputs are not permitted: const")
    t = vertex_teacher(FakeTransport(default=refused), tmp_path, concurrency=1)
    with pytest.raises(TeacherError, match="Google SDK refused the request"):
        t.label(structured_contract(), inputs(3))


def test_failure_from_exception_classification():
    assert failure_from_exception(FakeGenaiError(503, "UNAVAILABLE", "x")).retryable
    quota = failure_from_exception(FakeGenaiError(429, "RESOURCE_EXHAUSTED", "q", headers={"retry-after": "7"}))
    assert quota.retryable and quota.retry_after == 7.0
    assert not failure_from_exception(FakeGenaiError(400, "INVALID_ARGUMENT", "x")).retryable
    assert failure_from_exception(ReadTimeout()).kind == "timeout"
    RefreshError = type("RefreshError", (Exception,), {})
    assert failure_from_exception(RefreshError("no creds")).fatal
    assert isinstance(failure_from_exception(KeyError("x")), RequestFailure)


def test_vertex_cost_and_cache(tmp_path):
    transport = FakeTransport(default=gemini_text(json.dumps(GOOD), usage=(1000, 100, 100)))
    pricing = Pricing(input_per_1m=0.3, output_per_1m=2.5)
    t = vertex_teacher(transport, tmp_path, pricing=pricing)
    t.label(structured_contract(), inputs(2))
    assert t.stats.cost == pytest.approx(2 * (1000 * 0.3 + 200 * 2.5) / 1e6)
    again = vertex_teacher(transport, tmp_path, pricing=pricing)
    again.label(structured_contract(), inputs(2))
    assert len(transport.requests) == 2 and again.stats.cache_hits == 2 and again.stats.cost == 0
    (file, *_) = (tmp_path / "teacher_cache").rglob("*.json")
    assert json.loads(file.read_text())["scope"] == {"provider": "vertex_gemini", "model": "gemini-2.5-flash",
                                                    "project": "my-proj", "region": "europe-west4"}


def test_vertex_through_the_real_google_genai_sdk(tmp_path):
    """Runs only where google-genai is installed (the `vertex` extra): the real SDK speaks HTTP to the
    fake server, which checks the wire format the SDK makes of our request dict and answers it."""
    pytest.importorskip("google.genai")
    from google.oauth2.credentials import Credentials

    def answer(req: Recorded) -> Reply:
        if "tools" in req.body:
            return Reply(body=gemini_call("get_weather", {"city": "Oslo"}))
        return Reply(body=gemini_text(json.dumps(GOOD)))

    with FakeOpenAIServer(answer) as srv:
        srv.script(Reply(status=429, body={"error": {"code": 429, "message": "Quota exceeded",
                                                     "status": "RESOURCE_EXHAUSTED"}}))
        block = TeacherBlock(provider="vertex_gemini", model="gemini-2.5-flash", project="my-proj",
                             region="us-central1", rate_limit_rps=1000.0)
        t = VertexGeminiTeacher(block, cache=False, sleep=Sleeps(), backoff_base_s=0.001,
                                credentials=Credentials(token="fake-token"),
                                http_options={"base_url": srv.root + "/"})
        assert t.label(structured_contract(), inputs(1)) == [GOOD]
        assert t.label(tool_contract(), inputs(1)) == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
        assert t.stats.retries == 1
        first, _, tool = srv.requests
        assert first.path.endswith("/projects/my-proj/locations/us-central1/publishers/google/models/"
                                   "gemini-2.5-flash:generateContent")
        assert first.headers["authorization"] == "Bearer fake-token"
        gen = first.body["generationConfig"]
        assert gen["responseMimeType"] == "application/json" and gen["temperature"] == 0.0
        assert gen["responseSchema"]["properties"]["category"]["enum"] == ["bug", "billing", "other"]
        assert first.body["systemInstruction"]["parts"] == [{"text": "Classify the support ticket."}]
        assert tool.body["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"
        assert [d["name"] for d in tool.body["tools"][0]["functionDeclarations"]] == ["search_flights", "get_weather"]


# --- a real OpenAI-compatible server: the session's shared vLLM CPU server (tests/conftest.py) ----------
@pytest.mark.integration
def test_openai_compatible_against_vllm(vllm_server, tmp_path, monkeypatch):
    """The teacher over any OpenAI-compatible URL, here a real local vLLM serving SmolLM2: guided
    decoding (response_format json_schema) makes every label schema-valid; a rerun is all cache."""
    from jsonschema import Draft202012Validator

    from slm_platform.domain import Domain

    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))  # the default response cache lives there
    domain = Domain.load(ROOT / "domains" / "support_triage")
    contract = domain.role("triage")
    # distinct tickets: the simulator re-sends some, and a repeat in one batch may hit the cache
    unique = {json.dumps(t["input"], sort_keys=True): t["input"] for t in domain.simulator().simulate(40, seed=5)}
    tickets = list(unique.values())[:8]
    block = TeacherBlock(provider="openai_compatible", base_url=vllm_server.base_url, model="base",
                         rate_limit_rps=50.0, timeout_s=300.0, max_retries=2)
    teacher = teacher_from_config(block)
    assert isinstance(teacher, OpenAICompatibleTeacher)
    outputs = teacher.label(contract, tickets)
    s = teacher.stats.to_dict()
    assert s["failures"] == 0, s
    assert s["requests"] == 8 and s["cache_hits"] == 0, s
    assert s["prompt_tokens"] > 8 * 100 and s["completion_tokens"] > 8 * 5, s
    validator = Draft202012Validator(contract.output_schema)
    for out in outputs:  # whatever a 135M model thinks, the answer is inside the schema
        assert isinstance(out, dict), (out, s)
        assert not list(validator.iter_errors(out)), out
        assert contract.validate_output(out) == [], out

    again = teacher_from_config(block)
    assert again.label(contract, tickets) == outputs
    assert again.stats.cache_hits == 8 and again.stats.requests == 0, again.stats.to_dict()
