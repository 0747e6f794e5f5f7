"""`[<domain>, "release"]` and the release jobs: the registry as the UI shows and drives it.

The asset is never materialized: each promote, approve, reject or rollback (`orchestration.registry`)
records one `AssetObservation` holding the event, then one holding the resulting state (champion,
challenger awaiting approval, the history table), so the asset's page shows who serves and why.
The jobs `<domain>_promote`, `<domain>_approve`, `<domain>_reject` and `<domain>_rollback` run the same functions as
`slm registry` from the launchpad (version, reason, optional role / target in the run config).
"""

from collections.abc import Callable
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from slm_platform.domain import Domain
from slm_platform.layout import release_pointer_path
from slm_platform.orchestration import registry as reg
from slm_platform.orchestration.registry import release_key
from slm_platform.orchestration.resources import ArtifactStoreResource


REASON = Field(description="why: recorded with the event in the release history")
ROLE = Field(None, description="one role (default: every role)")
ACTOR = Field(None, description="who decided (default: 'dagster run <run id>')")


class PromoteConfig(dg.Config):
    version: str = Field(description="the packaged version to promote, e.g. v0002")
    reason: str = REASON
    role: str | None = ROLE
    alias: Literal["champion", "challenger"] = "champion"
    actor: str | None = ACTOR


class ChallengerConfig(dg.Config):
    """Approve or reject the challenger."""
    version: str = Field(description="the challenger awaiting approval, e.g. v0002")
    reason: str = REASON
    role: str | None = ROLE
    actor: str | None = ACTOR


class RollbackConfig(dg.Config):
    reason: str = REASON
    to: str | None = Field(None, description="an earlier champion (default: the previous one)")
    role: str | None = ROLE
    actor: str | None = ACTOR


def _run_move(context: dg.OpExecutionContext, what: str, move: Callable[[str], list[reg.Moved]],
              actor: str | None) -> None:
    """Run one registry operation; a refusal fails the run with every reason, a move is logged."""
    who = actor or f"dagster run {context.run_id[:8]}"
    try:
        moved = move(who)
    except reg.ReleaseRefused as exc:
        raise dg.Failure(description=f"{what} refused:\n" + "\n".join(f"- {r}" for r in exc.reasons),
                         metadata={"reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in exc.reasons))},
                         allow_retries=False) from None
    for m in moved:
        e = m.event
        context.log.info(f"{e.action}: {e.domain}/{e.role} {e.alias} {e.from_version or '-'} -> {e.to_version} "
                         f"(event {m.seq}, package {e.package_hash[:12]}, by {e.actor}: {e.reason})")


def build_release_jobs(domain: Domain) -> list[dg.JobDefinition]:
    name = domain.name
    tags = {"domain": name, "slm/registry": "true"}

    @dg.op(name=f"{name}_promote_op", tags=tags)
    def promote_op(context: dg.OpExecutionContext, config: PromoteConfig, artifacts: ArtifactStoreResource) -> None:
        _run_move(context, f"promote {name} {config.version}", lambda who: reg.promote(
            context.instance, artifacts.store(), name, config.version, role=config.role, alias=config.alias,
            actor=who, reason=config.reason), config.actor)

    @dg.op(name=f"{name}_approve_op", tags=tags)
    def approve_op(context: dg.OpExecutionContext, config: ChallengerConfig, artifacts: ArtifactStoreResource) -> None:
        _run_move(context, f"approve {name} {config.version}", lambda who: reg.approve(
            context.instance, artifacts.store(), name, config.version, role=config.role, actor=who,
            reason=config.reason), config.actor)

    @dg.op(name=f"{name}_reject_op", tags=tags)
    def reject_op(context: dg.OpExecutionContext, config: ChallengerConfig, artifacts: ArtifactStoreResource) -> None:
        _run_move(context, f"reject {name} {config.version}", lambda who: reg.reject(
            context.instance, artifacts.store(), name, config.version, role=config.role, actor=who,
            reason=config.reason), config.actor)

    @dg.op(name=f"{name}_rollback_op", tags=tags)
    def rollback_op(context: dg.OpExecutionContext, config: RollbackConfig, artifacts: ArtifactStoreResource) -> None:
        _run_move(context, f"rollback {name}", lambda who: reg.rollback(
            context.instance, artifacts.store(), name, role=config.role, to=config.to, actor=who,
            reason=config.reason), config.actor)

    def job(op: dg.OpDefinition, action: str, description: str) -> dg.JobDefinition:
        @dg.job(name=f"{name}_{action}", tags=tags, description=description)
        def _job() -> None:
            op()
        return _job

    return [job(promote_op, "promote", f"Point a {name} alias at a packaged version whose gates passed "
                                       "(refused otherwise). Run config: version, reason."),
            job(approve_op, "approve", f"Approve the {name} challenger awaiting approval: it becomes champion."),
            job(reject_op, "reject", f"Reject the {name} challenger: it leaves the alias and is shadowed no more."),
            job(rollback_op, "rollback", f"Put an earlier {name} champion back: one event, one pointer write.")]


def build_release_assets(domain: Domain, *, common: dict[str, Any]) -> list[dg.AssetSpec]:
    name = domain.name
    return [dg.AssetSpec(
        release_key(name), deps=[dg.AssetKey([name, "package"])], kinds={"registry"}, **common,
        metadata={"pointer": release_pointer_path(name)},
        description=f"Which {name} package serves, per role (champion, challenger). Every promote, approve, "
                    f"reject or rollback is an observation here (alias, from, to, actor, reason, gate evidence, "
                    f"package hash), followed by one with the resulting champion and the history table; replaying the "
                    f"moves gives the pointer `{release_pointer_path(name)}`. Run the jobs {name}_promote, "
                    f"{name}_approve, {name}_reject, {name}_rollback, or "
                    f"`slm registry promote|approve|reject|rollback|history {name}`.")]
