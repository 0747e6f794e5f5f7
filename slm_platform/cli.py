"""The `slm` command.

Subcommands live in one table (`SUBCOMMANDS`): each is a small function that takes the parsed
arguments and returns the exit code, plus a function that declares its arguments. Add one with
the `@subcommand(...)` decorator; import heavy modules inside the function so that `slm --help`
stays fast and one broken module cannot take every subcommand down.

Exit codes: 0 success, 1 the user's files (or the work asked for) have problems, 2 usage errors and
unexpected failures. `main` never lets a traceback out: a `ConfigError` prints its problems one per
line, anything else prints `error: <type>: <message>`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slm_platform.config import Problem
    from slm_platform.domain import Domain
    from slm_platform.scaffold import InitResult

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


# --- the subcommand table ---------------------------------------------------------------------
@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register `run(args) -> exit code` as `slm <name>`; `arguments(parser)` declares its options."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        SUBCOMMANDS[name] = Subcommand(name, help, arguments or (lambda parser: None), run)
        return run

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slm",
        description="Replace hosted-LLM structured/tool calls with your own small language model.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for sub in SUBCOMMANDS.values():
        sub.add_arguments(subparsers.add_parser(sub.name, help=sub.help, description=sub.help))
    return parser


# --- output helpers -----------------------------------------------------------------------------
def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _shown(path: str | Path) -> str:
    """A path as the user typed it: relative to the working directory when it lies under it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _print_problems(problems: list[Problem] | list[str]) -> None:
    for p in problems:
        print(_one_line(str(p)), file=sys.stderr)


# --- slm validate -------------------------------------------------------------------------------
REJECTED_SHOWN = 20  # rejected rows listed per source; the rest are counted


@dataclass
class SourceReport:
    name: str
    format: str
    role: str | None
    rows: int = 0
    rejected: int = 0
    shown: list[str] = field(default_factory=list)  # "file:line: reason" of the first REJECTED_SHOWN

    def reject(self, where: str, reason: str) -> None:
        self.rejected += 1
        if len(self.shown) < REJECTED_SHOWN:
            self.shown.append(_one_line(f"{where}: {reason}"))


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="*", type=Path, metavar="FOLDER",
                        help="domain folder(s), or names in the domains folder: domains/travel or travel")
    parser.add_argument("--all", action="store_true", help="validate every folder under --domains-dir")
    parser.add_argument("--domains-dir", type=Path, default=Path("domains"), help="where --all looks (default: ./domains)")


@subcommand(
    "validate",
    "check domain folders: config, JSON Schemas, tool catalogs, prompts, oracle imports and seed rows",
    _validate_arguments,
)
def cmd_validate(args: argparse.Namespace) -> int:
    folders: list[Path] = list(args.folders)
    if args.all:
        root: Path = args.domains_dir
        if not root.is_dir():
            print(f"{root}: found no such folder, expected a folder of domains (--domains-dir)", file=sys.stderr)
            return EXIT_PROBLEMS
        folders += sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        if not folders:
            print(f"{root}: found no domain folders, expected at least one", file=sys.stderr)
            return EXIT_PROBLEMS
    if not folders:
        print("slm validate: give one or more domain folders, or --all", file=sys.stderr)
        return EXIT_ERROR
    failed = 0
    for folder in folders:
        failed += not _validate_folder(folder)
    if len(folders) > 1:
        ok = len(folders) - failed
        _console().print(f"{ok} of {len(folders)} domain folders valid")
    return EXIT_PROBLEMS if failed else EXIT_OK


def _validate_folder(folder: Path) -> bool:
    from slm_platform.config import CONFIG_FILE, ConfigError, Problem
    from slm_platform.domain import Domain

    if folder.is_file() and folder.name == CONFIG_FILE:
        folder = folder.parent
    if not folder.is_dir() and len(folder.parts) == 1:  # a bare name, as `slm run` takes it: the domains folder
        from slm_platform import settings

        if (settings.domains_dir() / folder).is_dir():
            folder = settings.domains_dir() / folder
    if not folder.is_dir():
        return _fail(folder, [Problem(str(folder), "", "no such folder", f"a domain folder holding {CONFIG_FILE}")])
    try:
        domain = Domain.load(folder)
    except ConfigError as exc:
        return _fail(folder, exc.problems)
    reports, problems = check_sources(domain)
    rejected = sum(r.rejected for r in reports)
    if problems or rejected:
        lines: list[Any] = list(problems)
        for r in reports:
            if r.rejected:
                lines += r.shown
                hidden = r.rejected - len(r.shown)
                more = f" ({hidden} more not shown)" if hidden else ""
                lines.append(f"source {r.name!r}: {r.rejected} of {r.rows} rows rejected{more}")
        return _fail(folder, lines, len(problems) + rejected)
    _print_summary(folder, domain, reports)
    return True


def _fail(folder: Path, problems: list[Any], count: int | None = None) -> bool:
    """Print why `folder` is invalid: a header, then one line per problem (or rejected row)."""
    from slm_platform.config import Problem

    shown = [
        Problem(_shown(p.file), p.path, p.found, p.expected) if isinstance(p, Problem) else p for p in problems
    ]
    n = len(shown) if count is None else count
    print(f"{_shown(folder)}: invalid ({n} problem{'s' if n != 1 else ''})", file=sys.stderr)
    _print_problems(shown)
    return False


