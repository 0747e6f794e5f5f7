"""Whatever answers a role's inputs during evaluation: the oracle, a model engine, a teacher.

All three give one `Prediction` per turn, so the runner scores floor, base models, adapters,
packages and teachers with the same code and the same metrics.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

from slm_platform.domain.contract import RoleContract
from slm_platform.inference.types import Engine, requests_for


@dataclass
class Prediction:
    output: dict[str, Any] | None  # the decoded answer (None: no usable answer)
    text: str | None = None  # the raw text when a model produced it
    latency_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    finish_reason: str | None = None  # the engine's: "length" means it stopped at max_tokens


class Predictor(Protocol):
    name: str

    def predict(self, contract: RoleContract, inputs: list[dict[str, Any]]) -> list[Prediction]:
        ...


class OraclePredictor:
    """The domain's deterministic oracle: the floor every model must beat."""

    name = "oracle"

    def predict(self, contract: RoleContract, inputs: list[dict[str, Any]]) -> list[Prediction]:
        if contract.oracle is None:
            raise ValueError(f"role {contract.id!r} has no oracle configured")
        out = []
        for inp in inputs:
            start = time.perf_counter()
            try:
                answer, error = contract.oracle(inp), None
            except Exception as exc:  # a crashing oracle scores as no answer, with the reason kept
                answer, error = None, f"{type(exc).__name__}: {exc}"
            out.append(Prediction(answer, json.dumps(answer) if answer is not None else None,
                                  (time.perf_counter() - start) * 1000, error=error))
        return out


class EnginePredictor:
    """A model behind an inference engine (vLLM or transformers), optionally a LoRA adapter."""

    def __init__(self, engine: Engine, *, name: str, adapter: str | None = None, guided: bool = True,
                 max_tokens: int = 256, progress: bool = False):
        self.engine, self.name, self.adapter = engine, name, adapter
        self.guided, self.max_tokens, self.progress = guided, max_tokens, progress

    def predict(self, contract: RoleContract, inputs: list[dict[str, Any]]) -> list[Prediction]:
        return self.predict_groups([(contract, inputs)])[0]

    def predict_groups(self, groups: list[tuple[RoleContract, list[dict[str, Any]]]]) -> list[list[Prediction]]:
        """Several (contract, inputs) groups in ONE engine call, so requests run concurrently across
        groups (a BFCL file has one contract per row: per-group calls would send them one by one)."""
        requests = [r for contract, inputs in groups
                    for r in requests_for(contract, inputs, guided=self.guided, adapter=self.adapter,
                                          max_tokens=self.max_tokens)]
        results = iter(self.engine.generate(requests, progress=self.progress))
        return [[Prediction(r.parsed, r.text, r.latency_ms, r.prompt_tokens, r.completion_tokens, r.error,
                            r.finish_reason)
                 for r in (next(results) for _ in inputs)] for _, inputs in groups]


class TeacherPredictor:
    """A teacher endpoint (the ceiling), through the same client that labels data."""

    def __init__(self, teacher: Any, *, name: str = "teacher"):
        self.teacher, self.name = teacher, name

    def predict(self, contract: RoleContract, inputs: list[dict[str, Any]]) -> list[Prediction]:
        start = time.perf_counter()
        outputs = self.teacher.label(contract, inputs)
        per = (time.perf_counter() - start) * 1000 / max(1, len(inputs))
        return [Prediction(o, json.dumps(o) if o is not None else None, per) for o in outputs]
