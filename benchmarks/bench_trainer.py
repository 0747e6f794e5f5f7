"""LoRA trainer throughput vs two plain peft loops (dynamic padding, pad to max): same model, recipe, data, one run.

    python benchmarks/bench_trainer.py [--steps 20] [--rows 240] [--domain support_triage]
                                       [--model-store DIR] [key=value recipe overrides ...]

Simulates `--rows` tickets of the domain, publishes them as a dataset in a temporary store, then
runs three training loops for `--steps` optimizer steps each, one after the other, each in a fresh
subprocess (so peak memory is its own):

* **ours**    — `LoRATrainer` (the real `train_lora` recipe): length-grouped batches, dynamic
                padding, shared-prefix forward, logits only where the loss is.
* **dynamic** — the fair baseline: a plain peft loop, rows shuffled, `DataCollatorForSeq2Seq`
                padding each batch to its longest row (what `DataCollatorWithPadding` does),
                `model(**batch).loss`, AdamW, clip.
* **padded**  — the same loop with every batch padded to `max_seq_len` (the weaker baseline the
                earlier figures were measured against).

All three use the domain's recipe (LoRA r/alpha/targets, batch size, max_seq_len, lr, seed), the
same tokenized rows, fp32 weights and the same torch threads; the two baselines also see the same
batches. Throughput counts **non-pad tokens** per second over steps 2..N (step 1 pays one-off
costs); memory is peak RSS (CPU) or CUDA max allocated (GPU). Prints the three and the ratios
ours/dynamic and ours/padded. Target: ours >= 1.3x the baseline's tokens/s. Not a pass/fail test.

**Share of the machine's matmul peak** (issue 13's efficiency target, >= 50%): a fourth child,
`machine`, measures the FLOP/s torch's matmul achieves on this CPU with the same dtype (fp32) and
thread count, for square matrices and for the model's own GEMM shapes, and bf16 beside it (a bf16
autocast only pays where the CPU has bf16 units). Each loop counts the FLOPs it executes with
`torch.utils.flop_counter` (matmuls and attention, forward and backward; the CPU attention kernels
registered here, as torch counts only the CUDA ones) and reports them per second and as a share of
that peak, beside the model FLOP/s (what the rows need however a loop computes them: the usual
MFU). Ours executes fewer FLOPs per real token (one shared-prefix pass, logits only where the loss
is, no padding): `MFLOP/token` shows it beside the baselines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _peak_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flop_counter():
    """torch's FLOP counter, taught the CPU attention kernels (it knows only the CUDA ones)."""
    import torch
    from torch.utils import flop_counter as fc

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    custom = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        if hasattr(aten, name) and getattr(aten, name) not in fc.flop_registry:
            custom[getattr(aten, name)] = formula
    return fc.FlopCounterMode(display=False, custom_mapping=custom)


def child_ours(job_args: list[str], steps: int) -> dict:
    import torch

    from slm_platform.training.recipe import resolve_job
    from slm_platform.training.train_lora import LoRATrainer, StandalonePipes

    job = resolve_job([*job_args, "--max-steps", str(steps), "save_every=0", "log_every=5"])
    trainer = LoRATrainer(job, StandalonePipes(), progress=False)
    trainer.setup()
    counter, flops = flop_counter(), []
    trainer.optimizer.register_step_post_hook(lambda *_: flops.append(counter.get_total_flops()))
    with counter:
        trainer.train()
    h = trainer.history
    return {"step_s": h["step_s"], "tokens": h["tokens"], "padded": h["padded_tokens"], "loss": h["loss"],
            "flops": _per_step(flops), "peak_mib": _peak_mib(), "rows": len(trainer.train_set),
            "model_flops": model_flops_per_step(trainer.model, h["tokens"], h["completion_tokens"]),
            "threads": torch.get_num_threads()}


def model_flops_per_step(model, tokens: list[int], completion: list[int]) -> list[float]:
    """The FLOPs the model itself needs for each step's rows, however a loop computes them (the usual
    "model FLOPs" of MFU): every real token through the frozen body, forward and input-gradient
    backward (4 x its linear weights; frozen weights need no weight gradient), the LoRA factors
    forward and both gradients (6 x), and the tied vocabulary projection, forward and backward
    (4 x d x V), on the completion tokens the loss is taken on. Attention scores are left out
    (about 4% at these lengths), so this understates a little."""
    body = sum(p.numel() for n, p in model.named_parameters()
               if ".layers." in n and p.ndim == 2 and "lora_" not in n)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    cfg = model.config
    head = cfg.hidden_size * cfg.vocab_size
    return [4 * body * t + 6 * lora * t + 4 * head * c for t, c in zip(tokens, completion)]