def check_sources(domain: Domain) -> tuple[list[SourceReport], list[Problem]]:
    """Read every `data.sources` row: it must map to a Turn of one of the domain's roles, and every
    label it carries must satisfy that role's contract."""
    from slm_platform.config import CONFIG_FILE, Problem
    from slm_platform.data.sources import Rejected, read_source

    cfg = _shown(domain.root / CONFIG_FILE)
    reports: list[SourceReport] = []
    problems: list[Problem] = []
    for i, src in enumerate(domain.config.data.sources):
        report = SourceReport(src.name, src.format, src.role)
        reports.append(report)
        path = domain.path(src.path)
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".jsonl", ".json")) if path.is_dir() else [path]
        if not files:
            problems.append(Problem(cfg, f"data.sources[{i}].path", repr(src.path), "a folder with *.jsonl or *.json files"))
            continue
        answers = domain.path(src.answers) if src.answers is not None else None
        for file in files:
            try:
                rows = read_source(file, src.format, domain=domain.name, source=src.name, role=src.role, answers=answers,
                                   roles=tuple(domain.roles))
                _check_rows(domain, file, src.format, rows, report, Rejected)
            except (OSError, ValueError) as exc:
                key = "answers" if src.format == "bfcl" and isinstance(exc, FileNotFoundError) else "path"
                problems.append(Problem(cfg, f"data.sources[{i}].{key}", _one_line(str(exc)), "a readable source"))
    return reports, problems


def _check_rows(domain: Domain, file: Path, fmt: str, rows, report: SourceReport, rejected_type: type) -> None:
    from slm_platform.records import LABEL_SOURCES

    line_numbers = _row_lines(file) if fmt in ("jsonl", "openai_chat", "bfcl") else None
    k = 0  # rows of this file seen so far (line-based formats: one per non-blank line)
    shown = _shown(file)
    for row in rows:
        report.rows += 1
        if isinstance(row, rejected_type):
            name, _, rest = row.location.partition(":")
            # a BFCL answers file may share the question file's name; its rows come first
            from_answers = fmt == "bfcl" and row.reason.startswith("answer line")
            if name != file.name or from_answers:
                report.reject(row.location, row.reason)
                continue
            if line_numbers is not None and rest.isdigit():
                k += 1
            report.reject(f"{shown}:{rest}" if rest else shown, row.reason)
            continue
        if line_numbers is not None and k < len(line_numbers):
            where = f"{shown}:{line_numbers[k]}"
        else:
            where = f"{shown}: row {k + 1}"  # never the row's id: ids from outside may carry personal data
        k += 1
        role = row.get("role")
        contract = domain.roles.get(role) if isinstance(role, str) else None
        if contract is None:
            report.reject(where, f"field 'role' is not one of the domain's roles {sorted(domain.roles)}")
            continue
        reasons = []
        for source in LABEL_SOURCES:
            label = (row.get("labels") or {}).get(source)
            if label is None:
                continue
            try:
                errors = contract.validate_output(label)
            except Exception as exc:  # a label so malformed the validator cannot even look at it
                errors = [f"cannot be checked ({type(exc).__name__}: {exc})"]
            reasons += [f"labels.{source}: {e}" for e in errors]
        if reasons:
            report.reject(where, "; ".join(reasons))


def _row_lines(file: Path) -> list[int]:
    """1-based numbers of the lines that read_source turns into rows (every non-blank line)."""
    out = []
    with open(file, "rb") as fh:
        for lineno, bline in enumerate(fh, 1):
            line = bline.decode("utf-8", "replace")
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                out.append(lineno)
    return out


def _print_summary(folder: Path, domain: Domain, reports: list[SourceReport]) -> None:
    from rich.markup import escape as e
    from rich.table import Table

    cfg = domain.config
    console = _console()
    rows_total = sum(r.rows for r in reports)
    console.print(
        f"[bold green]{e(_shown(folder))}: valid[/] — domain [bold]{domain.name}[/], {len(domain.roles)} "
        f"role{'s' if len(domain.roles) != 1 else ''}, {len(reports)} source{'s' if len(reports) != 1 else ''} "
        f"({rows_total} rows)"
    )
    from slm_platform.domain.enforceable import contract_unenforced
    from slm_platform.domain.grammar import token_budget

    roles = Table("role", "kind", "contract", "oracle", "guided decoding", "token budget", box=None, pad_edge=False,
                  header_style="bold")
    gaps = {}
    for role_id, contract in domain.roles.items():
        if contract.kind == "tool_call":
            n = len(contract.tools or [])
            what = f"{n} tool{'s' if n != 1 else ''} ({contract.role.tools})"
        else:
            what = str(contract.role.output_schema)
        gaps[role_id] = contract_unenforced(contract)
        enforced = "enforces all" if not gaps[role_id] else f"[yellow]{len(gaps[role_id])} keyword(s) not enforced[/]"
        budget = token_budget(contract.guided_schema())
        shown_budget = f"{budget} tokens" if budget is not None else f"unbounded (cap {cfg.eval.max_tokens})"
        roles.add_row(role_id, contract.kind, e(what), e(contract.role.oracle or "-"), enforced, shown_budget)
    console.print(roles)
    for role_id, found in gaps.items():
        for gap in found:
            console.print(f"[yellow]{e(role_id)}:[/] {e(str(gap))}: validated after decoding; an answer that breaks "
                          "it is invalid (the gateway falls back)")
    if reports:
        sources = Table("source", "format", "role", "rows", box=None, pad_edge=False, header_style="bold")
        for r in reports:
            sources.add_row(r.name, r.format, e(r.role or "(per row)"), str(r.rows))
        console.print(sources)
    teacher = cfg.teacher.provider + (f" {cfg.teacher.model}" if cfg.teacher.model else "")
    console.print(f"teacher: {e(teacher)}; candidates: {e(', '.join(cfg.model.candidates))}")


