"""LoRA trainer throughput vs a plain padded-batch peft loop: same model, recipe and data, one run.

    python benchmarks/bench_trainer.py [--steps 20] [--rows 240] [--domain support_triage]
                                       [--model-store DIR] [key=value recipe overrides ...]

Simulates `--rows` tickets of the domain, publishes them as a dataset in a temporary store, then
runs two training loops for `--steps` optimizer steps each, one after the other, each in a fresh
subprocess (so peak memory is its own):

* **ours**     — `LoRATrainer` (the real `train_lora` recipe): length-grouped batches, dynamic
                 padding, logits only where the loss is.
* **baseline** — the loop most notebooks write: rows shuffled, every batch padded to
                 `max_seq_len`, `model(input_ids, attention_mask, labels=...)`, AdamW, clip.

Both use the domain's recipe (LoRA r/alpha/targets, batch size, max_seq_len, lr, seed) and the
same tokenized rows. Throughput counts **non-pad tokens** per second over steps 2..N (step 1 pays
one-off costs); memory is peak RSS (CPU) or CUDA max allocated (GPU). Prints both and the
ratio. Target: ours >= 1.3x the baseline's tokens/s. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    from slm_platform.training.recipe import resolve_job
    from slm_platform.training.train_lora import LoRATrainer, StandalonePipes

    job = resolve_job([*job_args, "--max-steps", str(steps), "save_every=0", "log_every=5"])
    trainer = LoRATrainer(job, StandalonePipes(), progress=False)
    trainer.setup()
    trainer.train()
    h = trainer.history
    return {"step_s": h["step_s"], "tokens": h["tokens"], "padded": h["padded_tokens"], "loss": h["loss"],
            "peak_mib": _peak_mib(), "rows": len(trainer.train_set)}


def child_baseline(job_args: list[str], steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain import Domain
    from slm_platform.training.data import collate, encode_rows, random_batches, read_jsonl
    from slm_platform.training.recipe import resolve_job

    job = resolve_job(job_args)
    r = job.recipe
    if job.options.threads:
        torch.set_num_threads(job.options.threads)
    store = ArtifactStore(job.artifacts_root)
    domain = Domain.load(job.domain_dir)
    base_dir = str(job.base_model)
    tok = AutoTokenizer.from_pretrained(base_dir)
    examples, _ = encode_rows(read_jsonl(store.open_verified(job.dataset) / "train.jsonl"), tok, domain, r.max_seq_len)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(r.seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=r.r, lora_alpha=r.alpha, lora_dropout=r.dropout,
                                             target_modules=list(r.target_modules), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=r.lr)
    step_s, tokens, padded, losses = [], [], [], []
    epoch, batches = 0, random_batches(len(examples), r.batch_size, r.seed, 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    for step in range(steps):
        if not batches:
            epoch += 1
            batches = random_batches(len(examples), r.batch_size, r.seed, epoch)
        idx = batches.pop(0)
        t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], tok.pad_token_id,
                                                     pad_to=r.max_seq_len).items()}
        if autocast is not None:
            with autocast:
                loss = model(**batch).loss
        else:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - t0)
        tokens.append(int(batch["attention_mask"].sum()))
        padded.append(batch["attention_mask"].numel())
        losses.append(loss.item())
        print(f"baseline step {step + 1}/{steps} {step_s[-1]:.1f}s", file=sys.stderr, flush=True)
    return {"step_s": step_s, "tokens": tokens, "padded": padded, "loss": losses, "peak_mib": _peak_mib(),
            "rows": len(examples)}


def summarize(raw: dict) -> dict:
    timed_s, timed_tok = raw["step_s"][1:], raw["tokens"][1:]
    return {"steps": len(raw["step_s"]), "s_per_step": sum(timed_s) / len(timed_s),
            "tokens_per_s": sum(timed_tok) / sum(timed_s),
            "padding_ratio": 1 - sum(raw["tokens"]) / sum(raw["padded"]),
            "peak_mib": raw["peak_mib"], "first_loss": raw["loss"][0], "last_loss": raw["loss"][-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rows", type=int, default=240, help="simulated train rows (>= steps * batch_size avoids reuse)")
    p.add_argument("--domain", default="support_triage")
    p.add_argument("--model-store", default=os.environ.get("SLM_TEST_MODEL_STORE")
                   or str(Path.home() / ".cache" / "slm_platform" / "test-model-store"))
    p.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()

    if args.child:
        job_args = json.loads(args.job)
        fn = child_ours if args.child == "ours" else child_baseline
        print(json.dumps(fn(job_args, args.steps)))
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
        for which in ("ours", "baseline"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", which, "--job", json.dumps(job_args),
                                   "--steps", str(args.steps)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:  # its stderr (progress, traceback) went straight to ours
                sys.exit(f"{which} failed with exit code {proc.returncode}")
            results[which] = summarize(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"{which}: done in {time.perf_counter() - t0:.0f}s", flush=True)

    print(f"\n{'':10} {'tokens/s':>9} {'s/step':>8} {'padding':>8} {'peak MiB':>9} {'loss 1 -> N':>16}")
    for which, s in results.items():
        print(f"{which:10} {s['tokens_per_s']:9.1f} {s['s_per_step']:8.2f} {s['padding_ratio']:8.1%} "
              f"{s['peak_mib']:9.0f} {s['first_loss']:7.3f} -> {s['last_loss']:.3f}")
    ratio = results["ours"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    print(f"\nthroughput ratio ours/baseline: {ratio:.2f}x (target >= 1.3x); "
          f"peak memory ratio: {results['ours']['peak_mib'] / results['baseline']['peak_mib']:.2f}x")
    print(json.dumps({"ours": results["ours"], "baseline": results["baseline"], "ratio": ratio}))


if __name__ == "__main__":
    main()
