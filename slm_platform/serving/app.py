"""The FastAPI app: thin routes over `Gateway`, and one ASGI middleware for what every response shares.

The middleware (`Edge`) runs before any route: it gives the request an id, refuses a body over the
limit (413, from Content-Length or while reading), checks the API key (401) and the key's rate
limit (429) on `/v1/*` before the body is parsed, turns any unexpected exception into a 500 in
OpenAI's error shape (never a traceback), and stamps every response with `x-request-id`,
`x-slm-route`, `x-slm-version` and `x-gateway-overhead-ms` (the request's time in the gateway minus
its upstream waits). After the response has been sent it records the metrics and hands the
exchange to the `on_answered` hooks.

Streaming: the answer is complete and validated before its first byte leaves (the contract is
checked on the whole output, and an invalid one goes down the fallback chain), then sent as
server-sent events in the chunk shape the OpenAI SDK's iterator reads. A role's answer is one
short JSON object, so the time to the first chunk is close to the time to the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from slm_platform.serving.auth import KeyRing, RateLimiter
from slm_platform.serving.capture import CaptureWriter
from slm_platform.serving.gateway import Gateway, Served, new_id, tool_call_of
from slm_platform.serving.hooks import Exchange, Hooks
from slm_platform.serving.protocol import (
    APIError,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    ToolCall,
    ToolCallDelta,
    Usage,
    loc_to_param,
)
from slm_platform.serving.shadow import ShadowSampler
from slm_platform.serving.traces import GatewayTraces

log = logging.getLogger("slm_platform.serving")


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body().model_dump(), status_code=err.status, headers=err.headers)


class _TooLarge(Exception):
    pass


class Edge:
    """Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: Any, gateway: Gateway, keys: KeyRing, limiter: RateLimiter | None, hooks: Hooks,
                 max_body_bytes: int, capture: CaptureWriter | None = None, shadow: ShadowSampler | None = None):
        self.app = app
        self.capture = capture
        self.shadow = shadow
        self.gateway = gateway
        self.keys = keys
        self.limiter = limiter
        self.hooks = hooks
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})
        headers = dict(scope.get("headers") or [])
        rid = (headers.get(b"x-request-id") or b"").decode("latin-1")[:128] or new_id("req")
        state["request_id"] = rid
        started: dict[str, Any] = {}

        async def send_stamped(message: dict) -> None:
            if message["type"] == "http.response.start":
                started["status"] = message["status"]
                overhead = (time.perf_counter() - t0) * 1000 - state.get("upstream_ms", 0.0)
                state["overhead_ms"] = overhead
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode("latin-1")),
                                      (b"x-slm-route", state.get("slm_route", "none").encode()),
                                      (b"x-slm-version", state.get("slm_version", "none").encode()),
                                      (b"x-gateway-overhead-ms", f"{overhead:.3f}".encode())]
            await send(message)

        try:
            self._check(scope, headers, state)
            app_receive = self._limited(receive, headers)
            await self.app(scope, app_receive, send_stamped)
        except (APIError, _TooLarge) as exc:
            err = exc if isinstance(exc, APIError) else APIError(
                413, f"request body larger than {self.max_body_bytes} bytes", code="request_too_large")
            if not started:
                await _error_response(err)(scope, receive, send_stamped)
        except Exception:  # noqa: BLE001 - the last line of defence: a 500 in OpenAI's shape, no traceback
            log.exception("unexpected error serving %s %s (request %s)", scope.get("method"), scope.get("path"), rid)
            if not started:
                await _error_response(APIError(500, "internal error in the gateway", code="internal_error"))(
                    scope, receive, send_stamped)
        self._after(state, started.get("status", 500), t0)

    def _check(self, scope: dict, headers: dict, state: dict) -> None:
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise _TooLarge()
        if scope["path"].startswith("/v1/"):
            auth = headers.get(b"authorization")
            key = self.keys.identify(auth.decode("latin-1") if auth is not None else None)
            if self.limiter is not None:
                self.limiter.check(key)

    def _limited(self, receive: Any, headers: dict) -> Any:
        seen = 0

        async def receive_limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _TooLarge()
            return message

        return receive_limited

    def _after(self, state: dict, status: int, t0: float) -> None:
        """Metrics and hooks, once the response is out."""
        m = self.gateway.metrics
        model = state.get("model", "-")  # only a served model name becomes a label (no client-chosen cardinality)
        route = state.get("slm_route", "none")
        total = time.perf_counter() - t0
        m.requests.labels(model, route, str(status)).inc()
        if model != "-":
            m.latency.labels(model, route).observe(total)
            m.overhead.labels(model).observe(max(0.0, state.get("overhead_ms", 0.0)) / 1000)
        served: Served | None = state.get("served")
        if served is not None and status == 200:
            exchange = _exchange(state, served, total * 1000)
            if self.capture is not None:
                self.capture.submit(exchange, served.route)  # never dropped: its own unbounded queue
            if self.shadow is not None:
                self.shadow.offer(exchange, served)  # sampled, bounded, dropped when full
            self.hooks.emit(exchange)


