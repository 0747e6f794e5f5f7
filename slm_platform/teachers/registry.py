"""provider name -> teacher class. `teacher_from_config` calls `build` for any provider but "none";
each provider module is imported only when its provider is configured (the Vertex one needs an
optional SDK)."""

from __future__ import annotations

from typing import Any

from slm_platform.config.models import TeacherBlock
from slm_platform.teachers.base import Teacher, TeacherError


def build(cfg: TeacherBlock, **options: Any) -> Teacher:
    """A ready teacher for the config block. `options` go to the client (concurrency, max_tokens,
    cache, backoff_base_s, tool_mode, ...; see BaseTeacher and the provider classes)."""
    if cfg.provider == "openai_compatible":
        from slm_platform.teachers.openai_compatible import OpenAICompatibleTeacher

        return OpenAICompatibleTeacher(cfg, **options)
    if cfg.provider == "vertex_gemini":
        from slm_platform.teachers.vertex_gemini import VertexGeminiTeacher

        return VertexGeminiTeacher(cfg, **options)
    raise TeacherError(f"no teacher client for provider {cfg.provider!r} (known: openai_compatible, vertex_gemini)")


def teacher_from_config(cfg: TeacherBlock) -> Teacher | None:
    """The configured teacher, or None when the domain has none (the embedded default)."""
    if cfg.provider == "none":
        return None
    return build(cfg)