# --- slm init -----------------------------------------------------------------------------------
INIT_REJECTED_SHOWN = 20  # rejected lines printed by `slm init`; all of them are in data/rejected.jsonl


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME",
                        help="the new domain: a name (created in the domains folder: $SLM_DOMAINS or ./domains) "
                             "or a folder path, whose last part is the name")
    parser.add_argument("--from", dest="log", type=Path, required=True, metavar="FILE",
                        help="JSONL of logged OpenAI chat-completion calls (request + response per line) "
                             "with response_format json_schema or tools")


@subcommand("init", "Scaffold a domain folder from a JSONL log of hosted-LLM structured or tool calls.",
            _init_arguments)
def cmd_init(args: argparse.Namespace) -> int:
    import os

    from slm_platform import settings
    from slm_platform.scaffold import InitRefused, init_domain

    folder = Path(args.name) if os.sep in args.name else settings.domains_dir() / args.name
    try:
        result = init_domain(folder, args.log)
    except InitRefused as exc:
        print("slm init: nothing written", file=sys.stderr)
        _print_problems(exc.problems)
        return EXIT_PROBLEMS
    _print_init(result)
    return EXIT_OK


def _print_init(result: "InitResult") -> None:
    from collections import Counter

    plan, shown = result.plan, _shown(result.folder)
    rejected = plan.rejected
    print(f"read {plan.lines_read} lines of {plan.log_name}: {plan.kept} calls kept, {len(rejected)} rejected"
          + (f" ({shown}/data/rejected.jsonl)" if rejected else ""))
    if rejected:
        kinds = Counter(r.kind for r in rejected)
        print("  rejected: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common()))
        for r in rejected[:INIT_REJECTED_SHOWN]:
            print(f"  line {r.line}: {_one_line(r.reason)}")
        if len(rejected) > INIT_REJECTED_SHOWN:
            print(f"  ({len(rejected) - INIT_REJECTED_SHOWN} more in data/rejected.jsonl)")
    print("roles:")
    width = max(len(r.id) for r in plan.roles)
    for r in plan.roles:
        print(f"  {r.id.ljust(width)}  {r.role.kind.ljust(10)}  {r.calls:>4} calls  {r.contract_file}  ({r.role.origin})")
    for warning in plan.warnings():
        print(f"warning: {_one_line(warning)}")
    print(f"wrote {shown}/: {', '.join(result.files)}")
    from slm_platform import settings

    run = plan.name if result.folder.parent.resolve() == settings.domains_dir() else shown
    print(f"next: slm validate {shown}; write rules in {shown}/oracle.py; slm run {run} --until dataset")


# --- slm run / simulate / ui -------------------------------------------------------------------
def _domain_folders(names: list[str]) -> list[Path]:
    from slm_platform import settings
    from slm_platform.config import discover_domains

    folders = discover_domains(settings.domains_dir())
    if not names:
        return folders
    known = {f.name: f for f in folders}
    unknown = [n for n in names if n not in known and not Path(n).is_dir()]
    if unknown:
        raise SystemExit(f"unknown domain(s) {unknown}; known: {sorted(known)}")
    return [known.get(n) or Path(n) for n in names]


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domains", nargs="*", help="domain names or folders (default: every domain)")
    parser.add_argument("--day", help="the first pass's capture day YYYY-MM-DD (default: yesterday, UTC; today "
                                      "is the loop day's, captured by the gateway)")
    parser.add_argument("--simulate", type=int, default=None,
                        help="simulated turns for an empty capture day (default: data.simulate_per_day)")
    parser.add_argument("--until", default="package",
                        choices=["dataset", "baseline_eval", "adapter", "eval_report", "package"],
                        help="last stage of the pass (default: package, the whole pass; the adapter "
                             "stage trains LoRA on the CPU, 25-50 minutes per domain on 2 cores; "
                             "--until baseline_eval stops before training)")
    parser.add_argument("--no-loop-day", action="store_true",
                        help="stop after the first pass (default: when it released a champion, a loop day "
                             "follows: drifted traffic through the gateway, drift report, the retrain "
                             "triggers, a warm-started retrain, shadow traffic, shadow report, promotion)")
    parser.add_argument("--loop-requests", type=int, default=80,
                        help="drifted requests the loop day sends through the gateway before its drift report")
    parser.add_argument("--loop-drift", type=float, default=1.0,
                        help="the simulator's drift knob for the loop day's traffic, 0..1")
    parser.add_argument("--loop-reviews", type=float, default=1.0,
                        help="share of the loop day's turns that reviewers label (gold labels for the retrain "
                             "and the shadow report; the simulator's truth plays the review team), 0..1")


@subcommand("run", "One lifecycle pass per domain on the Dagster instance: capture, dataset, baseline, "
                   "adapter, eval report; prints the cards, reports and a summary.",
            _run_arguments)
def cmd_run(args: argparse.Namespace) -> int:
    from rich.markdown import Markdown

    from slm_platform.domain import Domain
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.lifecycle import run_pass, yesterday
    from slm_platform.orchestration.loop_day import run_loop_day

    if not (0.0 <= args.loop_drift <= 1.0 and 0.0 <= args.loop_reviews <= 1.0) or args.loop_requests < 1:
        raise SystemExit("--loop-drift and --loop-reviews must be in [0, 1], --loop-requests at least 1")
    console = _console()
    instance = get_instance()
    day = args.day or yesterday()
    results, loops = [], []
    for folder in _domain_folders(args.domains):
        domain = Domain.load(folder)
        console.rule(f"[bold]{domain.name}")
        say = lambda m: console.print(f"[dim]{m}")  # noqa: E731
        result = run_pass(domain, instance, day=day, simulate=args.simulate, until=args.until, log=say)
        console.print(Markdown(result.card) if result.card else "[red]no dataset card (the run failed)")
        for stage in ("baseline_eval", "eval_report"):
            report = result.metadata.get(stage, {}).get("report")
            if report:
                console.print(Markdown(_strip_images(str(report))))
        results.append(result)
        if args.until == "package" and result.success and not args.no_loop_day:
            console.rule(f"[bold]{domain.name}: loop day")
            loops.append(run_loop_day(domain, instance, first_day=day, requests=args.loop_requests,
                                      drift=args.loop_drift, review_share=args.loop_reviews, log=say))
    console.print(_summary_table(results))
    console.print(_time_table(results))
    if loops:
        console.print(_loop_table(loops))
        if any(not loop.skipped for loop in loops):
            console.print(_loop_time_table(loops))
    console.print(f"Dagster instance: {instance.root_directory} (open it with `make ui`)")
    ok = all(r.success for r in results) and not any(loop.failed for loop in loops)
    return EXIT_OK if ok else EXIT_PROBLEMS


def _loop_table(loops: list[Any]):
    """One row per loop day: its traffic, what drifted, the retrain decision, the challenger's offline
    gates and shadow verdict, what was released, and where its time went."""
    from rich.table import Table

    table = Table(title="loop day (drifted traffic through the gateway -> drift -> retrain -> shadow -> release)")
    for col in ("domain", "day", "traffic", "drift", "retrain decision", "challenger", "shadow", "outcome", "time"):
        table.add_column(col)
    for loop in loops:
        if loop.skipped:
            table.add_row(loop.domain, loop.day, "-", "-", "-", "-", "-", f"skipped: {loop.skipped}", "-")
            continue
        traffic = ", ".join(f"{n} {route}" for route, n in sorted(loop.routes.items()))
        if loop.shadow_requests:
            traffic += f"; {loop.shadow_requests} shadowed"
        if loop.reviewed:
            traffic += f"; {loop.reviewed} reviewed"
        drift = "; ".join(_drift_headline(role, r) for role, r in loop.drift.roles.items()) if loop.drift else "-"
        decision = "-" if loop.decision is None else (
            f"{loop.decision.action}: {loop.decision.reason}" + (f" ({loop.decision.evidence})"
                                                                 if loop.decision.evidence else ""))
        challenger = "-"
        if loop.retrain is not None:
            tuned = loop.retrain.candidate
            metric = tuned.primary_metric if tuned else None
            value = tuned.subject_metric(metric) if tuned and metric else None
            failed = [k for k, ok in loop.retrain.checks.items() if not ok]
            challenger = (f"{loop.retrain.version}: {metric} {100 * value:.1f}%, " if value is not None
                          else f"{loop.retrain.version}: ") + ("gates failed: " + ", ".join(failed) if failed
                                                              else "every gate passed")
        shadow = "-"
        if loop.shadow_report is not None:
            report = loop.shadow_report
            shadow = "; ".join(f"{role}: {r.pairs}/{report.min_pairs} pairs, agreement {r.agreement}"
                               + (f", right {r.challenger_correct} vs champion {r.champion_correct}"
                                  if r.challenger_correct.n else "")
                               for role, r in report.roles.items()) + ("" if report.decided else " (undecided)")
        table.add_row(loop.domain, loop.day, traffic or "-", drift, decision, challenger, shadow,
                      loop.outcome or "-", _minutes(loop.wall_s))
    return table


def _drift_headline(role: str, drift: Any) -> str:
    """A role's drift in a cell: turns, classifier AUC, unseen share, the most moved slice."""
    parts = [f"{drift.n} turns"]
    auc = drift.embedding.classifier_auc.value if drift.embedding else None
    if auc is not None:
        parts.append(f"AUC {auc:.2f}")
    if drift.unseen_share.value is not None:
        parts.append(f"unseen {100 * drift.unseen_share.value:.1f}%")
    top = drift.js_max()
    if top is not None and top.js.value is not None:
        parts.append(f"JS {top.key} {top.js.value:.2f}")
    return f"{role}: " + ", ".join(parts) + (" (drifted)" if drift.drifted else "")


def _loop_time_table(loops: list[Any]):
    """Where each loop day's time went: its phases (the retrain split into its Dagster steps)."""
    from rich.table import Table

    table = Table(title="loop day: where the time went")
    table.add_column("phase")
    ran = [loop for loop in loops if not loop.skipped]
    for loop in ran:
        table.add_column(loop.domain, justify="right")
    phases = [loop.phases() for loop in ran]
    for phase in dict.fromkeys(p for d in phases for p in d):
        table.add_row(phase, *(_minutes(d[phase]) if phase in d else "-" for d in phases))
    table.add_row("loop day", *(_minutes(loop.wall_s) for loop in ran))
    return table


def _time_table(results: list[Any]):
    """Where each pass's time went: one row per stage (its Dagster step), a column per domain with the
    seconds and their share of that pass; stages down the side so it reads in an 80-column terminal."""
    from rich.table import Table

    stages = list(dict.fromkeys(stage for r in results for stage, _, _ in r.time_shares()))
    spent = [{stage: (s, share) for stage, s, share in r.time_shares()} for r in results]
    table = Table(title="where the time went (per stage, share of the pass)")
    table.add_column("stage")
    for r in results:
        table.add_column(r.domain, justify="right")
    if len(results) > 1:
        table.add_column("all", justify="right")
    for stage in stages:
        cells = [f"{_minutes(d[stage][0])} ({100 * d[stage][1]:.0f}%)" if stage in d else "-" for d in spent]
        total = [_minutes(sum(d[stage][0] for d in spent if stage in d))] if len(results) > 1 else []
        table.add_row(stage, *cells, *total)
    table.add_row("pass", *(_minutes(r.wall_s) for r in results),
                  *([_minutes(sum(r.wall_s for r in results))] if len(results) > 1 else []))
    return table


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s" if seconds >= 60 else f"{seconds:.1f}s"


def _strip_images(markdown: str) -> str:
    import re

    return re.sub(r"!\[[^\]]*\]\(data:image/[^)]*\)\s*", "", markdown)


def _summary_table(results: list[Any]):
    """One row per pass from its typed reports: floor, best base, fine-tuned, teacher (the ceiling, when
    the domain has one) on the primary metric."""
    from rich.table import Table

    from slm_platform.models.spec import ModelSpec

    table = Table(title="slm run summary")
    for col in ("domain", "version", "rows in", "train/val/test", "metric", "floor", "base", "fine-tuned",
                "teacher", "gates", "release"):
        table.add_column(col)
    for r in results:
        data = r.metadata.get("dataset", {})
        base, cand = r.baseline, r.candidate
        primary = (base or cand).primary_metric if (base or cand) else "-"
        floor = best = tuned = ceiling = None
        if base is not None and base.decision is not None:
            floor, best, ceiling = base.decision.floor, base.decision.best_base_value, base.decision.ceiling
        if cand is not None:
            floor = floor if floor is not None else cand.metric(ModelSpec.oracle(), primary)
            tuned = cand.subject_metric(primary)
        failed = [k for k, ok in r.checks.items() if not ok]
        judged = any(k.startswith("eval_report.") for k in r.checks)
        gates = "failed: " + ", ".join(failed) if failed else ("all passed" if judged else
                                                                "not reached" + ("" if r.success else " (run failed)"))
        split = "/".join(str(data.get(k, "-")) for k in ("train", "val", "test"))
        table.add_row(r.domain, r.version, str(data.get("rows_in", "-")), split, primary,
                      *(f"{100 * v:.1f}%" if isinstance(v, float) else "-" for v in (floor, best, tuned)),
                      f"{100 * ceiling:.1f}%" if isinstance(ceiling, float) else "none", gates,
                      r.release or "-")
    return table


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain", help="domain name or folder")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--day", default=None)
    parser.add_argument("--drift", type=float, default=0.0)
    parser.add_argument("--inbox", action="store_true", help="write into the domain's capture inbox for --day")
    parser.add_argument("--format", choices=["turns", "openai_chat"], default="turns",
                        help="turns: the platform's Turn records; openai_chat: the log an application kept of "
                             "these calls to a hosted LLM (the input of `slm init --from`; stdout only)")


