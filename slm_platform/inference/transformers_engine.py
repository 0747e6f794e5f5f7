"""In-process fallback engine: transformers `generate`, batched, with xgrammar guided decoding.

- Batching: requests are grouped by LoRA adapter, sorted by prompt length (longest first) and cut
  into batches of `batch_size`, left-padded, so padding stays small. Results come back in input
  order.
- Guided decoding: each schema's grammar in the renderer's exact layout (`domain.grammar`) is
  compiled once by an `xgrammar.GrammarCompiler` built from the tokenizer (cached by schema); every guided row of a batch gets its own
  `GrammarMatcher`, and a logits processor applies the token bitmask row by row (rows without a
  schema are left alone), so a batch may mix schemas and unconstrained requests.
- Per-request `max_tokens` and `temperature` are honoured inside a shared batch by the same
  processor (a row past its budget may only emit the stop token; temperature 0 rows are greedy).
- LoRA: peft adapters are loaded by name at construction (or later with `load_adapter`); a batch
  runs with `set_adapter(name)`, or with adapters disabled for `adapter=None`.
- Token counts: `prompt_tokens` is the unpadded prompt length, `completion_tokens` the generated
  tokens up to and including the stop token (as vLLM's `usage` counts them).
- Latency: `latency_ms` is the wall time of the batch that produced the result: every request in
  a batch shares it, since that is how long its caller waited for that batch.
- Cost: there is no prefix cache, so every request pays the prefill of the whole prompt (system
  prompt included); vLLM caches the shared prefix, which is much of its advantage on long system
  prompts.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from pathlib import Path
from typing import Any

from slm_platform.domain.grammar import schema_grammar
from slm_platform.inference.types import GenerationRequest, GenerationResult, failed, parse_object


class TransformersEngine:
    name = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        adapter_dirs: dict[str, str | Path] | None = None,
        *,
        batch_size: int = 8,
        device: str = "cpu",
        dtype: str = "float32",
        num_threads: int | None = None,
    ):
        """`num_threads`: sets torch's intra-op threads for the process (None: leave it). On a
        shared, oversubscribed CPU 1 thread was ~5x faster per decode step than 2 (OpenMP threads
        waiting on each other); on an idle machine more threads help."""
        import torch
        import xgrammar as xgr
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {batch_size}")
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.tokenizer.padding_side = "left"
        if not self.tokenizer.chat_template:
            raise ValueError(f"{self.model_dir}: the tokenizer has no chat template")
        model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=getattr(torch, dtype))
        self.model: Any = model.to(self.device).eval()
        self.base_model = model
        self.adapters: dict[str, Path] = {}
        for name, path in (adapter_dirs or {}).items():
            self.load_adapter(name, path)

        gen = getattr(model, "generation_config", None)
        stop = {self.tokenizer.eos_token_id}
        eos = getattr(gen, "eos_token_id", None)
        stop |= set(eos if isinstance(eos, (list, tuple)) else [eos])
        self.stop_ids = sorted(i for i in stop if i is not None)
        if not self.stop_ids:
            raise ValueError(f"{self.model_dir}: no eos token: generation could never stop")
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]

        vocab_size = int(model.config.vocab_size)
        self._tokenizer_info = xgr.TokenizerInfo.from_huggingface(
            self.tokenizer, vocab_size=vocab_size, stop_token_ids=self.stop_ids)
        self._compiler = xgr.GrammarCompiler(self._tokenizer_info, max_threads=2)
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()  # one generate at a time: peft adapter state is global

    # -- adapters ---------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a peft LoRA adapter folder under `name` (requests select it with adapter=name)."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"adapter {name!r}: {path} has no adapter_config.json (not a peft adapter)")
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} is already loaded (from {self.adapters[name]})")
        if not self.adapters:
            self.model = PeftModel.from_pretrained(self.base_model, str(path), adapter_name=name).eval()
        else:
            self.model.load_adapter(str(path), adapter_name=name)
        self.adapters[name] = path

    # -- grammar ----------------------------------------------------------------------------------
    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema)  # property order matters: the grammar emits keys in schema order
        compiled = self._grammars.get(key)
        if compiled is None:
            compiled = self._compiler.compile_grammar(schema_grammar(schema))  # the renderer's layout, bounded
            self._grammars[key] = compiled
        return compiled

    # -- generation -------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], *, progress: bool = False) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        prompts: dict[int, list[int]] = {}
        groups: dict[str | None, list[int]] = {}
        for i, req in enumerate(requests):
            if req.adapter is not None and req.adapter not in self.adapters:
                results[i] = failed(req, f"unknown adapter {req.adapter!r}; loaded: {sorted(self.adapters)}")
                continue
            if req.schema is not None:
                try:
                    self._grammar(req.schema)
                except Exception as e:  # noqa: BLE001 - an unsupported schema fails that request only
                    results[i] = failed(req, f"guided decoding: cannot compile the schema ({type(e).__name__}: {e})")
                    continue
            text = self.tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
            prompts[i] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            groups.setdefault(req.adapter, []).append(i)

        batches: list[tuple[str | None, list[int]]] = []
        for adapter, idx in groups.items():
            idx.sort(key=lambda i: -len(prompts[i]))
            batches += [(adapter, idx[k:k + self.batch_size]) for k in range(0, len(idx), self.batch_size)]

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompts), desc=f"{self.name} generate", unit="req")
        with self._lock:
            try:
                for adapter, idx in batches:
                    for i, res in zip(idx, self._run_batch([requests[i] for i in idx], [prompts[i] for i in idx], adapter)):
                        results[i] = res
                    if bar is not None:
                        bar.update(len(idx))
            finally:
                if bar is not None:
                    bar.close()
        assert all(r is not None for r in results), "a request got no result"
        return results  # type: ignore[return-value]

    def _run_batch(self, reqs: list[GenerationRequest], prompts: list[list[int]],
                   adapter: str | None) -> list[GenerationResult]:
        import contextlib

        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        t0 = time.perf_counter()
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids):] = 1
        context = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        budgets = [max(1, r.max_tokens if r.max_tokens is not None else context - width) for r in reqs]
        processor = _BatchProcessor(
            [self._grammar(r.schema) if r.schema is not None else None for r in reqs],
            budgets, [r.temperature for r in reqs], width, self.stop_ids,
            self._tokenizer_info.vocab_size)
        sample = any(r.temperature > 0 for r in reqs)
        # no top-k / top-p (vLLM's defaults); per-row temperatures are applied by the processor
        config = GenerationConfig(
            max_new_tokens=max(budgets), do_sample=sample,
            **({"temperature": 1.0} if sample else {}), pad_token_id=self.pad_id, eos_token_id=self.stop_ids)
        if adapter is not None:
            self.model.set_adapter(adapter)
            ctx = contextlib.nullcontext()
        elif self.adapters:
            ctx = self.model.disable_adapter()
        else:
            ctx = contextlib.nullcontext()
        try:
            with ctx, torch.inference_mode():
                out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                          generation_config=config, logits_processor=LogitsProcessorList([processor]))
        except Exception as e:  # noqa: BLE001 - report on every request of the batch, keep going
            ms = (time.perf_counter() - t0) * 1000
            return [failed(r, f"transformers generate failed: {type(e).__name__}: {e}", ms) for r in reqs]
        ms = (time.perf_counter() - t0) * 1000
        results = []
        stops = set(self.stop_ids)
        for row, req in enumerate(reqs):
            gen = out[row, width:].tolist()
            end = next((k for k, t in enumerate(gen) if t in stops), None)
            if processor.forced_stop[row] or end is None:  # ran out of max_tokens
                completion = min(len(gen) if end is None else end, budgets[row])
                tokens, finish = gen[:completion], "length"
            else:
                tokens, completion, finish = gen[:end], end + 1, "stop"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append(GenerationResult(
                text=text, parsed=parse_object(text), prompt_tokens=len(prompts[row]), completion_tokens=completion,
                latency_ms=ms, finish_reason=finish, request_id=req.request_id))
        return results

    def close(self) -> None:
        self.model = None
        self.base_model = None
        self._grammars.clear()
        gc.collect()

    def __enter__(self) -> "TransformersEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _BatchProcessor:
    """Logits processor for one `generate` call: per-row grammar masks, budgets and temperatures."""

    def __init__(self, grammars: list[Any], budgets: list[int], temperatures: list[float], prompt_width: int,
                 stop_ids: list[int], vocab_size: int):
        import xgrammar as xgr

        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.budgets = budgets
        self.temperatures = temperatures
        self.prompt_width = prompt_width
        self.stop_ids = stop_ids
        self.stop_set = set(stop_ids)
        self.done = [False] * len(grammars)
        self.forced_stop = [False] * len(grammars)  # a row stopped by its max_tokens budget
        self.sampling = any(t > 0 for t in temperatures)
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size) if any(g is not None for g in grammars) else None
        self._xgr = xgr

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.prompt_width  # tokens generated so far
        guided_rows = []
        for row, matcher in enumerate(self.matchers):
            if step > 0 and not self.done[row]:
                token = int(input_ids[row, -1])
                if token in self.stop_set:
                    self.done[row] = True
                elif matcher is not None and not matcher.is_terminated():
                    matcher.accept_token(token)
            if self.done[row] or step >= self.budgets[row]:
                continue
            if matcher is not None and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, row)
                guided_rows.append(row)
        if guided_rows:
            device = scores.device
            on_cpu = scores if device.type == "cpu" else scores.cpu()
            self._xgr.apply_token_bitmask_inplace(on_cpu, self.bitmask, indices=guided_rows)
            scores = on_cpu.to(device)
        for row in range(len(self.matchers)):
            if self.done[row]:
                continue
            if step >= self.budgets[row]:
                # the row used its max_tokens inside a batch that goes on: it may only stop now
                # (the forced stop token is not part of its output; finish_reason "length")
                scores[row] = float("-inf")
                scores[row, self.stop_ids] = 0.0
                self.forced_stop[row] = True
            elif self.sampling:
                t = self.temperatures[row]
                if t > 0:
                    scores[row] = scores[row] / t
                else:  # greedy row inside a sampled batch
                    best = int(torch.argmax(scores[row]))
                    value = scores[row, best].clone()
                    scores[row] = float("-inf")
                    scores[row, best] = value
        return scores
