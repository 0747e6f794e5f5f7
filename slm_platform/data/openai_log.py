"""A Turn as the OpenAI chat-completion log line an application kept while a hosted LLM answered it.

The inverse of the `openai_chat` source (data/sources.py): `{"request": {...}, "response": {...}}`
with the role's contract stated the way the application stated it to the hosted model
(`response_format: {type: json_schema, json_schema: {name, strict, schema}}` for a structured role,
`tools` + `tool_calls` for a tool-calling one) and the turn's slices as `metadata.slice`. It is what
`slm simulate --format openai_chat` writes, so `slm init --from` can be tried on a log of any size
before a team has exported its own.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from slm_platform.domain.contract import RoleContract
from slm_platform.domain.render import render_messages

HOSTED_MODEL = "gpt-4.1-mini"  # the model the log says answered; only a label (no call is made)


def schema_name(role_id: str) -> str:
    """`triage` -> `Triage`, `plan_turn` -> `PlanTurn` (slm init turns it back into the role id)."""
    return "".join(part.capitalize() for part in role_id.split("_"))


def hosted_call(turn: dict[str, Any], contract: RoleContract, *, created: int) -> dict[str, Any]:
    """One log line for `turn` (its input, and its output as the hosted model's answer)."""
    messages = render_messages(contract, turn["input"])  # named input fields as the renderer shows them
    messages[0] = {"role": "system", "content": contract.system_prompt.strip()}  # tools go in `tools`, not here
    request: dict[str, Any] = {"model": HOSTED_MODEL, "messages": messages}
    output = turn["output"]
    call_id = hashlib.sha256(str(turn.get("id")).encode()).hexdigest()[:24]
    if contract.kind == "tool_call":
        request["tools"] = contract.tools
        request["tool_choice"] = "required"
        message = {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{call_id}", "type": "function",
            "function": {"name": output["name"], "arguments": json.dumps(output.get("arguments") or {})}}]}
        finish = "tool_calls"
    else:
        request["response_format"] = {"type": "json_schema", "json_schema": {
            "name": schema_name(contract.id), "strict": True, "schema": contract.output_schema}}
        message = {"role": "assistant", "content": json.dumps(output, ensure_ascii=False), "refusal": None}
        finish = "stop"
    response = {"id": f"chatcmpl-{call_id}", "object": "chat.completion", "created": created,
                "model": HOSTED_MODEL, "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    line: dict[str, Any] = {"request": request, "response": response}
    slices = (turn.get("meta") or {}).get("slice")
    if slices:
        line["metadata"] = {"slice": slices}
    return line
