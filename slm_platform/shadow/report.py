"""`shadow_report[v]`: the challenger judged against the champion on live traffic, pair by pair.

Per role, over the pairs the gateway recorded for challenger v: how often it answered validly, how
often it agreed with the champion, and, where the captured turn carries a truth label (gold or
teacher), how often each was right (a paired win rate); p50/p95 latency of both; the same by the
domain's eval slices. Every rate carries its n and a Wilson 95% interval. Nothing is decided before
`improvement.shadow.min_pairs` judged pairs per role: the gates then say "not decided" and fail.

The gates (also the asset's blocking checks):
- shadow_pairs: at least min_pairs judged pairs in every role;
- shadow_validity: every judged challenger answer valid (no invalid output, timeout or error);
- shadow_quality: with ≥ min_labelled labelled pairs, the challenger is right at least as often as
  the champion less `eval.regression_tolerance`; with fewer, its agreement with the champion has a
  lower 95% bound ≥ min_agreement;
- shadow_latency: challenger p95 ≤ champion p95 × (1 + latency_tolerance);
- shadow_cost: the challenger's mean tokens per request (prompt + completion, as vLLM counted them)
  ≤ the champion's × (1 + cost_tolerance): on the same base model and hardware, tokens are what a
  request costs; priced with `serving.cost_per_1m_tokens`, also ≤ `max_cost_per_request` USD.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals.gates import GateResult
from slm_platform.evals.metrics import MISSING_SLICE, latency_summary, score_example
from slm_platform.layout import shadow_report_dir
from slm_platform.records import canonical_json
from slm_platform.shadow.pairs import PairsRead, ShadowPair

REPORT_FILE = "report.json"
Z95 = 1.959964
SHADOW_GATES = ("shadow_pairs", "shadow_validity", "shadow_quality", "shadow_latency", "shadow_cost")
MAX_REJECTED_SHOWN = 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(_Strict):
    k: int
    n: int
    value: float | None  # None when n == 0
    low: float | None  # Wilson 95% interval
    high: float | None

    def __str__(self) -> str:
        if self.value is None:
            return "n=0"
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}] ({self.k}/{self.n})"


def wilson(k: int, n: int, z: float = Z95) -> Rate:
    if n == 0:
        return Rate(k=0, n=0, value=None, low=None, high=None)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the ends (rounding left 0.9999999999999999)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Rate(k=k, n=n, value=p, low=low, high=high)


class Latency(_Strict):
    p50: float | None
    p95: float | None


class Cost(_Strict):
    """Mean tokens per request over the pairs whose side reported usage, and its price when known."""

    tokens: float | None  # None: no pair reported usage
    n: int  # pairs with usage on this side
    usd: float | None = None  # per request, at serving.cost_per_1m_tokens


def cost_of(tokens: Sequence[int | None], per_1m_tokens: float | None) -> Cost:
    known = [t for t in tokens if t is not None]
    mean = sum(known) / len(known) if known else None
    usd = None if mean is None or per_1m_tokens is None else mean * per_1m_tokens / 1e6
    return Cost(tokens=mean, n=len(known), usd=usd)


class SliceShadow(_Strict):
    key: str
    value: str
    pairs: int
    agreement: Rate
    challenger_correct: Rate
    champion_correct: Rate


class RoleShadow(_Strict):
    role: str
    pairs: int  # judged pairs (the challenger answered or failed on its own)
    not_judged: int  # gateway stops (shutdown, not_sent)
    errors: dict[str, int]  # challenger failures by kind: invalid, timeout, error
    challenger_valid: Rate
    agreement: Rate
    challenger_correct: Rate  # on pairs whose captured turn has a truth label
    champion_correct: Rate
    champion_latency_ms: Latency
    challenger_latency_ms: Latency
    champion_cost: Cost | None = None  # None in reports written before costs were recorded
    challenger_cost: Cost | None = None
    slices: list[SliceShadow] = Field(default_factory=list)


class ShadowReport(_Strict):
    domain: str
    challenger: str
    champions: list[str]  # the champion versions the pairs were answered by
    days: list[str]
    created_at: datetime
    lines_read: int
    other_versions: int
    rejected: int
    rejected_examples: list[str]
    min_pairs: int
    decided: bool
    roles: dict[str, RoleShadow]
    gates: dict[str, GateResult]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates.values())

    def write(self, folder: Path) -> None:
        (folder / REPORT_FILE).write_text(self.model_dump_json(indent=1), encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> "ShadowReport":
        return cls.model_validate_json((folder / REPORT_FILE).read_text(encoding="utf-8"))


def read_shadow_report(store: ArtifactStore, domain: str, version: str) -> ShadowReport | None:
    """The published shadow_report[version], verified; None if never built (ArtifactError if tampered)."""
    rel = shadow_report_dir(domain, version)
    return ShadowReport.read(store.open_verified(rel)) if store.exists(rel) else None


def shadowed_roles(domain: Domain) -> list[str]:
    """The roles the champion SLM answers (`serving.routes`, default slm): only those are shadowed."""
    return [r for r in domain.roles if domain.config.serving.routes.get(r, "slm") == "slm"]


def _slice_value(turn: Mapping[str, Any] | None, champion_output: Mapping[str, Any] | None, key: str) -> str:
    """The pair's slice: the captured turn's slice, else the champion's output field of that name."""
    meta = (turn or {}).get("meta") or {}
    for holder in ((turn or {}).get("slice"), meta.get("slice") if isinstance(meta, dict) else None):
        if isinstance(holder, dict) and holder.get(key) is not None:
            v = holder[key]
            return v if isinstance(v, str) else canonical_json(v)
    if isinstance(champion_output, dict) and champion_output.get(key) is not None:
        v = champion_output[key]
        return v if isinstance(v, str) else canonical_json(v)
    return MISSING_SLICE


