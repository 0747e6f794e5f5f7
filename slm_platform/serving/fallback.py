"""The fallback chain: the role's route first, then `serving.fallback` in order, each behind a breaker.

An attempt fails on an upstream error, a timeout past `serving.latency_budget_ms` (SLM only; the
teacher keeps its own `teacher.timeout_s`), or an output that breaks the role's contract (scored by
the one metrics module, `evals.metrics.score_example`, the same scores the evals report). A failed
attempt moves to the next route; a route that cannot answer this role (no champion, no oracle, no
teacher) or whose breaker is open is skipped without a call. With nothing left the request fails
with 503 in OpenAI's error shape, naming what each route said.

The breaker is per (domain, role, route): `serving.breaker.failures` failures in a row open it for
`serving.breaker.reset_s` seconds; then one trial request is let through (half-open), whose outcome
closes or re-opens it. So a dead vLLM costs each request nothing after the first few.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal

from slm_platform.config.models import BreakerBlock, Route
from slm_platform.evals.metrics import score_example
from slm_platform.serving.protocol import APIError
from slm_platform.serving.routing import RoleRoute
from slm_platform.serving.upstreams import Attempt, Reason, UpstreamFailure

State = Literal["closed", "open", "half_open"]


class Breaker:
    def __init__(self, cfg: BreakerBlock, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.clock = clock
        self.failed_in_a_row = 0
        self.opened_at: float | None = None
        self._trial_at: float | None = None  # when the half-open trial was let through

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cfg.reset_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        now = self.clock()
        # one trial at a time; a trial that never reported (its request was cancelled) expires after reset_s
        if state == "half_open" and (self._trial_at is None or now - self._trial_at >= self.cfg.reset_s):
            self._trial_at = now
            return True
        return False

    def record(self, ok: bool) -> None:
        self._trial_at = None
        if ok:
            self.failed_in_a_row, self.opened_at = 0, None
            return
        self.failed_in_a_row += 1
        if self.opened_at is not None or self.failed_in_a_row >= self.cfg.failures:
            self.opened_at = self.clock()  # open, or re-open after a failed trial


class Breakers:
    """One breaker per (model, route), created on first use, following config changes."""

    def __init__(self) -> None:
        self._all: dict[tuple[str, str], Breaker] = {}

    def get(self, model: str, route: str, cfg: BreakerBlock) -> Breaker:
        b = self._all.get((model, route))
        if b is None:
            b = self._all[(model, route)] = Breaker(cfg)
        b.cfg = cfg
        return b

    def states(self) -> dict[tuple[str, str], State]:
        return {k: b.state for k, b in self._all.items()}


@dataclass(frozen=True)
class Skipped:
    route: Route
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Answer:
    route: Route
    version: str
    attempt: Attempt
    validity: dict[str, bool]
    skipped: tuple[Skipped, ...] = field(default=())  # the routes tried or passed over before this one


def score(route: RoleRoute, output: dict[str, Any] | None, allowed_tools: set[str] | None) -> dict[str, bool]:
    """Validity scores of an output against the role's contract (the eval's own metric keys)."""
    scores = score_example(route.contract.kind, route.contract, output, None)
    if allowed_tools is not None and route.contract.kind == "tool_call":
        scores["offered_tool_rate"] = isinstance(output, dict) and output.get("name") in allowed_tools
    return scores


Call = Callable[[Route], Awaitable[tuple[Attempt, str]]]  # route -> (attempt, version served)


async def answer(route: RoleRoute, breakers: Breakers, call: Call, *, allowed_tools: set[str] | None = None,
                 on_skip: Callable[[Skipped], None] | None = None) -> tuple[Answer, float]:
    """Walk the chain until a valid answer; returns it and the upstream time spent on failed attempts."""
    skipped: list[Skipped] = []
    failed_ms = 0.0

    def skip(s: Skipped) -> None:
        skipped.append(s)
        if on_skip is not None:
            on_skip(s)

    for name in route.chain:
        problem = route.problem(name)
        if problem is not None:
            skip(Skipped(name, "unavailable", problem))
            continue
        breaker = breakers.get(route.model, name, route.breaker)
        if not breaker.allow():
            skip(Skipped(name, "breaker_open", f"circuit open after {breaker.failed_in_a_row} failures in a row"))
            continue
        try:
            attempt, version = await call(name)
        except UpstreamFailure as exc:
            breaker.record(False)
            failed_ms += exc.upstream_ms
            skip(Skipped(name, exc.reason, exc.detail))
            continue
        validity = score(route, attempt.output, allowed_tools)
        if not all(validity.values()):
            breaker.record(False)
            failed_ms += attempt.upstream_ms
            bad = sorted(k for k, v in validity.items() if not v)
            why = f"output breaks the contract ({', '.join(bad)}"
            why += f"; finish_reason {attempt.finish_reason})" if attempt.finish_reason else ")"
            skip(Skipped(name, "invalid", why))
            continue
        breaker.record(True)
        return Answer(name, version, attempt, validity, tuple(skipped)), failed_ms
    said = "; ".join(f"{s.route}: {s.detail}" for s in skipped)
    raise APIError(503, f"no upstream could answer {route.model} ({said})", code="no_upstream_available")