@subcommand("simulate", "Write simulated traffic (JSONL) to stdout or into the capture inbox.", _simulate_arguments)
def cmd_simulate(args: argparse.Namespace) -> int:
    import json

    from slm_platform import settings
    from slm_platform.domain import Domain
    from slm_platform.orchestration.lifecycle import today

    if args.format == "openai_chat" and args.inbox:
        raise SystemExit("slm simulate: --format openai_chat writes a hosted-LLM call log to stdout, not the inbox")
    domain = Domain.load(_domain_folders([args.domain])[0])
    turns = domain.simulator().simulate(args.n, seed=args.seed, day=args.day, drift=args.drift)
    if args.format == "openai_chat":
        from slm_platform.data.openai_log import hosted_call

        for i, turn in enumerate(turns):
            line = hosted_call(turn, domain.roles[turn["role"]], created=1_767_225_600 + 60 * i)
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        return EXIT_OK
    if not args.inbox:
        for turn in turns:
            sys.stdout.write(json.dumps(turn, ensure_ascii=False) + "\n")
        return EXIT_OK
    day = args.day or today()
    folder = settings.inbox_dir(domain.name, domain.config.data.capture.inbox) / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"simulated-seed{args.seed}-drift{args.drift:g}.jsonl"
    with open(target, "w", encoding="utf-8") as f:
        for turn in turns:
            f.write(json.dumps(turn, ensure_ascii=False) + "\n")
    print(f"wrote {args.n} turns to {target}")
    return EXIT_OK