def _truth(turn: Mapping[str, Any] | None) -> dict[str, Any] | None:
    labels = (turn or {}).get("labels") or {}
    return next((labels[s] for s in ("gold", "teacher") if labels.get(s) is not None), None)


def _role_shadow(domain: Domain, role: str, pairs: Sequence[ShadowPair],
                 turns: Mapping[str, Mapping[str, Any]]) -> RoleShadow:
    contract = domain.role(role)
    primary = domain.config.eval.primary_metric
    price = domain.config.serving.cost_per_1m_tokens
    judged = [p for p in pairs if p.judged]
    errors = Counter(p.challenger.error for p in judged if p.challenger.error)

    def correct(output: Any, truth: Any) -> bool:
        return bool(score_example(contract.kind, contract, output, truth).get(primary))

    wins: list[tuple[bool, bool]] = []
    by_slice: dict[tuple[str, str], list[tuple[ShadowPair, tuple[bool, bool] | None]]] = defaultdict(list)
    for p in judged:
        turn = turns.get(p.request_id)
        truth = _truth(turn)
        outcome = (correct(p.challenger.output, truth), correct(p.champion.output, truth)) if truth else None
        if outcome:
            wins.append(outcome)
        for s in domain.config.eval.slices:
            by_slice[(s.key, _slice_value(turn, p.champion.output, s.key))].append((p, outcome))

    def agree(ps: Sequence[ShadowPair]) -> Rate:
        return wilson(sum(1 for p in ps if p.agreement == 1.0), len(ps))

    slices = []
    for (key, value), rows in sorted(by_slice.items()):
        labelled = [o for _, o in rows if o is not None]
        slices.append(SliceShadow(key=key, value=value, pairs=len(rows), agreement=agree([p for p, _ in rows]),
                                  challenger_correct=wilson(sum(c for c, _ in labelled), len(labelled)),
                                  champion_correct=wilson(sum(c for _, c in labelled), len(labelled))))
    lat = latency_summary
    return RoleShadow(
        role=role, pairs=len(judged), not_judged=len(pairs) - len(judged), errors=dict(sorted(errors.items())),
        challenger_valid=wilson(sum(p.challenger.valid for p in judged), len(judged)), agreement=agree(judged),
        challenger_correct=wilson(sum(c for c, _ in wins), len(wins)),
        champion_correct=wilson(sum(c for _, c in wins), len(wins)),
        champion_latency_ms=Latency(**{k: lat(p.champion.latency_ms for p in judged)[k] for k in ("p50", "p95")}),
        # a timeout's latency counts (it is the deadline the challenger ran into), like an answer's
        challenger_latency_ms=Latency(**{k: lat(p.challenger.latency_ms for p in judged)[k] for k in ("p50", "p95")}),
        # cost on the pairs where the challenger answered: a failed call has no usage to compare
        champion_cost=cost_of([p.champion.tokens for p in judged if p.challenger.tokens is not None], price),
        challenger_cost=cost_of([p.challenger.tokens for p in judged if p.challenger.tokens is not None], price),
        slices=slices)


