"""Seal-Tools single-call questions as BFCL-shaped Turns: a second tool-calling source, in another
signature style (camelCase APIs, Python type names, LLM-written questions), so a general
tool-calling adapter is not trained or judged on BFCL's formatting alone.

A row offers the gold tool plus `distractors` others from the tool file, drawn with a fixed seed
and preferring the gold's `field`. `group` partitions the tool file (a split by function passes the
side of the split): distractors come only from the gold's own group, so no function of one side is
ever offered on the other. The gold call becomes BFCL's possible-answer form, so the same contract
(`data.bfcl.bfcl_contract`), guided grammar and AST metric serve both sources.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slm_platform.data.sources import Rejected, bfcl_function_to_tool

SOURCE = "seal_tools"
CATEGORY = "seal_tools"


def _coerce(value: Any, declared: str) -> tuple[bool, Any]:
    """Seal-Tools writes some numbers as strings ("85" for an int): convert a value that parses exactly
    as the declared type; anything else is not that type."""
    if declared == "str":
        return isinstance(value, str), value
    if declared == "bool":
        return isinstance(value, bool), value
    if declared == "int":
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return True, int(value)
        return type(value) is int, value
    if declared == "float":
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return type(value) in (int, float), value
    return False, value


def seal_function(tool: dict[str, Any]) -> dict[str, Any]:
    """A Seal-Tools tool line -> a BFCL function description (`bfcl_function_to_tool` maps the types)."""
    return {"name": tool["api_name"], "description": tool.get("api_description") or "",
            "parameters": {"type": "dict",
                           "properties": {name: {"type": p.get("type", "str"), "description": p.get("description", "")}
                                          for name, p in (tool.get("parameters") or {}).items()},
                           "required": list(tool.get("required") or [])}}


def load_seal_tools(queries: Path, tools: Path, *, distractors: int = 3, seed: int = 0,
                    group: Callable[[str], str] = lambda name: "") -> tuple[list[dict[str, Any]], list[Rejected]]:
    """(turns, rejected): every single-call question whose gold call fits its tool's declared
    parameters; the rest rejected with the reason (calls != 1, unknown API, argument not declared or
    not of the declared type, a required argument missing)."""
    catalog = {}
    for line in tools.open(encoding="utf-8"):
        if line.strip():
            tool = json.loads(line)
            catalog[tool["api_name"]] = tool
    by_group: dict[str, list[str]] = {}
    for name in sorted(catalog):
        by_group.setdefault(group(name), []).append(name)
    turns: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    for lineno, line in enumerate(queries.open(encoding="utf-8"), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        where = f"{queries.name}:{lineno}"

        def reject(reason: str, row: dict[str, Any] = row, where: str = where) -> None:
            rejected.append(Rejected(SOURCE, where, reason, json.dumps(row)[:2000], value=row))

        calls = row.get("calling") or []
        if len(calls) != 1:
            reject(f"needs {len(calls)} calls; this role expects exactly one")
            continue
        api, given = calls[0].get("api"), calls[0].get("parameters") or {}
        tool = catalog.get(api)
        if tool is None:
            reject("the called API is not in the tool file")
            continue
        declared = tool.get("parameters") or {}
        arguments, problem = {}, None
        for name, value in given.items():
            if name not in declared:
                problem = f"argument {name!r} is not a parameter of {api}"
                break
            ok, arguments[name] = _coerce(value, declared[name].get("type", "str"))
            if not ok:
                problem = f"argument {name!r} is not of type {declared[name].get('type')}, as {api} declares"
                break
        missing = sorted(set(tool.get("required") or []) - set(given))
        if problem is None and missing:
            problem = f"required argument {missing[0]!r} of {api} is missing"
        if problem is not None:
            reject(problem)
            continue
        others = [n for n in by_group[group(api)] if n != api]
        rng = random.Random(f"{seed}:{row['id']}")
        same_field = [n for n in others if catalog[n].get("field") == tool.get("field")]
        picked = rng.sample(same_field, min(distractors, len(same_field)))
        rest = [n for n in others if n not in picked]
        picked += rng.sample(rest, min(distractors - len(picked), len(rest)))
        offered = [api, *picked]
        rng.shuffle(offered)
        truth = [{api: {name: [value] for name, value in arguments.items()}}]
        turns.append({
            "id": f"seal-{row['id']}",
            "domain": "bfcl",
            "role": "bfcl",
            "input": {"messages": [{"role": "user", "content": row["query"]}],
                      "tools": [bfcl_function_to_tool(seal_function(catalog[n])) for n in offered]},
            "output": {"name": api, "arguments": arguments},
            "labels": {"gold": {"name": api, "arguments": arguments}},
            "label_source": "gold",
            "meta": {"source": SOURCE, "slice": {"category": CATEGORY},
                     "bfcl": {"ground_truth": truth, "category": CATEGORY}},
        })
    return turns, rejected


__all__ = ["load_seal_tools", "seal_function"]
