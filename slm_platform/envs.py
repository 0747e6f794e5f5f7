"""Explicit environments for child processes.

A child (the trainer, the managed vLLM server) inherits only named variables from this process,
so teacher API keys, `SLM_DAGSTER_STORAGE_URL`, tokens and whatever else the operator's shell holds
never reach code that does not need them. Plain Python on purpose (no Dagster import): the
inference package uses it too.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

# What any local child needs to run like its parent: the system basics, locale, temp dirs, caches,
# the offline switches, and thread / device selection. No credentials.
BASE_PASSTHROUGH_ENV: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ",
    "TMPDIR", "TEMP", "TMP",
    "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE", "TORCH_HOME",
    "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
)  # fmt: skip


def passthrough(
    names: Iterable[str],
    prefixes: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables of `environ` (default `os.environ`) named in `names` or starting with one of
    `prefixes`; nothing else."""
    source = os.environ if environ is None else environ
    wanted = set(names)
    starts = tuple(prefixes)
    return {k: v for k, v in source.items() if k in wanted or (starts and k.startswith(starts))}


__all__ = ["BASE_PASSTHROUGH_ENV", "passthrough"]
