"""The gateway's one operation: a chat-completions request for `<domain>/<role>` -> a valid answer.

Route handlers (app.py) stay thin: they hand a validated `ChatCompletionRequest` here and get back a
`Served` (the answer plus what the hooks and headers need). Here: the model lookup (404), the
request checks a drop-in must make (n=1 only, the offered tools and `tool_choice` against the role's
catalog), the role input and its rendering, the guided schema, and the walk down the fallback chain.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from slm_platform.config.models import Route
from slm_platform.inference.types import guided_max_tokens
from slm_platform.serving.fallback import Answer, Breakers, Skipped, answer
from slm_platform.serving.metrics import GatewayMetrics
from slm_platform.serving.protocol import APIError, ChatCompletionRequest, NamedToolChoice
from slm_platform.serving.render import rendered, role_input
from slm_platform.serving.routing import RoleRoute, Router
from slm_platform.serving.upstreams import Attempt, VLLMUpstream, ask_oracle, ask_teacher

DEFAULT_MAX_TOKENS = 512  # a role's answer is one JSON object; the client may ask for less or more
DEFAULT_TEMPERATURE = 0.0  # greedy, as the evals measured the model (OpenAI's default of 1.0 is not)


@dataclass(frozen=True)
class Served:
    route: RoleRoute
    answer: Answer
    input: dict[str, Any]
    messages: list[dict[str, Any]]
    upstream_ms: float  # every upstream wait of this request, failed attempts included
    # how the SLM was asked (shadow traffic asks the challenger the same way)
    allowed_tools: frozenset[str] | None = None
    schema: dict[str, Any] | None = None
    max_tokens: int | None = DEFAULT_MAX_TOKENS  # None: until the grammar closes (a bounded schema)
    temperature: float = DEFAULT_TEMPERATURE


class Gateway:
    def __init__(self, router: Router, vllm: VLLMUpstream | None, metrics: GatewayMetrics | None = None):
        self.router = router
        self.vllm = vllm
        self.metrics = metrics or GatewayMetrics()
        self.breakers = Breakers()

    def lookup(self, model: str) -> RoleRoute:
        route = self.router.table.routes.get(model)
        if route is None:
            served = ", ".join(sorted(self.router.table.routes)) or "none"
            raise APIError(404, f"The model '{model}' does not exist; models are '<domain>/<role>': {served}",
                           param="model", code="model_not_found")
        return route

    async def chat(self, req: ChatCompletionRequest) -> Served:
        if req.n not in (None, 1):
            raise APIError(400, f"n={req.n} is not supported: the gateway returns exactly one choice (n=1)", param="n")
        route = self.lookup(req.model)
        allowed = _allowed_tools(route, req)
        schema = _guided_schema(route, allowed)
        input_ = role_input(req)
        problems = route.contract.validate_input(input_)
        if problems:
            raise APIError(400, f"the request does not fit the input of {route.model}: {problems[0]}", param="context")
        if not input_["messages"]:
            raise APIError(400, "messages holds no user message (system messages are replaced by the role's prompt)",
                           param="messages")
        messages = rendered(route.contract, input_)
        max_tokens = req.max_completion_tokens or req.max_tokens or guided_max_tokens(schema, DEFAULT_MAX_TOKENS)
        temperature = DEFAULT_TEMPERATURE if req.temperature is None else req.temperature

        async def call(name: Route) -> tuple[Attempt, str]:
            if name == "slm":
                champion = route.champion
                assert champion is not None
                upstream = champion.upstream or self.vllm  # a merged champion: its own server
                assert upstream is not None
                ids = champion.renderer.prompt_ids(messages)
                attempt = await upstream.complete(champion.adapter, ids, schema, max_tokens=max_tokens,
                                                   temperature=temperature, timeout_s=route.latency_budget_ms / 1000)
                return attempt, champion.version
            if name == "oracle":
                return await ask_oracle(route.contract, input_), "oracle"
            return await ask_teacher(route.teacher, route.contract, input_), route.teacher_name or "teacher"

        def on_skip(s: Skipped) -> None:
            self.metrics.fallbacks.labels(route.model, s.route, s.reason).inc()
            if s.reason in ("error", "timeout", "invalid"):
                self.metrics.validity.labels(route.model, s.route, "false" if s.reason == "invalid" else "error").inc()
            self.metrics.breaker_open.labels(route.model, s.route).set(
                1 if self.breakers.get(route.model, s.route, route.breaker).state == "open" else 0)

        got, failed_ms = await answer(route, self.breakers, call, allowed_tools=allowed, on_skip=on_skip)
        self.metrics.validity.labels(route.model, got.route, "true").inc()
        self.metrics.breaker_open.labels(route.model, got.route).set(0)
        return Served(route, got, input_, messages, got.attempt.upstream_ms + failed_ms,
                      frozenset(allowed) if allowed is not None else None, schema, max_tokens, temperature)


def _allowed_tools(route: RoleRoute, req: ChatCompletionRequest) -> set[str] | None:
    """The tool names the answer may call: the catalog, narrowed by the offered tools and tool_choice."""
    contract = route.contract
    if contract.kind == "structured":
        if req.tools:
            raise APIError(400, f"{route.model} answers with a JSON object (a structured role), not a tool call: "
                                "send no tools", param="tools")
        return None
    catalog = set(contract.tool_parameters())
    allowed = set(catalog)
    if req.tools:
        for i, tool in enumerate(req.tools):
            if tool.function.name not in catalog:
                raise APIError(400, f"tool {tool.function.name!r} is not in the catalog of {route.model}: "
                                    f"{sorted(catalog)}", param=f"tools[{i}].function.name")
        allowed = {t.function.name for t in req.tools}
    if req.tool_choice == "none":
        raise APIError(400, f"{route.model} always answers with a tool call; tool_choice 'none' cannot be served",
                       param="tool_choice")
    if isinstance(req.tool_choice, NamedToolChoice):
        name = req.tool_choice.function.name
        if name not in allowed:
            raise APIError(400, f"tool_choice names {name!r}, which is not among the tools offered: {sorted(allowed)}",
                           param="tool_choice.function.name")
        allowed = {name}
    return allowed


def _guided_schema(route: RoleRoute, allowed: set[str] | None) -> dict[str, Any]:
    schema = route.contract.guided_schema()
    if allowed is None or route.contract.kind != "tool_call" or allowed == set(route.contract.tool_parameters()):
        return schema
    return {"anyOf": [b for b in schema["anyOf"] if b["properties"]["name"]["const"] in allowed]}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def tool_call_of(output: dict[str, Any], request_id: str) -> dict[str, Any]:
    """A tool-call role's output in OpenAI's `tool_calls[0]` shape (arguments as a JSON string)."""
    return {"id": "call_" + request_id[-24:], "type": "function",
            "function": {"name": output["name"], "arguments": json.dumps(output["arguments"], ensure_ascii=False)}}
