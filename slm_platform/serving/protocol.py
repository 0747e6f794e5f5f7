"""OpenAI's chat-completions shapes at the gateway's edge, as pydantic models.

Requests are validated here once, so everything behind the route works on typed values. Unknown
request fields are tolerated (`extra="allow"`): OpenAI clients send fields we do not use (`user`,
`seed`, `store`, `metadata`, `parallel_tool_calls`, ...) and a drop-in must not refuse them.
Fields we do use are checked strictly, and a bad one is a 400 that names it (`APIError.param`).

One extension: `context` (an object, sent with the SDK's `extra_body={"context": {...}}`) holds a
role's named input fields beside `messages` (the travel domain's `slots`), rendered exactly as
training renders a Turn's input.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- request ------------------------------------------------------------------------------------
class FunctionCall(_Tolerant):
    name: str
    arguments: str


class ToolCall(_Tolerant):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(_Tolerant):
    type: Literal["text"]
    text: str


class ChatMessage(_Tolerant):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str | None:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content


class FunctionDef(_Tolerant):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Tolerant):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Tolerant):
    name: str


class NamedToolChoice(_Tolerant):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Tolerant):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Tolerant):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Tolerant):
    include_usage: bool = False


class ChatCompletionRequest(_Tolerant):
    """`POST /v1/chat/completions`. The role's contract decides the output: a `response_format`
    or `tools` the client sends are accepted for compatibility; offered tools narrow the catalog."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    context: dict[str, Any] | None = None  # gateway extension: the role's named input fields


# --- response -----------------------------------------------------------------------------------
class Usage(_Out):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(_Out):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class Choice(_Out):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None = None


class ChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class ToolCallDelta(_Out):
    index: int = 0
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class Delta(_Out):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Out):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None
    logprobs: None = None


class ChatCompletionChunk(_Out):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(_Out):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(_Out):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- errors ---------------------------------------------------------------------------------------
class ErrorBody(_Out):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Out):
    error: ErrorBody


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}


class APIError(Exception):
    """An answer in OpenAI's error shape; raised anywhere behind a route, rendered by the app."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(message=self.message, type=ERROR_TYPES.get(self.status, "api_error"),
                                             param=self.param, code=self.code))


def loc_to_param(loc: tuple[Any, ...]) -> str:
    """pydantic's error location -> the request field path an OpenAI client knows (`messages[0].role`)."""
    out = ""
    for part in loc:
        if part in ("body",) and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith("function-") or part in ("str", "list[ContentPart]",
                                        "NamedToolChoice", "literal['none','auto','required']")):
            continue  # union branch names pydantic adds; not fields
        else:
            out += ("." if out else "") + str(part)
    return out or "(body)"
