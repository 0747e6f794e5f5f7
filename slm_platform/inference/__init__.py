"""Inference engines behind one request/response type (`GenerationRequest` -> `GenerationResult`).

- `vllm`: the OpenAI-compatible HTTP API of a vLLM server (remote URL, or a managed local server
  started from the dedicated virtualenv), concurrent requests, structured outputs, LoRA by name.
- `transformers`: in-process fallback (batched `generate`, xgrammar guided decoding, peft LoRA).

Heavy imports (torch, transformers, peft, xgrammar) happen only when an engine is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from slm_platform.inference.transformers_engine import TransformersEngine
from slm_platform.inference.types import (
    Engine,
    GenerationRequest,
    GenerationResult,
    parse_object,
    requests_for,
)
from slm_platform.inference.vllm_engine import VLLMEngine, VLLMServer, VLLMServerError

__all__ = [
    "Engine", "GenerationRequest", "GenerationResult", "parse_object", "requests_for", "make_engine",
    "TransformersEngine", "VLLMEngine", "VLLMServer", "VLLMServerError",
]


def make_engine(
    kind: Literal["vllm", "transformers"],
    *,
    model_dir: str | Path | None = None,
    adapters: Mapping[str, str | Path] | None = None,
    base_url: str | None = None,
    model_name: str | None = None,
    concurrency: int | None = None,
    batch_size: int = 8,
    timeout_s: float | None = None,
    server_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Engine:
    """Build an engine.

    vllm, remote:   make_engine("vllm", base_url=URL, model_name=NAME)
    vllm, managed:  make_engine("vllm", model_dir=DIR, adapters={name: dir}) starts a `VLLMServer`
                    (`server_options` go to it) that the engine's `close()` stops.
    transformers:   make_engine("transformers", model_dir=DIR, adapters={name: dir}, batch_size=8)
    """
    if kind == "vllm":
        from slm_platform.inference.vllm_engine import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S, VLLMEngine, VLLMServer

        timeout = timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S
        concurrency = concurrency or DEFAULT_CONCURRENCY
        if base_url is not None:
            if adapters:
                raise ValueError("adapters with base_url: load them on the server (VLLMEngine.load_lora_adapter)")
            return VLLMEngine(base_url, model_name or "base", concurrency=concurrency, timeout_s=timeout, **options)
        if model_dir is None:
            raise ValueError("make_engine('vllm') needs base_url (remote server) or model_dir (managed server)")
        # LoRA on when adapters are given (server_options may turn it on for run-time loading only)
        opts = {"enable_lora": bool(adapters), **dict(server_options or {})}
        if model_name is not None:
            opts["served_model_name"] = model_name
        server = VLLMServer(model_dir, lora_modules=adapters, **opts).start()
        return server.engine(concurrency=concurrency, timeout_s=timeout, own=True)
    if kind == "transformers":
        from slm_platform.inference.transformers_engine import TransformersEngine

        if model_dir is None:
            raise ValueError("make_engine('transformers') needs model_dir")
        return TransformersEngine(model_dir, dict(adapters) if adapters else None, batch_size=batch_size, **options)
    raise ValueError(f"unknown engine kind {kind!r}: expected 'vllm' or 'transformers'")
