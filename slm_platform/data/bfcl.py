"""BFCL question/answer files as an evaluation set: Turns plus a per-row tool-call contract.

Each BFCL row offers its own functions, so the contract (and with it the prompt's tool catalog
and the guided-decoding schema) is built per row from `input.tools`; the tools are then removed
from the input so the renderer shows them once, in the system message, like any catalog.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from slm_platform.config.models import Role
from slm_platform.data.sources import Rejected, read_source
from slm_platform.domain.contract import RoleContract

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
