"""The Dagster instance: SQLite under $DAGSTER_HOME by default, PostgreSQL when a URL is given.

The same code runs on both; only `$DAGSTER_HOME/dagster.yaml` differs. It is written from the
repo's `dagster.yaml` plus, when `SLM_DAGSTER_STORAGE_URL` is set (required with SLM_ENV=prod),
a `storage.postgres` block that reads the URL from the environment (never written to disk).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml

from slm_platform import settings

TEMPLATE = settings.PROJECT_ROOT / "dagster.yaml"


def normalize_storage_url() -> None:
    """SQLAlchemy 2.1 maps a bare postgresql:// URL to psycopg 3; dagster-postgres ships psycopg2."""
    url = settings.dagster_storage_url()
    if url:
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                os.environ["SLM_DAGSTER_STORAGE_URL"] = "postgresql+psycopg2://" + url[len(prefix):]


def instance_config() -> dict:
    normalize_storage_url()
    config = yaml.safe_load(TEMPLATE.read_text()) if TEMPLATE.exists() else {}
    if settings.dagster_storage_url():
        config["storage"] = {"postgres": {"postgres_url": {"env": "SLM_DAGSTER_STORAGE_URL"}}}
    elif settings.env() == "prod":
        raise RuntimeError("SLM_ENV=prod needs SLM_DAGSTER_STORAGE_URL (a postgresql:// URL) for the Dagster instance")
    return config


def prepare_home(home: Path | None = None) -> Path:
    """Create $DAGSTER_HOME with its dagster.yaml and export DAGSTER_HOME for this process."""
    home = (home or settings.dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(instance_config(), sort_keys=False)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance(home: Path | None = None) -> dg.DagsterInstance:
    prepare_home(home)
    return dg.DagsterInstance.get()
