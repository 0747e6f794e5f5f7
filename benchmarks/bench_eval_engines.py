"""Evaluation speed: the vLLM engine vs transformers `generate` baselines, and the cost of guided
decoding — measured side by side in one run on the same test turns.

    python benchmarks/bench_eval_engines.py [--n 200] [--domain support_triage] [--max-tokens 96]
                                            [--batch-size 16] [--skip-sequential]

Engines, all greedy, on the same rendered prompts with the same max_tokens:

* **vLLM guided / unconstrained** — the managed vLLM CPU server in the dtype it picks
  (`default_dtype()`: bfloat16 where the CPU has AVX512-BF16/AMX), requests in flight concurrently.
* **transformers batched** — the fair baseline: `model.generate` on left-padded batches of
  `--batch-size` prompts (sorted by length, so padding stays small), in **the same dtype vLLM ran in**.
* **transformers sequential** — the weaker baseline the earlier figures used: one request at a time
  in float32, as a naive script does it. Slow; `--skip-sequential` leaves it out.

Targets (issue 3): vLLM >= 10x faster than the baseline (compared like for like, both
unconstrained); guided <= 1.2x unconstrained. Server start-up is measured and printed separately
(it is paid once per eval session, and the compile cache makes later starts faster).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def completion_length(row, stop_ids: set[int], pad_id: int | None) -> int:
    """Generated tokens up to and including the first stop token (as vLLM's `usage` counts them)."""
    for n, token in enumerate(row.tolist(), start=1):
        if token in stop_ids:
            return n
    return len(row) if pad_id is None else int((row != pad_id).sum())


def transformers_generate(model_dir: Path, reqs, *, dtype: str, batch_size: int, max_tokens: int) -> tuple[int, int]:
    """Greedy `generate` over `reqs` in batches of `batch_size` (1 = one at a time); (tokens, valid JSON)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slm_platform.evals.metrics import parse_output

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"  # generation continues from the right end of every row
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    model.eval()
    eos = model.generation_config.eos_token_id
    stop_ids = {tok.eos_token_id, *(eos if isinstance(eos, (list, tuple)) else [eos])} - {None}
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(stop_ids)
    prompts = [tok.apply_chat_template(r.messages, add_generation_prompt=True, return_dict=True)["input_ids"]
               for r in reqs]
    if batch_size > 1:
        prompts.sort(key=len, reverse=True)
    tokens = valid = 0
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = tok.pad({"input_ids": prompts[start:start + batch_size]}, return_tensors="pt")
            out = model.generate(**batch, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad_id)
            for row in out[:, batch["input_ids"].shape[1]:]:
                n = completion_length(row, stop_ids, pad_id)
                tokens += n
                valid += parse_output(tok.decode(row[:n], skip_special_tokens=True)) is not None
    return tokens, valid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--domain", default="support_triage")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight (default: the engine's)")
    parser.add_argument("--batch-size", type=int, default=16, help="batched transformers baseline (0: skip it)")
    parser.add_argument("--skip-sequential", action="store_true", help="skip the slow one-at-a-time fp32 loop")
    args = parser.parse_args()

    from slm_platform import settings
    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain import Domain
    from slm_platform.evals.metrics import parse_output
    from slm_platform.inference.types import requests_for
    from slm_platform.inference.vllm_engine import VLLMServer
    from slm_platform.models import resolve_base_model

    domain = Domain.load(ROOT / "domains" / args.domain)
    turns = [t for t in domain.simulator().simulate(args.n * 2, seed=99)][: args.n]
    store = ArtifactStore(settings.artifacts_root())
    model_dir = resolve_base_model(domain.config.model.candidates[0], store).local_dir

    def build(guided: bool):
        reqs = []
        for t in turns:
            reqs += requests_for(domain.role(t["role"]), [t["input"]], guided=guided, max_tokens=args.max_tokens)
        return reqs

    guided_reqs, free_reqs = build(True), build(False)
    rows = []  # (label, seconds, tokens, valid)

    t0 = time.perf_counter()
    with VLLMServer(model_dir, max_model_len=2048) as server:
        startup = time.perf_counter() - t0
        vllm_dtype = server.dtype
        with server.engine(**({"concurrency": args.concurrency} if args.concurrency else {})) as engine:
            engine.generate(guided_reqs[:4])  # warm the grammar and the prefix cache path
            for label, reqs in (("vLLM guided", guided_reqs), ("vLLM unconstrained", free_reqs)):
                start = time.perf_counter()
                results = engine.generate(reqs)
                seconds = time.perf_counter() - start
                tokens = sum(r.completion_tokens for r in results)
                valid = sum(parse_output(r.text) is not None for r in results)
                rows.append((f"{label} ({vllm_dtype})", seconds, tokens, valid))
                print(f"{rows[-1][0]}: {seconds:.1f}s", flush=True)

    baselines = []
    if args.batch_size > 0:
        baselines.append((f"transformers batched ({vllm_dtype}, {args.batch_size})", vllm_dtype, args.batch_size))
    if not args.skip_sequential:
        baselines.append(("transformers sequential (float32)", "float32", 1))
    for label, dtype, batch_size in baselines:
        start = time.perf_counter()
        tokens, valid = transformers_generate(model_dir, free_reqs, dtype=dtype, batch_size=batch_size,
                                              max_tokens=args.max_tokens)
        rows.append((label, time.perf_counter() - start, tokens, valid))  # model load included: ~1 s
        print(f"{label}: {rows[-1][1]:.1f}s", flush=True)

    print(f"\n{args.n} {args.domain} test turns, max_tokens {args.max_tokens}, greedy; "
          f"vLLM start-up {startup:.0f}s (not counted)")
    print(f"{'engine':<40}{'seconds':>9}{'req/s':>8}{'tok/s':>8}{'tokens':>8}{'valid JSON':>12}")
    for label, seconds, tokens, valid in rows:
        print(f"{label:<40}{seconds:>9.1f}{args.n / seconds:>8.2f}{tokens / seconds:>8.0f}{tokens:>8}"
              f"{valid:>8}/{args.n}")
    by = {r[0].split(" (")[0]: r[1] for r in rows}
    per_token = {r[0].split(" (")[0]: r[1] / max(1, r[2]) for r in rows}
    print(f"\nguided / unconstrained time: {by['vLLM guided'] / by['vLLM unconstrained']:.2f}x (target <= 1.2x); "
          f"per generated token: {per_token['vLLM guided'] / per_token['vLLM unconstrained']:.2f}x "
          "(unconstrained output is mostly invalid and runs to max_tokens)")
    # like for like: unconstrained vs unconstrained, greedy, the same prompts and max_tokens (token
    # counts above); the guided figure is what an eval run actually pays
    print(f"{'vLLM speed-up over':<40}{'unconstrained':>14}{'guided':>9}")
    for label, _, _, _ in rows[2:]:
        key = label.split(" (")[0]
        fair = "  <- fair baseline" if "batched" in key else "  (weaker baseline)"
        print(f"{label:<40}{by[key] / by['vLLM unconstrained']:>13.1f}x{by[key] / by['vLLM guided']:>8.1f}x{fair}")
    print("target: vLLM >= 10x the baseline, both unconstrained")


if __name__ == "__main__":
    main()
