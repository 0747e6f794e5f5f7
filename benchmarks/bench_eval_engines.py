"""Evaluation speed: the vLLM engine vs a plain sequential transformers `generate` loop, and the
cost of guided decoding — measured side by side in one run on the same test turns.

    python benchmarks/bench_eval_engines.py [--n 200] [--domain support_triage] [--max-tokens 96]

Targets (issue 3): vLLM >= 10x faster than the sequential loop (compared like for like, both
unconstrained); guided <= 1.2x unconstrained.
Server start-up is measured and printed separately (it is paid once per eval session, and the
compile cache makes later starts faster). Every side gets the same rendered prompts and the same
max_tokens; the plain loop is greedy `model.generate` one request at a time, as a naive script
would do it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--domain", default="support_triage")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight (default: the engine's)")
    parser.add_argument("--skip-sequential", action="store_true", help="only the vLLM guided/unguided pair")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    rows = []

    t0 = time.perf_counter()
    with VLLMServer(model_dir, max_model_len=2048) as server:
        startup = time.perf_counter() - t0
        with server.engine(**({"concurrency": args.concurrency} if args.concurrency else {})) as engine:
            engine.generate(guided_reqs[:4])  # warm the grammar and the prefix cache path
            for label, reqs in (("vLLM guided", guided_reqs), ("vLLM unconstrained", free_reqs)):
                start = time.perf_counter()
                results = engine.generate(reqs)
                seconds = time.perf_counter() - start
                tokens = sum(r.completion_tokens for r in results)
                valid = sum(parse_output(r.text) is not None for r in results)
                rows.append((label, seconds, tokens, valid))

    if not args.skip_sequential:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        start = time.perf_counter()
        tokens = valid = 0
        with torch.inference_mode():
            for req in free_reqs:
                ids = tok.apply_chat_template(req.messages, add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True)
                out = model.generate(**ids, max_new_tokens=args.max_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                new = out[0, ids["input_ids"].shape[1]:]
                tokens += int(new.shape[0])
                valid += parse_output(tok.decode(new, skip_special_tokens=True)) is not None
        rows.append(("transformers sequential", time.perf_counter() - start, tokens, valid))

    print(f"{args.n} {args.domain} test turns, max_tokens {args.max_tokens}; vLLM start-up {startup:.0f}s (not counted)")
    print(f"{'engine':<26}{'seconds':>9}{'req/s':>8}{'tok/s':>8}{'valid JSON':>12}")
    for label, seconds, tokens, valid in rows:
        print(f"{label:<26}{seconds:>9.1f}{args.n / seconds:>8.2f}{tokens / seconds:>8.0f}{valid:>8}/{args.n}")
    by = {r[0]: r[1] for r in rows}
    ratio_guided = by["vLLM guided"] / by["vLLM unconstrained"]
    per_token = {r[0]: r[1] / max(1, r[2]) for r in rows}
    print(f"guided / unconstrained time: {ratio_guided:.2f}x (target <= 1.2x); per generated token: "
          f"{per_token['vLLM guided'] / per_token['vLLM unconstrained']:.2f}x "
          "(unconstrained output is mostly invalid and runs to max_tokens)")
    if "transformers sequential" in by:
        # like for like: both unconstrained, greedy, the same prompts and max_tokens (the token counts
        # are printed above); the guided figure is what an eval run actually pays
        same = by["transformers sequential"] / by["vLLM unconstrained"]
        print(f"vLLM speed-up over the sequential loop, both unconstrained: {same:.1f}x (target >= 10x)")
        print(f"vLLM guided (what evaluation runs) over the sequential loop: "
              f"{by['transformers sequential'] / by['vLLM guided']:.1f}x")


if __name__ == "__main__":
    main()
