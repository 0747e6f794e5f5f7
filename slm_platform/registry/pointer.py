"""The release pointer: what serves, per role, as ONE file the serving side reads.

`<domain>/releases/current.json` is derived from the replayed event log (never edited by hand)
and names the log position it reflects (`last_event`), so a pointer that lags the log is
detectable and rewritable (`orchestration.registry.reconcile`). It is one file written whole:
a temporary file + `os.replace` locally, a single object write on gs:// (object writes are
atomic there), so a reader sees the old pointer or the new one, never a mix.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from slm_platform.artifacts import ArtifactStore
from slm_platform.layout import release_pointer_path
from slm_platform.registry.history import ALIASES, RegistryState, utc_now


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointerTarget(_Strict):
    version: str
    package_rel: str  # the package folder, relative to the store root
    package_hash: str  # its manifest hash: a reader refuses a package that no longer has it


class RolePointer(_Strict):
    champion: PointerTarget | None = None
    challenger: PointerTarget | None = None


class ReleasePointer(_Strict):
    domain: str
    roles: dict[str, RolePointer] = Field(default_factory=dict)
    last_event: int | None = None  # storage id of the last log event this pointer reflects
    updated_at: datetime = Field(default_factory=utc_now)

    @classmethod
    def from_state(cls, domain: str, state: RegistryState) -> "ReleasePointer":
        roles = {}
        for role, aliases in sorted(state.aliases.items()):
            targets = {a: PointerTarget(version=t.version, package_rel=t.package_rel, package_hash=t.package_hash)
                       for a, t in aliases.items() if a in ALIASES}
            roles[role] = RolePointer(**targets)
        return cls(domain=domain, roles=roles, last_event=state.last_seq)

    def agrees_with(self, state: RegistryState) -> bool:
        """Same aliases and log position as `state` (updated_at aside)."""
        other = ReleasePointer.from_state(self.domain, state)
        return (self.roles, self.last_event) == (other.roles, other.last_event)


def _uri(store: ArtifactStore, domain: str) -> str:
    return store.uri(release_pointer_path(domain))


def _remote(store: ArtifactStore, domain: str):
    import fsspec  # lazily, as the artifact store does: local use needs only the stdlib

    return fsspec.core.url_to_fs(_uri(store, domain), **store.storage_options)


def write_pointer(store: ArtifactStore, pointer: ReleasePointer) -> str:
    """Replace the domain's pointer in one step; returns its URI."""
    data = pointer.model_dump_json(indent=2).encode("utf-8")
    rel = release_pointer_path(pointer.domain)
    if store.local_root is not None:
        target = store.local_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    else:
        fs, path = _remote(store, pointer.domain)
        fs.pipe_file(path, data)  # one object upload: readers see the old object or the new one
    return _uri(store, pointer.domain)


def read_pointer(store: ArtifactStore, domain: str) -> ReleasePointer | None:
    """The domain's pointer, typed; None before the first release."""
    try:
        if store.local_root is not None:
            raw = (store.local_root / release_pointer_path(domain)).read_bytes()
        else:
            fs, path = _remote(store, domain)
            fs.invalidate_cache(path)  # never a listing cached before the last alias move
            raw = fs.cat_file(path)
    except FileNotFoundError:
        return None
    return ReleasePointer.model_validate_json(raw)

