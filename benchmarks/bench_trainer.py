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


def child_ours(job_args: list[str], steps: int) -> dict:
    import torch

    from slm_platform.training.recipe import resolve_job
    from slm_platform.training.train_lora import LoRATrainer, StandalonePipes

    job = resolve_job([*job_args, "--max-steps", str(steps), "save_every=0", "log_every=5"])
    trainer = LoRATrainer(job, StandalonePipes(), progress=False)
    trainer.setup()
    trainer.train()
    h = trainer.history
    return {"step_s": h["step_s"], "tokens": h["tokens"], "padded": h["padded_tokens"], "loss": h["loss"],
            "peak_mib": _peak_mib(), "rows": len(trainer.train_set), "threads": torch.get_num_threads()}


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
    step_s, tokens, padded, losses = [], [], [], []
    epoch, batches = 0, random_batches(len(examples), r.batch_size, r.seed, 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
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
        losses.append(loss.item())
        print(f"peft loop ({padding}) step {step + 1}/{steps} {step_s[-1]:.1f}s width {batch['input_ids'].shape[1]}",
              file=sys.stderr, flush=True)
    return {"step_s": step_s, "tokens": tokens, "padded": padded, "loss": losses, "peak_mib": _peak_mib(),
            "rows": len(examples), "threads": torch.get_num_threads()}


def summarize(raw: dict) -> dict:
    """Steps 2..N. The median step's tokens/s is printed too: on a shared machine a few steps stall
    when others' jobs run, which moves the mean but hardly the median."""
    timed_s, timed_tok = raw["step_s"][1:], raw["tokens"][1:]
    return {"steps": len(raw["step_s"]), "s_per_step": sum(timed_s) / len(timed_s),
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
    p.add_argument("--child", choices=list(LOOPS), help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()

    if args.child:
        job_args = json.loads(args.job)
        if args.child == "ours":
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
        results = {}
        for which in LOOPS:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", which, "--job", json.dumps(job_args),
                                   "--steps", str(args.steps)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:  # its stderr (progress, traceback) went straight to ours
                sys.exit(f"{which} failed with exit code {proc.returncode}")
            results[which] = summarize(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"{which}: done in {time.perf_counter() - t0:.0f}s", flush=True)

    print(f"\n{'':38} {'tokens/s':>9} {'median':>7} {'s/step':>7} {'padding':>8} {'peak MiB':>9} "
          f"{'loss 1 -> N':>16} {'rows':>5} {'threads':>7}")
    for which, s in results.items():
        print(f"{LOOPS[which]:38} {s['tokens_per_s']:9.1f} {s['median_tokens_per_s']:7.1f} {s['s_per_step']:7.2f} "
              f"{s['padding_ratio']:8.1%} {s['peak_mib']:9.0f} {s['first_loss']:7.3f} -> {s['last_loss']:.3f} "
              f"{s['rows']:5} {s['threads']:7}")
    ours = results["ours"]
    ratios = {}
    print(f"\n{'ours / baseline':38} {'tokens/s':>9} {'median':>7} {'s/step':>7} {'peak mem':>9}")
    for which in ("dynamic", "padded"):
        b = results[which]
        ratios[which] = {key: ours[key] / b[key] for key in ("tokens_per_s", "median_tokens_per_s", "s_per_step",
                                                            "peak_mib")}
        x = ratios[which]
        print(f"{'ours / ' + LOOPS[which]:38} {x['tokens_per_s']:8.2f}x {x['median_tokens_per_s']:6.2f}x "
              f"{x['s_per_step']:6.2f}x {x['peak_mib']:8.2f}x")
    print("tokens/s (real tokens over steps 2..N; median: of the per-step figures) is the comparable figure: ours "
          "batches rows of similar length, so its steps hold different rows. Target >= 1.3x the fair baseline.")
    print(json.dumps({**results, "ratios": ratios}))


# child name -> label; run in this order
LOOPS = {"ours": "ours (LoRATrainer)", "dynamic": "peft loop, dynamic padding (fair)",
         "padded": "peft loop, padded to max_seq_len"}
PADDING = {"dynamic": "longest", "padded": "max_length"}


if __name__ == "__main__":
    main()
