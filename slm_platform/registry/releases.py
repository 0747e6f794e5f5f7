"""The incumbent: the champion that a new candidate is evaluated against, read from the pointer.

A package serves every role of its domain (one adapter per version), so the incumbent is the
champion of the domain's first role. The candidate eval names it as `reference_name(version)`;
promotion reads that name back (`evaluated_against`) to refuse a version that was never compared
with the current champion.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from slm_platform.artifacts import ArtifactStore
from slm_platform.layout import adapter_dir
from slm_platform.registry.pointer import read_pointer

_REFERENCE = re.compile(r"^champion (\S+)$")


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str  # the champion version, e.g. v0003
    adapter: str  # its adapter artifact, e.g. <domain>/adapters/v0003
    package_rel: str
    package_hash: str


def current_release(store: ArtifactStore, domain: str, role: str) -> Release | None:
    """The champion of `role` per the release pointer; None when nothing was ever promoted."""
    pointer = read_pointer(store, domain)
    target = pointer.roles.get(role) if pointer is not None else None
    if target is None or target.champion is None:
        return None
    c = target.champion
    return Release(version=c.version, adapter=adapter_dir(domain, c.version), package_rel=c.package_rel,
                   package_hash=c.package_hash)


def reference_name(version: str) -> str:
    """How a candidate eval report names the champion it was compared with."""
    return f"champion {version}"


def evaluated_against(reference: str | None) -> str | None:
    """The champion version a report's `reference` names; None for anything else (e.g. a base model)."""
    m = _REFERENCE.match(reference or "")
    return m.group(1) if m else None