def _review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["pending", "submit"],
                        help="pending: the captured turns no truth source labelled, as JSONL for reviewers "
                             "(fill in each `label`); submit FILE: check reviewed rows against the contracts and "
                             "drop the good ones in the capture inbox's review folder")
    parser.add_argument("domain", help="domain name or folder")
    parser.add_argument("file", nargs="?", help="submit: the reviewed JSONL ({\"id\", \"label\"[, \"role\"]} rows)")
    parser.add_argument("--day", action="append", help="pending: a capture day (repeat; default: every published day)")
    parser.add_argument("--out", help="pending: write here instead of stdout")


@subcommand("review", "Reviewed labels for captured traffic: export the turns that need one, submit the reviews.",
            _review_arguments)
def cmd_review(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from slm_platform import settings
    from slm_platform.artifacts import ArtifactStore
    from slm_platform.data.reviews import pending_reviews, submit_reviews
    from slm_platform.data.stages import capture_days, captured_turns
    from slm_platform.domain import Domain

    domain = Domain.load(_domain_folders([args.domain])[0])
    if args.action == "pending":
        store = ArtifactStore(settings.artifacts_root())
        days = args.day or capture_days(store, domain.name)
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
        n = 0
        try:
            for row in pending_reviews(domain, captured_turns(store, domain.name, days)):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        finally:
            if args.out:
                out.close()
        print(f"{n} turns of {len(days)} capture day(s) need a review"
              + (f": {args.out} (fill in each label, then `slm review submit {domain.name} {args.out}`)"
                 if args.out else ""), file=sys.stderr)
        return EXIT_OK
    if not args.file:
        raise SystemExit("slm review submit: name the reviewed JSONL file")
    result = submit_reviews(domain, Path(args.file))
    for bad in result.rejected:
        print(f"rejected {bad.reason}", file=sys.stderr)
    print(f"{len(result.accepted)} reviews accepted of {result.rows} rows, {len(result.rejected)} rejected"
          + (f"; written to {result.path} (the next ingest of their capture day applies them)" if result.path else ""))
    return EXIT_PROBLEMS if result.rejected else EXIT_OK


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain", nargs="?", help="domain name or folder (not needed with --bfcl)")
    parser.add_argument("--model", action="append", required=True, metavar="SPEC",
                        help="oracle | teacher | base:<candidate> | adapter:<artifact or dir> | model:<dir> | "
                             "url:<base_url>#<model>; repeat to compare")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--dataset", help="dataset version (default: the latest published) of the domain")
    data.add_argument("--turns", help="any JSONL file of Turns")
    data.add_argument("--bfcl", help="a BFCL question file (answers from --answers or possible_answer/ beside it)")
    parser.add_argument("--answers", help="BFCL possible-answer file")
    parser.add_argument("--allow-partial", action="store_true",
                        help="with --bfcl: evaluate the questions that have an answer when some do not")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--engine", default=None, choices=["vllm", "transformers"],
                        help="engine for local models (default: serving.engine of the domain, else vllm)")
    parser.add_argument("--no-guided", action="store_true", help="unconstrained decoding")
    parser.add_argument("--base", help="base candidate for an adapter whose manifest does not name one")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N turns only")
    parser.add_argument("--out", help="write report.json/report.md/chart.png/predictions here")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


