"""Teachers: stronger models that label turns and set the ceiling (openai_compatible, vertex_gemini)."""

from slm_platform.teachers.base import Teacher, TeacherBudgetExceeded, TeacherError
from slm_platform.teachers.registry import teacher_from_config

__all__ = ["Teacher", "TeacherBudgetExceeded", "TeacherError", "teacher_from_config"]
