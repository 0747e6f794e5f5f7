"""The artifact store: one interface over ``file://`` and ``gs://`` roots.

Every stage of the platform hands its output to the next one as an artifact directory
(``<domain>/datasets/v0001/``, ``<domain>/adapters/v0003/`` ...). Two properties make these
hand-offs safe, and this module is the one place that implements them:

* **Atomic publish.** A producer writes into a private staging directory; only on clean exit
  is the directory moved into place (a same-filesystem rename locally, uploads for object
  stores) and ``manifest.json`` written *last*. A directory without ``manifest.json`` is "not
  published" to every reader, so a crash never leaves a half-written artifact that looks real.
* **Verification.** The manifest records the sha256 of every file; readers re-hash and refuse
  a mismatch, a missing file or an unexpected extra file (``ArtifactIntegrityError``). The
  hash of the canonical manifest (``Manifest.hash``) identifies an artifact's exact content
  and is used as the Dagster data version and as the parents' hashes in lineage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlparse

__all__ = [
    "ArtifactError", "ArtifactNotFoundError", "ArtifactExistsError", "ArtifactIntegrityError",
    "Manifest", "ArtifactStore", "StagingDir", "sha256_file", "sha256_bytes",
    "MANIFEST_NAME",
]

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20
_MAX_EXTRA_BYTES = 64 * 1024


class ArtifactError(Exception):
    """Base class of every artifact store error."""


class ArtifactNotFoundError(ArtifactError):
    """The artifact (its manifest) does not exist at the URI."""


class ArtifactExistsError(ArtifactError):
    """Publishing onto an already published artifact without ``overwrite=True``."""


class ArtifactIntegrityError(ArtifactError):
    """Files on storage do not match the manifest (tampered, missing, extra, unreadable)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_stream(f: Any) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a local file, streamed in 1 MiB chunks."""
    with open(path, "rb") as f:
        return _sha256_stream(f)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Manifest:
    kind: str
    version: str
    files: dict[str, str]  # relative posix path -> sha256 hex
    sizes: dict[str, int]
    parents: list[dict[str, str]] = field(default_factory=list)  # [{"uri", "sha256"}]
    producer: str = ""
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        names = {f for f in cls.__dataclass_fields__}
        missing = {"kind", "version", "files", "sizes"} - data.keys()
        unknown = data.keys() - names
        if missing or unknown:
            raise ValueError(f"manifest keys: missing {sorted(missing)}, unknown {sorted(unknown)}")
        return cls(**data)

    @property
    def hash(self) -> str:
        """sha256 of the canonical manifest JSON; the artifact's identity / data version."""
        return sha256_bytes(_canonical(self.to_dict()).encode())

    manifest_hash = hash


class StagingDir(type(Path())):  # type: ignore[misc]
    """The local staging directory yielded by ``publish``; ``manifest``/``uri`` set on exit."""

    manifest: Manifest | None = None
    uri: str | None = None


def _rel(parts: Sequence[str]) -> str:
    """Join and validate a relative artifact path ('' is the root itself)."""
    segs = [s for p in parts for s in str(p).replace("\\", "/").split("/") if s not in ("", ".")]
    if any(s == ".." for s in segs) or (parts and str(parts[0]).startswith("/")):
        raise ArtifactError(f"invalid relative artifact path: {'/'.join(map(str, parts))!r}")
    return "/".join(segs)


def _local_files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


