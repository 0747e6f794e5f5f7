"""The one renderer: (role, input) -> chat messages, and output -> target text.

Training, evaluation and serving all call these functions, so the model is always asked the same
question in the same words (train/serve parity). A Turn's input is `{"messages": [...]}` (what an
application sends through the OpenAI client) plus optional named context fields (slot state, for
example), which are shown to the model as a JSON block ahead of the last user message.
"""

from __future__ import annotations

import json
from typing import Any

from slm_platform.domain.contract import RoleContract

# The rendering rules' version: packages record it so a server can refuse to render a model's
# prompts with different rules than it was trained with. Bump it when any output of this module
# changes for the same (role, input) or output.
RENDERER_VERSION = 1

TOOL_INSTRUCTION = (
    "You can call exactly one of these tools. Answer with a single JSON object "
    '{"name": <tool name>, "arguments": {...}} and nothing else.\nTools:\n'
)


def system_message(contract: RoleContract) -> str:
    text = contract.system_prompt.strip()
    if contract.kind == "tool_call":
        catalog = [t.get("function", t) for t in contract.tools or []]
        text += "\n\n" + TOOL_INSTRUCTION + json.dumps(catalog, ensure_ascii=False)
    return text


def render_messages(contract: RoleContract, input_: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages for a role's input, system prompt first."""
    messages = [dict(m) for m in input_.get("messages", []) if m.get("role") != "system"]
    context = {k: v for k, v in input_.items() if k != "messages"}
    if context:
        block = "Context:\n" + json.dumps(context, ensure_ascii=False, sort_keys=True)
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
        if last_user is None:
            messages.append({"role": "user", "content": block})
        else:
            messages[last_user]["content"] = f"{block}\n\n{messages[last_user].get('content') or ''}"
    return [{"role": "system", "content": system_message(contract)}, *messages]


def render_target(contract: RoleContract, output: dict[str, Any]) -> str:
    """The completion the model is trained to produce, keys in the order guided decoding emits."""
    ordered = order_like_schema(output, contract.guided_schema() if contract.kind == "structured" else None)
    if contract.kind == "tool_call":
        params = contract.tool_parameters().get(output.get("name"), {})
        ordered = {"name": output.get("name"), "arguments": order_like_schema(output.get("arguments"), params)}
    return json.dumps(ordered, ensure_ascii=False)


def order_like_schema(value: Any, schema: dict[str, Any] | None) -> Any:
    """Reorder object keys to follow the schema's `properties` order (unknown keys last)."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        keys = [k for k in props if k in value] + [k for k in value if k not in props]
        return {k: order_like_schema(value[k], props.get(k)) for k in keys}
    if isinstance(value, list):
        items = schema.get("items")
        return [order_like_schema(v, items if isinstance(items, dict) else None) for v in value]
    return value
