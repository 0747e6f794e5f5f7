"""Where a retrain starts: from the champion's adapter, or from scratch.

The first version of a domain trains the whole recipe (half an hour on a laptop's CPU). A retrain
that the loop fires while a champion serves only has to absorb a few days of new traffic, so it
starts from the champion's adapter and runs `improvement.warm_start.max_steps`: the loop's retrain
stays short without shrinking the first version's recipe. A champion whose adapter was trained on
another base model or with another LoRA shape cannot be continued: that retrain starts cold, and the
plan says why (the run log and the adapter's metadata carry it).
"""

from __future__ import annotations

from dataclasses import dataclass

from slm_platform.artifacts import ArtifactError, ArtifactStore
from slm_platform.config.models import Recipe
from slm_platform.domain import Domain
from slm_platform.models.base_models import candidate_key
from slm_platform.registry.releases import current_release

# the recipe fields that fix the adapter's tensors: a champion must match them to be continued
SHAPE_FIELDS = ("method", "r", "alpha", "target_modules")


@dataclass(frozen=True)
class TrainingStart:
    recipe: Recipe                # what the trainer runs
    init_adapter: str | None      # store-relative adapter folder to start from; None: a cold start
    from_version: str | None      # the champion version it continues
    reason: str                   # one line: why warm or cold

    @property
    def warm(self) -> bool:
        return self.init_adapter is not None


def plan_training_start(domain: Domain, store: ArtifactStore, base_candidate: str) -> TrainingStart:
    """Warm-start from the current champion when the domain allows it and the champion fits."""
    recipe = domain.config.model.recipe
    policy = domain.config.improvement.warm_start

    def cold(why: str) -> TrainingStart:
        return TrainingStart(recipe, None, None, f"cold start ({recipe.max_steps or recipe.epochs} "
                                                 f"{'steps' if recipe.max_steps else 'epochs'}): {why}")

    if not policy.enabled:
        return cold("improvement.warm_start.enabled is false")
    role = domain.config.contract.roles[0].id  # one adapter serves every role of a domain
    release = current_release(store, domain.name, role)
    if release is None:
        return cold("no champion yet")
    try:
        manifest = store.verify(release.adapter)
    except ArtifactError as e:
        return cold(f"champion {release.version}'s adapter does not verify ({e})")
    trained = manifest.extra.get("recipe") or {}
    differs = [f"{k} {trained.get(k)!r} != {getattr(recipe, k)!r}" for k in SHAPE_FIELDS
               if trained.get(k) != getattr(recipe, k)]
    if differs:
        return cold(f"champion {release.version}'s adapter has another shape ({'; '.join(differs)})")
    want_base = candidate_key(base_candidate)
    if manifest.extra.get("base_model") != want_base:
        return cold(f"champion {release.version} was trained on {manifest.extra.get('base_model')!r}, "
                    f"this version on {want_base!r}")
    lr = policy.lr or recipe.lr
    warm = recipe.model_copy(update={"max_steps": policy.max_steps, "lr": lr})
    return TrainingStart(warm, release.adapter, release.version,
                         f"warm start from champion {release.version} ({release.adapter}): "
                         f"{policy.max_steps} steps at lr {lr:g} (improvement.warm_start)")
