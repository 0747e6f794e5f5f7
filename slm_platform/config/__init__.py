"""Domain configuration: pydantic models of slm.config.yaml, the loader and its error messages."""

from slm_platform.config.errors import ConfigError, Problem
from slm_platform.config.loader import CONFIG_FILE, discover_domains, load_config
from slm_platform.config.models import DomainConfig, Role

__all__ = ["CONFIG_FILE", "ConfigError", "DomainConfig", "Problem", "Role", "discover_domains", "load_config"]