@subcommand("eval", "Evaluate models on a domain's test split, a JSONL of Turns, or a BFCL file.", _eval_arguments)
def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from slm_platform.evals.session import NoDatasetError, TurnsFileError
    from slm_platform.models.spec import ModelSpec, ModelSpecError

    try:
        specs = [ModelSpec.parse(m) for m in args.model]
    except ModelSpecError as exc:
        print(f"--model: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        session = _eval_session(args, specs)
    except (NoDatasetError, PartialBFCL, TurnsFileError, FileNotFoundError) as exc:
        print(_one_line(str(exc)), file=sys.stderr)
        return EXIT_PROBLEMS
    from slm_platform import tracing
    from slm_platform.evals.report import record_trace

    with tracing.run("eval", session.trace_inputs("eval", args.dataset)) as trace:  # one trace when LANGFUSE_* is set
        results = session.run(progress=not args.json)
        record_trace(trace, results, primary=session.primary)
    if args.out:
        session.write(Path(args.out), results)
    if args.json:
        print(json.dumps({str(spec): res.report.model_dump() for spec, res in results.items()}, indent=2))
        return EXIT_OK
    from rich.markdown import Markdown

    _console().print(Markdown(session.markdown(results)))
    return EXIT_OK


class PartialBFCL(ValueError):
    """Some BFCL questions cannot be scored (no answer, malformed) and --allow-partial was not given."""


def _eval_session(args: argparse.Namespace, specs: list[Any]):
    """The session `slm eval` asked for: a BFCL file, a JSONL of Turns, or a domain's split."""
    from slm_platform import settings
    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain import Domain
    from slm_platform.evals.session import EvalSession, latest_version

    store = ArtifactStore(settings.artifacts_root())
    options = {"guided": not args.no_guided, "base": args.base}
    if args.bfcl:
        from slm_platform.data.bfcl import bfcl_contract, bfcl_input

        turns = _bfcl_turns(Path(args.bfcl), Path(args.answers) if args.answers else None, args.allow_partial)
        turns = turns[: args.limit] if args.limit else turns
        return EvalSession(f"BFCL {Path(args.bfcl).stem}", turns, bfcl_contract, bfcl_input, specs, store=store,
                           engine=args.engine or "vllm", slice_keys=["category"], **options)
    if not args.domain:
        raise SystemExit("give a domain (or --bfcl FILE)")
    domain = Domain.load(_domain_folders([args.domain])[0])
    engine = args.engine or domain.config.serving.engine
    if args.turns:
        return EvalSession.for_domain_turns(domain, Path(args.turns), specs, limit=args.limit, engine=engine,
                                            store=store, **options)
    version = args.dataset or latest_version(store, domain.name)
    return EvalSession.for_domain_split(domain, store, version, args.split, specs, limit=args.limit, engine=engine,
                                        **options)


def _bfcl_turns(questions: Path, answers: Path | None, allow_partial: bool) -> list[dict[str, Any]]:
    """Every question of a BFCL file, or a refusal that counts the ones that cannot be scored."""
    from slm_platform.data.bfcl import load_bfcl

    try:
        turns, rejected = load_bfcl(questions, answers)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}; pass the possible-answer file with --answers FILE") from None
    if rejected:
        unanswered = sum(1 for r in rejected if r.kind == "unanswered")
        total = len(turns) + len(rejected)
        first = "; ".join(f"{r.location}: {r.reason}" for r in rejected[:3])
        what = (f"{len(rejected)} of {total} BFCL rows of {questions.name} cannot be scored "
                f"({unanswered} have no answer, {len(rejected) - unanswered} are malformed; first: {first})")
        if not allow_partial:
            hint = "pass the matching possible-answer file with --answers FILE, or " if unanswered else ""
            raise PartialBFCL(f"{what}; {hint}--allow-partial to evaluate the {len(turns)} others")
        print(f"warning: {what}; evaluating the other {len(turns)} (--allow-partial)", file=sys.stderr)
    return turns


