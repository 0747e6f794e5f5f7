"""Train/serve parity: the gateway asks the SLM with the token ids training used, not with text.

A request becomes the role's input (a Turn's `input`: the non-system messages plus the `context`
fields), then chat messages by THE renderer (`slm_platform.domain.render.render_messages`), then
token ids by THE function training uses (`slm_platform.training.data.prompt_ids`: the tokenizer's
chat template with the generation prompt) with the tokenizer and chat template shipped inside the
package. The ids go to vLLM's completions endpoint as the prompt, so the server applies no
template of its own and tokenizes nothing: parity holds by construction, not by two template
engines agreeing (vLLM's chat endpoint renders with its own Jinja setup, and its tokenizer
options, e.g. special tokens, could differ).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from slm_platform.domain.contract import RoleContract
from slm_platform.domain.render import render_messages
from slm_platform.serving.protocol import ChatCompletionRequest
from slm_platform.training.data import prompt_ids


def role_input(request: ChatCompletionRequest) -> dict[str, Any]:
    """The request as a Turn's `input`: what training, evaluation and capture see."""
    messages = []
    for m in request.messages:
        if m.role in ("system", "developer"):  # the role's system prompt replaces the client's
            continue
        msg: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.tool_calls:
            msg["tool_calls"] = [t.model_dump(mode="json", exclude_none=True) for t in m.tool_calls]
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        if m.name:
            msg["name"] = m.name
        messages.append(msg)
    return {"messages": messages, **(request.context or {})}


class PromptRenderer:
    """Token ids of a role input, with one package's tokenizer (loaded once, thread-safe use)."""

    def __init__(self, tokenizer_dir: Path):
        from transformers import AutoTokenizer

        self.tokenizer_dir = tokenizer_dir
        self._tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self._lock = threading.Lock()  # HF fast tokenizers are not safe for concurrent calls with truncation state

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """`messages` come from `render_messages` (see `rendered`); ids as training computes them."""
        with self._lock:
            return prompt_ids(self._tokenizer, messages)


def rendered(contract: RoleContract, input_: dict[str, Any]) -> list[dict[str, Any]]:
    """The role input as chat messages, by the one renderer (system prompt first)."""
    return render_messages(contract, input_)
