"""Read every call back the way the platform will: the `openai_chat` source, then the role's contract.

`slm validate` rejects a domain folder whose seed has one row the source cannot map or one answer its
role's contract refuses, and the dataset stage would quarantine such a row. So before anything is
written, each role's seed lines go through the real reader (`slm_platform.data.sources.read_source`)
and `RoleContract.validate_output`; a call that fails either is rejected here, with its log line
and the reader's or the contract's reason, and the seed keeps only what reads back clean.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from slm_platform.config.models import Role
from slm_platform.data.sources import Rejected, read_source
from slm_platform.domain.contract import RoleContract
from slm_platform.scaffold.calls import RAW_LIMIT, RejectedLine
from slm_platform.scaffold.roles import InferredRole

ERRORS_SHOWN = 3  # contract errors quoted per rejected call


def contract_of(role: InferredRole) -> RoleContract:
    """The role's contract as `Domain.load` will build it from the files `slm init` writes."""
    spec = Role(id=role.id, kind=role.kind, system_prompt="(checked separately)",
                output_schema="output.json" if role.kind == "structured" else None,
                tools="tools.json" if role.kind == "tool_call" else None)
    return RoleContract(spec, "(checked separately)", role.schema, role.tools)


def verify_calls(domain: str, roles: list[InferredRole], workdir: Path) -> tuple[list[InferredRole], list[RejectedLine]]:
    """The roles with the calls that read back clean (roles left with none are dropped), and the rest."""
    workdir.mkdir(parents=True, exist_ok=True)
    role_ids = [r.id for r in roles]
    kept_roles: list[InferredRole] = []
    rejected: list[RejectedLine] = []
    for role in roles:
        contract = contract_of(role)
        file = workdir / f"{role.id}.jsonl"
        write_seed(file, role)
        items = list(read_source(file, "openai_chat", domain=domain, source="seed", role=role.id, roles=role_ids))
        if len(items) != len(role.calls):  # one line, one item: anything else is a reader change to look at
            raise RuntimeError(f"openai_chat read {len(items)} rows from {len(role.calls)} lines of {file}")
        kept = []
        for call, item in zip(role.calls, items):
            raw = json.dumps(call.record, ensure_ascii=False)[:RAW_LIMIT]
            if isinstance(item, Rejected):
                reason = f"the openai_chat source cannot read it: {item.reason}"
                rejected.append(RejectedLine(call.line, "unreadable", reason, raw))
                continue
            errors = contract.validate_output(item.get("output"))
            if errors:
                more = f" (and {len(errors) - ERRORS_SHOWN} more)" if len(errors) > ERRORS_SHOWN else ""
                reason = f"the answer breaks the contract of role {role.id}: " + "; ".join(errors[:ERRORS_SHOWN]) + more
                rejected.append(RejectedLine(call.line, "bad_answer", reason, raw))
                continue
            kept.append(call)
        if kept:
            kept_roles.append(replace(role, calls=kept))
    return kept_roles, rejected


def write_seed(file: Path, role: InferredRole) -> None:
    """One seed line per call, in log order (the `openai_chat` shape, read as is)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w", encoding="utf-8") as f:
        for call in role.calls:
            f.write(json.dumps(call.record, ensure_ascii=False) + "\n")
