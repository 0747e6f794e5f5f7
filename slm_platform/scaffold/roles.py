"""Roles from calls: one role per contract the application used.

Structured calls are grouped by their `json_schema` name, tool calls by their tool catalog (calls
whose catalogs share a tool belong to one role, whose catalog is the union). A role has exactly one
contract, so when calls disagree about it (one schema name with two different schemas, one tool
name with two different parameter schemas) `slm init` refuses and names the lines of each variant:
guessing which variant is current would train the model on a contract the application may no longer
use. Filter the log to one variant, or give the variants different names, and run it again.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from slm_platform.records import connected_groups
from slm_platform.scaffold.calls import Kind, LoggedCall
from slm_platform.scaffold.naming import role_id, tool_role_id, unique

LINES_SHOWN = 5  # line numbers listed per variant in a conflict message


@dataclass(frozen=True)
class InferredRole:
    id: str
    kind: Kind
    origin: str  # what the log calls it: 'json_schema "TicketTriage"' or 'tools get_weather, search_web'
    schema: dict[str, Any] | None  # structured
    tools: list[dict[str, Any]] | None  # tool_call: the union catalog, OpenAI tools format
    calls: list[LoggedCall]


@dataclass(frozen=True)
class PromptChoice:
    """The system prompt a role is written with: the most common one among its calls."""

    text: str | None  # None: no call had a system message
    used_by: int  # calls with exactly this prompt
    variants: int  # distinct system prompts seen (a call without one counts as a variant)
    other_lines: list[int]  # log lines of the calls with another (or no) prompt


class ContractConflict(Exception):
    """Calls disagree about one contract; `problems` says which, with the lines of each variant."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def infer_roles(calls: list[LoggedCall]) -> list[InferredRole]:
    """Structured roles first, then tool roles, each in the order of its first line."""
    problems: list[str] = []
    found: list[tuple[str, Kind, str, dict | None, list | None, list[LoggedCall]]] = []
    by_name: dict[str, list[LoggedCall]] = {}
    for c in calls:
        if c.kind == "structured":
            by_name.setdefault(c.schema_name or "", []).append(c)
    for name, group in by_name.items():
        variants = _variants(group, lambda c: _canonical(c.schema))
        if len(variants) > 1:
            problems.append(f"json_schema {json.dumps(name or '(unnamed)')} has {len(variants)} different schemas: "
                            + _variant_lines(variants))
            continue
        origin = f"json_schema {json.dumps(name)}" if name else "an unnamed json_schema"
        found.append((role_id(name, "structured_output"), "structured", origin, group[0].schema, None, group))
    for group in _tool_groups([c for c in calls if c.kind == "tool_call"]):
        catalog, conflicts = _union_catalog(group)
        problems += conflicts
        if not conflicts:
            names = [t["function"]["name"] for t in catalog]
            found.append((tool_role_id(_by_use(group, names)), "tool_call", "tools " + ", ".join(names), None,
                          catalog, group))
    if problems:
        raise ContractConflict(problems)
    ids = unique(f[0] for f in found)
    return [InferredRole(rid, kind, origin, schema, tools, group)
            for rid, (_, kind, origin, schema, tools, group) in zip(ids, found)]


def choose_prompt(calls: list[LoggedCall]) -> PromptChoice:
    counts = Counter(c.system_prompt for c in calls)
    named = [(n, p) for p, n in counts.most_common() if p is not None]
    if not named:
        return PromptChoice(None, 0, len(counts), [c.line for c in calls])
    used_by, text = named[0]
    return PromptChoice(text, used_by, len(counts), [c.line for c in calls if c.system_prompt != text])


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _variants(group: list[LoggedCall], key) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for c in group:
        out.setdefault(key(c), []).append(c.line)
    return out


def _variant_lines(variants: dict[str, list[int]]) -> str:
    parts = []
    for i, lines in enumerate(variants.values(), 1):
        more = len(lines) - LINES_SHOWN
        shown = ", ".join(map(str, lines[:LINES_SHOWN])) + (f" and {more} more" if more > 0 else "")
        parts.append(f"variant {i} on line{'s' if len(lines) > 1 else ''} {shown}")
    return "; ".join(parts)


def _tool_groups(calls: list[LoggedCall]) -> list[list[LoggedCall]]:
    """Calls whose catalogs share a tool name, transitively (union-find over tool names)."""
    groups = connected_groups(calls, lambda c: [t["function"]["name"] for t in c.tools])
    return list(groups.values())


def _union_catalog(group: list[LoggedCall]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every tool the calls offered, once; a tool whose parameters differ between calls is a conflict.
    The description is the most common one (a reworded description does not change the contract)."""
    order: list[str] = []
    params: dict[str, dict[str, list[int]]] = {}
    descriptions: dict[str, Counter] = {}
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for c in group:
        for tool in c.tools:
            fn = tool["function"]
            name = fn["name"]
            if name not in params:
                order.append(name)
            key = _canonical({"parameters": fn.get("parameters"), "strict": fn.get("strict")})
            params.setdefault(name, {}).setdefault(key, []).append(c.line)
            first.setdefault((name, key), fn)
            if isinstance(fn.get("description"), str):
                descriptions.setdefault(name, Counter())[fn["description"]] += 1
    catalog, problems = [], []
    for name in order:
        variants = params[name]
        if len(variants) > 1:
            problems.append(f"tool {json.dumps(name)} has {len(variants)} different parameter schemas: "
                            + _variant_lines(variants))
            continue
        fn = dict(first[(name, next(iter(variants)))])
        if name in descriptions:
            fn["description"] = descriptions[name].most_common(1)[0][0]
        ordered = {k: fn[k] for k in ("name", "description", "parameters", "strict") if k in fn}
        catalog.append({"type": "function", "function": ordered})
    return catalog, problems


def _by_use(group: list[LoggedCall], names: list[str]) -> list[str]:
    """Tool names, the most called first (ties: catalog order): the role is named after what it does most."""
    used: Counter = Counter()
    for c in group:
        message = c.record["response"]["choices"][0]["message"]
        calls = message.get("tool_calls") or [{"function": message.get("function_call") or {}}]
        fn = calls[0].get("function") if isinstance(calls[0], dict) else None
        if isinstance(fn, dict) and fn.get("name") in names:
            used[fn["name"]] += 1
    return sorted(names, key=lambda n: (-used[n], names.index(n)))
