"""`package[v]`: a version whose gates passed, made servable in two verified forms, with its model card.

The package is built in a scratch folder (next to a local store, so publishing is a rename), checked
(merged logits vs base + adapter, each form's tokenizer vs the base model's), and only then
published as one atomic artifact whose parents are every input it was built from. A check that
fails publishes nothing. Quantized export is not part of it (optional in the design; both forms
are float32).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from slm_platform.artifacts import ArtifactExistsError, ArtifactIntegrityError, ArtifactStore, sha256_file
from slm_platform.domain import Domain
from slm_platform.domain.render import RENDERER_VERSION
from slm_platform.layout import package_dir
from slm_platform.models.merge import merge_adapter
from slm_platform.packaging.bundle import write_bundle
from slm_platform.packaging.card import base_license, render_card
from slm_platform.packaging.inputs import PackageInputs, gather_inputs
from slm_platform.packaging.parity import MergeParity, check_tokenizer, measure_merge_parity, parity_sequences
from slm_platform.registry.packages import BASE_MODEL_FILE, CARD_FILE, FORMS, PACKAGE_KIND, BaseModelRef

PRODUCER = "slm_platform.packaging.build_package"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
MERGED_WEIGHTS = "model.safetensors"

Log = Callable[[str], Any]


@dataclass(frozen=True)
class PackageResult:
    rel: str  # the package artifact, relative to the store root
    uri: str
    manifest_hash: str  # what a release names
    forms: tuple[str, ...]  # subfolders: lora, merged
    max_logit_diff: float  # measured, merged vs base + adapter (float32)
    logit_tolerance: float
    parity: MergeParity
    license: str
    card: str  # README.md as written


def _lora_form(inputs: PackageInputs, out: Path) -> None:
    out.mkdir(parents=True)
    for name in ADAPTER_FILES:
        src = inputs.adapter.local / name
        if not src.is_file():
            raise ArtifactIntegrityError(f"{inputs.adapter.uri}: file {name!r} is missing: not a peft adapter")
        shutil.copyfile(src, out / name)
        if sha256_file(out / name) != inputs.adapter.manifest.files[name]:  # the evaluated bytes, exactly
            raise ArtifactIntegrityError(f"{inputs.adapter.uri}: {name} changed while it was copied")
    ref = BaseModelRef(candidate=inputs.base.candidate, key=inputs.base.key, artifact=inputs.base_artifact,
                       uri=inputs.base.uri,
                       manifest_sha256=inputs.base_parent["sha256"] if inputs.base_artifact else None,
                       weights_sha256=inputs.base.weights_sha256)
    (out / BASE_MODEL_FILE).write_text(ref.model_dump_json(indent=2) + "\n", encoding="utf-8")
    write_bundle(out, domain=inputs.domain, version=inputs.version, form="lora", base_dir=inputs.base.local_dir,
                 weights=ADAPTER_FILES[0], base_model=BASE_MODEL_FILE)


def _merged_form(inputs: PackageInputs, out: Path, log: Log) -> MergeParity:
    from transformers import AutoTokenizer

    base_dir = inputs.base.local_dir
    log(f"merging {inputs.adapter.uri} into {inputs.base.candidate}")
    merge_adapter(base_dir, inputs.adapter.local, out)
    write_bundle(out, domain=inputs.domain, version=inputs.version, form="merged", base_dir=base_dir,
                 weights=MERGED_WEIGHTS)
    recipe = (inputs.adapter.manifest.extra or {}).get("recipe") or {}
    max_len = int(recipe.get("max_seq_len") or inputs.domain.config.model.recipe.max_seq_len)
    sequences = parity_sequences(inputs.domain, inputs.dataset.local / "test.jsonl",
                                 AutoTokenizer.from_pretrained(str(base_dir)), max_len)
    parity = measure_merge_parity(base_dir, inputs.adapter.local, out, sequences)
    log(f"merged logits vs base + adapter: max |diff| {parity.max_abs_diff:.3g} (tolerance {parity.tolerance:g}) "
        f"over {parity.tokens} tokens of {parity.sequences} test sequences")
    return parity


def build_package(domain: Domain, store: ArtifactStore, version: str, *, log: Log | None = None,
                  overwrite: bool = False) -> PackageResult:
    """Publish `<domain>/packages/<version>/` (lora/, merged/, README.md); refuse a version whose gates failed.

    Raises `PackageRefusedError` (gates failed, or an input missing, tampered or changed since it
    was evaluated), `MergeParityError` (merged weights or a tokenizer do not match), and
    `ArtifactExistsError` when the version is already packaged and `overwrite` is false.
    """
    log = log or (lambda _m: None)
    t0 = time.perf_counter()
    rel = package_dir(domain.name, version)
    if not overwrite and store.exists(rel):
        raise ArtifactExistsError(f"package already published: {store.uri(rel)} (a package is immutable; "
                                  f"pass overwrite=True to rebuild it)")
    inputs = gather_inputs(domain, store, version, log=log)
    if store.local_root is not None:
        store.local_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".package-", dir=store.local_root) as tmp:
        work = Path(tmp)
        _lora_form(inputs, work / "lora")
        parity = _merged_form(inputs, work / "merged", log)
        for form in FORMS:
            check_tokenizer(inputs.base.local_dir, work / form, inputs.domain)
        lic = base_license(inputs.base.local_dir)
        card = render_card(inputs, parity, FORMS, lic)
        card.save(work / CARD_FILE)
        for p in work.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)  # safetensors writes 0600; servers may run as other users
        report = inputs.candidate_report
        extra = {"domain": domain.name, "forms": list(FORMS), "renderer_version": RENDERER_VERSION,
                 "base_candidate": inputs.base.candidate, "base_model": inputs.base_artifact or inputs.base.uri,
                 "license": lic.id, "merge_parity": parity.to_dict(), "quantized": False,
                 "eval_report": inputs.candidate_eval.rel, "reference": report.reference,
                 "primary_metric": report.primary_metric,
                 "primary_value": report.subject_metric(report.primary_metric),
                 "gates": {g.name: g.passed for g in (report.gates or {}).values()},
                 "contracts": {role: c.fingerprint() for role, c in domain.roles.items()}}
        with store.publish(rel, kind=PACKAGE_KIND, version=version, parents=inputs.parents(), producer=PRODUCER,
                           extra=extra, overwrite=overwrite) as staging:
            for p in sorted(work.iterdir()):
                shutil.move(str(p), str(staging / p.name))
    manifest = staging.manifest
    log(f"published {staging.uri} (manifest {manifest.hash[:12]}, {len(manifest.files)} files) in "
        f"{time.perf_counter() - t0:.1f}s")
    return PackageResult(rel=rel, uri=store.uri(rel), manifest_hash=manifest.hash, forms=FORMS,
                         max_logit_diff=parity.max_abs_diff, logit_tolerance=parity.tolerance, parity=parity,
                         license=lic.id, card=str(card))
