"""Shadow pairs as typed values: what the gateway appends under `<domain>/shadow/<day>/` and what the
shadow report reads back.

One pair per shadowed request: the champion's answer (already sent to the caller) and the
challenger's answer to the same request, off the request path. A pair whose challenger failed is a
pair too (`error`: timeout, error, invalid; `shutdown` / `not_sent` when the gateway stopped before
the call ended or started, which says nothing about the challenger). Reading never drops a line
silently: a line that does not parse is counted with its file, line and reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from slm_platform.artifacts import ArtifactStore
from slm_platform.layout import shadow_dir

ChallengerError = Literal["timeout", "error", "invalid", "shutdown", "not_sent"]
NOT_JUDGED: tuple[str, ...] = ("shutdown", "not_sent")  # the gateway's doing, not the challenger's


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShadowSide(_Strict):
    version: str | None
    output: dict[str, Any] | None
    latency_ms: float | None
    validity: dict[str, bool] = {}
    error: ChallengerError | None = None
    detail: str | None = None
    tokens: int | None = None  # prompt + completion tokens vLLM reported (None: not reported)

    @property
    def valid(self) -> bool:
        """An answer that decoded and passed every contract check."""
        return self.output is not None and self.error is None and all(self.validity.values())


class ShadowPair(_Strict):
    request_id: str
    model: str  # <domain>/<role>
    day: str
    received_at: float
    champion: ShadowSide
    challenger: ShadowSide
    agreement: float | None  # 1.0 / 0.0: the two outputs equal as canonical JSON; None: no challenger output
    exact_match: float | bool | None  # the challenger scored against the champion's output as gold

    @property
    def role(self) -> str:
        return self.model.split("/", 1)[1]

    @property
    def judged(self) -> bool:
        """Counts against the challenger: it answered, or failed on its own (not a gateway stop)."""
        return self.challenger.error not in NOT_JUDGED


@dataclass
class PairsRead:
    pairs: list[ShadowPair] = field(default_factory=list)  # the challenger's pairs
    other_versions: int = 0  # pairs of another challenger (an earlier one, shadowed on the same days)
    rejected: list[str] = field(default_factory=list)  # "<file>:<line>: <why>"
    days: list[str] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return len(self.pairs) + self.other_versions + len(self.rejected)


def shadow_days(store: ArtifactStore, domain: str) -> list[str]:
    return store.object_names(f"{domain}/shadow", folders=True)


def _lines(store: ArtifactStore, domain: str, day: str) -> Iterator[tuple[str, int, str]]:
    rel = shadow_dir(domain, day)
    for name in store.object_names(rel):
        if not name.endswith(".jsonl"):
            continue
        text = store.read_object(rel, name).decode("utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"{rel}/{name}", i, line


def read_pairs(store: ArtifactStore, domain: str, challenger: str, days: Iterable[str] | None = None) -> PairsRead:
    """Every pair of `challenger` on `days` (default: every shadow day of the domain)."""
    out = PairsRead(days=sorted(days) if days is not None else shadow_days(store, domain))
    for day in out.days:
        for where, lineno, line in _lines(store, domain, day):
            try:
                pair = ShadowPair.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError) as e:
                first = e.errors()[0] if isinstance(e, ValidationError) else None
                why = (f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first
                       else f"not JSON ({e.msg})")
                out.rejected.append(f"{where}:{lineno}: {why}")
                continue
            if pair.challenger.version == challenger:
                out.pairs.append(pair)
            else:
                out.other_versions += 1
    return out
