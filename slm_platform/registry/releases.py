"""The release pointer of a domain: which candidate version serves, read from the artifact store.

`<domain>/releases/current/release.json` holds {version, adapter, base_candidate, eval_report,
released_at}. Promotion and rollback publish a new pointer (the `release` asset's history is the
audit log); everything that needs "the incumbent" reads it through `current_release`.
"""

from __future__ import annotations

from typing import Any

from slm_platform.artifacts import ArtifactStore


def release_dir(domain: str) -> str:
    return f"{domain}/releases/current"


def current_release(store: ArtifactStore, domain: str) -> dict[str, Any] | None:
    if not store.exists(release_dir(domain)):
        return None
    return store.read_json(release_dir(domain), "release.json")
