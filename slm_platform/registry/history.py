"""Alias history: release events, and the registry state replayed from their log.

Every alias move (promote, approve, rollback, reject) is one `ReleaseEvent` appended to a log that the Dagster
instance keeps (see `orchestration/registry.py`). No lock guards the log: each event carries the
version its actor saw (`from_version`, a compare-and-set expectation), and `replay` applies events
in log order, marking an event whose expectation no longer holds as a `conflict` without effect.
So every reader derives the same aliases from the same log, and a lost race is visible, not silent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Alias = Literal["champion", "challenger"]
Action = Literal["promote", "approve", "rollback", "reject"]  # reject: the challenger alias is cleared
ALIASES: tuple[Alias, ...] = ("champion", "challenger")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ReleaseEvent(BaseModel):
    """One alias move as its actor decided it; `id` lets the actor find its own event in the log."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    domain: str
    role: str
    alias: Alias
    action: Action
    from_version: str | None  # what the alias pointed to when the actor decided (None: unset)
    to_version: str
    actor: str
    reason: str
    at: datetime = Field(default_factory=utc_now)
    package_rel: str
    package_hash: str
    evidence: dict[str, str] = Field(default_factory=dict)  # gate name -> "passed: detail" / "failed: ..."


@dataclass(frozen=True)
class LoggedEvent:
    """An event as the log holds it: its position (storage id) and when the log recorded it (epoch s)."""

    seq: int
    recorded_at: float
    event: ReleaseEvent


@dataclass(frozen=True)
class AliasTarget:
    version: str
    package_rel: str
    package_hash: str


@dataclass(frozen=True)
class Outcome:
    logged: LoggedEvent
    applied: bool  # False: a conflict (its from_version did not match the replayed alias)
    found: str | None  # what the alias pointed to when the log reached the event


@dataclass
class RegistryState:
    """Aliases per role after replaying a log, and what happened to every event."""

    aliases: dict[str, dict[str, AliasTarget]] = field(default_factory=dict)  # role -> alias -> target
    outcomes: list[Outcome] = field(default_factory=list)

    def target(self, role: str, alias: Alias = "champion") -> AliasTarget | None:
        return self.aliases.get(role, {}).get(alias)

    def version(self, role: str, alias: Alias = "champion") -> str | None:
        t = self.target(role, alias)
        return t.version if t else None

    @property
    def last_seq(self) -> int | None:
        return self.outcomes[-1].logged.seq if self.outcomes else None

    def outcome(self, event_id: str) -> Outcome | None:
        return next((o for o in self.outcomes if o.logged.event.id == event_id), None)

    def champions(self, role: str) -> list[str]:
        """Every version that became champion of `role`, in log order (repeats kept)."""
        return [o.logged.event.to_version for o in self.outcomes
                if o.applied and o.logged.event.role == role and o.logged.event.alias == "champion"]

    def previous_champion(self, role: str) -> str | None:
        """The most recent earlier champion that differs from the current one (rollback's default)."""
        current = self.version(role)
        return next((v for v in reversed(self.champions(role)) if v != current), None)

    def since(self, role: str, alias: Alias = "champion") -> datetime | None:
        """When the alias last moved to its current version (what the demotion window starts at)."""
        last = next((o for o in reversed(self.outcomes) if o.applied and o.logged.event.role == role
                     and o.logged.event.alias == alias), None)
        return datetime.fromtimestamp(last.logged.recorded_at, timezone.utc) if last else None

    def awaiting_approval(self) -> dict[str, str]:
        """role -> its challenger: a version that passed its gates and waits to become champion."""
        return {role: a["challenger"].version for role, a in sorted(self.aliases.items()) if "challenger" in a}

    def held(self) -> set[str]:
        return {t.version for aliases in self.aliases.values() for t in aliases.values()}


def apply(state: RegistryState, logged: LoggedEvent) -> Outcome:
    e = logged.event
    aliases = state.aliases.setdefault(e.role, {})
    found = aliases[e.alias].version if e.alias in aliases else None
    outcome = Outcome(logged, found == e.from_version, found)
    if outcome.applied and e.action == "reject":
        aliases.pop(e.alias, None)  # the rejected version (to_version == from_version) holds the alias no more
    elif outcome.applied:
        aliases[e.alias] = AliasTarget(e.to_version, e.package_rel, e.package_hash)
        other = "challenger" if e.alias == "champion" else "champion"
        if e.alias == "champion" and other in aliases and aliases[other].version == e.to_version:
            del aliases[other]  # a challenger promoted to champion is no longer the challenger
    state.outcomes.append(outcome)
    return outcome


