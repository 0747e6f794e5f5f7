"""Role ids from what the log calls things: a json_schema name or the tools' names.

A role id is a key in Dagster, a file name and a Python function name (the oracle stub), so it
must match the config's NAME_RE, stay short and not be a Python keyword.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable

MAX_LEN = 40  # leaves room for "seed_" in source names (NAME_RE allows 63 characters)


def role_id(text: str | None, fallback: str) -> str:
    """'TicketTriage' -> 'ticket_triage'; 'extract-fields.v2' -> 'extract_fields_v2'."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text or "")
    s = re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")
    s = re.sub(r"_+", "_", s)[:MAX_LEN].rstrip("_")
    if not s:
        s = fallback
    if not s[0].isalpha():
        s = ("r_" + s)[:MAX_LEN].rstrip("_")
    if keyword.iskeyword(s):
        s += "_"
    return s


def tool_role_id(tool_names: list[str]) -> str:
    """One tool: its name; several: their shared leading words ('crm_get', 'crm_put' -> 'crm'), else the
    first two names joined with '_or_' (and '_etc' when there are more)."""
    if len(tool_names) == 1:
        return role_id(tool_names[0], "call_tool")
    words = [role_id(n, "tool").split("_") for n in tool_names]
    shared = []
    for parts in zip(*words):
        if len(set(parts)) != 1:
            break
        shared.append(parts[0])
    if shared and len("_".join(shared)) >= 3:
        return role_id("_".join(shared), "call_tool")
    joined = "_or_".join(role_id(n, "tool") for n in tool_names[:2]) + ("_etc" if len(tool_names) > 2 else "")
    return role_id(joined, "call_tool")


def unique(ids: Iterable[str]) -> list[str]:
    """The ids in order, a repeat suffixed _2, _3, ... (kept within MAX_LEN)."""
    out: list[str] = []
    for base in ids:
        candidate, n = base, 1
        while candidate in out:
            n += 1
            candidate = f"{base[:MAX_LEN - len(str(n)) - 1]}_{n}"
        out.append(candidate)
    return out
