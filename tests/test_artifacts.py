"""Tests of the artifact store: atomic publish, manifests, verification; file:// and gs:// (fake)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from slm_platform.artifacts import (
    MANIFEST_NAME,
    ArtifactError,
    ArtifactExistsError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
    Manifest,
    sha256_file,
)

try:
    from tests.fake_gcs import FakeGCS
except ImportError:  # tests/ is not a package: pytest put it on sys.path itself
    from fake_gcs import FakeGCS

DS = "support_triage/datasets/v0001"


def _fill(staging: Path, text: str = "hello") -> None:
    (staging / "train.jsonl").write_text(f'{{"x": "{text}"}}\n')
    (staging / "sub" / "deeper").mkdir(parents=True)
    (staging / "sub" / "deeper" / "w.bin").write_bytes(bytes(range(256)) * 10)
    (staging / "sub" / "meta.json").write_text('{"n": 1}')


def _publish(store: ArtifactStore, rel: str = DS, text: str = "hello", **kw):
    kw.setdefault("kind", "dataset")
    with store.publish(rel, **kw) as staging:
        assert isinstance(staging, Path)
        _fill(staging, text)
    return staging


def _leftovers(root: Path) -> list[Path]:
    staging = root / ".staging"
    return list(staging.iterdir()) if staging.exists() else []


# -- file:// ----------------------------------------------------------------------------------

@pytest.fixture(params=["plain", "uri"])
def store(request, tmp_path: Path) -> ArtifactStore:
    root = tmp_path / "artifacts"
    return ArtifactStore(str(root) if request.param == "plain" else root.as_uri())


def test_roundtrip_and_manifest_content(store: ArtifactStore, tmp_path: Path):
    assert store.root == (tmp_path / "artifacts").as_uri()
    assert store.uri("support_triage", "datasets", "v0001") == f"{store.root}/{DS}"
    assert not store.exists(DS)
    handle = _publish(store, producer="test", extra={"rows": 1})
    m = handle.manifest
    assert handle.uri == store.uri(DS)
    assert m == store.read_manifest(DS) == store.verify(DS)
    assert (m.kind, m.version, m.producer, m.extra, m.parents) == ("dataset", "v0001", "test", {"rows": 1}, [])
    final = store.open_verified(DS)
    assert final == tmp_path / "artifacts" / DS
    assert sorted(m.files) == ["sub/deeper/w.bin", "sub/meta.json", "train.jsonl"]
    for name, digest in m.files.items():
        assert digest == hashlib.sha256((final / name).read_bytes()).hexdigest() == sha256_file(final / name)
        assert m.sizes[name] == (final / name).stat().st_size
    assert m.created_at.endswith("Z")
    raw = json.loads((final / MANIFEST_NAME).read_text())
    assert set(raw) == {"kind", "version", "files", "sizes", "parents", "producer", "created_at", "extra"}
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    assert m.hash == store.manifest_hash(DS) == hashlib.sha256(canonical).hexdigest()
    assert Manifest.from_json(m.to_json()) == m
    assert store.read_json(DS, "sub/meta.json") == {"n": 1}
    assert store.read_text(DS, "train.jsonl") == '{"x": "hello"}\n'
    assert store.exists(DS) and store.list("support_triage/datasets") == ["v0001"]
    assert _leftovers(tmp_path / "artifacts") == []


def test_parents_recorded_with_their_manifest_hash(store: ArtifactStore, tmp_path: Path):
    parent = _publish(store).manifest
    other = ArtifactStore(tmp_path / "elsewhere")
    other_m = _publish(other, "x/v1").manifest
    with store.publish("support_triage/adapters/v0001", kind="adapter",
                       parents=[DS, other.uri("x/v1"), {"uri": "gs://b/p", "sha256": "ab" * 32}]) as s:
        (s / "adapter.safetensors").write_bytes(b"w")
    assert s.manifest.parents == [
        {"uri": store.uri(DS), "sha256": parent.hash},
        {"uri": other.uri("x/v1"), "sha256": other_m.hash},
        {"uri": "gs://b/p", "sha256": "ab" * 32},
    ]
    with pytest.raises(ArtifactNotFoundError, match="datasets/v0404"):
        with store.publish("a/v2", kind="adapter", parents=["support_triage/datasets/v0404"]):
            pass


def test_exception_inside_publish_leaves_nothing(store: ArtifactStore, tmp_path: Path):
    with pytest.raises(RuntimeError, match="boom"):
        with store.publish(DS, kind="dataset") as staging:
            _fill(staging)
            raise RuntimeError("boom")
    assert not staging.exists()
    assert not (tmp_path / "artifacts" / DS).exists()
    assert not store.exists(DS) and store.list("support_triage/datasets") == []
    assert _leftovers(tmp_path / "artifacts") == []
    with pytest.raises(ArtifactNotFoundError, match=store.uri(DS)):
        store.read_manifest(DS)


def test_tampered_missing_and_extra_files_are_refused(store: ArtifactStore, tmp_path: Path):
    m = _publish(store).manifest
    final = tmp_path / "artifacts" / DS
    w = final / "sub/deeper/w.bin"
    data = bytearray(w.read_bytes())
    data[100] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError) as e:
        store.open_verified(DS)
    msg = str(e.value)
    assert store.uri(DS) in msg and "sub/deeper/w.bin" in msg and m.files["sub/deeper/w.bin"] in msg
    assert hashlib.sha256(bytes(data)).hexdigest() in msg
    with pytest.raises(ArtifactIntegrityError, match="w.bin"):
        store.read_text(DS, "sub/deeper/w.bin")
    assert store.read_text(DS, "train.jsonl")  # the untouched file still reads
    data[100] ^= 1
    w.write_bytes(bytes(data))
    store.verify(DS)

    (final / "stray.txt").write_text("?")
    with pytest.raises(ArtifactIntegrityError, match="unexpected file 'stray.txt'"):
        store.verify(DS)
    (final / "stray.txt").unlink()
    (final / "train.jsonl").unlink()
    with pytest.raises(ArtifactIntegrityError, match="'train.jsonl' is missing"):
        store.open_verified(DS)
    with pytest.raises(ArtifactError):
        store.read_text(DS, "nope.txt")

    (final / MANIFEST_NAME).unlink()
    assert not store.exists(DS) and store.list("support_triage/datasets") == []
    with pytest.raises(ArtifactNotFoundError):
        store.open_verified(DS)


def test_publish_twice_and_overwrite(store: ArtifactStore, tmp_path: Path):
    first = _publish(store).manifest
    with pytest.raises(ArtifactExistsError, match=store.uri(DS)):
        _publish(store, text="second")
    assert store.read_manifest(DS) == first
    second = _publish(store, text="second", overwrite=True).manifest
    assert second.files["train.jsonl"] != first.files["train.jsonl"]
    assert store.read_text(DS, "train.jsonl") == '{"x": "second"}\n'
    store.verify(DS)
    assert _leftovers(tmp_path / "artifacts") == []


def test_unpublished_leftovers_are_replaced(store: ArtifactStore, tmp_path: Path):
    half = tmp_path / "artifacts" / DS
    half.mkdir(parents=True)
    (half / "partial.bin").write_bytes(b"crash")  # a crashed writer's dir without manifest
    assert not store.exists(DS)
    _publish(store)
    assert not (half / "partial.bin").exists()
    store.verify(DS)


def test_reserved_and_invalid_names(store: ArtifactStore):
    with pytest.raises(ArtifactError, match="manifest.json"):
        with store.publish(DS, kind="dataset") as s:
            (s / MANIFEST_NAME).write_text("{}")
    assert not store.exists(DS)
    for bad in ("../escape", "/abs", ""):
        with pytest.raises(ArtifactError):
            with store.publish(bad, kind="dataset"):
                pass
    with pytest.raises(ArtifactError, match="extra"):
        with store.publish(DS, kind="dataset", extra={"big": "x" * 70_000}):
            pass


def test_the_store_root_follows_slm_artifacts_then_slm_home(monkeypatch, tmp_path: Path):
    """Defect: `slm registry` opened ./.slm/artifacts while SLM_HOME pointed elsewhere (where `slm run`
    had published), so it found no package and its repair wrote a pointer into the wrong store."""
    from slm_platform import settings

    monkeypatch.setenv("SLM_ARTIFACTS", str(tmp_path / "env_root"))
    assert ArtifactStore(settings.artifacts_root()).root == (tmp_path / "env_root").as_uri()
    monkeypatch.delenv("SLM_ARTIFACTS")
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    assert ArtifactStore(settings.artifacts_root()).local_root == tmp_path / "home" / "artifacts"
    monkeypatch.delenv("SLM_HOME")
    monkeypatch.chdir(tmp_path)
    assert ArtifactStore(settings.artifacts_root()).local_root == tmp_path / ".slm" / "artifacts"


# -- gs:// through gcsfs against a fake GCS JSON API server ----------------------------------

@pytest.fixture
def fake_gcs(monkeypatch):
    gcsfs = pytest.importorskip("gcsfs")
    from fsspec.registry import _registry

    # gcsfs' default class (ExtendedGcsFileSystem) asks the Storage Control gRPC API for the bucket
    # type before uploads; the fake speaks only the JSON API, so use the plain HTTP class.
    monkeypatch.setitem(_registry, "gs", gcsfs.core.GCSFileSystem)
    with FakeGCS(buckets=("bkt",)) as server:
        yield server


@pytest.fixture
def gs_store(fake_gcs, tmp_path: Path) -> ArtifactStore:
    opts = {"endpoint_url": fake_gcs.endpoint, "token": "anon", "skip_instance_cache": True}
    return ArtifactStore("gs://bkt/prod/artifacts", storage_options=opts, cache_dir=tmp_path / "cache")


def test_gs_roundtrip_verify_and_cache(gs_store: ArtifactStore, fake_gcs: FakeGCS, tmp_path: Path):
    assert gs_store.uri(DS) == f"gs://bkt/prod/artifacts/{DS}"
    assert not gs_store.exists(DS)
    handle = _publish(gs_store, producer="test")
    assert not handle.exists()  # the local staging dir is gone after upload
    m = handle.manifest
    names = sorted(n for (b, n) in fake_gcs.objects)
    assert names == [f"prod/artifacts/{DS}/{f}" for f in sorted([*m.files, MANIFEST_NAME])]
    assert gs_store.read_manifest(DS) == m and gs_store.manifest_hash(DS) == m.hash
    assert gs_store.exists(DS) and gs_store.list("support_triage/datasets") == ["v0001"]
    assert gs_store.verify(DS) == m
    local = gs_store.open_verified(DS)
    assert local == tmp_path / "cache" / m.hash
    assert (local / "sub/deeper/w.bin").read_bytes() == bytes(range(256)) * 10
    assert gs_store.open_verified(DS) == local  # served from the verified cache
    assert gs_store.read_json(DS, "sub/meta.json") == {"n": 1}
    with pytest.raises(ArtifactExistsError):
        _publish(gs_store)
    second = _publish(gs_store, text="two", overwrite=True).manifest
    assert gs_store.read_text(DS, "train.jsonl") == '{"x": "two"}\n'
    assert gs_store.open_verified(DS) == tmp_path / "cache" / second.hash


def test_gs_manifest_is_written_last_and_failures_publish_nothing(gs_store: ArtifactStore, fake_gcs: FakeGCS):
    with pytest.raises(RuntimeError):
        with gs_store.publish(DS, kind="dataset") as staging:
            _fill(staging)
            raise RuntimeError("boom")
    assert fake_gcs.objects == {} and not staging.exists()
    fake_gcs.requests.clear()
    _publish(gs_store)
    uploads = [p for meth, p in fake_gcs.requests if meth == "POST" and p.startswith("/upload/")]
    assert len(uploads) == 4
    names = [data for data in fake_gcs.objects]  # insertion order == upload order
    assert names[-1] == ("bkt", f"prod/artifacts/{DS}/{MANIFEST_NAME}")
    # a dir with files but no manifest is "not published"
    del fake_gcs.objects[names[-1]]
    assert not gs_store.exists(DS) and gs_store.list("support_triage/datasets") == []


def test_gs_tampering_is_refused(gs_store: ArtifactStore, fake_gcs: FakeGCS, tmp_path: Path):
    m = _publish(gs_store).manifest
    key = ("bkt", f"prod/artifacts/{DS}/sub/meta.json")
    fake_gcs.put(*key, b'{"n": 2}')
    for check in (gs_store.verify, gs_store.open_verified):
        with pytest.raises(ArtifactIntegrityError) as e:
            check(DS)
        assert "sub/meta.json" in str(e.value) and m.files["sub/meta.json"] in str(e.value)
        assert gs_store.uri(DS) in str(e.value)
    assert not (tmp_path / "cache" / m.hash).exists()
    with pytest.raises(ArtifactIntegrityError):
        gs_store.read_json(DS, "sub/meta.json")
    fake_gcs.put(*key, b'{"n": 1}')
    fake_gcs.put("bkt", f"prod/artifacts/{DS}/extra.txt", b"x")
    with pytest.raises(ArtifactIntegrityError, match="extra.txt"):
        gs_store.open_verified(DS)
    del fake_gcs.objects[("bkt", f"prod/artifacts/{DS}/extra.txt")]
    local = gs_store.open_verified(DS)
    (local / "train.jsonl").write_text("corrupted cache")  # a damaged cache is re-fetched
    assert (gs_store.open_verified(DS) / "train.jsonl").read_text() == '{"x": "hello"}\n'


def test_gs_large_file_uses_resumable_upload(gs_store: ArtifactStore, fake_gcs: FakeGCS):
    blob = os.urandom(6 * 2**20 + 3)  # above gcsfs' 5 MiB simple-upload limit
    with gs_store.publish("d/base_models/m1", kind="base_model") as s:
        (s / "model.safetensors").write_bytes(blob)
    assert any("uploadType=resumable" in p for _, p in fake_gcs.requests)
    local = gs_store.open_verified("d/base_models/m1")
    assert (local / "model.safetensors").read_bytes() == blob


def test_any_fsspec_protocol_memory(tmp_path: Path):
    import uuid

    store = ArtifactStore(f"memory://slm-test-{uuid.uuid4().hex}/root", cache_dir=tmp_path / "cache")
    m = _publish(store, extra={"name": "café"}).manifest
    assert store.list("support_triage/datasets") == ["v0001"] and store.verify(DS) == m
    assert (store.open_verified(DS) / "sub/meta.json").read_text() == '{"n": 1}'
    canonical = json.dumps(m.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    assert m.hash == hashlib.sha256(canonical).hexdigest()
    store._fs.pipe_file(f"{store._remote(DS)}/train.jsonl", b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="train.jsonl"):
        store.verify(DS)