def _gates(domain: Domain, roles: Mapping[str, RoleShadow], decided: bool) -> dict[str, GateResult]:
    judge = domain.config.improvement.shadow
    tolerance = domain.config.eval.regression_tolerance
    missing = [r for r in shadowed_roles(domain) if r not in roles]
    short = [f"{r.role} {r.pairs}" for r in roles.values() if r.pairs < judge.min_pairs] + [f"{r} 0" for r in missing]
    out = {"shadow_pairs": GateResult(
        name="shadow_pairs", passed=not short,
        detail=f"at least {judge.min_pairs} judged pairs per role" + (f": short in {', '.join(short)}" if short else ""))}
    if not decided:
        for name in SHADOW_GATES[1:]:
            out[name] = GateResult(name=name, passed=False, detail=f"not decided: fewer than {judge.min_pairs} pairs")
        return out
    bad_valid, bad_quality, bad_latency, bad_cost = [], [], [], []
    notes_quality, notes_latency, notes_cost = [], [], []
    for r in roles.values():
        if r.challenger_valid.k < r.challenger_valid.n:
            bad_valid.append(f"{r.role}: {r.challenger_valid} ({', '.join(f'{k} {v}' for k, v in r.errors.items())})")
        if r.challenger_correct.n >= judge.min_labelled:
            ok = r.challenger_correct.value >= r.champion_correct.value - tolerance
            note = (f"{r.role}: right {r.challenger_correct} vs champion {r.champion_correct.value:.1%} "
                    f"(tolerance {tolerance:.0%})")
        else:
            ok = r.agreement.low is not None and r.agreement.low >= judge.min_agreement
            note = (f"{r.role}: agreement {r.agreement} vs ≥ {judge.min_agreement:.0%} (lower bound; "
                    f"{r.challenger_correct.n} labelled pairs < {judge.min_labelled})")
        (notes_quality if ok else bad_quality).append(note)
        ch, cp = r.challenger_latency_ms.p95, r.champion_latency_ms.p95
        limit = None if cp is None else cp * (1 + judge.latency_tolerance)
        note = f"{r.role}: p95 {ch if ch is None else round(ch, 1)} ms vs champion {cp if cp is None else round(cp, 1)} ms"
        (notes_latency if ch is not None and limit is not None and ch <= limit else bad_latency).append(note)
        ok, note = _judge_cost(r, judge.cost_tolerance, judge.max_cost_per_request)
        (notes_cost if ok else bad_cost).append(note)
    out["shadow_validity"] = GateResult(name="shadow_validity", passed=not bad_valid,
                                        detail="; ".join(bad_valid) or "every judged challenger answer valid")
    out["shadow_quality"] = GateResult(name="shadow_quality", passed=not bad_quality,
                                       detail="; ".join(bad_quality or notes_quality))
    out["shadow_latency"] = GateResult(
        name="shadow_latency", passed=not bad_latency,
        detail=f"(+{judge.latency_tolerance:.0%} allowed) " + "; ".join(bad_latency or notes_latency))
    out["shadow_cost"] = GateResult(
        name="shadow_cost", passed=not bad_cost,
        detail=f"(+{judge.cost_tolerance:.0%} allowed) " + "; ".join(bad_cost or notes_cost))
    return out


