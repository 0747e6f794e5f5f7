"""BFCL question/answer files as an evaluation set: Turns plus a per-row tool-call contract.

Each BFCL row offers its own functions, so the contract (and with it the prompt's tool catalog
and the guided-decoding schema) is built per row from `input.tools`; the tools are then removed
from the input so the renderer shows them once, in the system message, like any catalog.

`split_by_function` holds out whole functions (by name and by parameter schema), so a tool-calling
adapter is judged on APIs it has never seen; `shared_functions` checks a split for that leak.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from slm_platform.config.models import Role
from slm_platform.data.sources import Rejected, read_source
from slm_platform.domain.contract import RoleContract
from slm_platform.records import connected_groups, stable_hash

SYSTEM_PROMPT = (
    "You are an expert in composing function calls. Given a question and a set of possible functions, "
    "call the one function that answers the question, with the argument values stated or implied by the "
    "question. Use the exact parameter names of the function."
)


def load_bfcl(questions: Path, answers: Path | None = None) -> tuple[list[dict[str, Any]], list[Rejected]]:
    turns, rejected = [], []
    for item in read_source(questions, "bfcl", domain="bfcl", source=questions.stem, role="bfcl", answers=answers):
        if isinstance(item, Rejected):
            rejected.append(item)
        else:
            item["output"] = item["labels"]["gold"]
            item["label_source"] = "gold"
            turns.append(item)
    return turns, rejected


@lru_cache(maxsize=4096)
def _contract(tools_json: str) -> RoleContract:
    role = Role(id="bfcl", kind="tool_call", system_prompt="(built in)", tools="(per row)")
    return RoleContract(role, SYSTEM_PROMPT, tools=json.loads(tools_json))


def bfcl_contract(turn: dict[str, Any]) -> RoleContract:
    return _contract(json.dumps(turn["input"].get("tools") or []))


def bfcl_input(turn: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in turn["input"].items() if k != "tools"}


def offered_functions(turn: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(names, parameter schemas) of the functions a row offers (a schema as canonical JSON; one
    without parameters says nothing about a function, so it is not counted)."""
    tools = [t["function"] for t in turn["input"]["tools"]]
    return ({t["name"].lower() for t in tools},
            {json.dumps(t["parameters"], sort_keys=True) for t in tools if (t.get("parameters") or {}).get("properties")})


def split_by_function(turns: list[dict[str, Any]], eval_share: float, val_share: float = 0.05
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Groups of rows joined by a shared function name or parameter schema (union-find), dealt whole
    in hash order to eval until it holds `eval_share` of the rows, then to val, the rest to train:
    (train, val, eval). A group too big for eval (BFCL `multiple` rows chain into one of 295) trains."""

    def keys(turn: dict[str, Any]) -> list[str]:
        names, schemas = offered_functions(turn)
        return [f"n:{n}" for n in sorted(names)] + [f"s:{s}" for s in sorted(schemas)]

    groups = connected_groups(turns, keys)
    targets = {"test": round(eval_share * len(turns)), "val": round(val_share * len(turns))}
    sides: dict[str, list[dict[str, Any]]] = {"test": [], "val": [], "train": []}
    for key in sorted(groups, key=lambda k: stable_hash(str(k), 8)):
        rows = groups[key]
        side = next((s for s in ("test", "val") if len(sides[s]) + len(rows) <= targets[s]), "train")
        sides[side] += rows
    return sides["train"], sides["val"], sides["test"]


def shared_functions(training: list[dict[str, Any]], held_out: list[dict[str, Any]]) -> list[str]:
    """Ids of held-out rows that offer a function training offers too (same name, or same parameter
    schema under another name): empty for a split by function."""
    names: set[str] = set()
    schemas: set[str] = set()
    for turn in training:
        n, s = offered_functions(turn)
        names |= n
        schemas |= s
    return [t["id"] for t in held_out if offered_functions(t)[0] & names or offered_functions(t)[1] & schemas]
