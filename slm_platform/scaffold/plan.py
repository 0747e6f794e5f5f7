"""What `slm init` is about to write, decided once: file names, counts, and sizes estimated from the calls.

The templates only format a `DomainPlan`; nothing in it is read from the log again, and nothing from
the log reaches it except counts, line numbers, schema and tool names, the system prompts (their own
files) and the hosted model's name (a comment in the config, for the teacher).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass

from slm_platform.domain.render import TOOL_INSTRUCTION
from slm_platform.scaffold.calls import RejectedLine
from slm_platform.scaffold.roles import InferredRole, PromptChoice, choose_prompt

CHARS_PER_TOKEN = 3.0  # a cautious average for English text and JSON (SmolLM2's tokenizer: ~3.5-4)
MESSAGE_OVERHEAD = 8  # chat-template tokens per message
MIN_ROWS = (50, 5, 5)  # slm_platform.config.models.MinRows defaults, written into the config
DEFAULT_PROMPT = ("Answer with one JSON object that follows the contract exactly, and nothing else.\n")


@dataclass(frozen=True)
class RolePlan:
    role: InferredRole
    prompt: PromptChoice
    prompt_file: str
    contract_file: str
    seed_file: str
    source_name: str

    @property
    def id(self) -> str:
        return self.role.id

    @property
    def calls(self) -> int:
        return len(self.role.calls)

    @property
    def lines(self) -> str:
        return line_ranges([c.line for c in self.role.calls])


@dataclass(frozen=True)
class DomainPlan:
    name: str
    log_name: str  # the log's file name, safe for a comment
    lines_read: int
    rejected: list[RejectedLine]
    roles: list[RolePlan]
    hosted_model: str | None  # the most common request.model, when it looks like a model name
    max_seq_len: int
    max_tokens: int

    @property
    def kept(self) -> int:
        return sum(r.calls for r in self.roles)

    def warnings(self) -> list[str]:
        out = []
        for r in self.roles:
            p = r.prompt
            if p.text is None:
                out.append(f"role {r.id}: no call had a system message; {r.prompt_file} holds a generic prompt to edit")
            elif p.variants > 1:
                out.append(f"role {r.id}: {p.variants} different system prompts; {r.prompt_file} is the most common "
                           f"({p.used_by} of {r.calls} calls; the others on line{'s' if len(p.other_lines) > 1 else ''} "
                           f"{line_ranges(p.other_lines)})")
        train = math.floor(self.kept * 0.8)
        if train < MIN_ROWS[0]:
            out.append(f"{self.kept} calls kept: the dataset gate (data.min_rows, {MIN_ROWS[0]} train rows) stops "
                       "`slm run` before training until captured traffic or a longer log adds rows")
        return out


def plan_domain(name: str, log_name: str, lines_read: int, roles: list[InferredRole],
                rejected: list[RejectedLine]) -> DomainPlan:
    single = len(roles) == 1
    plans = [RolePlan(role=r, prompt=choose_prompt(r.calls), prompt_file=f"prompts/{r.id}.md",
                      contract_file=f"contracts/{r.id}.{'output' if r.kind == 'structured' else 'tools'}.json",
                      seed_file="data/seed.jsonl" if single else f"data/seed.{r.id}.jsonl",
                      source_name="seed" if single else f"seed_{r.id}")
             for r in roles]
    models = Counter(c.model for r in roles for c in r.calls if c.model)
    model = models.most_common(1)[0][0] if models else None
    if model is not None and not re.fullmatch(r"[A-Za-z0-9._:/@+\-]{1,80}", model):
        model = None
    seq, answer = 0, 0
    for p in plans:
        prompt_chars = len(p.prompt.text or DEFAULT_PROMPT)
        if p.role.kind == "tool_call":
            prompt_chars += len(TOOL_INSTRUCTION) + len(json.dumps([t["function"] for t in p.role.tools or []]))
        for c in p.role.calls:
            messages = len(c.record["request"]["messages"]) + 1
            chars = prompt_chars + c.input_chars + c.answer_chars
            seq = max(seq, math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD * messages)
            answer = max(answer, math.ceil(c.answer_chars / CHARS_PER_TOKEN))
    return DomainPlan(
        name=name, log_name=comment_safe(log_name), lines_read=lines_read, rejected=rejected, roles=plans,
        hosted_model=model,
        max_seq_len=min(4096, max(256, _round_up(seq * 1.1, 64))),
        max_tokens=min(2048, max(256, _round_up(answer * 1.5, 64))),
    )


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def comment_safe(text: str, limit: int = 80) -> str:
    """Text that can sit in a YAML comment: one line, printable, at most `limit` characters."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def line_ranges(lines: list[int], limit: int = 6) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10' (the first `limit` ranges, then how many lines more)."""
    ranges: list[tuple[int, int]] = []
    for n in sorted(lines):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    shown = [f"{a}-{b}" if b > a else str(a) for a, b in ranges[:limit]]
    rest = sum(b - a + 1 for a, b in ranges[limit:])
    return ", ".join(shown) + (f" and {rest} more" if rest else "")
