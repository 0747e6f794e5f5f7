"""Traces: one per train run, one per eval run, one span per answered gateway request, sent to Langfuse.

Configured from the environment only: ``LANGFUSE_PUBLIC_KEY`` and ``LANGFUSE_SECRET_KEY`` (both, or
tracing is off), ``LANGFUSE_HOST`` (or ``LANGFUSE_BASE_URL``; default https://cloud.langfuse.com).
Spans go as OTLP/HTTP protobuf to ``{host}/api/public/otel/v1/traces`` (Langfuse's OpenTelemetry
endpoint) with ``Authorization: Basic base64(public:secret)``, through the OpenTelemetry SDK's
`BatchSpanProcessor`: a bounded queue and one exporter thread, so nothing waits on the network where
a span ends. Not configured: `tracer()` is None, `run()` yields a no-op, OpenTelemetry is not even
imported: no exporter, no thread.

What a trace may hold: identifiers, artifact paths, metrics, decisions, token counts and timings.
Content (a prompt, an answer) only when its caller redacted it first (the gateway redacts with the
domain's capture policy). As a last guard, attributes whose *name* says secret (``*secret*``,
``*password*``, ``*api_key*``, ``authorization``...) are dropped, and user:password@ and query strings
are cut out of URL values. The keys themselves only ever reach the exporter's Authorization header.

The tracer is per process and per configuration (its own `TracerProvider`, never the global one, so
it cannot collide with another OpenTelemetry setup in the process); it is flushed at the end of every
run, by the gateway's shutdown, and at interpreter exit.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_NAMES = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_HOST", "LANGFUSE_BASE_URL")  # all it reads
ENDPOINT_PATH = "/api/public/otel/v1/traces"
DEFAULT_HOST = "https://cloud.langfuse.com"
TRACER_NAME = "slm_platform"
FLUSH_TIMEOUT_S = 10.0
EXPORT_TIMEOUT_S = 10.0
MAX_QUEUE = 4096  # spans waiting for the exporter; beyond it the SDK drops (never blocks the caller)
MAX_VALUE_CHARS = 32_000  # one attribute value (JSON of an input/output) at most

_SECRET_NAME = re.compile(r"secret|password|passwd|api[_.-]?key|authorization|credential|private[_.-]?key",
                          re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s]+@")
_URL_QUERY = re.compile(r"(?P<base>[a-zA-Z][\w+.-]*://[^\s?#]*)[?#][^\s]*")


@dataclass(frozen=True)
class LangfuseConfig:
    public_key: str
    secret_key: str = field(repr=False)
    host: str = DEFAULT_HOST

    @property
    def endpoint(self) -> str:
        return self.host.rstrip("/") + ENDPOINT_PATH

    def headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        # the ingestion version Langfuse asks direct OTLP exporters to send (real-time ingestion)
        return {"Authorization": f"Basic {token}", "x-langfuse-ingestion-version": "4"}


def config_from_env(env: Mapping[str, str] | None = None) -> LangfuseConfig | None:
    """The Langfuse settings, or None when tracing is off (a key missing)."""
    env = os.environ if env is None else env
    public, secret = env.get("LANGFUSE_PUBLIC_KEY", "").strip(), env.get("LANGFUSE_SECRET_KEY", "").strip()
    if not public or not secret:
        return None
    host = (env.get("LANGFUSE_HOST") or env.get("LANGFUSE_BASE_URL") or DEFAULT_HOST).strip()
    return LangfuseConfig(public, secret, host)


# --- attribute values ---------------------------------------------------------------------------------
def safe_text(value: str) -> str:
    """A string as a trace may hold it: no credentials or query strings inside URLs, bounded length."""
    if "://" in value:
        value = _URL_QUERY.sub(r"\g<base>", _URL_USERINFO.sub(r"\g<scheme>", value))
    return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "...(cut)"


def as_json(value: Any) -> str:
    return safe_text(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))


def clean_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attribute values: None dropped, secret-named keys dropped, mappings and mixed lists
    as JSON, strings through `safe_text`."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None or _SECRET_NAME.search(key):
            continue
        if isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, str):
            out[key] = safe_text(value)
        elif isinstance(value, list | tuple) and not value:
            out[key] = []
        elif isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            out[key] = [safe_text(v) for v in value]
        elif isinstance(value, list | tuple) and value and all(isinstance(v, bool) for v in value):
            out[key] = list(value)
        elif isinstance(value, list | tuple) and value and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                              for v in value):
            out[key] = [float(v) for v in value]
        else:
            out[key] = as_json(value)
    return out


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` under ``p`` -> ``{"p.a.b": 1}`` (lists stay values)."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(flatten(f"{prefix}.{k}", v))
    return out


# --- runs ---------------------------------------------------------------------------------------------
class Run:
    """The root span of one run (one Langfuse trace): attributes may be added until it ends."""

    def __init__(self, span: Any = None):
        self._span = span

    @property
    def recording(self) -> bool:
        return self._span is not None

    def set(self, attributes: Mapping[str, Any]) -> None:
        if self._span is not None:
            self._span.set_attributes(clean_attributes(attributes))

    def set_input(self, value: Any) -> None:
        """What the run was asked (identifiers and paths, never content that was not redacted)."""
        self.set({"langfuse.trace.input": as_json(value), "langfuse.observation.input": as_json(value)})

    def set_output(self, value: Any) -> None:
        self.set({"langfuse.trace.output": as_json(value), "langfuse.observation.output": as_json(value)})


NOOP_RUN = Run()


class Tracer:
    """One OpenTelemetry `TracerProvider` exporting to Langfuse through a `BatchSpanProcessor`."""

    def __init__(self, config: LangfuseConfig, *, service_name: str = "slm_platform", exporter: Any = None,
                 schedule_delay_ms: int = 1000):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=config.headers(), timeout=EXPORT_TIMEOUT_S)
        self.config = config
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUE,
                                                            schedule_delay_millis=schedule_delay_ms))
        self._tracer = self.provider.get_tracer(TRACER_NAME)
        self._closed = False

    @contextlib.contextmanager
    def run(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Run]:
        """A root span (a new trace) around the block; an exception marks it failed and propagates."""
        from opentelemetry.trace import Status, StatusCode

        attrs = {"langfuse.trace.name": name, **(attributes or {})}
        with self._tracer.start_as_current_span(name, context=_root_context(), attributes=clean_attributes(attrs),
                                                record_exception=False, set_status_on_exception=False) as span:
            try:
                yield Run(span)
            except BaseException as exc:
                # the error's type only: a message may quote data
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attributes({"error.type": type(exc).__name__, "langfuse.observation.level": "ERROR"})
                raise

    def span(self, name: str, *, start_s: float, end_s: float, attributes: Mapping[str, Any],
             kind: str = "INTERNAL", error: str | None = None) -> None:
        """A finished span with given wall-clock times (epoch seconds), as the root of its own trace."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        span = self._tracer.start_span(name, context=_root_context(), kind=getattr(SpanKind, kind),
                                       attributes=clean_attributes(attributes), start_time=int(start_s * 1e9))
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=int(max(end_s, start_s) * 1e9))

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
        return bool(self.provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self.provider.shutdown()


def _root_context() -> Any:
    from opentelemetry.context import Context

    return Context()  # an empty context: never a child of whatever span the caller has open


_TRACERS: dict[tuple[LangfuseConfig, str], Tracer] = {}
_LOCK = threading.Lock()
_ATEXIT = False


def tracer(service_name: str = "slm_platform", env: Mapping[str, str] | None = None) -> Tracer | None:
    """This process's tracer for the current `LANGFUSE_*` settings, or None when they are not set."""
    global _ATEXIT
    config = config_from_env(env)
    if config is None:
        return None
    with _LOCK:
        found = _TRACERS.get((config, service_name))
        if found is None or found._closed:
            found = _TRACERS[(config, service_name)] = Tracer(config, service_name=service_name)
            if not _ATEXIT:
                atexit.register(shutdown_all)
                _ATEXIT = True
        return found


def shutdown_all() -> None:
    """Flush and stop every tracer of this process (at exit; tests between configurations)."""
    with _LOCK:
        tracers = list(_TRACERS.values())
        _TRACERS.clear()
    for t in tracers:
        t.shutdown()


@contextlib.contextmanager
def run(name: str, attributes: Mapping[str, Any] | None = None, *,
        service_name: str = "slm_platform") -> Iterator[Run]:
    """One trace for one run (a train run, an eval run), sent as the run ends; a no-op `Run` when
    Langfuse is not configured. The run's start and end are the span's."""
    t = tracer(service_name)
    if t is None:
        yield NOOP_RUN
        return
    started = time.time()
    try:
        with t.run(name, {"slm.run.started_at": started, **(attributes or {})}) as r:
            yield r
            r.set({"slm.run.duration_s": round(time.time() - started, 3)})
    finally:
        t.flush()  # a trainer pod or a CLI may exit right after the run
