"""Fuzz the real `slm serve` process with schemathesis, from the gateway's own OpenAPI schema
(FastAPI's /openapi.json): valid and invalid requests on every operation, and not one 5xx.

The oracle answers (routes say oracle, no vLLM needed): the fuzz is about the edge, not the model.
One 5xx is by design and accepted: 503 `no_upstream_available`, the gateway's answer when every
route of the chain declined (a rule-based oracle has no answer for random text). Any other 5xx (a
500 is a bug in the gateway) fails the test.
Bounded: `MAX_EXAMPLES` per operation and mode keeps the whole run well under a minute.
"""

from __future__ import annotations

import shutil
import signal
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from test_gateway import ROOT, GatewayProcess, edit_config  # tests/test_gateway.py

pytestmark = pytest.mark.integration

KEY = "sk-fuzz-test"
MAX_EXAMPLES = 50
MODELS = ["support_triage/triage", "travel/call_tool", "travel/plan_turn", None]  # None: keep the generated name
SEEN: Counter = Counter()


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    domains = tmp / "domains"
    for name in ("support_triage", "travel"):
        shutil.copytree(ROOT / "domains" / name, domains / name)
    edit_config(domains / "support_triage", routes={"triage": "oracle"})
    edit_config(domains / "travel", routes={"plan_turn": "oracle", "call_tool": "oracle"})
    env = {"SLM_DOMAINS": str(domains), "SLM_ARTIFACTS": str(tmp / "artifacts"), "SLM_HOME": str(tmp / "home"),
           "SLM_GATEWAY_VLLM_URL": "http://127.0.0.1:9", "SLM_GATEWAY_API_KEYS": KEY,
           "SLM_GATEWAY_RATE_LIMIT_RPS": "100000", "SLM_GATEWAY_RATE_LIMIT_BURST": "100000"}
    gw = GatewayProcess(env, tmp / "gw.log")
    try:
        gw.wait_ready()
        yield gw
    finally:
        code = gw.stop()
        log = (tmp / "gw.log").read_text()
        print(f"\nfuzz: {sum(SEEN.values())} requests; by (path, mode, status): {dict(sorted(SEEN.items()))}")
        assert code in (0, -signal.SIGTERM)
        assert "Traceback" not in log, log[-3000:]
        assert KEY not in log


def test_no_request_gets_a_5xx(fuzz_gateway):
    """Every operation of /openapi.json, with valid (positive) and schema-breaking (negative) requests.
    Driven by hand with hypothesis (`operation.as_strategy`): schemathesis' pytest plugin does not run
    under this pytest."""
    schema = schemathesis.openapi.from_url(fuzz_gateway.url + "/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in ops} >= {("POST", "/v1/chat/completions"), ("GET", "/v1/models")}
    bad: list[str] = []
    for op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=op.as_strategy(generation_mode=mode), model=st.sampled_from(MODELS))
            @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            def run(case, model) -> None:
                if model is not None and isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = model  # mostly served names, so requests reach the answer path
                response = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
                SEEN[(op.path, mode.value, response.status_code)] += 1
                if response.status_code == 503 and response.json()["error"]["code"] == "no_upstream_available":
                    return  # the documented answer when every route declined (the oracle has no answer for noise)
                if response.status_code >= 500:
                    bad.append(f"{case.method} {case.path} {mode.value}: {response.status_code} {response.text[:300]}")
                elif case.path.startswith("/v1/") and response.status_code >= 400:
                    body = response.json()  # OpenAI's error shape, never a traceback
                    assert set(body) == {"error"} and "Traceback" not in response.text, response.text[:500]

            try:
                run()
            except Unsatisfiable:  # nothing to break in an operation without parameters or body (GET /healthz)
                assert mode is GenerationMode.NEGATIVE, op.path
    assert bad == []
    assert sum(n for (path, mode, status), n in SEEN.items() if path == "/v1/chat/completions" and status == 200) > 0
    assert sum(n for (path, mode, status), n in SEEN.items() if path == "/v1/chat/completions" and status == 400) > 0
