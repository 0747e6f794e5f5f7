"""Automatic demotion: roll the champion back when it fails too often on live traffic.

The evidence is the gateway's own capture files (the inbox, written every second): each answered
request records its route and the routes passed over (`meta.fallbacks`, "<route>:<reason>"). A
champion attempt is a request, while that version was the role's champion (`meta.champion`), that
the SLM answered, or that fell back after the SLM failed (`slm:timeout`, `slm:error`,
`slm:invalid`) or because the route's breaker was open (`slm:breaker_open`: the breaker opens on
the champion's own failures in a row, so what it turns away fell back because of the champion; not
counting it would leave a champion that fails every call with a window that never fills). Requests
that never reached the SLM for another reason (vLLM not ready) are not attempts. Over the last
`improvement.demotion.window` attempts since the current champion was promoted, a failure share above `improvement.demotion.max_error_rate` demotes it: the
shadow-free, one-pointer-write rollback of the registry, recorded with this verdict as its reason.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SLM_FAILURES = ("timeout", "error", "invalid", "breaker_open")


@dataclass(frozen=True)
class DemotionVerdict:
    role: str
    champion: str
    attempts: int  # champion attempts in the window
    failures: Counter  # reason -> count
    demote: bool
    reason: str

    @property
    def error_rate(self) -> float | None:
        return sum(self.failures.values()) / self.attempts if self.attempts else None


def _when(text: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def gateway_rows(inbox: Path, since: datetime) -> Iterator[dict[str, Any]]:
    """Gateway capture rows in the inbox captured at or after `since`, day folders from its day on.
    A half-written last line (the gateway is appending) is skipped, not an error."""
    since = since.replace(microsecond=since.microsecond // 1000 * 1000)  # captured_at has milliseconds
    first = f"date={since.date().isoformat()}"
    for folder in sorted(p for p in inbox.glob("date=*") if p.is_dir() and p.name >= first):
        for file in sorted(folder.glob("gateway-*.jsonl")):
            with open(file, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    at = _when((row.get("meta") or {}).get("captured_at"))
                    if at is not None and at >= since:
                        yield row


def _slm_outcome(row: Mapping[str, Any]) -> str | None:
    """'ok', a failure reason, or None when the SLM was not attempted."""
    meta = row.get("meta") or {}
    for passed_over in meta.get("fallbacks") or []:
        route, _, reason = str(passed_over).partition(":")
        if route == "slm":
            return reason if reason in SLM_FAILURES else None
    return "ok" if meta.get("route") == "slm" else None


def judge_champion(rows: Iterable[Mapping[str, Any]], *, model: str, role: str, champion: str, window: int,
                   max_error_rate: float) -> DemotionVerdict:
    """The verdict over the last `window` champion attempts of `model` (<domain>/<role>) in `rows`."""
    outcomes = [o for r in rows if (r.get("meta") or {}).get("model") == model
                and (r.get("meta") or {}).get("champion") == champion and (o := _slm_outcome(r)) is not None]
    recent = outcomes[-window:]
    failures = Counter(o for o in recent if o != "ok")
    rate = sum(failures.values()) / len(recent) if recent else 0.0
    counts = ", ".join(f"slm:{k} {v}" for k, v in sorted(failures.items())) or "none"
    if len(recent) < window:
        return DemotionVerdict(role, champion, len(recent), failures, False,
                               f"{len(recent)} of {window} champion calls so far; failures {counts}")
    demote = rate > max_error_rate
    return DemotionVerdict(
        role, champion, len(recent), failures, demote,
        f"champion {champion} failed {sum(failures.values())} of its last {window} calls ({rate:.0%}; {counts}) "
        f"{'>' if demote else '≤'} improvement.demotion.max_error_rate {max_error_rate:.0%}")
