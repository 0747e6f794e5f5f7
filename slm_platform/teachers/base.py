"""The teacher interface: a stronger model that labels turns (the ceiling the SLM is measured against).

The dataset stage only needs `label()`. Concrete teachers (openai_compatible, vertex_gemini) live
beside this module; `teachers.registry.teacher_from_config` returns None when the domain configures no teacher, which
is the embedded default and a fully supported path (labels then come from gold, capture, oracle).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from slm_platform.domain.contract import RoleContract


class TeacherBudgetExceeded(RuntimeError):
    """Raised when labeling would spend more than the configured budget; never silent."""


class TeacherError(RuntimeError):
    """A teacher that cannot label at all: bad credentials, unknown model or endpoint, missing SDK."""


@runtime_checkable
class Teacher(Protocol):
    name: str

    def label(self, contract: RoleContract, inputs: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """One output per input (None where the teacher gave no usable answer)."""
        ...
