"""Base models: resolve a config candidate (pypi:/hf:/path:) to a verified local HF folder."""

from slm_platform.models.base_models import (
    BASE_MODELS_DIR,
    BaseModel,
    BaseModelError,
    candidate_key,
    resolve_base_model,
)

__all__ = ["BASE_MODELS_DIR", "BaseModel", "BaseModelError", "candidate_key", "resolve_base_model"]
