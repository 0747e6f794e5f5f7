"""Dataset rows -> token batches for causal-LM fine-tuning (prompt masked, completion learned).

Three small, separately testable pieces:

* :func:`encode_turn` renders one Turn with THE renderer (``slm_platform.domain.render``) and the
  tokenizer's chat template, exactly as serving will ask the model: prompt =
  ``apply_chat_template(render_messages(...), add_generation_prompt=True)``, completion =
  ``render_target(...)`` + EOS. Labels are -100 on the prompt, so the loss is paid on the answer
  only. Over-long rows lose prompt tokens from the LEFT (the answer and the end of the question
  stay); a completion that alone exceeds ``max_seq_len`` cannot be learned and the row is skipped.
* :func:`length_grouped_batches` orders examples so a batch holds sequences of similar length
  (sorted inside seeded "megabatches", then the batches shuffled): padding is then nearly free.
  :func:`random_batches` is the plain shuffled order, for comparison.
* :func:`collate` pads a batch to its own longest row (dynamic padding), or to a fixed length.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index

__all__ = [
    "IGNORE_INDEX", "Example", "EncodeStats", "RowTooLong", "encode_turn", "encode_rows", "read_jsonl",
    "length_grouped_batches", "random_batches", "collate", "padding_ratio", "prompt_ids", "prefix_group",
]


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt positions; the completion's ids (EOS included) elsewhere
    prompt_tokens_dropped: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def completion_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


class RowTooLong(ValueError):
    """The completion alone is longer than max_seq_len: no truncation can keep the answer whole."""


@dataclass
class EncodeStats:
    rows: int = 0
    kept: int = 0
    truncated: int = 0  # rows that lost prompt tokens (from the left)
    skipped: Counter = field(default_factory=Counter)  # reason -> rows

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "kept": self.kept, "truncated": self.truncated,
                "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values())}


def prefix_group(example: Example, tokens: int = 48) -> int:
    """A key for rows that open with the same prompt (the same system message and catalog)."""
    return hash(tuple(example.input_ids[:tokens]))


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat-template prompt, ending with the assistant header (generation prompt)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    if ids and isinstance(ids[0], list):  # some tokenizers return a batch of one
        ids = ids[0]
    return list(ids)


def encode_turn(tokenizer: Any, contract: Any, turn: dict[str, Any], max_seq_len: int,
                inputs: dict[str, Any] | None = None) -> Example:
    """One Turn -> input ids and labels; raises :class:`RowTooLong` when the answer cannot fit.

    ``inputs`` replaces ``turn["input"]`` for rendering (a row that carries its own tool catalog
    renders it once, in the system message, so it is removed from the input).
    """
    from slm_platform.domain.render import render_messages, render_target

    prompt = prompt_ids(tokenizer, render_messages(contract, inputs if inputs is not None else turn.get("input") or {}))
    # Tokenized separately from the prompt: the template ends the prompt with "assistant\n", so the
    # boundary is a newline and the split tokenization equals what generation continues from.
    completion = tokenizer(render_target(contract, turn["output"]), add_special_tokens=False)["input_ids"]
    completion = list(completion) + [tokenizer.eos_token_id]  # learn to stop: EOS is a target
    if len(completion) > max_seq_len:
        raise RowTooLong(f"completion is {len(completion)} tokens, max_seq_len is {max_seq_len}")
    room = max_seq_len - len(completion)
    dropped = max(0, len(prompt) - room)
    prompt = prompt[dropped:]  # keep the END of the prompt: the question right before the answer
    return Example(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion, dropped)


def read_jsonl(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if limit is not None and n >= limit:
                return
            if line.strip():
                yield json.loads(line)


def encode_rows(rows: Iterable[dict[str, Any]], tokenizer: Any, domain: Any, max_seq_len: int,
                stats: EncodeStats | None = None) -> tuple[list[Example], EncodeStats]:
    """Encode every row; skipped rows are counted by reason, never silently dropped."""
    stats = stats or EncodeStats()
    out: list[Example] = []
    for row in rows:
        stats.rows += 1
        if row.get("output") is None:
            stats.skipped["no_output"] += 1
            continue
        inputs = None
        if (row.get("input") or {}).get("tools"):  # the row brings its own catalog (BFCL, chat logs with tools)
            from slm_platform.data.bfcl import bfcl_contract, bfcl_input

            contract, inputs = bfcl_contract(row), bfcl_input(row)
        elif domain is None:
            stats.skipped["no_contract"] += 1  # no domain to look the role up in, and no tools on the row
            continue
        else:
            try:
                contract = domain.role(row.get("role") or domain.default_role)
            except KeyError:
                stats.skipped["unknown_role"] += 1
                continue
        try:
            ex = encode_turn(tokenizer, contract, row, max_seq_len, inputs)
        except RowTooLong:
            stats.skipped["completion_longer_than_max_seq_len"] += 1
            continue
        stats.kept += 1
        stats.truncated += ex.prompt_tokens_dropped > 0
        out.append(ex)
    return out, stats


# --- batch order ----------------------------------------------------------------------------------
def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int = 0,
                           megabatch_mult: int = 50, groups: Sequence[Any] | None = None) -> list[list[int]]:
    """Batches of indices with similar lengths, in an order that depends only on (seed, epoch).

    The data is shuffled, cut into megabatches of ``megabatch_mult * batch_size`` rows, each sorted
    by length (longest first) and cut into batches; then the batches are shuffled. Randomness is
    kept at two levels (which rows meet in a megabatch, which batch comes when) while the padding
    inside a batch is small. The batch holding the longest row goes first, so a too-large batch
    runs out of memory at step 1, not after an hour. With ``groups`` (e.g. which prompt a row opens
    with), rows are sorted by group first, so a batch holds one group and its common prefix can be
    computed once (see ``train_lora.shared_prefix_len``).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = max(1, megabatch_mult * batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega].tolist(),  # stable: ties keep the shuffle
                       key=(lambda i: (groups[i], -lengths[i])) if groups is not None else (lambda i: -lengths[i]))
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    perm = rng.permutation(len(batches)).tolist()
    batches = [batches[i] for i in perm]
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
    return batches


def random_batches(n: int, batch_size: int, seed: int, epoch: int = 0) -> list[list[int]]:
    """The plain baseline: one seeded shuffle, cut into batches."""
    order = np.random.default_rng([seed, epoch]).permutation(n).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def padding_ratio(batches: Iterable[Sequence[int]], lengths: Sequence[int], pad_to: int | None = None) -> float:
    """Share of pad tokens in the padded batches (0 = no padding)."""
    real = padded = 0
    for b in batches:
        width = pad_to or max(lengths[i] for i in b)
        real += sum(lengths[i] for i in b)
        padded += width * len(b)
    return 1.0 - real / padded if padded else 0.0


def collate(examples: Sequence[Example], pad_id: int, pad_to: int | None = None) -> dict[str, Any]:
    """Right-pad to the batch's longest row (or to ``pad_to``): input_ids, attention_mask, labels."""
    import torch

    width = pad_to or max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e)
        ids[r, :n] = torch.tensor(e.input_ids)
        labels[r, :n] = torch.tensor(e.labels)
        mask[r, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