def _per_step(cumulative: list[int]) -> list[int]:
    return [b - a for a, b in zip([0, *cumulative], cumulative)]


def child_machine(job_args: list[str], steps: int) -> dict:
    """The matmul FLOP/s this CPU achieves in torch: fp32 (the trainer's dtype) and bf16, same threads.

    Square sizes find the peak; the model's own shapes (a batch of 8 rows x ~300 tokens through the
    576 x 1536 MLP, the 576 x 576 attention projections, LoRA's rank-16 factors) show what its GEMMs
    can reach. Each figure is the best of several timed repeats after a warm-up.
    """
    import torch

    from slm_platform.training.recipe import resolve_job

    job = resolve_job(job_args)
    if job.options.threads:
        torch.set_num_threads(job.options.threads)
    shapes = {"square 1024": (1024, 1024, 1024), "square 2048": (2048, 2048, 2048),
              "MLP up (2400 x 576 @ 576 x 1536)": (2400, 576, 1536),
              "MLP down (2400 x 1536 @ 1536 x 576)": (2400, 1536, 576),
              "attn proj (2400 x 576 @ 576 x 576)": (2400, 576, 576),
              "LoRA A (2400 x 576 @ 576 x 16)": (2400, 576, 16)}
    out: dict[str, dict[str, float]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        # without bf16 units (AVX2 only) a bf16 matmul runs ~50x slower: one timed call per model shape
        names = list(shapes) if dtype == torch.float32 else [n for n in shapes if n.startswith("MLP")]
        for name in names:
            m, k, n = shapes[name]
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            torch.mm(a, b)
            best = float("inf")
            for _ in range(5 if dtype == torch.float32 else 1):
                reps, t0 = 0, time.perf_counter()
                while reps == 0 or time.perf_counter() - t0 < 0.3:
                    torch.mm(a, b)
                    reps += 1
                best = min(best, (time.perf_counter() - t0) / reps)
            out.setdefault(str(dtype).removeprefix("torch."), {})[name] = 2 * m * k * n / best
    return {"gflops": {d: {k: v / 1e9 for k, v in shapes_.items()} for d, shapes_ in out.items()},
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def child_peft_loop(job_args: list[str], steps: int, padding: str) -> dict:
    """The loop most notebooks write: shuffled rows, `DataCollatorForSeq2Seq`, `model(**batch).loss`.

    `padding="max_length"` pads every batch to max_seq_len (the weak baseline); `"longest"` pads to
    the batch's longest row (dynamic padding, the fair one). Same rows, batch order, LoRA config,
    fp32 weights, threads, optimizer and clipping as ours: only the batching and the loss differ.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain import Domain
    from slm_platform.training.data import IGNORE_INDEX, encode_rows, random_batches, read_jsonl
    from slm_platform.training.recipe import resolve_job

    job = resolve_job(job_args)
    r, o = job.recipe, job.options
    if o.threads:
        torch.set_num_threads(o.threads)
    store = ArtifactStore(job.artifacts_root)
    domain = Domain.load(job.domain_dir)
    base_dir = str(job.base_model)
    tok = AutoTokenizer.from_pretrained(base_dir)
    tok.padding_side = "right"  # training pads on the right
    examples, _ = encode_rows(read_jsonl(store.open_verified(job.dataset) / "train.jsonl"), tok, domain, r.max_seq_len)
    features = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e), "labels": e.labels} for e in examples]
    # max_length only counts for padding="max_length"; "longest" pads to the batch's longest row
    collator = DataCollatorForSeq2Seq(tok, padding=padding, max_length=r.max_seq_len, label_pad_token_id=IGNORE_INDEX,
                                      return_tensors="pt")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(r.seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device)
    model.config.use_cache = False
    torch.manual_seed(r.seed)
    model = get_peft_model(model, LoraConfig(r=r.r, lora_alpha=r.alpha, lora_dropout=r.dropout, bias="none",
                                             target_modules=list(r.target_modules), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=o.weight_decay)
    step_s, tokens, padded, losses, completion = [], [], [], [], []
    epoch, batches = 0, random_batches(len(examples), r.batch_size, r.seed, 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    counter, flops = flop_counter(), []
    opt.register_step_post_hook(lambda *_: flops.append(counter.get_total_flops()))
    counter.__enter__()
    for step in range(steps):
        if not batches:
            epoch += 1
            batches = random_batches(len(examples), r.batch_size, r.seed, epoch)
        idx = batches.pop(0)
        t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in collator([features[i] for i in idx]).items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - t0)
        tokens.append(int(batch["attention_mask"].sum()))
        padded.append(batch["attention_mask"].numel())
        completion.append(int((batch["labels"] != IGNORE_INDEX).sum()))
        losses.append(loss.item())
        print(f"peft loop ({padding}) step {step + 1}/{steps} {step_s[-1]:.1f}s width {batch['input_ids'].shape[1]}",
              file=sys.stderr, flush=True)
    counter.__exit__(None, None, None)
    return {"step_s": step_s, "tokens": tokens, "padded": padded, "loss": losses, "flops": _per_step(flops),
            "model_flops": model_flops_per_step(model, tokens, completion),
            "peak_mib": _peak_mib(), "rows": len(examples), "threads": torch.get_num_threads()}


def summarize(raw: dict) -> dict:
    """Steps 2..N. The median step's tokens/s is printed too: on a shared machine a few steps stall
    when others' jobs run, which moves the mean but hardly the median."""
    timed_s, timed_tok, timed_flops = raw["step_s"][1:], raw["tokens"][1:], raw["flops"][1:]
    return {"steps": len(raw["step_s"]), "s_per_step": sum(timed_s) / len(timed_s),
            "gflops_per_s": sum(timed_flops) / sum(timed_s) / 1e9, "flops_per_token": sum(timed_flops) / sum(timed_tok),
            "model_gflops_per_s": sum(raw["model_flops"][1:]) / sum(timed_s) / 1e9,
            "tokens_per_s": sum(timed_tok) / sum(timed_s),
            "median_tokens_per_s": statistics.median(t / s for t, s in zip(timed_tok, timed_s)),
            "padding_ratio": 1 - sum(raw["tokens"]) / sum(raw["padded"]),
            "peak_mib": raw["peak_mib"], "first_loss": raw["loss"][0], "last_loss": raw["loss"][-1],
            "rows": raw["rows"], "threads": raw["threads"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rows", type=int, default=240, help="simulated train rows (>= steps * batch_size avoids reuse)")
    p.add_argument("--domain", default="support_triage")
    p.add_argument("--model-store", default=os.environ.get("SLM_TEST_MODEL_STORE")
                   or str(Path.home() / ".cache" / "slm_platform" / "test-model-store"))
    p.add_argument("--loops", default=",".join(LOOPS),
                   help=f"which training loops to run, comma-separated (default: all of {','.join(LOOPS)})")
    p.add_argument("--child", choices=[*LOOPS, "machine"], help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()

    if args.child:
        job_args = json.loads(args.job)
        if args.child == "machine":
            print(json.dumps(child_machine(job_args, args.steps)))
        elif args.child == "ours":
            print(json.dumps(child_ours(job_args, args.steps)))
        else:
            print(json.dumps(child_peft_loop(job_args, args.steps, PADDING[args.child])))
        return

    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain import Domain
    from slm_platform.models.base_models import resolve_base_model

    domain = Domain.load(ROOT / "domains" / args.domain)
    base = resolve_base_model(domain.config.model.candidates[0], ArtifactStore(args.model_store), log=lambda m: None)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        store = ArtifactStore(tmp)
        rows = list(domain.simulator().simulate(args.rows, seed=1))
        rel = f"{domain.name}/datasets/vbench"
        with store.publish(rel, kind="dataset", version="vbench") as staging:
            (staging / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        job_args = ["--domain", str(domain.root), "--dataset", rel, "--output", f"{domain.name}/adapters/vbench",
                    "--artifacts-root", tmp, "--base-model", str(base.local_dir), *args.overrides]
        recipe = domain.config.model.recipe
        print(f"recipe: r={recipe.r} targets={recipe.target_modules} batch={recipe.batch_size} "
              f"max_seq_len={recipe.max_seq_len} (overrides: {args.overrides or 'none'}), {args.steps} steps each, "
              f"{args.rows} rows", flush=True)
        loops = [w.strip() for w in args.loops.split(",") if w.strip()]
        if unknown := [w for w in loops if w not in LOOPS]:
            sys.exit(f"--loops: unknown loop(s) {unknown}; expected some of {list(LOOPS)}")
        results, machine = {}, {}
        for which in ["machine", *loops]:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", which, "--job", json.dumps(job_args),
                                   "--steps", str(args.steps)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:  # its stderr (progress, traceback) went straight to ours
                sys.exit(f"{which} failed with exit code {proc.returncode}")
            raw = json.loads(proc.stdout.strip().splitlines()[-1])
            if which == "machine":
                machine = raw
            else:
                results[which] = summarize(raw)
            print(f"{which}: done in {time.perf_counter() - t0:.0f}s", flush=True)

    print(f"\nmatmul GFLOP/s on this CPU ({machine['threads']} threads, {machine['cpu_capability']}; fp32 best of 5 "
          f"timed repeats)")
    for dtype, figures in machine["gflops"].items():
        print("  " + dtype + ": " + ", ".join(f"{name} {g:.1f}" for name, g in figures.items()))
    peak = max(machine["gflops"]["float32"].values())
    print(f"  peak fp32 (the trainer's dtype): {peak:.1f} GFLOP/s")

    print(f"\n{'':38} {'tokens/s':>9} {'median':>7} {'s/step':>7} {'padding':>8} {'peak MiB':>9} "
          f"{'loss 1 -> N':>16} {'rows':>5} {'threads':>7} {'model GFLOP/s':>13} {'MFU':>6} {'executed':>8} "
          f"{'of peak':>8} {'MFLOP/token':>11}")
    for which, s in results.items():
        s["share_of_peak"] = s["gflops_per_s"] / peak
        s["mfu"] = s["model_gflops_per_s"] / peak
        print(f"{LOOPS[which]:38} {s['tokens_per_s']:9.1f} {s['median_tokens_per_s']:7.1f} {s['s_per_step']:7.2f} "
              f"{s['padding_ratio']:8.1%} {s['peak_mib']:9.0f} {s['first_loss']:7.3f} -> {s['last_loss']:.3f} "
              f"{s['rows']:5} {s['threads']:7} {s['model_gflops_per_s']:13.1f} {s['mfu']:6.1%} {s['gflops_per_s']:8.1f} "
              f"{s['share_of_peak']:8.1%} {s['flops_per_token'] / 1e6:11.1f}")
    print("model GFLOP/s: the FLOPs the model needs for the real tokens (frozen body forward + input-gradient "
          "backward, LoRA, logits on completion tokens; see model_flops_per_step) per second over steps 2..N; MFU: "
          "its share of the fp32 matmul peak above (target >= 50%). executed: the FLOPs each loop actually ran "
          "(torch.utils.flop_counter: matmuls and attention, forward and backward) per second, and their share of "
          "the peak; MFLOP/token: executed FLOPs per real token (ours shares the prompt prefix and computes logits "
          "only where the loss is).")
    ours = results.get("ours")
    ratios = {}
    if ours is None or len(results) < 2:
        print(json.dumps({**results, "machine": machine, "ratios": ratios}))
        return
    print(f"\n{'ours / baseline':38} {'tokens/s':>9} {'median':>7} {'s/step':>7} {'peak mem':>9}")
    for which in [w for w in ("dynamic", "padded") if w in results]:
        b = results[which]
        ratios[which] = {key: ours[key] / b[key] for key in ("tokens_per_s", "median_tokens_per_s", "s_per_step",
                                                            "peak_mib")}
        x = ratios[which]
        print(f"{'ours / ' + LOOPS[which]:38} {x['tokens_per_s']:8.2f}x {x['median_tokens_per_s']:6.2f}x "
              f"{x['s_per_step']:6.2f}x {x['peak_mib']:8.2f}x")
    print("tokens/s (real tokens over steps 2..N; median: of the per-step figures) is the comparable figure: ours "
          "batches rows of similar length, so its steps hold different rows. Target >= 1.3x the fair baseline.")
    print(json.dumps({**results, "machine": machine, "ratios": ratios}))


# child name -> label; run in this order
LOOPS = {"ours": "ours (LoRATrainer)", "dynamic": "peft loop, dynamic padding (fair)",
         "padded": "peft loop, padded to max_seq_len"}
PADDING = {"dynamic": "longest", "padded": "max_length"}


if __name__ == "__main__":
    main()
