"""The one request/response pair every inference engine speaks.

An engine takes a list of `GenerationRequest` and returns one `GenerationResult` per request, in
the same order. Prompts are built by `requests_for`, which goes through the one renderer
(`slm_platform.domain.render.render_messages`) and the role's `guided_schema()`, so evaluation,
serving and data labelling ask the model the same question under the same constraint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, runtime_checkable

from slm_platform.domain.contract import RoleContract
from slm_platform.domain.grammar import token_budget
from slm_platform.domain.render import render_messages

DEFAULT_MAX_TOKENS = 256


@dataclass
class GenerationRequest:
    messages: list[dict[str, Any]]  # OpenAI chat messages (system first), from render_messages
    schema: dict[str, Any] | None = None  # guided decoding JSON Schema; None = unconstrained
    # None: until the grammar closes or the context ends (a schema whose grammar bounds every value)
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    adapter: str | None = None  # LoRA adapter name; None = the base model
    temperature: float = 0.0
    request_id: str | None = None


@dataclass
class GenerationResult:
    text: str
    parsed: dict[str, Any] | None  # json.loads(text) when it is a JSON object, else None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    error: str | None = None  # transport / server / engine failure; None when the model answered
    finish_reason: str | None = None  # "stop" | "length" | None (unknown / failed)
    request_id: str | None = None


@runtime_checkable
class Engine(Protocol):
    name: str

    def generate(self, requests: list[GenerationRequest], *, progress: bool = False) -> list[GenerationResult]:
        """One result per request, in input order. Failures are reported per result (`error`)."""
        ...

    def close(self) -> None:
        ...


def parse_object(text: str) -> dict[str, Any] | None:
    """The JSON object `text` holds, or None (not JSON, or JSON but not an object)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def failed(request: GenerationRequest, error: str, latency_ms: float = 0.0) -> GenerationResult:
    return GenerationResult(text="", parsed=None, prompt_tokens=0, completion_tokens=0, latency_ms=latency_ms,
                            error=error, request_id=request.request_id)


def guided_max_tokens(schema: dict[str, Any] | None, cap: int) -> int | None:
    """`max_tokens` for an answer under `schema`: None where the grammar bounds every value (the
    answer closes within `token_budget(schema)` tokens, so no cap can cut it short), else `cap`,
    and an answer that reaches it is counted as truncated (finish_reason "length")."""
    if schema is None or token_budget(schema) is None:
        return cap
    return None


def requests_for(
    contract: RoleContract,
    inputs: Iterable[dict[str, Any]],
    *,
    guided: bool = True,
    adapter: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 0.0,
    request_ids: Iterable[str | None] | None = None,
) -> list[GenerationRequest]:
    """One request per role input: messages from the one renderer, schema from the contract."""
    schema = contract.guided_schema() if guided else None
    max_tokens = guided_max_tokens(schema, max_tokens) if guided else max_tokens
    inputs = list(inputs)
    ids = list(request_ids) if request_ids is not None else [None] * len(inputs)
    if len(ids) != len(inputs):
        raise ValueError(f"request_ids has {len(ids)} entries for {len(inputs)} inputs")
    return [
        GenerationRequest(messages=render_messages(contract, inp), schema=schema, max_tokens=max_tokens,
                          adapter=adapter, temperature=temperature, request_id=rid)
        for inp, rid in zip(inputs, ids)
    ]
