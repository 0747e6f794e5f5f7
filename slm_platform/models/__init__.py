"""Base models: resolve a config candidate (pypi:/hf:/path:) to a verified local HF folder."""

from slm_platform.models.base_models import (
    BaseModel,
    BaseModelError,
    candidate_key,
    resolve_base_model,
)

__all__ = ["BaseModel", "BaseModelError", "candidate_key", "resolve_base_model"]
