"""A domain folder loaded and checked: config, role contracts, prompts, oracle, simulator."""

from slm_platform.domain.contract import RoleContract
from slm_platform.domain.domain import Domain

__all__ = ["Domain", "RoleContract"]
