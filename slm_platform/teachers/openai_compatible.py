"""Teacher over any OpenAI-compatible chat-completions endpoint, through the official `openai` SDK.

Works with OpenAI, Azure OpenAI, vLLM, llama.cpp / Ollama / LiteLLM-style servers. Config:

    teacher:
      provider: openai_compatible
      model: gpt-4.1-mini                     # vLLM: the served model name; Azure: the deployment name
      base_url: https://api.openai.com/v1     # vLLM: http://host:8000/v1
      api_key_env: OPENAI_API_KEY             # omit for a server without auth (sends "EMPTY")

Azure OpenAI, either form:
  - v1 API (no api-version):  base_url: https://<resource>.openai.azure.com/openai/v1/
  - deployment URL:           base_url: https://<resource>.openai.azure.com/openai/deployments/<deployment>?api-version=2024-10-21
    The query string of base_url is split off and sent with every request (the SDK's
    `default_query`), and for an `*.azure.com` deployment URL the key is also sent in the
    `api-key` header Azure expects there.

Requests: the prompt is `render_messages(contract, input)` (the one renderer, train/serve parity),
temperature 0, `max_completion_tokens` (configurable field name for older servers).
  - structured role: `response_format={"type": "json_schema", "json_schema": {"name": <role id>,
    "schema": contract.guided_schema(), "strict": True}}`; the output is the message content.
  - tool_call role, `tool_mode`:
      "tools"        `tools=<catalog>`, `tool_choice="required"`; output from `message.tool_calls[0]`
                     (falling back to content holding {"name", "arguments"} JSON);
      "json_schema"  response_format json_schema over `guided_schema()` (exactly one catalog call);
      "auto"         (default) start with "tools"; if the server rejects it with HTTP 400/422 naming
                     tools/functions (servers without tool support), switch to "json_schema" for
                     the rest of this teacher's life, logging once.
The SDK's own retries are off (`max_retries=0`): retries, rate limit, budget, cache and accounting
are `BaseTeacher`'s (slm_platform.teachers.client).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai

from slm_platform.config.models import TeacherBlock
from slm_platform.domain.contract import RoleContract
from slm_platform.domain.render import render_messages
from slm_platform.teachers.base import TeacherError
from slm_platform.teachers.client import (
    BaseTeacher,
    RequestFailure,
    Usage,
    as_tool_call,
    loads_json_object,
    parse_retry_after,
)

log = logging.getLogger("slm_platform.teachers")

ToolMode = Literal["auto", "tools", "json_schema"]
AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


def resolve_secret(api_key_env: str | None) -> str | None:
    """The key from the environment variable the config names (None when it names none)."""
    if not api_key_env:
        return None
    value = os.environ.get(api_key_env)
    if not value:
        raise TeacherError(f"teacher.api_key_env names the environment variable {api_key_env!r}, but it is not set "
                           f"(or empty): export it before running, or remove api_key_env for a server without auth")
    return value


def split_base_url(base_url: str) -> tuple[str, dict[str, str]]:
    """(base URL without query, the query as a dict) — Azure's ?api-version=... becomes default_query."""
    parts = urlsplit(base_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), query


def is_azure_deployment_url(base_url: str) -> bool:
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    return host.endswith(AZURE_HOST_SUFFIXES) and "/deployments/" in parts.path


def openai_tools(contract: RoleContract) -> list[dict[str, Any]]:
    return [{"type": "function", "function": t.get("function", t)} for t in contract.tools or []]


