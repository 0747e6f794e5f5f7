"""The Turn record: the one contract every stage reads and writes (capture, dataset, predictions).

A Turn is one JSON object per line. In hot loops turns travel as plain dicts (parsing a pydantic
model per row costs more than the rest of the data stage); `Turn` is the schema that says what a
valid dict looks like and is used wherever a row enters the platform from outside.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LabelSource = Literal["gold", "capture", "teacher", "oracle"]
LABEL_SOURCES: tuple[str, ...] = ("gold", "capture", "teacher", "oracle")


class Labels(BaseModel):
    """Every source's label for one turn, kept side by side so agreement can be measured."""

    model_config = ConfigDict(extra="forbid")
    gold: dict[str, Any] | None = None  # human / ground truth shipped with the source
    capture: dict[str, Any] | None = None  # what the hosted model answered in production
    teacher: dict[str, Any] | None = None  # the teacher LLM's answer
    oracle: dict[str, Any] | None = None  # the domain's deterministic oracle (the floor)


class Meta(BaseModel):
    model_config = ConfigDict(extra="allow")
    captured_at: str | None = None  # ISO-8601 UTC
    source: str | None = None  # source name from the config, or "capture"
    slice: dict[str, Any] = Field(default_factory=dict)  # categorical keys for slicing and strata
    dup_group: str | None = None
    cluster: int | None = None


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    domain: str
    role: str
    input: dict[str, Any]
    output: dict[str, Any] | None = None
    labels: Labels = Field(default_factory=Labels)
    label_source: LabelSource | None = None
    meta: Meta = Field(default_factory=Meta)


def canonical_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): the form used for exact match, hashes and dedupe."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stable_hash(text: str, length: int = 16) -> str:
    """Short, process-independent hash (Python's hash() is salted per process)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=length // 2).hexdigest()


def turn_id(domain: str, role: str, input_: dict[str, Any]) -> str:
    """Content-derived id for sources that carry none: the same input always gets the same id."""
    return stable_hash(f"{domain}\x1f{role}\x1f{canonical_json(input_)}")


def input_text(turn: dict[str, Any]) -> str:
    """The user-visible text of a turn's input, used for dedupe, clustering and drift."""
    inp = turn.get("input") or {}
    messages = inp.get("messages")
    if isinstance(messages, list):
        return "\n".join(
            str(m.get("content") or "") for m in messages if isinstance(m, dict) and m.get("role") != "system"
        )
    return "\n".join(str(v) for v in inp.values() if isinstance(v, (str, int, float)))
