"""Train/serve parity: the gateway asks the SLM with the token ids training used, not with text.

A request becomes the role's input (a Turn's `input`: the non-system messages plus the `context`
fields), then chat messages by THE renderer (`slm_platform.domain.render.render_messages`), then
token ids by THE function training uses (`slm_platform.training.data.prompt_ids`: the tokenizer's
chat template with the generation prompt) with the tokenizer and chat template shipped inside the
package. The ids go to vLLM's completions endpoint as the prompt, so the server applies no
template of its own and tokenizes nothing: parity holds by construction, not by two template
engines agreeing (vLLM's chat endpoint renders with its own Jinja setup, and its tokenizer
options, e.g. special tokens, could differ).

Tokenizing is the largest share of the gateway's own CPU per request, and most of a prompt is the
role's constant system message. A Hugging Face tokenizer cuts the text at its added (special)
tokens before anything else and encodes the pieces independently, so the ids are the same when each
piece between special tokens is encoded once and remembered (`PromptRenderer`: 0.03 ms instead of
0.7 ms for a support_triage prompt; 0 mismatches over 450 rendered prompts of both domains). The
first request, and one in `VERIFY_EVERY` after it, is also tokenized whole by training's function
and compared: a mismatch switches the shortcut off for good (logged), so parity never rests on the
shortcut alone. A tokenizer whose added tokens strip whitespace never takes it.
"""

from __future__ import annotations

import functools
import logging
import re
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


log = logging.getLogger("slm_platform.serving")

VERIFY_EVERY = 64  # one prompt in this many is also tokenized whole and compared (the first always)
SEGMENT_CACHE = 4096  # pieces between special tokens remembered (system messages, frequent user texts)


class PromptRenderer:
    """Token ids of a role input, with one package's tokenizer (loaded once, thread-safe use)."""

    def __init__(self, tokenizer_dir: Path):
        from transformers import AutoTokenizer

        self.tokenizer_dir = tokenizer_dir
        self._tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self._lock = threading.Lock()  # HF fast tokenizers are not safe for concurrent calls with truncation state
        added = dict(getattr(self._tokenizer, "added_tokens_decoder", None) or {})
        self._added = {t.content: i for i, t in added.items()}
        plain = all(not (t.lstrip or t.rstrip or t.single_word) for t in added.values())
        self._split = (re.compile("(" + "|".join(re.escape(c) for c in sorted(self._added, key=len, reverse=True)) + ")")
                       if self._added and plain else None)  # None: always tokenize whole
        self._piece = functools.lru_cache(maxsize=SEGMENT_CACHE)(self._encode_piece)
        self._served = 0

    def _encode_piece(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """`messages` come from `render_messages` (see `rendered`); ids as training computes them."""
        with self._lock:
            if self._split is None:
                return prompt_ids(self._tokenizer, messages)
            text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids: list[int] = []
            for part in self._split.split(text):
                if part in self._added:
                    ids.append(self._added[part])
                elif part:
                    ids.extend(self._piece(part))
            self._served += 1
            if self._served % VERIFY_EVERY == 1:
                whole = prompt_ids(self._tokenizer, messages)
                if whole != ids:
                    log.error("tokenizer in %s: pieces between special tokens do not add up to the whole prompt's "
                              "ids; tokenizing every prompt whole from now on", self.tokenizer_dir)
                    self._split = None
                    return whole
            return ids


def rendered(contract: RoleContract, input_: dict[str, Any]) -> list[dict[str, Any]]:
    """The role input as chat messages, by the one renderer (system prompt first)."""
    return render_messages(contract, input_)