class OpenAICompatibleTeacher(BaseTeacher):
    provider = "openai_compatible"
    fatal_hints = {**BaseTeacher.fatal_hints, 401: "the API key was rejected"}

    def __init__(self, cfg: TeacherBlock, *, tool_mode: ToolMode = "auto", strict: bool = True,
                 temperature: float | None = 0.0, max_tokens_field: str = "max_completion_tokens",
                 client: openai.OpenAI | None = None, **options: Any):
        if not cfg.base_url or not cfg.model:
            raise TeacherError("provider openai_compatible needs teacher.model and teacher.base_url")
        if tool_mode not in ("auto", "tools", "json_schema"):
            raise ValueError(f"tool_mode must be 'auto', 'tools' or 'json_schema', found {tool_mode!r}")
        secret = resolve_secret(cfg.api_key_env)
        super().__init__(cfg, secret=secret, **options)
        base_url, query = split_base_url(cfg.base_url)
        headers = {"api-key": secret} if secret and is_azure_deployment_url(cfg.base_url) else None
        self._client = client or openai.OpenAI(
            base_url=base_url, api_key=secret or "EMPTY", max_retries=0, timeout=cfg.timeout_s,
            default_query=query or None, default_headers=headers)
        parts = urlsplit(base_url)
        self._where = f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"
        self.tool_mode: ToolMode = tool_mode
        self.strict = strict
        self.temperature = temperature
        self.max_tokens_field = max_tokens_field
        self._mode_lock = threading.Lock()
        self._active_tool_mode = "json_schema" if tool_mode == "json_schema" else "tools"

    @property
    def active_tool_mode(self) -> str:
        return self._active_tool_mode

    def credentials_hint(self) -> str:
        if self.cfg.api_key_env:
            return f"Check the key in the environment variable {self.cfg.api_key_env!r} and teacher.model / base_url."
        return "Check teacher.model and teacher.base_url (no api_key_env is configured)."

    def cache_scope(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "host": self._where}

    # --- request ----------------------------------------------------------------------------------
    def build_request(self, contract: RoleContract, input_: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": render_messages(contract, input_)}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        body[self.max_tokens_field] = self.max_tokens
        if contract.kind == "tool_call" and self._active_tool_mode == "tools":
            body["tools"] = openai_tools(contract)
            body["tool_choice"] = "required"
        else:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": contract.id, "schema": contract.guided_schema(), "strict": self.strict}}
        return body

    def on_rejected(self, contract: RoleContract, input_: dict[str, Any], request: dict[str, Any],
                    failure: RequestFailure) -> dict[str, Any] | None:
        if self.tool_mode != "auto" or "tools" not in request or failure.status not in (400, 422):
            return None
        text = failure.message.lower()
        if "tool" not in text and "function" not in text:
            return None
        with self._mode_lock:
            if self._active_tool_mode == "tools":
                self._active_tool_mode = "json_schema"
                log.warning("teacher %s: the server rejected tools with tool_choice='required' (%s); using "
                            "response_format json_schema over the role's guided schema for the rest of this run",
                            self.model, self.scrub(failure.describe())[:300])
        return self.build_request(contract, input_)

    # --- transport --------------------------------------------------------------------------------
    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        failure: RequestFailure | None = None
        try:
            response = self._client.chat.completions.create(**request)
            return response.to_dict(mode="json")
        except openai.APITimeoutError:
            failure = RequestFailure(f"no response within {self.cfg.timeout_s:g}s", kind="timeout")
        except openai.APIConnectionError as exc:
            failure = RequestFailure(self.scrub(f"connection error ({type(exc.__cause__).__name__})"),
                                     kind="connection")
        except openai.APIStatusError as exc:
            failure = RequestFailure(self.scrub(_error_text(exc))[:1000], status=exc.status_code,
                                     retry_after=parse_retry_after(exc.response.headers))
        except openai.OpenAIError as exc:  # validation of an odd response, etc.
            failure = RequestFailure(self.scrub(f"{type(exc).__name__}: {exc}")[:1000], kind="other")
        raise failure  # outside the except blocks: no chained SDK exception (it holds request headers)

    # --- response ---------------------------------------------------------------------------------
    def parse(self, contract: RoleContract, response: dict[str, Any]) -> tuple[Any, Usage]:
        usage = response.get("usage") or {}
        used = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        choices = response.get("choices") or []
        message = (choices[0] or {}).get("message") or {} if choices else {}
        if contract.kind == "tool_call":
            calls = message.get("tool_calls") or []
            if calls:
                fn = calls[0].get("function") or {}
                return as_tool_call({"name": fn.get("name"), "arguments": fn.get("arguments") or "{}"}), used
            return as_tool_call(message.get("content")), used
        if message.get("refusal"):
            return None, used
        return loads_json_object(message.get("content")), used


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") or body.get("message") or body.get("detail")
        if message:
            return str(message)
    return exc.message
