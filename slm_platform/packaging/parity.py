"""The merged weights checked against the adapter they came from: the same logits on fixed sequences.

Why: merging rewrites every targeted weight (``W + B @ A * alpha / r``); a wrong scale, a module
left out or a dtype slip gives a model that loads and answers but is not the one that was
evaluated. The check runs teacher-forced forward passes of (base + the unmerged peft adapter) and
of the merged folder *reloaded from disk*, on a few of the version's own test turns encoded exactly
as training encodes them (the renderer, the chat template, the answer and EOS), and compares every
logit. Both run in float32 on the CPU, where merging only reorders float arithmetic: on SmolLM2-135M
with a random rank-8 adapter (larger weight deltas than a trained one) the measured maximum is about
1e-4 over ~800 tokens, so the tolerance of 1e-3 leaves 10x room for rounding and none for a wrong
weight (one weight of 134M moved by 0.5 already fails it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_platform.domain import Domain
from slm_platform.domain.render import render_messages
from slm_platform.training.data import RowTooLong, encode_turn, prompt_ids

MAX_LOGIT_DIFF = 1e-3  # max |logit difference| allowed, float32
TURNS_PER_ROLE = 3  # test turns per role, the first by id: a fixed set for a given dataset version
FALLBACK_TEXT = "Hello, I need help with my account. Please answer in JSON."  # a role with no test turn


class MergeParityError(ValueError):
    """The merged folder does not compute what base + adapter computes (or tokenizes differently)."""


@dataclass(frozen=True)
class MergeParity:
    max_abs_diff: float  # measured: max |logit(merged) - logit(base + adapter)| over every position
    tolerance: float
    sequences: int
    tokens: int
    turn_ids: tuple[str, ...]  # the test turns compared ("<role>:fallback" for a fixed prompt)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs_logit_diff": self.max_abs_diff, "tolerance": self.tolerance, "sequences": self.sequences,
                "tokens": self.tokens, "turn_ids": list(self.turn_ids), "dtype": "float32"}


def parity_sequences(domain: Domain, test_split: Path, tokenizer: Any, max_seq_len: int,
                     per_role: int = TURNS_PER_ROLE) -> list[tuple[str, list[int]]]:
    """(turn id, token ids) of the first `per_role` test turns of each role, as training encodes them."""
    by_role: dict[str, list[dict[str, Any]]] = {r: [] for r in domain.roles}
    if test_split.is_file():
        with open(test_split, encoding="utf-8") as f:
            rows = sorted((json.loads(line) for line in f if line.strip()), key=lambda t: str(t.get("id")))
        for turn in rows:
            if turn.get("role") in by_role and turn.get("output") is not None:
                by_role[turn["role"]].append(turn)
    out: list[tuple[str, list[int]]] = []
    for role, turns in by_role.items():
        contract = domain.role(role)
        taken = 0
        for turn in turns:
            if taken == per_role:
                break
            try:
                out.append((str(turn["id"]), encode_turn(tokenizer, contract, turn, max_seq_len).input_ids))
                taken += 1
            except (RowTooLong, KeyError, TypeError):
                continue
        if taken == 0:
            messages = render_messages(contract, {"messages": [{"role": "user", "content": FALLBACK_TEXT}]})
            out.append((f"{role}:fallback", prompt_ids(tokenizer, messages)))
    return out


def measure_merge_parity(base_dir: Path, adapter_dir: Path, merged_dir: Path,
                         sequences: list[tuple[str, list[int]]], *, tolerance: float = MAX_LOGIT_DIFF) -> MergeParity:
    """Compare the logits; `MergeParityError` (with the measured value) when they differ beyond `tolerance`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if not sequences:
        raise MergeParityError("no sequence to compare the merged model on")
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32), str(adapter_dir)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    worst, tokens = 0.0, 0
    with torch.inference_mode():
        # One discarded pass through each model first: once (2026-12-02, a 2-core AVX-512 Xeon) the first
        # forward pass of a process differed by 0.0093 on a sequence that measures 0.00009 on every
        # later pass (the same models, files and tokens); the merge is judged on the steady state.
        warm = torch.tensor([sequences[0][1][:32]])
        merged(input_ids=warm), reference(input_ids=warm)
        for _, ids in sequences:
            x = torch.tensor([ids])
            diff = (merged(input_ids=x).logits - reference(input_ids=x).logits).abs().max().item()
            worst = max(worst, diff) if diff == diff else float("inf")  # NaN counts as a failure
            tokens += len(ids)
    del reference, merged
    parity = MergeParity(worst, tolerance, len(sequences), tokens, tuple(i for i, _ in sequences))
    if not parity.passed:
        raise MergeParityError(f"{merged_dir}: merged logits differ from base + adapter by {worst:.3g} "
                               f"(max {tolerance:g}) over {tokens} tokens of {len(sequences)} sequences")
    return parity


def check_tokenizer(base_dir: Path, form_dir: Path, domain: Domain) -> None:
    """A packaged form's tokenizer and chat template must render every role as the base model's does."""
    from transformers import AutoTokenizer

    base_tok, form_tok = AutoTokenizer.from_pretrained(str(base_dir)), AutoTokenizer.from_pretrained(str(form_dir))
    for role, contract in domain.roles.items():
        messages = render_messages(contract, {"messages": [{"role": "user", "content": FALLBACK_TEXT}]})
        if prompt_ids(base_tok, messages) != prompt_ids(form_tok, messages):
            raise MergeParityError(f"{form_dir}: the packaged tokenizer renders role {role!r} differently "
                                   f"from the base model's")