def _exchange(state: dict, served: Served, latency_ms: float) -> Exchange:
    a, r = served.answer, served.route
    return Exchange(
        request_id=state["request_id"], domain=r.domain, role=r.role, route=a.route, version=a.version,
        input=served.input, messages=tuple(served.messages), prompt_token_ids=a.attempt.prompt_token_ids,
        output=a.attempt.output or {}, latency_ms=latency_ms, upstream_ms=served.upstream_ms, validity=a.validity,
        fallbacks=tuple(f"{s.route}:{s.reason}" for s in a.skipped), received_at=state["received_at"],
        stream=state.get("stream", False), champion=r.champion.version if r.champion else None,
        challenger=r.challenger.version if r.challenger else None,
        prompt_tokens=a.attempt.prompt_tokens, completion_tokens=a.attempt.completion_tokens,
        max_tokens=served.max_tokens, temperature=served.temperature)


# --- response bodies --------------------------------------------------------------------------------
def _message(served: Served, rid: str) -> tuple[AssistantMessage, str]:
    out = served.answer.attempt.output or {}
    if served.route.contract.kind == "tool_call":
        return AssistantMessage(tool_calls=[ToolCall.model_validate(tool_call_of(out, rid))]), "tool_calls"
    return AssistantMessage(content=json.dumps(out, ensure_ascii=False)), "stop"


def _usage(served: Served) -> Usage:
    a = served.answer.attempt
    return Usage(prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens,
                 total_tokens=a.prompt_tokens + a.completion_tokens)


def completion_body(served: Served, rid: str, model: str) -> ChatCompletion:
    message, finish = _message(served, rid)
    return ChatCompletion(id=rid, model=model, choices=[Choice(message=message, finish_reason=finish)],
                          usage=_usage(served), system_fingerprint=served.answer.version)


