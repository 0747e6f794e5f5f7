"""Human-readable config errors: file, field path, what was found, what was expected.

Users read these in a terminal or the Dagster UI, so they never carry a traceback and always say
where to look (`slm.config.yaml: eval.metrics[2].target: found 'high', expected a number`).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Problem:
    file: str
    path: str  # dotted field path with [i] for list items; "" for the whole file
    found: str
    expected: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: found {self.found}, expected {self.expected}"


class ConfigError(Exception):
    """One or more problems in a domain's files. `str()` lists them, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Issue:
    """One finding of a model validator, `at` relative to the field or model it validates."""

    at: tuple[str | int, ...]
    found: str
    expected: str


class Invalid(ValueError):
    """Raised by validators so that the error points at the exact field (not the whole block).

    pydantic keeps the exception in the error's context; `from_validation_error` appends each
    issue's `at` to pydantic's location and uses its found/expected text as written.
    """

    def __init__(self, *issues: Issue):
        self.issues = list(issues)
        super().__init__("; ".join(f"{field_path(i.at) or '(here)'}: found {i.found}, expected {i.expected}" for i in issues))


def field_path(loc: tuple[Any, ...], data: Any = None) -> str:
    """('eval', 'metrics', 2, 'target') -> 'eval.metrics[2].target'.

    With the document at hand, an int is written `[i]` only where it indexes a list (a mapping
    with an integer key gets `.1`).
    """
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int) and not isinstance(node, dict):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
        node = _step(node, part)
    return out


def describe(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_MISSING = object()


def _step(node: Any, part: Any) -> Any:
    try:
        return node[part]
    except (KeyError, IndexError, TypeError):
        return _MISSING


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        data = _step(data, part)
    return data


# pydantic appends union-member / function-validator tags to some locations ('function-after[...]',
# 'list[str]'); they are not keys of the document.
_TAG = re.compile(r"^(function-\w+\[.*\]|[\w-]+\[.*\])$")


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and bool(_TAG.match(part))


def _find_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`list[Role]`, `Role | None`, `dict[str, X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def _is_model(annotation: Any) -> bool:
    """True for `Model` and `Model | None`; False for containers of models."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_model(a) for a in args if a is not type(None))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_at(root: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at `loc` (None when unknown)."""
    current: type[BaseModel] | None = root
    container: Any = None  # annotation of a list/dict field whose item comes next
    for part in loc:
        if current is not None:
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            if _is_model(field.annotation):
                current, container = _find_model(field.annotation), None
            else:
                current, container = None, field.annotation
        elif container is not None:
            current, container = _find_model(container), None
            if current is None:
                return None
        else:
            return None
    return current


def _expected_from_message(kind: str, msg: str, ctx: dict[str, Any]) -> str:
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "a mapping"
    if kind == "list_type":
        return "a list"
    if kind == "string_pattern_mismatch" and "pattern" in ctx:
        return f"a string matching {ctx['pattern']}"
    if kind == "too_short" and "min_length" in ctx:
        n = ctx["min_length"]
        return f"at least {n} item{'s' if n != 1 else ''}"
    msg = msg.removeprefix("Value error, ").removeprefix("Input should be ").split(", unable to parse")[0]
    return (msg[0].lower() + msg[1:]) if msg else kind


def from_validation_error(
    file: Path | str, exc: ValidationError, data: Any, model: type[BaseModel] | None = None,
    removed_keys: dict[str, str] | None = None,
) -> ConfigError:
    """Turn pydantic's errors into Problems, reading the offending value from the raw document.

    `model` is the root model that was validated; with it, an unknown key's message lists the keys
    that block accepts. `removed_keys` (field path -> why) explains an unknown key that an earlier
    version accepted.
    """
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not _is_tag(p))
        kind = err["type"]
        msg = err["msg"]
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, Invalid):
            for issue in error.issues:
                problems.append(Problem(str(file), field_path(loc + issue.at, data), issue.found, issue.expected))
            continue
        if loc and loc[-1] == "[key]":  # a mapping key of the wrong type
            loc = loc[:-1]
            found, expected = f"key {describe(loc[-1]) if loc else '?'}", "string keys"
            problems.append(Problem(str(file), field_path(loc[:-1], data), found, expected))
            continue
        value = _lookup(data, loc)
        if kind == "missing":
            found, expected = "nothing", "a value (this field is required)"
        elif kind == "extra_forbidden":
            found, expected = f"unknown key {describe(loc[-1])}", "one of the documented keys (check the spelling)"
            block = _model_at(model, loc[:-1])
            if block is not None:
                keys = list(block.model_fields)
                expected = "one of the keys " + ", ".join(keys)
                close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
                if close:
                    expected += f" (did you mean {close[0]!r}?)"
            if removed_keys and (why := removed_keys.get(".".join(str(p) for p in loc if not isinstance(p, int)))):
                found += f", removed because {why}"
        elif kind == "invalid_key":
            found, expected = f"key {describe(loc[-1]) if loc else '?'}", "string keys"
            loc = loc[:-1]
        else:
            found = "nothing" if value is _MISSING else describe(value)
            expected = _expected_from_message(kind, msg, err.get("ctx") or {})
        problems.append(Problem(str(file), field_path(loc, data), found, expected))
    # pydantic reports a bad mapping key twice (the key, and the value under it): keep one
    unique = list(dict.fromkeys(problems))
    return ConfigError(unique)