def _judge_cost(r: RoleShadow, tolerance: float, budget: float | None) -> tuple[bool, str]:
    """Tokens per request against the champion's on the same pairs, then the USD budget if one is set."""
    ch, cp = r.challenger_cost, r.champion_cost
    if ch is None or cp is None or ch.tokens is None or cp.tokens is None:
        return False, f"{r.role}: no pair recorded token usage for both sides: cost not measured"
    note = f"{r.role}: {ch.tokens:.1f} tokens per request vs champion {cp.tokens:.1f} (n={ch.n})"
    ok = ch.tokens <= cp.tokens * (1 + tolerance)
    if budget is not None:
        if ch.usd is None:
            return False, note + f"; a budget of ${budget:g} per request needs serving.cost_per_1m_tokens"
        note += f"; ${ch.usd:.6f} per request vs budget ${budget:g}"
        ok = ok and ch.usd <= budget
    elif ch.usd is not None:
        note += f"; ${ch.usd:.6f} vs ${cp.usd:.6f} per request"
    return ok, note


def judge_challenger(domain: Domain, challenger: str, read: PairsRead,
                        turns: Mapping[str, Mapping[str, Any]]) -> ShadowReport:
    """Judge `challenger` on its pairs; `turns` maps request ids to captured Turns (labels, slices)."""
    by_role: dict[str, list[ShadowPair]] = defaultdict(list)
    for p in read.pairs:
        by_role[p.role].append(p)
    roles = {role: _role_shadow(domain, role, ps, turns) for role, ps in sorted(by_role.items()) if role in domain.roles}
    min_pairs = domain.config.improvement.shadow.min_pairs
    decided = all(roles.get(role) is not None and roles[role].pairs >= min_pairs for role in shadowed_roles(domain))
    return ShadowReport(
        domain=domain.name, challenger=challenger,
        champions=sorted({p.champion.version for p in read.pairs if p.champion.version}),
        days=read.days, created_at=datetime.now(timezone.utc), lines_read=read.lines,
        other_versions=read.other_versions, rejected=len(read.rejected),
        rejected_examples=read.rejected[:MAX_REJECTED_SHOWN], min_pairs=min_pairs, decided=decided,
        roles=roles, gates=_gates(domain, roles, decided))


def shadow_markdown(report: ShadowReport) -> str:
    """Per role and slice, the table a person reads on the asset's page."""
    lines = ["| role | slice | pairs | agreement | challenger right | champion right |", "|---|---|---|---|---|---|"]
    for r in report.roles.values():
        lines.append(f"| {r.role} | all | {r.pairs} | {r.agreement} | {r.challenger_correct} | {r.champion_correct} |")
        for s in r.slices:
            lines.append(f"| {r.role} | {s.key}={s.value} | {s.pairs} | {s.agreement} | {s.challenger_correct} "
                         f"| {s.champion_correct} |")
    lines += ["", "| role | side | latency p50 / p95 (ms) | tokens per request | USD per request |", "|---|---|---|---|---|"]
    for r in report.roles.values():
        for side, lat, cost in (("champion", r.champion_latency_ms, r.champion_cost),
                                ("challenger", r.challenger_latency_ms, r.challenger_cost)):
            tokens = "-" if cost is None or cost.tokens is None else f"{cost.tokens:.1f} (n={cost.n})"
            usd = "-" if cost is None or cost.usd is None else f"{cost.usd:.6f}"
            lines.append(f"| {r.role} | {side} | {_ms(lat.p50)} / {_ms(lat.p95)} | {tokens} | {usd} |")
    return "\n".join(lines)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"
