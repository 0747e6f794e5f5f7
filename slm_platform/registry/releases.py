"""The release pointer of a domain: which candidate version serves, read from the artifact store.

`<domain>/releases/current/release.json` holds a `Release`. Promotion and rollback publish a new
pointer (the `release` asset's history is the audit log); everything that needs "the incumbent"
reads it through `current_release`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from slm_platform.artifacts import ArtifactStore
from slm_platform.layout import release_dir

RELEASE_FILE = "release.json"


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str  # the candidate version that serves, e.g. v0003
    adapter: str  # its adapter artifact, e.g. <domain>/adapters/v0003
    base_candidate: str  # the base model the adapter was trained on
    eval_report: str  # the candidate eval report that passed the gates
    released_at: str  # ISO-8601 UTC


def current_release(store: ArtifactStore, domain: str) -> Release | None:
    if not store.exists(release_dir(domain)):
        return None
    return Release.model_validate(store.read_json(release_dir(domain), RELEASE_FILE))
