"""The gateway's traces: one span per answered request, as an `on_answered` hook (off the request path).

Registered by `create_app` only when Langfuse is configured (`slm_platform.tracing`); the request path
then pays one `put_nowait` on the hooks' queue and nothing else. The span covers the request as the
client saw it (`Exchange.received_at` to `received_at + latency_ms`) and carries the OpenTelemetry
GenAI semantic-convention attributes (``gen_ai.operation.name`` "chat", ``gen_ai.provider.name``,
``gen_ai.request.model`` ``<domain>/<role>``, ``gen_ai.response.model`` the version that answered,
``gen_ai.usage.*`` tokens, ``gen_ai.request.max_tokens`` / ``temperature``), the platform's own
(``slm.route``, ``slm.version``, ``slm.valid``, ``slm.latency_ms``, ``slm.fallbacks``...) and
Langfuse's (a ``generation`` observation, its input and output).

Input and output are the capture Turn's (`capture.capture_turn`), redacted with the domain's
`data.redaction` policy exactly as capture writes them; when the role's route is gone (a reload
between the answer and this hook) the content is left out rather than sent unredacted. The rendered
messages (system prompt included) and prompt token ids are never sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from slm_platform import tracing
from slm_platform.serving.capture import RedactorCache
from slm_platform.serving.hooks import Exchange
from slm_platform.serving.routing import RoleRoute

log = logging.getLogger("slm_platform.serving")

SERVICE_NAME = "slm-gateway"
PROVIDER = "slm_platform"  # what the client talked to: the gateway (the route that answered is `slm.route`)


class GatewayTraces:
    def __init__(self, tracer: tracing.Tracer, routes: Callable[[], Mapping[str, RoleRoute]]):
        self.tracer = tracer
        self.routes = routes
        self._redactors = RedactorCache()
        self.sent = 0

    @classmethod
    def from_env(cls, routes: Callable[[], Mapping[str, RoleRoute]]) -> "GatewayTraces | None":
        t = tracing.tracer(SERVICE_NAME)
        return cls(t, routes) if t is not None else None

    def __call__(self, ex: Exchange) -> None:
        route = self.routes().get(f"{ex.domain}/{ex.role}")
        self.tracer.span(f"chat {ex.domain}/{ex.role}", start_s=ex.received_at,
                         end_s=ex.received_at + ex.latency_ms / 1000, kind="SERVER",
                         attributes=self.attributes(ex, route))
        self.sent += 1

    def attributes(self, ex: Exchange, route: RoleRoute | None) -> dict[str, Any]:
        model = f"{ex.domain}/{ex.role}"
        tool_call = route is not None and route.contract.kind == "tool_call"
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.system": PROVIDER,  # the older name of gen_ai.provider.name, still read by many backends
            "gen_ai.request.model": model,
            "gen_ai.response.model": ex.version,
            "gen_ai.response.id": ex.request_id,
            "gen_ai.output.type": "json",
            "gen_ai.request.max_tokens": ex.max_tokens,
            "gen_ai.request.temperature": ex.temperature,
            "slm.domain": ex.domain, "slm.role": ex.role, "slm.route": ex.route, "slm.version": ex.version,
            "slm.valid": bool(ex.validity) and all(ex.validity.values()),
            **{f"slm.validity.{k}": bool(v) for k, v in ex.validity.items()},
            "slm.latency_ms": round(ex.latency_ms, 3), "slm.upstream_ms": round(ex.upstream_ms, 3),
            "slm.fallbacks": list(ex.fallbacks) or None, "slm.stream": ex.stream,
            "slm.champion": ex.champion, "slm.challenger": ex.challenger,
            "langfuse.trace.name": f"gateway {model}",
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": model,  # how the capture source finds the role in an export
            "langfuse.observation.metadata.domain": ex.domain, "langfuse.observation.metadata.role": ex.role,
            "langfuse.trace.tags": [ex.domain, ex.role, ex.route],
        }
        if route is not None:
            attrs["gen_ai.response.finish_reasons"] = ["tool_calls" if tool_call else "stop"]
        if ex.prompt_tokens or ex.completion_tokens:  # 0: the upstream reported none (the oracle)
            attrs["gen_ai.usage.input_tokens"] = ex.prompt_tokens
            attrs["gen_ai.usage.output_tokens"] = ex.completion_tokens
        if route is not None:
            turn = self._redactors.redacted_turn(ex, route)
            content_in, content_out = tracing.as_json(turn["input"]), tracing.as_json(turn["output"])
            attrs.update({"langfuse.observation.input": content_in, "langfuse.observation.output": content_out,
                          "langfuse.trace.input": content_in, "langfuse.trace.output": content_out})
        return attrs

    def flush(self) -> None:
        if not self.tracer.flush():
            log.warning("tracing: not every gateway span reached Langfuse before shutdown")
