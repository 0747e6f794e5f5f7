"""Small helpers shared by every error message that points into a JSON document."""

from __future__ import annotations

from collections.abc import Iterable


def format_json_path(prefix: str, parts: Iterable[object]) -> str:
    """('items', 2, 'tool') under 'output' -> 'output.items[2].tool'."""
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
