"""A `ModelSpec` (see `models.spec`) opened as a Predictor, and closed afterwards.

An adapter on vLLM is merged into its base weights first (CPU LoRA requests are 4-6x slower).
Local models run on the configured engine: a managed vLLM server from the dedicated venv, or the
in-process transformers engine.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals.predictors import EnginePredictor, OraclePredictor, Predictor, TeacherPredictor
from slm_platform.inference import Engine, make_engine
from slm_platform.models import candidate_key, resolve_base_model
from slm_platform.models.spec import ModelSpec, SpecKind


class TargetError(ValueError):
    pass


def _local_model_engine(engine_kind: str, model_dir: Path, adapters: dict[str, Path], *, max_model_len: int,
                        stack: contextlib.ExitStack) -> Engine:
    """A managed vLLM server (stopped with the engine) or the in-process transformers engine."""
    if engine_kind not in ("vllm", "transformers"):
        raise TargetError(f"engine {engine_kind!r} is not one of vllm, transformers")
    server_options = {"max_model_len": max_model_len, "max_lora_rank": lora_rank_slot(adapters)}
    return stack.enter_context(make_engine(engine_kind, model_dir=model_dir, adapters=adapters or None,
                                           server_options=server_options if engine_kind == "vllm" else None))


def lora_rank_slot(adapters: dict[str, Path]) -> int:
    """vLLM reserves LoRA slots of a fixed rank: the smallest allowed size that fits every adapter."""
    import json

    ranks = [json.loads((d / "adapter_config.json").read_text()).get("r", 16) for d in adapters.values()]
    return next(s for s in (8, 16, 32, 64, 128, 256, 512) if s >= max(ranks, default=16))


def _candidate_for(domain: Domain | None, trained_on: str | None) -> str | None:
    """The domain candidate whose key the adapter's manifest names (`base_model`), else the first."""
    if domain is None:
        return None
    keys = {candidate_key(c): c for c in domain.config.model.candidates}
    return keys.get(trained_on or "") or domain.config.model.candidates[0]


def adapter_dir_and_base(spec: str, store: ArtifactStore) -> tuple[Path, dict[str, Any]]:
    """An adapter given as an artifact path (verified) or a plain folder; and its manifest extra."""
    path = Path(spec)
    if path.is_dir():
        return path, {}
    if not store.exists(spec):
        raise TargetError(f"adapter {spec!r} is neither a folder nor a published artifact in {store.root}")
    manifest = store.read_manifest(spec)
    return store.open_verified(spec), dict(manifest.extra or {})


@contextlib.contextmanager
def open_predictor(spec: ModelSpec, *, domain: Domain | None = None, store: ArtifactStore | None = None,
                   engine: str = "vllm", guided: bool = True, max_model_len: int = 2048, max_tokens: int = 256,
                   base: str | None = None, progress: bool = False, merge_adapters: bool = True) -> Iterator[Predictor]:
    """A predictor for `spec`; on vLLM an adapter is merged into its base first (`merge_adapters`)."""
    name = str(spec)
    with contextlib.ExitStack() as stack:
        if spec.kind == SpecKind.ORACLE:
            yield OraclePredictor()
            return
        if spec.kind == SpecKind.TEACHER:
            from slm_platform.teachers import teacher_from_config

            teacher = teacher_from_config(domain.config.teacher) if domain is not None else None
            if teacher is None:
                raise TargetError("no teacher configured (teacher.provider is none)")
            yield TeacherPredictor(teacher)
            return
        if spec.kind == SpecKind.URL:
            from slm_platform.inference.vllm_engine import VLLMEngine

            eng = stack.enter_context(VLLMEngine(spec.ref, spec.served_name))
            yield EnginePredictor(eng, name=name, guided=guided, max_tokens=max_tokens, progress=progress)
            return
        store = store or ArtifactStore(settings.artifacts_root())
        if spec.kind == SpecKind.BASE:
            model_dir = resolve_base_model(spec.ref, store, log=lambda m: None).local_dir
            eng = _local_model_engine(engine, model_dir, {}, max_model_len=max_model_len, stack=stack)
            yield EnginePredictor(eng, name=name, guided=guided, max_tokens=max_tokens, progress=progress)
            return
        if spec.kind == SpecKind.ADAPTER:
            adapter_dir, extra = adapter_dir_and_base(spec.ref, store)
            candidate = base or extra.get("base_candidate") or _candidate_for(domain, extra.get("base_model"))
            if candidate is None:
                raise TargetError(f"{name!r}: which base model? pass --base")
            model_dir = resolve_base_model(candidate, store, log=lambda m: None).local_dir
            served, adapters, adapter = model_dir, {"adapter": adapter_dir}, "adapter"
            if engine == "vllm" and merge_adapters:
                # vLLM on a CPU runs LoRA requests 4-6x slower than plain ones: serve the merged weights
                from slm_platform.models.merge import merge_adapter

                merged = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slm-merged-")))
                served, adapters, adapter = merge_adapter(model_dir, adapter_dir, merged), {}, None
            eng = _local_model_engine(engine, served, adapters, max_model_len=max_model_len, stack=stack)
            yield EnginePredictor(eng, name=name, adapter=adapter, guided=guided, max_tokens=max_tokens,
                                  progress=progress)
            return
        eng = _local_model_engine(engine, Path(spec.ref), {}, max_model_len=max_model_len, stack=stack)
        yield EnginePredictor(eng, name=name, guided=guided, max_tokens=max_tokens, progress=progress)
