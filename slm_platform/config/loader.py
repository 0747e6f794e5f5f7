"""Load `domains/<name>/slm.config.yaml` files into validated `DomainConfig` objects."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from slm_platform.config.errors import ConfigError, Problem, describe, from_validation_error
from slm_platform.config.models import REMOVED, DomainConfig

CONFIG_FILE = "slm.config.yaml"


def read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "", "no such file", f"a {CONFIG_FILE} file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(str(path), "", f"bytes that are not UTF-8 ({exc.reason})", "UTF-8 text")]) from None
    except OSError as exc:  # a folder named like the file, no permission, ...
        raise ConfigError([Problem(str(path), "", f"a file that cannot be read ({exc.strerror or exc})", f"a readable {CONFIG_FILE} file")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the document"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([Problem(str(path), "", f"invalid YAML at {where} ({problem})", "valid YAML")]) from None


def load_config(path: Path | str) -> DomainConfig:
    """Load one config file (or a domain folder containing one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    data = read_yaml(path)
    if not isinstance(data, dict):
        found = "an empty document" if data is None else f"a {type(data).__name__} ({describe(data)})"
        raise ConfigError([Problem(str(path), "", found, "a mapping with domain and contract blocks")])
    try:
        config = DomainConfig.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(path, exc, data, DomainConfig, REMOVED) from None
    folder = path.parent.name
    if config.name != folder:
        raise ConfigError([Problem(str(path), "domain.name", repr(config.name), f"the folder name {folder!r}")])
    return config


def discover_domains(domains_dir: Path | str) -> list[Path]:
    """Every domain folder (one that holds a slm.config.yaml), sorted by name."""
    root = Path(domains_dir)
    return sorted(p.parent for p in root.glob(f"*/{CONFIG_FILE}"))
