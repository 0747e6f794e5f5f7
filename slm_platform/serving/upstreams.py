"""The three things that can answer a role: the SLM on vLLM, the domain's oracle, the teacher.

Each returns an `Attempt` (the output object and what it cost) or raises `UpstreamFailure` with a
reason the fallback chain and the metrics count by: `error`, `timeout` or `invalid`.

The SLM is asked through vLLM's completions endpoint with the prompt as token ids (see
`serving/render.py`), constrained by a grammar of the role's guided schema whose whitespace is
exactly what the renderer trains on (`domain.grammar`: one line, `", "` and `": "`, keys in
schema order), so the model can neither wander into whitespace runs until `max_tokens` nor see a
layout it was not trained on, by LoRA adapter name: one vLLM serves
every domain's champion and challenger side by side. The oracle and the teacher are blocking
Python calls; they run in worker threads so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from slm_platform.domain import RoleContract
from slm_platform.domain.grammar import schema_grammar
from slm_platform.inference.types import parse_object
from slm_platform.inference.vllm_engine import VLLMEngine, VLLMRequestError

log = logging.getLogger("slm_platform.serving")

FALLBACK_CONTEXT_TOKENS = 2048  # when the server does not say its max_model_len
Reason = Literal["error", "timeout", "invalid", "unavailable", "breaker_open"]


@dataclass(frozen=True)
class Attempt:
    output: dict[str, Any] | None  # None: the upstream answered nothing usable (scored invalid)
    text: str
    upstream_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    prompt_token_ids: tuple[int, ...] | None = None


class UpstreamFailure(Exception):
    def __init__(self, reason: Reason, detail: str, upstream_ms: float = 0.0):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.upstream_ms = upstream_ms


class VLLMUpstream:
    """One vLLM server (LoRA enabled): async generation, and adapter loading by name."""

    def __init__(self, base_url: str, *, max_connections: int = 256):
        root = base_url.rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        self._client = httpx.AsyncClient(
            base_url=self.root, timeout=httpx.Timeout(600.0, connect=5.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))
        self._admin = VLLMEngine(self.root, "base", timeout_s=120.0)
        self._adapters: dict[str, Path] = {}  # every adapter ensured: what to load again after a restart
        self._reloading: set[str] = set()
        self._tasks: set[asyncio.Task] = set()  # held: the loop keeps only weak references
        self._context_tokens: int | None = None  # the server's max_model_len, read once from /v1/models

    def ensure_adapter(self, name: str, path: Path) -> None:
        """Load the LoRA folder under `name` unless the server already has it (blocking)."""
        self._adapters[name] = path
        try:
            if name in self._admin.models():
                return
            self._admin.load_lora_adapter(name, path)
        except (VLLMRequestError, httpx.HTTPError) as exc:
            raise RuntimeError(f"vLLM at {self.root} could not load adapter {name}: {exc}") from None

    async def healthy(self) -> bool:
        try:
            return (await self._client.get("/health", timeout=2.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def complete(self, adapter: str, prompt_ids: list[int], schema: dict[str, Any], *, max_tokens: int | None,
                       temperature: float, timeout_s: float) -> Attempt:
        body: dict[str, Any] = {"model": adapter, "prompt": prompt_ids, "temperature": temperature,
                                "structured_outputs": {"grammar": schema_grammar(schema)}}
        # None: the grammar closes the answer, so allow the rest of the context (vLLM's completions
        # API would otherwise stop at its default of 16 tokens)
        body["max_tokens"] = max_tokens if max_tokens is not None else max(1, await self._context() - len(prompt_ids))
        t0 = time.perf_counter()
        try:
            resp = await asyncio.wait_for(self._client.post("/v1/completions", json=body), timeout_s)
        except asyncio.TimeoutError:
            raise UpstreamFailure("timeout", f"no answer within the latency budget ({timeout_s * 1000:.0f} ms)",
                                  (time.perf_counter() - t0) * 1000) from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure("error", f"vLLM unreachable ({type(exc).__name__})",
                                  (time.perf_counter() - t0) * 1000) from None
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code == 404 and adapter in self._adapters:
            self._reload(adapter)
            raise UpstreamFailure("error", f"vLLM does not know adapter {adapter} (restarted?): loading it again", ms)
        if resp.status_code != 200:
            raise UpstreamFailure("error", f"vLLM answered HTTP {resp.status_code}", ms)
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice.get("text") or ""
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamFailure("error", "vLLM sent an unexpected response body", ms) from None
        return Attempt(parse_object(text), text, ms, int(usage.get("prompt_tokens") or 0),
                       int(usage.get("completion_tokens") or 0), choice.get("finish_reason"), tuple(prompt_ids))

    async def _context(self) -> int:
        if self._context_tokens is None:
            try:
                models = (await self._client.get("/v1/models", timeout=5.0)).json()["data"]
                self._context_tokens = int(models[0]["max_model_len"])
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
                return FALLBACK_CONTEXT_TOKENS  # asked again next time
        return self._context_tokens

    def _reload(self, adapter: str) -> None:
        """Load an adapter the server lost (a vLLM restart forgets runtime-loaded LoRAs) in the
        background, once at a time: this request falls back, the ones after it are served again."""
        if adapter in self._reloading:
            return
        self._reloading.add(adapter)

        async def load() -> None:
            try:
                await asyncio.to_thread(self.ensure_adapter, adapter, self._adapters[adapter])
            except RuntimeError as exc:
                log.error("%s", exc)
            finally:
                self._reloading.discard(adapter)

        task = asyncio.get_running_loop().create_task(load())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        await self._client.aclose()
        self._admin.close()


async def ask_oracle(contract: RoleContract, input_: dict[str, Any]) -> Attempt:
    """The domain's deterministic rules (the floor): local code, in a worker thread."""
    assert contract.oracle is not None
    t0 = time.perf_counter()
    try:
        output = await asyncio.to_thread(contract.oracle, input_)
    except Exception as exc:  # noqa: BLE001 - a user's module: any exception is an upstream error
        raise UpstreamFailure("error", f"oracle raised {type(exc).__name__}", (time.perf_counter() - t0) * 1000) from None
    return Attempt(output if isinstance(output, dict) else None, "", (time.perf_counter() - t0) * 1000)


async def ask_teacher(teacher: Any, contract: RoleContract, input_: dict[str, Any]) -> Attempt:
    """The configured teacher (its own retries, rate limit, budget and timeout), in a worker thread."""
    t0 = time.perf_counter()
    try:
        [output] = await asyncio.to_thread(teacher.label, contract, [input_])
    except Exception as exc:  # noqa: BLE001 - TeacherError, budget exceeded, SDK errors: all are upstream errors
        raise UpstreamFailure("error", f"teacher failed ({type(exc).__name__})", (time.perf_counter() - t0) * 1000) from None
    return Attempt(output, "", (time.perf_counter() - t0) * 1000)