async def sse_events(served: Served, rid: str, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    created = int(time.time())
    message, finish = _message(served, rid)

    def chunk(delta: Delta, finish_reason: Any = None, usage: Usage | None = None, empty: bool = False) -> bytes:
        choices = [] if empty else [ChunkChoice(delta=delta, finish_reason=finish_reason)]
        c = ChatCompletionChunk(id=rid, created=created, model=model, choices=choices, usage=usage)
        return b"data: " + c.model_dump_json(exclude_none=False).encode() + b"\n\n"

    if message.tool_calls:
        call = message.tool_calls[0]
        # one delta with the whole call: a later delta would carry `"type": null`, which the SDK's
        # accumulator (`stream.get_final_completion()`) rejects
        yield chunk(Delta(role="assistant", tool_calls=[ToolCallDelta(
            id=call.id, type="function", function={"name": call.function.name, "arguments": call.function.arguments})]))
    else:
        yield chunk(Delta(role="assistant", content=""))
        yield chunk(Delta(content=message.content))
    yield chunk(Delta(), finish)
    if include_usage:
        yield chunk(Delta(), usage=_usage(served), empty=True)
    yield b"data: [DONE]\n\n"


# --- the app --------------------------------------------------------------------------------------------
def create_app(gateway: Gateway, *, keys: KeyRing, limiter: RateLimiter | None, max_body_bytes: int,
               hooks: Hooks | None = None, capture: CaptureWriter | None = None,
               shadow: ShadowSampler | None = None) -> FastAPI:
    """The gateway app. `hooks.register(callback)` adds an `on_answered(exchange)` callback; `capture`
    writes every answered request to the capture inbox, `shadow` asks challengers (both optional)."""
    hooks = hooks or Hooks(on_drop=gateway.metrics.hook_drops.inc, on_error=gateway.metrics.hook_errors.inc)
    traces = GatewayTraces.from_env(lambda: gateway.router.table.routes)  # None unless LANGFUSE_* is set
    if traces is not None:
        hooks.register(traces)  # a span per answered request, built and sent off the request path

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if not gateway.router.table.routes and not gateway.router.table.errors:
            await asyncio.to_thread(gateway.router.reload)
        watcher = asyncio.create_task(gateway.router.watch())
        if capture is not None:
            capture.start()
        if shadow is not None:
            await asyncio.to_thread(shadow.start)
        try:
            yield
        finally:
            # uvicorn has drained the in-flight requests (SIGTERM): every answered one is queued here
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if shadow is not None:
                await asyncio.to_thread(shadow.close)
            if capture is not None:
                await asyncio.to_thread(capture.close)  # every answered request written and fsynced
            await asyncio.to_thread(hooks.close)  # every answered exchange reaches the hooks before exit
            if traces is not None:
                await asyncio.to_thread(traces.flush)  # and its span reaches Langfuse
            if gateway.vllm is not None:
                await gateway.vllm.aclose()
            if gateway.router.merged is not None:
                await asyncio.to_thread(gateway.router.merged.close)  # the merged models' own servers

    app = FastAPI(title="slm_platform gateway", version="1", lifespan=lifespan,
                  summary="OpenAI-compatible chat completions for '<domain>/<role>' models")
    app.state.gateway = gateway
    app.state.hooks = hooks
    app.state.capture = capture
    app.state.shadow = shadow

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own (a body it cannot parse, an unknown path or method): OpenAI's shape too
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code < 500 else "request failed"
        code = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error_response(APIError(exc.status_code, detail, code=code, headers=dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "value_error"}
        if first.get("type") == "json_invalid":
            return _error_response(APIError(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})",
                                            code="invalid_json"))
        param = loc_to_param(tuple(first.get("loc", ())))
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        msg = str(first.get("msg", "invalid value"))
        return _error_response(APIError(400, f"invalid field '{param}': {msg}{more}", param=param,
                                        code="invalid_field"))

    @app.post("/v1/chat/completions", response_model=ChatCompletion,
              responses={400: {}, 401: {}, 404: {}, 413: {}, 429: {}, 503: {}})
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        state = request.state
        state.received_at = time.time()
        state.stream = body.stream
        route = gateway.lookup(body.model)
        state.model = route.model
        served = await gateway.chat(body)
        state.upstream_ms = served.upstream_ms
        state.slm_route, state.slm_version = served.answer.route, served.answer.version
        state.served = served
        rid = state.request_id
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(sse_events(served, rid, route.model, include), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        return Response(completion_body(served, rid, route.model).model_dump_json(), media_type="application/json")

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        table = gateway.router.table
        created = int(table.loaded_at)
        return ModelList(data=[ModelCard(id=m, created=created, owned_by=r.domain) for m, r in sorted(table.routes.items())])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        table = gateway.router.table
        shared_ok = await gateway.vllm.healthy() if gateway.vllm is not None else False
        own_ok: dict[str, bool] = {}  # a merged model's own server, asked once per probe
        routes, ready = {}, bool(table.routes) and not table.errors
        for model, r in sorted(table.routes.items()):
            own = r.champion.upstream if r.champion is not None else None
            if own is not None and own.root not in own_ok:
                own_ok[own.root] = await own.healthy()
            vllm_ok = own_ok[own.root] if own is not None else shared_ok
            usable = [name for name in r.chain if r.problem(name) is None and (name != "slm" or vllm_ok)]
            if not usable:
                ready = False
            routes[model] = {
                "route": r.route, "fallback": list(r.fallback), "answers_with": usable[0] if usable else None,
                "champion": r.champion.version if r.champion else None,
                "form": r.champion.form if r.champion else None,
                "vllm_url": (own.root if own is not None else gateway.vllm.root if gateway.vllm else None)
                if r.champion else None,
                "challenger": r.challenger.version if r.challenger else None,
                "slm": "ready" if r.problem("slm") is None and vllm_ok else (r.problem("slm") or "vLLM not healthy"),
                "breakers": {name: gateway.breakers.get(model, name, r.breaker).state for name in r.chain},
            }
        body = {"ready": ready, "generation": table.generation, "loaded_at": table.loaded_at,
                "vllm": None if gateway.vllm is None else ("healthy" if shared_ok else "unreachable"),
                "routes": routes, "errors": table.errors}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    app.add_middleware(Edge, gateway=gateway, keys=keys, limiter=limiter, hooks=hooks, max_body_bytes=max_body_bytes,
                       capture=capture, shadow=shadow)
    return app