class ArtifactStore:
    """Artifact store rooted at a local path, ``file://`` URI or fsspec URI (``gs://b/prefix``)."""

    def __init__(self, root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None):
        root = os.fspath(root)
        self.storage_options = dict(storage_options or {})
        self.cache_dir = Path(cache_dir or os.environ.get("SLM_ARTIFACT_CACHE")
                              or Path.home() / ".cache" / "slm_platform" / "artifacts")
        if root.startswith("file://") or "://" not in root:
            url = urlparse(root)
            if url.scheme == "file" and url.netloc not in ("", "localhost"):
                raise ArtifactError(f"file:// artifact root must be absolute (file:///path): {root}")
            path = unquote(url.path) if url.scheme == "file" else root
            self.local_root: Path | None = Path(path).expanduser().resolve()
            self.root = self.local_root.as_uri()
            self._fs, self._fs_root = None, ""
        else:
            import fsspec  # imported lazily: local use needs nothing beyond the stdlib

            self.local_root = None
            self.root = root.rstrip("/")
            self._fs, self._fs_root = fsspec.core.url_to_fs(self.root, **self.storage_options)
            self._fs_root = self._fs_root.rstrip("/")

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    # -- addressing ---------------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        rel = _rel(parts)
        return f"{self.root}/{rel}" if rel else self.root

    def _remote(self, rel: str, name: str = "") -> str:
        return "/".join(p for p in (self._fs_root, rel, name) if p)

    def _local(self, rel: str) -> Path:
        assert self.local_root is not None
        return self.local_root / rel if rel else self.local_root

    # -- reading ------------------------------------------------------------------------------
    def exists(self, *rel_dir: str) -> bool:
        rel = _rel(rel_dir)
        if self._fs is None:
            return (self._local(rel) / MANIFEST_NAME).is_file()
        self._fs.invalidate_cache(self._remote(rel))
        return bool(self._fs.exists(self._remote(rel, MANIFEST_NAME)))

    def read_manifest(self, *rel_dir: str) -> Manifest:
        rel = _rel(rel_dir)
        try:
            if self._fs is None:
                raw = (self._local(rel) / MANIFEST_NAME).read_bytes()
            else:
                raw = self._fs.cat_file(self._remote(rel, MANIFEST_NAME))
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"artifact not published (no manifest): {self.uri(rel)}") from None
        try:
            return Manifest.from_json(raw)
        except (ValueError, TypeError) as e:
            raise ArtifactIntegrityError(f"unreadable manifest at {self.uri(rel, MANIFEST_NAME)}: {e}") from None

    def manifest_hash(self, *rel_dir: str) -> str:
        return self.read_manifest(*rel_dir).hash

    def list(self, *rel_prefix: str) -> list[str]:
        """Names of the published child artifact directories under ``rel_prefix``, sorted."""
        rel = _rel(rel_prefix)
        if self._fs is None:
            base = self._local(rel)
            names = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
        else:
            self._fs.invalidate_cache(self._remote(rel))
            try:
                entries = self._fs.ls(self._remote(rel), detail=True)
            except FileNotFoundError:
                entries = []
            names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"]
        return sorted(n for n in names if not n.startswith(".") and self.exists(rel, n))

    def object_names(self, *rel_prefix: str, folders: bool = False) -> list[str]:
        """Names of plain objects under ``rel_prefix`` (files; folders with ``folders=True``), sorted:
        the append-only logs that carry no manifest (shadow pairs). Hidden names (a writer's
        temporary files) are left out."""
        rel = _rel(rel_prefix)
        if self._fs is None:
            base = self._local(rel)
            names = [p.name for p in base.iterdir() if p.is_dir() == folders] if base.is_dir() else []
        else:
            self._fs.invalidate_cache(self._remote(rel))
            try:
                entries = self._fs.ls(self._remote(rel), detail=True)
            except FileNotFoundError:
                entries = []
            kind = "directory" if folders else "file"
            names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == kind]
        return sorted(n for n in names if not n.startswith("."))

    def read_object(self, *rel: str) -> bytes:
        """One plain object (see `object_names`); no manifest to verify it against."""
        path = _rel(rel)
        return self._local(path).read_bytes() if self._fs is None else self._fs.cat_file(self._remote(path))

    def _check(self, uri: str, m: Manifest, found: Mapping[str, Any], hash_of: Any = None) -> None:
        """Raise unless ``found`` (name -> location) holds exactly the manifest's files, hashes equal."""
        extra = sorted(found.keys() - m.files.keys() - {MANIFEST_NAME})
        if extra:
            raise ArtifactIntegrityError(f"{uri}: unexpected file {extra[0]!r} not in the manifest")
        for name, expected in sorted(m.files.items()):
            if name not in found:
                raise ArtifactIntegrityError(f"{uri}: file {name!r} is missing (expected sha256 {expected})")
            if hash_of is not None and (got := hash_of(found[name])) != expected:
                raise ArtifactIntegrityError(
                    f"{uri}: file {name!r} sha256 mismatch: expected {expected}, found {got}")

    def _remote_files(self, rel: str) -> dict[str, str]:
        base = self._remote(rel)
        self._fs.invalidate_cache(base)
        return {p[len(base) + 1:]: p for p in self._fs.find(base)}

    def verify(self, *rel_dir: str) -> Manifest:
        """Check every file against the manifest (streamed for remote roots); return the manifest."""
        rel = _rel(rel_dir)
        m = self.read_manifest(rel)
        if self._fs is None:
            self._check(self.uri(rel), m, _local_files(self._local(rel)), sha256_file)
        else:
            def remote_hash(path: str) -> str:
                with self._fs.open(path, "rb") as f:
                    return _sha256_stream(f)
            self._check(self.uri(rel), m, self._remote_files(rel), remote_hash)
        return m

    def open_verified(self, *rel_dir: str) -> Path:
        """A local directory holding the verified artifact (remote: a per-manifest-hash cache)."""
        rel = _rel(rel_dir)
        if self._fs is None:
            self.verify(rel)
            return self._local(rel)
        m = self.read_manifest(rel)
        uri, target = self.uri(rel), self.cache_dir / m.hash
        if target.is_dir():
            with contextlib.suppress(ArtifactIntegrityError):  # a damaged cache is re-fetched
                self._check(uri, m, _local_files(target), sha256_file)
                return target
            shutil.rmtree(target, ignore_errors=True)
        remote = self._remote_files(rel)
        self._check(uri, m, remote)  # names first: no download for a missing or extra file
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cache_dir))
        try:
            for name in m.files:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                self._fs.get_file(remote[name], str(tmp / name))
            self._check(uri, m, _local_files(tmp), sha256_file)
            (tmp / MANIFEST_NAME).write_text(m.to_json())
            try:
                os.replace(tmp, target)
            except OSError:  # a concurrent reader filled the cache first
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def read_bytes(self, rel_dir: str, file: str) -> bytes:
        """One file of a published artifact, verified against its manifest hash."""
        rel, name = _rel([rel_dir]), _rel([file])
        m = self.read_manifest(rel)
        uri = self.uri(rel)
        if name not in m.files:
            raise ArtifactIntegrityError(f"{uri}: file {name!r} is not in the manifest")
        try:
            data = (self._local(rel) / name).read_bytes() if self._fs is None \
                else self._fs.cat_file(self._remote(rel, name))
        except FileNotFoundError:
            raise ArtifactIntegrityError(
                f"{uri}: file {name!r} is missing (expected sha256 {m.files[name]})") from None
        if (got := sha256_bytes(data)) != m.files[name]:
            raise ArtifactIntegrityError(
                f"{uri}: file {name!r} sha256 mismatch: expected {m.files[name]}, found {got}")
        return data

    def read_text(self, rel_dir: str, file: str) -> str:
        return self.read_bytes(rel_dir, file).decode("utf-8")

    def read_json(self, rel_dir: str, file: str) -> Any:
        return json.loads(self.read_bytes(rel_dir, file))

    # -- publishing ---------------------------------------------------------------------------
    def _parent_ref(self, parent: Any) -> dict[str, str]:
        """A parent as {uri, sha256}: given as such (mapping or pair), or as a URI / path to read."""
        if isinstance(parent, Mapping):
            return {"uri": str(parent["uri"]), "sha256": str(parent["sha256"])}
        if isinstance(parent, tuple):
            return {"uri": str(parent[0]), "sha256": str(parent[1])}
        s = os.fspath(parent)
        if s == self.root or s.startswith(self.root + "/"):
            rel = s[len(self.root) + 1:]
        elif "://" in s or os.path.isabs(s):  # outside this store: read its manifest where it is
            same = s.split("://")[0] == self.root.split("://")[0]
            other = ArtifactStore(s, self.storage_options if same else None)
            return {"uri": other.root, "sha256": other.manifest_hash()}
        else:
            rel = _rel([s])
        return {"uri": self.uri(rel), "sha256": self.manifest_hash(rel)}

    @contextlib.contextmanager
    def publish(self, rel_dir: str, *, kind: str, version: str | None = None, parents: Sequence[Any] = (),
                producer: str = "", extra: Mapping[str, Any] | None = None,
                overwrite: bool = False) -> Iterator[StagingDir]:
        """Yield a local staging dir to fill; on clean exit publish it atomically, manifest last.

        On exception nothing is published and the staging dir is removed. After exit the yielded
        object carries ``.manifest`` and ``.uri``.
        """
        rel = _rel([rel_dir])
        if not rel:
            raise ArtifactError("cannot publish an artifact at the store root")
        uri = self.uri(rel)
        if not overwrite and self.exists(rel):  # fail before the (possibly long) work
            raise ArtifactExistsError(f"artifact already published: {uri} (pass overwrite=True to replace)")
        parent_refs = [self._parent_ref(p) for p in parents]
        extra = dict(extra or {})
        if len(_canonical(extra).encode()) > _MAX_EXTRA_BYTES:  # also checks it is JSON-serialisable
            raise ArtifactError(f"manifest 'extra' of {uri} is larger than {_MAX_EXTRA_BYTES} bytes")
        if self.local_root is not None:  # same filesystem as the final dir, so rename is atomic
            (self.local_root / ".staging").mkdir(parents=True, exist_ok=True)
            staging = StagingDir(self.local_root / ".staging" / uuid.uuid4().hex)
            staging.mkdir()
        else:
            staging = StagingDir(tempfile.mkdtemp(prefix="slm-artifact-"))
        try:
            yield staging
            files = _local_files(staging)
            if MANIFEST_NAME in files:
                raise ArtifactError(f"{MANIFEST_NAME} is written by the store; do not create it ({uri})")
            manifest = Manifest(
                kind=kind, version=version or PurePosixPath(rel).name,
                files={n: sha256_file(p) for n, p in files.items()},
                sizes={n: p.stat().st_size for n, p in files.items()},
                parents=parent_refs, producer=producer, extra=extra,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"))
            if self.local_root is not None:
                self._commit_local(rel, staging, manifest, overwrite)
            else:
                self._commit_remote(rel, staging, manifest, overwrite)
            staging.manifest, staging.uri = manifest, uri
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already after a local commit

    def _commit_local(self, rel: str, staging: Path, m: Manifest, overwrite: bool) -> None:
        final, uri = self._local(rel), self.uri(rel)
        final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final.exists():  # a published version (overwrite) or unpublished leftovers of a crash
            if (final / MANIFEST_NAME).exists() and not overwrite:
                raise ArtifactExistsError(f"artifact already published: {uri} (pass overwrite=True to replace)")
            old = self._local(".staging") / f"{uuid.uuid4().hex}-old"
            os.replace(final, old)
        try:
            os.replace(staging, final)
        except OSError:
            if old is not None and not final.exists():
                os.replace(old, final)
                old = None
            if (final / MANIFEST_NAME).exists():
                raise ArtifactExistsError(f"artifact published concurrently: {uri}") from None
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        tmp = final / f".{MANIFEST_NAME}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(m.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final / MANIFEST_NAME)

    def _commit_remote(self, rel: str, staging: Path, m: Manifest, overwrite: bool) -> None:
        fs, base = self._fs, self._remote(rel)
        if fs.exists(self._remote(rel, MANIFEST_NAME)):
            if not overwrite:
                raise ArtifactExistsError(f"artifact already published: {self.uri(rel)} (pass overwrite=True)")
            fs.rm_file(self._remote(rel, MANIFEST_NAME))  # unpublish first: never a mix of versions
        leftovers = list(self._remote_files(rel).values())
        if leftovers:
            fs.rm(leftovers)
        for name in m.files:
            fs.put_file(str(staging / name), self._remote(rel, name))
        fs.pipe_file(self._remote(rel, MANIFEST_NAME), m.to_json().encode("utf-8"))
        fs.invalidate_cache(base)
