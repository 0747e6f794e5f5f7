"""Promote, approve, reject and roll back on the Dagster instance: the event log there, the pointer in the store.

Each alias move is an `AssetObservation` on `[<domain>, "release"]` (its metadata holds the
`ReleaseEvent` as JSON plus readable fields), so the release history sits in the same instance
as the lineage it rests on. An operation decides on the replayed log, records its event with the
alias value it saw (compare-and-set), reads the log back to learn whether it won (a lost race is
decided again on the new state), then publishes the pointer from the replay. Between the two
writes a crash leaves a pointer that lags the log: `reconcile`, run first by every operation,
rewrites it. No lock is needed on SQLite or PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from slm_platform.artifacts import ArtifactError, ArtifactStore
from slm_platform.evals.report import EvalReport, REPORT_FILE
from slm_platform.layout import adapters_root, candidate_eval_dir, package_dir, packages_root
from slm_platform.registry.history import (
    ALIASES, Action, Alias, LoggedEvent, RegistryState, ReleaseEvent, VersionFacts, history_markdown, replay,
)
from slm_platform.registry.packages import PackageError, ServingSpec, verify_package
from slm_platform.registry.pointer import ReleasePointer, read_pointer, write_pointer
from slm_platform.registry.releases import evaluated_against
from slm_platform.shadow.report import read_shadow_report

RELEASE = "release"
MAX_ATTEMPTS = 200  # decisions per move under contention (each lost race costs one conflict event)
PAGE = 1000


class ReleaseRefused(Exception):
    """A promotion or rollback the registry will not record; `reasons` says why, one per line."""

    def __init__(self, what: str, reasons: list[str]):
        self.reasons = reasons
        self.conflicts = 0  # races this call lost before it was refused (each left a conflict event)
        super().__init__(f"{what} refused: " + "; ".join(reasons))


@dataclass(frozen=True)
class Moved:
    """A recorded, applied alias move, and how many of its earlier attempts lost a race."""

    event: ReleaseEvent
    seq: int
    conflicts: int


def release_key(domain: str) -> dg.AssetKey:
    return dg.AssetKey([domain, RELEASE])


# --- the log -----------------------------------------------------------------------------------
def record_event(instance: dg.DagsterInstance, event: ReleaseEvent) -> None:
    meta = {"event": dg.MetadataValue.json(event.model_dump(mode="json")), "action": event.action,
            "alias": event.alias, "role": event.role, "from": event.from_version or "-", "to": event.to_version,
            "actor": event.actor, "reason": event.reason, "package_hash": event.package_hash, "event_id": event.id}
    instance.report_runless_asset_event(dg.AssetObservation(
        asset_key=release_key(event.domain), metadata=meta,
        description=f"{event.action} {event.role}/{event.alias}: {event.from_version or '-'} -> {event.to_version} "
                    f"by {event.actor}: {event.reason} (applies only if {event.alias} was still "
                    f"{event.from_version or 'unset'}; `slm registry history` shows each outcome)"))


def read_log(instance: dg.DagsterInstance, domain: str) -> list[LoggedEvent]:
    """Every release event of `domain` in storage-id order (observations without an event are skipped)."""
    out: list[LoggedEvent] = []
    cursor: str | None = None
    while True:
        page = instance.fetch_observations(release_key(domain), limit=PAGE, cursor=cursor, ascending=True)
        for rec in page.records:
            obs = rec.asset_observation
            value = obs.metadata.get("event") if obs is not None else None
            if value is not None:
                out.append(LoggedEvent(rec.storage_id, rec.timestamp, ReleaseEvent.model_validate(value.value)))
        if not page.has_more:
            return out
        cursor = page.cursor


def registry_state(instance: dg.DagsterInstance, domain: str) -> RegistryState:
    return replay(read_log(instance, domain))


HISTORY_ROWS = 30  # events shown in the release asset's history table (`slm registry history` shows all)


def record_state(instance: dg.DagsterInstance, domain: str, state: RegistryState) -> None:
    """An observation of what the aliases ARE after a move: the release asset's page shows the
    champion, the challenger awaiting approval and the history table from its latest observation.
    It holds no `event`, so the log (`read_log`) never reads it as a move."""
    meta: dict[str, Any] = {}
    for role, aliases in sorted(state.aliases.items()):
        for alias in ALIASES:
            target = aliases.get(alias)
            meta[f"{alias}/{role}"] = target.version if target else "-"
    waiting = state.awaiting_approval()
    meta["awaiting approval"] = ", ".join(f"{role}: {v}" for role, v in waiting.items()) or "-"
    meta["events"] = dg.MetadataValue.int(len(state.outcomes))
    meta["last_event"] = dg.MetadataValue.int(state.last_seq or 0)
    meta["history"] = dg.MetadataValue.md(history_markdown(state, limit=HISTORY_ROWS))
    champions = ", ".join(f"{role} {a['champion'].version}" for role, a in sorted(state.aliases.items())
                          if "champion" in a) or "none"
    instance.report_runless_asset_event(dg.AssetObservation(
        asset_key=release_key(domain), metadata=meta,
        description=f"champion: {champions}; awaiting approval: {meta['awaiting approval']}"))


# --- the pointer ---------------------------------------------------------------------------------
def publish_pointer(instance: dg.DagsterInstance, store: ArtifactStore, domain: str,
                    state: RegistryState | None = None) -> ReleasePointer:
    """Write the pointer from the replayed log, then check the log did not move meanwhile.

    Never overwrites a pointer that reflects a later log position; when the log grew during the
    write, writes again. So the last writer always leaves a pointer that agrees with the log.
    """
    state = state if state is not None else registry_state(instance, domain)
    while True:
        current = read_pointer(store, domain)
        ahead = current is not None and (current.last_event or 0) > (state.last_seq or 0)
        if not ahead and (current is None or not current.agrees_with(state)):
            current = ReleasePointer.from_state(domain, state)
            write_pointer(store, current)
        latest = registry_state(instance, domain)
        if latest.last_seq == state.last_seq:
            if ahead:  # it names a log position the log does not have (a wiped instance): the log wins
                current = ReleasePointer.from_state(domain, state)
                write_pointer(store, current)
            return current
        state = latest


def reconcile(instance: dg.DagsterInstance, store: ArtifactStore, domain: str) -> bool:
    """Repair a pointer that disagrees with the log (a crash between event and pointer write)."""
    state = registry_state(instance, domain)
    pointer = read_pointer(store, domain)
    if state.last_seq is None or (pointer is not None and pointer.agrees_with(state)):
        return False
    publish_pointer(instance, store, domain, state)
    return True


# --- evidence ---------------------------------------------------------------------------------------
def _instance_gates(instance: dg.DagsterInstance, domain: str, version: str, names: list[str]) -> dict[str, bool]:
    """The latest recorded verdict of each gate check for partition `version` (absent: never ran here)."""
    out = {}
    for name in names:
        key = dg.AssetCheckKey(dg.AssetKey([domain, "eval_report"]), name)
        records, cursor = [], None
        while True:  # newest first, every partition: page until this version's records are all seen
            page = instance.event_log_storage.get_asset_check_execution_history(key, limit=PAGE, cursor=cursor)
            records += [r for r in page if r.partition == version]
            if len(page) < PAGE:
                break
            cursor = page[-1].id
        if records:
            latest = max(records, key=lambda r: r.id)
            if latest.status.value in ("SUCCEEDED", "FAILED"):
                out[name] = latest.status.value == "SUCCEEDED"
    return out


@dataclass(frozen=True)
class Candidate:
    version: str
    package_rel: str
    package_hash: str
    roles: tuple[str, ...]
    report: EvalReport | None
    evidence: dict[str, str]
    reasons: list[str]  # empty: releasable (before the champion comparison)


def inspect_candidate(instance: dg.DagsterInstance, store: ArtifactStore, domain: str, version: str) -> Candidate:
    """Package integrity, gate verdicts (report and instance) and evidence of one version."""
    reasons: list[str] = []
    rel, package_hash, roles = package_dir(domain, version), "", ()
    try:
        folder = verify_package(store, rel)
        manifest = store.read_manifest(rel)
        package_hash = manifest.hash
        roles = tuple(ServingSpec.read(folder / manifest.extra["forms"][0]).roles)
    except (ArtifactError, PackageError) as exc:
        reasons.append(f"package {store.uri(rel)} does not verify: {exc}")
    report, evidence = None, {}
    try:
        report = EvalReport.model_validate_json(store.read_text(candidate_eval_dir(domain, version), REPORT_FILE))
    except ArtifactError as exc:
        reasons.append(f"no readable eval_report[{version}]: {exc}")
    if report is not None:
        if not report.gates:
            reasons.append(f"eval_report[{version}] holds no gate results")
        gates = report.gates or {}
        recorded = _instance_gates(instance, domain, version, list(gates))
        for name, gate in gates.items():
            passed = gate.passed and recorded.get(name, True)
            where = "" if name not in recorded else " (check recorded on the instance)"
            evidence[name] = f"{'passed' if passed else 'failed'}: {gate.detail}{where}"
            if not gate.passed:
                reasons.append(f"gate {name!r} failed for {version}: {gate.detail}")
            elif not passed:
                reasons.append(f"gate {name!r} failed for {version} on the instance (its latest check "
                               f"{domain}/eval_report:{name} for partition {version}), though the report passed")
    return Candidate(version, rel, package_hash, roles, report, evidence, reasons)


def shadow_verdict(store: ArtifactStore, domain: str, version: str) -> tuple[dict[str, str], list[str]]:
    """Evidence and refusal reasons from `shadow_report[version]`, for a move to champion: a decided
    report whose gates failed refuses; an undecided one (or none: the version was never shadowed)
    is recorded as such and leaves the decision to whoever promotes."""
    try:
        report = read_shadow_report(store, domain, version)
    except ArtifactError as exc:
        return {}, [f"shadow_report[{version}] does not verify: {exc}"]
    if report is None:
        return {"shadow": "not shadowed (no shadow_report)"}, []
    if not report.decided:
        pairs = ", ".join(f"{r.role} {r.pairs}" for r in report.roles.values()) or "none"
        return {"shadow": f"not decided: {pairs} of {report.min_pairs} pairs"}, []
    evidence = {name: f"{'passed' if g.passed else 'failed'}: {g.detail}" for name, g in report.gates.items()}
    reasons = [f"shadow gate {name!r} failed for {version}: {g.detail}" for name, g in report.gates.items()
               if not g.passed]
    return evidence, reasons


# --- operations ------------------------------------------------------------------------------------
def _move(instance: dg.DagsterInstance, store: ArtifactStore, domain: str,
          decide: Callable[[RegistryState], ReleaseEvent]) -> Moved:
    conflicts = 0
    for _ in range(MAX_ATTEMPTS):
        try:
            event = decide(registry_state(instance, domain))
        except ReleaseRefused as exc:
            exc.conflicts = conflicts
            raise
        record_event(instance, event)
        state = registry_state(instance, domain)
        outcome = state.outcome(event.id)
        if outcome is not None and outcome.applied:
            publish_pointer(instance, store, domain, state)  # a crash before this: `reconcile` repairs
            record_state(instance, domain, state)
            return Moved(event, outcome.logged.seq, conflicts)
        conflicts += 1
    raise ReleaseRefused(f"{domain}: alias move", [f"lost {conflicts} races in a row; try again"])


def promote(instance: dg.DagsterInstance, store: ArtifactStore, domain: str, version: str, *,
            role: str | None = None, alias: Alias = "champion", actor: str, reason: str,
            action: Action = "promote") -> list[Moved]:
    """Point `alias` of `role` (default: every role the package serves) at `version`.

    Refused when the package does not verify, a gate failed (in its report or on the instance),
    or the version was not evaluated against the role's current champion (when there is one).
    """
    reconcile(instance, store, domain)
    cand = inspect_candidate(instance, store, domain, version)
    shadow_evidence, shadow_reasons = shadow_verdict(store, domain, version) if alias == "champion" else ({}, [])
    if cand.reasons or shadow_reasons:
        raise ReleaseRefused(f"promote {domain} {version}", cand.reasons + shadow_reasons)
    roles = (role,) if role is not None else cand.roles
    if role is not None and role not in cand.roles:
        raise ReleaseRefused(f"promote {domain} {version}", [f"package serves roles {list(cand.roles)}, not {role!r}"])
    compared = evaluated_against(cand.report.reference if cand.report else None)

    def decider(r: str) -> Callable[[RegistryState], ReleaseEvent]:
        def decide(state: RegistryState) -> ReleaseEvent:
            current, champion = state.version(r, alias), state.version(r, "champion")
            if current == version:
                raise ReleaseRefused(f"promote {domain} {version}", [f"{version} is already {alias} of {r}"])
            if champion is not None and compared != champion:
                raise ReleaseRefused(f"promote {domain} {version}", [
                    f"eval_report[{version}] compared it with {cand.report.reference if cand.report else None!r}, "
                    f"not with the current champion {champion} of {r}: re-materialize eval_report[{version}]"])
            return ReleaseEvent(domain=domain, role=r, alias=alias, action=action, from_version=current,
                                to_version=version, actor=actor, reason=reason, package_rel=cand.package_rel,
                                package_hash=cand.package_hash, evidence={**cand.evidence, **shadow_evidence})
        return decide

    return [_move(instance, store, domain, decider(r)) for r in roles]


def _challenged_roles(instance: dg.DagsterInstance, domain: str, version: str, role: str | None,
                      what: str) -> list[str]:
    """The roles (of `role`, or all) whose challenger is `version`; refused when there are none."""
    waiting = registry_state(instance, domain).awaiting_approval()
    roles = [r for r, v in waiting.items() if v == version and (role is None or r == role)]
    if not roles:
        shown = ", ".join(f"{r}: {v}" for r, v in waiting.items()) or "none"
        raise ReleaseRefused(f"{what} {domain} {version}", [
            f"{version} is not the challenger of {role or 'any role'} (awaiting approval: {shown})"])
    return roles


def approve(instance: dg.DagsterInstance, store: ArtifactStore, domain: str, version: str, *,
            role: str | None = None, actor: str, reason: str) -> list[Moved]:
    """Make a waiting challenger the champion (the human step of `improvement.promotion: approval`).

    Every check of `promote` applies again (package hash, gates, compared with the current champion).
    """
    reconcile(instance, store, domain)
    roles = _challenged_roles(instance, domain, version, role, "approve")
    return [m for r in roles for m in promote(instance, store, domain, version, role=r, actor=actor, reason=reason,
                                               action="approve")]


def reject(instance: dg.DagsterInstance, store: ArtifactStore, domain: str, version: str, *,
           role: str | None = None, actor: str, reason: str) -> list[Moved]:
    """Take `version` off the challenger alias for good (its shadow gates failed, or a human said no):
    the gateway stops shadowing it, it can never be approved, and the event keeps the shadow evidence.
    The package is not checked: a version that no longer verifies can always be rejected."""
    reconcile(instance, store, domain)
    roles = _challenged_roles(instance, domain, version, role, "reject")
    evidence, _ = shadow_verdict(store, domain, version)

    def decider(r: str) -> Callable[[RegistryState], ReleaseEvent]:
        def decide(state: RegistryState) -> ReleaseEvent:
            current = state.target(r, "challenger")
            if current is None or current.version != version:
                raise ReleaseRefused(f"reject {domain} {version}", [
                    f"{version} is no longer the challenger of {r} (now: {current.version if current else 'none'})"])
            return ReleaseEvent(domain=domain, role=r, alias="challenger", action="reject", from_version=version,
                                to_version=version, actor=actor, reason=reason, package_rel=current.package_rel,
                                package_hash=current.package_hash, evidence=evidence)
        return decide

    return [_move(instance, store, domain, decider(r)) for r in roles]


def rollback(instance: dg.DagsterInstance, store: ArtifactStore, domain: str, *, role: str | None = None,
             to: str | None = None, actor: str, reason: str) -> list[Moved]:
    """Point the champion back at an earlier champion (default: the previous one): one event, one
    pointer write per role, nothing rebuilt. Refused when that package no longer verifies."""
    reconcile(instance, store, domain)
    roles = (role,) if role is not None else tuple(sorted(registry_state(instance, domain).aliases))
    if not roles:
        raise ReleaseRefused(f"rollback {domain}", ["nothing was ever promoted"])

    def decider(r: str) -> Callable[[RegistryState], ReleaseEvent]:
        def decide(state: RegistryState) -> ReleaseEvent:
            current = state.version(r)
            target = to or state.previous_champion(r)
            what = f"rollback {domain}/{r} to {target or '?'}"
            if target is None:
                raise ReleaseRefused(what, [f"{r} has no earlier champion"])
            if target == current:
                raise ReleaseRefused(what, [f"{target} is already champion of {r}"])
            if target not in state.champions(r):
                raise ReleaseRefused(what, [f"{target} was never champion of {r} "
                                            f"(earlier champions: {sorted(set(state.champions(r)))})"])
            was = next(o.logged.event for o in reversed(state.outcomes) if o.applied
                       and o.logged.event.role == r and o.logged.event.to_version == target)
            try:
                verify_package(store, was.package_rel)
                now = store.read_manifest(was.package_rel).hash
            except (ArtifactError, PackageError) as exc:
                raise ReleaseRefused(what, [f"package {store.uri(was.package_rel)} does not verify: {exc}"]) from None
            if now != was.package_hash:
                raise ReleaseRefused(what, [f"package {was.package_rel} was rebuilt since it was champion "
                                            f"(manifest {now[:12]}, released {was.package_hash[:12]})"])
            return ReleaseEvent(domain=domain, role=r, alias="champion", action="rollback", from_version=current,
                                to_version=target, actor=actor, reason=reason, package_rel=was.package_rel,
                                package_hash=was.package_hash, evidence=was.evidence)
        return decide

    return [_move(instance, store, domain, decider(r)) for r in roles]


# --- what the lineage says of every version ------------------------------------------------------------
def version_facts(instance: dg.DagsterInstance, store: ArtifactStore, domain: str) -> dict[str, VersionFacts]:
    """Gate verdicts (report, overruled by a failed check on the instance) and packaging, per version.

    Cheap: reads report.json files and manifests, never re-hashes a package (`inspect_candidate` does).
    """
    versions = set(store.list(adapters_root(domain))) | set(store.list(packages_root(domain)))
    out = {}
    for version in sorted(versions):
        passed, failed = None, ()
        if store.exists(candidate_eval_dir(domain, version)):
            report = EvalReport.model_validate_json(store.read_text(candidate_eval_dir(domain, version), REPORT_FILE))
            gates = report.gates or {}
            recorded = _instance_gates(instance, domain, version, list(gates))
            failed = tuple(n for n, g in gates.items() if not (g.passed and recorded.get(n, True)))
            passed = bool(gates) and not failed
        out[version] = VersionFacts(passed, failed, store.exists(package_dir(domain, version)))
    return out