HISTORY_COLUMNS = ("event", "recorded (UTC)", "role", "alias", "action", "from", "to", "actor", "reason", "outcome")


def history_rows(state: RegistryState, *, role: str | None = None, newest_first: bool = False,
                 limit: int | None = None) -> list[tuple[str, ...]]:
    """The history table's rows (HISTORY_COLUMNS), shared by `slm registry history` and the release
    asset's markdown. An outcome cell starting with "conflict" is a move that lost a race."""
    outcomes = [o for o in state.outcomes if role is None or o.logged.event.role == role]
    if newest_first:
        outcomes.reverse()
    rows = []
    for o in outcomes[:limit]:
        e = o.logged.event
        when = datetime.fromtimestamp(o.logged.recorded_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((str(o.logged.seq), when, e.role, e.alias, e.action, e.from_version or "-", e.to_version,
                     e.actor, e.reason, "applied" if o.applied else f"conflict (was {o.found or '-'})"))
    return rows


def history_markdown(state: RegistryState, *, role: str | None = None, newest_first: bool = True,
                     limit: int | None = None) -> str:
    """The history as a markdown table (the release asset's page, `slm registry history --markdown`)."""
    lines = ["| " + " | ".join(HISTORY_COLUMNS) + " |", "|" + "---|" * len(HISTORY_COLUMNS)]
    for cells in history_rows(state, role=role, newest_first=newest_first, limit=limit):
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def replay(events: Iterable[LoggedEvent]) -> RegistryState:
    """The registry state from a log, applied in log (storage id) order."""
    state = RegistryState()
    for logged in sorted(events, key=lambda x: x.seq):
        apply(state, logged)
    return state


def served_at(events: Sequence[LoggedEvent], role: str, t: datetime | float) -> AliasTarget | None:
    """What served `role` (its champion) at time `t`: one answer from the log.

    An event counts from the time the log recorded it; recording times from different processes
    may disagree slightly with log order, so each event's time is the latest recording time up to
    it (monotone in log order), and the answer is the state after the last event at or before `t`.
    """
    when = t.timestamp() if isinstance(t, datetime) else float(t)
    state, latest = RegistryState(), float("-inf")
    for logged in sorted(events, key=lambda x: x.seq):
        latest = max(latest, logged.recorded_at)
        if latest > when:
            break
        apply(state, logged)
    return state.target(role)


class VersionState(str, Enum):
    candidate = "candidate"  # trained or evaluating, no gate verdict yet
    failed_gates = "failed gates"
    packaged = "packaged"  # gates passed and the package was built
    challenger = "challenger"
    champion = "champion"
    retired = "retired"  # held an alias once, holds none now
    rejected = "rejected"  # was the challenger and was rejected (its shadow gates failed, or a human said no)


@dataclass(frozen=True)
class VersionFacts:
    """What the lineage says of one version (the caller reads it from the instance and the store)."""

    gates_passed: bool | None = None  # None: not evaluated yet
    failed_gates: tuple[str, ...] = ()
    packaged: bool = False


def version_states(state: RegistryState, facts: Mapping[str, VersionFacts]) -> dict[str, VersionState]:
    """Each version's state: an alias wins, then retirement, then the lineage facts."""
    ever = {o.logged.event.to_version for o in state.outcomes if o.applied}
    last_move = {o.logged.event.to_version: o.logged.event.action for o in state.outcomes if o.applied}
    held = {alias: {t.version for a in state.aliases.values() for name, t in a.items() if name == alias}
            for alias in ALIASES}
    out: dict[str, VersionState] = {}
    for version in sorted(set(facts) | ever):
        f = facts.get(version, VersionFacts())
        if version in held["champion"]:
            out[version] = VersionState.champion
        elif version in held["challenger"]:
            out[version] = VersionState.challenger
        elif last_move.get(version) == "reject":
            out[version] = VersionState.rejected
        elif version in ever:
            out[version] = VersionState.retired
        elif f.gates_passed is False:
            out[version] = VersionState.failed_gates
        elif f.packaged:
            out[version] = VersionState.packaged
        else:
            out[version] = VersionState.candidate
    return out