def _ui_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)


@subcommand("ui", "Start the Dagster UI and daemon on the project's instance.", _ui_arguments)
def cmd_ui(args: argparse.Namespace) -> int:
    import os

    from slm_platform import settings
    from slm_platform.orchestration.instance import prepare_home

    prepare_home()
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster), "dev", "-w", str(settings.PROJECT_ROOT / "workspace.yaml"), "-h", args.host, "-p",
           str(args.port)]
    os.chdir(settings.PROJECT_ROOT)
    os.execv(cmd[0], cmd)
    return EXIT_OK  # not reached


# --- slm serve ------------------------------------------------------------------------------------
def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (other than loopback only with an API key)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--domains", nargs="+", metavar="DOMAIN", help="serve only these domains (default: every "
                        "folder in the domains directory)")


@subcommand("serve", "The OpenAI-compatible gateway: model '<domain>/<role>' on the released champions.",
            _serve_arguments)
def cmd_serve(args: argparse.Namespace) -> int:
    from slm_platform.serving.server import GatewayConfigError, serve

    try:
        serve(args.host, args.port, only=args.domains)
    except GatewayConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


# --- slm registry ---------------------------------------------------------------------------------
def _registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["ls", "show", "promote", "approve", "reject", "rollback", "history"],
                        help="ls: every version's state; show V: one version; promote V; approve V (the "
                             "challenger awaiting approval becomes champion); reject V (the challenger leaves its "
                             "alias for good); rollback [--to V]; history [--at TIME]")
    parser.add_argument("domain", help="domain name")
    parser.add_argument("version", nargs="?", help="the version (show, promote, approve, reject)")
    parser.add_argument("--role", help="one role (default: every role the package serves)")
    parser.add_argument("--to", help="rollback: an earlier champion (default: the previous one)")
    parser.add_argument("--alias", choices=["champion", "challenger"], default="champion",
                        help="promote: the alias to move (default: champion)")
    parser.add_argument("--reason",
                        help="why (recorded with the event; required by promote, approve, reject, rollback)")
    parser.add_argument("--at", help="history: what served at this time (ISO-8601; UTC when no zone is given)")
    parser.add_argument("--markdown", action="store_true",
                        help="history: a markdown table, oldest first (for a README or a ticket)")


MOVES = ("promote", "approve", "reject", "rollback")  # the registry actions that record an event


@subcommand("registry", "Release registry: version states, promote, approve, reject, rollback, and the replayable "
            "alias history.",
            _registry_arguments)
def cmd_registry(args: argparse.Namespace) -> int:
    import getpass

    from slm_platform import settings
    from slm_platform.artifacts import ArtifactStore
    from slm_platform.orchestration import registry as reg
    from slm_platform.orchestration.instance import get_instance

    if args.action in ("show", "promote", "approve", "reject") and not args.version:
        raise SystemExit(f"slm registry {args.action} needs a version, e.g. slm registry {args.action} "
                         f"{args.domain} v0001")
    if args.action in MOVES and not args.reason:
        raise SystemExit(f"slm registry {args.action} needs --reason TEXT (it is recorded in the history)")
    console, store, instance = _console(), ArtifactStore(settings.artifacts_root()), get_instance()
    try:
        if args.action in MOVES:
            actor = getpass.getuser()
            try:
                if args.action == "promote":
                    moved = reg.promote(instance, store, args.domain, args.version, role=args.role, alias=args.alias,
                                        actor=actor, reason=args.reason)
                elif args.action == "approve":
                    moved = reg.approve(instance, store, args.domain, args.version, role=args.role, actor=actor,
                                        reason=args.reason)
                elif args.action == "reject":
                    moved = reg.reject(instance, store, args.domain, args.version, role=args.role, actor=actor,
                                       reason=args.reason)
                else:
                    moved = reg.rollback(instance, store, args.domain, role=args.role, to=args.to, actor=actor,
                                         reason=args.reason)
            except reg.ReleaseRefused as exc:
                print(f"refused: {args.action} {args.domain} {args.version or args.to or ''}".rstrip(), file=sys.stderr)
                _print_problems([f"- {r}" for r in exc.reasons])
                return EXIT_PROBLEMS
            for m in moved:
                e = m.event
                console.print(f"{e.action}: {args.domain}/{e.role} {e.alias} {e.from_version or '-'} -> "
                              f"[bold]{e.to_version}[/] (event {m.seq}, package {e.package_hash[:12]})")
            return EXIT_OK
        reg.reconcile(instance, store, args.domain)
        if args.action == "history":
            return _registry_history(console, reg.read_log(instance, args.domain), args)
        return _registry_versions(console, instance, store, args)
    finally:
        instance.dispose()


