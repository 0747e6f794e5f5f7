"""The Turn record: the one contract every stage reads and writes (capture, dataset, predictions).

A Turn is one JSON object per line. In hot loops turns travel as plain dicts (building a pydantic
model per row and reading fields off it costs more than the rest of the data stage); `Turn` is the
schema that says what a valid dict looks like, and `check_turn` validates a dict against it (no
model is kept) wherever a row enters the platform from outside: the sources and the capture ingest.

Rows from outside may carry personal data in any field, so `check_turn`'s messages name the field
and what was expected and never quote the value (the quarantine keeps the redacted row beside it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

LabelSource = Literal["gold", "capture", "teacher", "oracle"]
LABEL_SOURCES: tuple[str, ...] = ("gold", "capture", "teacher", "oracle")
ID_MAX = 256
ID_EXPECTED = f"an id (1-{ID_MAX} printable characters, no spaces)"


class Labels(BaseModel):
    """Every source's label for one turn, kept side by side so agreement can be measured."""

    model_config = ConfigDict(extra="forbid", strict=True)
    gold: dict[str, Any] | None = None  # human / ground truth shipped with the source
    capture: dict[str, Any] | None = None  # what the hosted model answered in production
    teacher: dict[str, Any] | None = None  # the teacher LLM's answer
    oracle: dict[str, Any] | None = None  # the domain's deterministic oracle (the floor)


class Meta(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    captured_at: str | None = None  # ISO-8601 UTC
    source: str | None = None  # source name from the config, or "capture"
    slice: dict[str, Any] = Field(default_factory=dict)  # categorical keys for slicing and strata
    dup_group: str | None = None
    cluster: int | None = None

    @field_validator("captured_at")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("an ISO-8601 timestamp") from None
        return value


class Turn(BaseModel):
    """A valid turn. Validated with context {"domain": name, "roles": ids} the row must also belong to
    that domain and name one of its roles (see `check_turn`). A validator's message is what the value
    should have been ("one of ['triage']"), never the value."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str
    domain: str
    role: str = Field(min_length=1)
    input: dict[str, Any]
    output: dict[str, Any] | None = None
    labels: Labels = Field(default_factory=Labels)
    label_source: LabelSource | None = None
    meta: Meta = Field(default_factory=Meta)

    @field_validator("id")
    @classmethod
    def _sane_id(cls, value: str) -> str:
        # printable and no space: an id is a key (dedupe groups, split leakage, file names), not text
        if not value or len(value) > ID_MAX or not value.isprintable() or " " in value:
            raise ValueError(ID_EXPECTED)
        return value

    @field_validator("domain")
    @classmethod
    def _of_domain(cls, value: str, info: ValidationInfo) -> str:
        want = (info.context or {}).get("domain")
        if want is not None and value != want:
            raise ValueError(f"{want!r} (the domain this source belongs to)")
        return value

    @field_validator("role")
    @classmethod
    def _of_roles(cls, value: str, info: ValidationInfo) -> str:
        roles = (info.context or {}).get("roles")
        if roles is not None and value not in roles:
            raise ValueError(f"one of {sorted(roles)}")
        return value


class TurnError(ValueError):
    """A row that is not a valid Turn. The message names fields and expectations, never a value."""

    def __init__(self, message: str, kind: str = "parse_error"):
        super().__init__(message)
        self.kind = kind  # "unknown_role" when the role is not one of the domain's, else "parse_error"


_FIELDS: dict[tuple[str, ...], tuple[str, ...]] = {  # where a loc may point -> the fields allowed there
    (): tuple(Turn.model_fields), ("labels",): tuple(Labels.model_fields), ("meta",): tuple(Meta.model_fields)}
_KNOWN = frozenset(name for names in _FIELDS.values() for name in names)
_EXPECTED = {"dict_type": "an object", "model_type": "an object", "string_type": "a string", "int_type": "an integer",
             "bool_type": "a boolean", "string_too_short": "a non-empty string"}
# a key quoted in a message: letters and underscores, lowercase first (no "@", ".", digits or spaces)
_SAFE_KEY = re.compile(r"[a-z_][A-Za-z_]{0,39}")


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages that must not quote the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def safe_key(key: Any) -> str:
    """A key from a row, quoted only when it looks like a field name (a key may be personal data too)."""
    return repr(key) if isinstance(key, str) and _SAFE_KEY.fullmatch(key) else "(name not shown)"


def _path(loc: tuple[Any, ...]) -> str:
    """The dotted field path of a pydantic loc, up to the first part that is not one of our fields."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, str) and part in _KNOWN:
            parts.append(part)
        elif isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            break
    return ".".join(parts).replace(".[", "[")


def _describe(err: Mapping[str, Any]) -> str:
    loc, kind = tuple(err["loc"]), err["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        where = f" in '{_path(parent)}'" if parent else ""
        allowed = ", ".join(_FIELDS.get(parent, ()))
        return f"unknown field {safe_key(loc[-1])}{where}; expected only {allowed}"
    path = _path(loc)
    if kind == "missing":
        return f"field '{path}' missing"
    if kind == "value_error":  # our validators: the right type, not an allowed value
        return f"field '{path}' is not {str(err['msg']).removeprefix('Value error, ')}"
    expected = _EXPECTED.get(kind) or str(err["msg"]).removeprefix("Input should be ")
    return f"field '{path}' is {json_type(err.get('input'))}; expected {expected}"


def check_turn(row: Mapping[str, Any], *, domain: str | None = None, roles: Collection[str] | None = None) -> None:
    """Raise `TurnError` unless `row` is a valid `Turn` (of `domain`, with a role among `roles` when given)."""
    try:
        Turn.model_validate(row, context={"domain": domain, "roles": roles})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=True)
        kind = "unknown_role" if any(tuple(e["loc"]) == ("role",) and e["type"] == "value_error"
                                     for e in errors) else "parse_error"
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise TurnError("; ".join(_describe(e) for e in errors[:3]) + more, kind) from None


def canonical_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): the form used for exact match, hashes and dedupe."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stable_hash(text: str, length: int = 16) -> str:
    """Short, process-independent hash (Python's hash() is salted per process)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=length // 2).hexdigest()


def sampled(turn_id: str, rate: float) -> bool:
    """Whether a turn id falls in a `rate` sample: the same answer in every process (capture at the
    gateway and at ingest, the loop day's reviewers), so samples of one id never disagree."""
    return int(stable_hash(turn_id, 8), 16) <= int(rate * 0xFFFFFFFF)


_T = TypeVar("_T")


def connected_groups(items: Iterable[_T], keys_of: Callable[[_T], Sequence[Hashable]]) -> dict[Hashable, list[_T]]:
    """Items that share a key, transitively (union-find), under their group's root key, groups in the
    order of their first item. Every item needs at least one key."""
    parent: dict[Hashable, Hashable] = {}

    def find(x: Hashable) -> Hashable:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keyed = [(item, keys_of(item)) for item in items]
    for _, (first, *rest) in keyed:
        for key in rest:
            parent[find(key)] = find(first)
        find(first)
    groups: dict[Hashable, list[_T]] = {}
    for item, keys in keyed:
        groups.setdefault(find(keys[0]), []).append(item)
    return groups


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