def _registry_history(console, log, args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from rich.table import Table

    from slm_platform.registry.history import HISTORY_COLUMNS, history_markdown, history_rows, replay, served_at

    state = replay(log)
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise SystemExit(f"--at {args.at!r}: expected ISO-8601, e.g. 2026-11-30T14:05:00Z") from None
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        roles = [args.role] if args.role else sorted(state.aliases)
        for role in roles:
            target = served_at(log, role, at)
            console.print(f"{args.domain}/{role} at {at.isoformat()}: "
                          + (f"[bold]{target.version}[/] (package {target.package_hash[:12]})" if target else "nothing"))
        return EXIT_OK
    if args.markdown:
        print(history_markdown(state, role=args.role, newest_first=False))
        return EXIT_OK
    table = Table(title=f"{args.domain} release history ({len(log)} events)")
    for col in HISTORY_COLUMNS:
        table.add_column(col)
    for cells in history_rows(state, role=args.role):
        outcome = cells[-1]
        table.add_row(*cells[:-1], outcome if outcome == "applied" else f"[yellow]{outcome}")
    console.print(table)
    return EXIT_OK


def _registry_versions(console, instance, store, args: argparse.Namespace) -> int:
    from rich.table import Table

    from slm_platform.layout import release_pointer_path
    from slm_platform.orchestration import registry as reg
    from slm_platform.registry.history import version_states
    from slm_platform.registry.pointer import read_pointer

    state = reg.registry_state(instance, args.domain)
    facts = reg.version_facts(instance, store, args.domain)
    states = version_states(state, facts)
    aliases = {}
    for role, targets in sorted(state.aliases.items()):
        for alias, t in targets.items():
            aliases.setdefault(t.version, []).append(f"{role}:{alias}")
    if args.action == "ls":
        table = Table(title=f"{args.domain} versions")
        for col in ("version", "state", "aliases", "gates", "packaged"):
            table.add_column(col)
        for v, s in states.items():
            f = facts.get(v)
            gates = "–" if f is None or f.gates_passed is None else (
                "passed" if f.gates_passed else "failed: " + ", ".join(f.failed_gates))
            table.add_row(v, s.value, ", ".join(aliases.get(v, [])), gates, "yes" if f and f.packaged else "no")
        console.print(table)
        for role, v in state.awaiting_approval().items():
            console.print(f"[yellow]awaiting approval:[/] {args.domain}/{role} challenger {v} "
                          f"(slm registry approve {args.domain} {v} --reason TEXT)")
        pointer = read_pointer(store, args.domain)
        console.print(f"pointer: {store.uri(release_pointer_path(args.domain))} "
                      f"(event {pointer.last_event if pointer else '-'})")
        return EXIT_OK
    version = args.version
    if version not in states:
        raise SystemExit(f"{args.domain} has no version {version!r}; known: {sorted(states)}")
    cand = reg.inspect_candidate(instance, store, args.domain, version)
    console.print(f"[bold]{args.domain} {version}[/]: {states[version].value}"
                  + (f" ({', '.join(aliases[version])})" if version in aliases else ""))
    console.print(f"package: {store.uri(cand.package_rel)} "
                  + (f"manifest {cand.package_hash[:12]}" if cand.package_hash else "(not verifiable)"))
    console.print(f"compared with: {cand.report.reference if cand.report else '–'}")
    for name, verdict in cand.evidence.items():
        console.print(f"- {name}: {verdict}")
    for reason in cand.reasons:
        console.print(f"[red]not releasable:[/] {reason}")
    moves = [o for o in state.outcomes if o.applied and o.logged.event.to_version == version]
    for o in moves:
        e = o.logged.event
        console.print(f"event {o.logged.seq}: {e.action} {e.role}/{e.alias} by {e.actor}: {e.reason}")
    return EXIT_OK


# --- entry point --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`slm ...`; returns the exit code (the console script passes it to sys.exit)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help(sys.stderr)
            return EXIT_ERROR
        return int(SUBCOMMANDS[args.command].run(args) or 0)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(_one_line(str(exc.code)), file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:  # noqa: BLE001 - the one place that turns every failure into a line
        return _unexpected(exc)


def _unexpected(exc: BaseException) -> int:
    try:
        from slm_platform.config import ConfigError

        if isinstance(exc, ConfigError):
            _print_problems(exc.problems)
            return EXIT_PROBLEMS
        print(f"error: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
    except BaseException:  # noqa: BLE001 - even reporting failed (stderr closed, broken package)
        pass
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
