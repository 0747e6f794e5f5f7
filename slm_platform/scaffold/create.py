"""`slm init`: a new domain folder from a log of hosted-LLM calls, written whole or not at all.

Steps: scan the log (`calls`), group the calls into roles (`roles`), read every call back through the
platform's own reader and contract (`verify`), decide the files (`plan`), format them (`templates`),
write them into a staging folder, load it with `Domain.load` (what `slm validate` runs), and only then
move it into place. The target folder must not exist: `slm init` never overwrites anything.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slm_platform.config.models import NAME_RE
from slm_platform.domain import Domain
from slm_platform.scaffold import templates
from slm_platform.scaffold.calls import RejectedLine, read_log
from slm_platform.scaffold.plan import DomainPlan, comment_safe, plan_domain
from slm_platform.scaffold.roles import ContractConflict, infer_roles
from slm_platform.scaffold.verify import verify_calls, write_seed

REASONS_SHOWN = 10  # rejected lines listed when nothing usable is left


class InitRefused(Exception):
    """`slm init` wrote nothing; `problems` says why, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class InitResult:
    folder: Path
    plan: DomainPlan
    files: list[str]  # written, relative to the folder

    @property
    def rejected(self) -> list[RejectedLine]:
        return self.plan.rejected


def init_domain(folder: Path, log_file: Path, *, command: str | None = None) -> InitResult:
    """Scaffold `folder` (its name is the domain's) from `log_file`; raises InitRefused, writing nothing."""
    folder = Path(folder)
    name = folder.name
    if not re.fullmatch(NAME_RE, name):
        raise InitRefused([f"{name!r} is not a domain name; expected lowercase letters, digits and '_', "
                           "starting with a letter (at most 63 characters)"])
    if folder.exists() or folder.is_symlink():
        raise InitRefused([f"{folder} already exists; slm init never overwrites a folder (choose another name, "
                           "or remove it first)"])
    log_file = Path(log_file)
    if not log_file.is_file():
        raise InitRefused([f"{log_file}: no such file; expected a JSONL log of chat-completion calls"])
    scan = read_log(log_file)
    try:
        roles = infer_roles(scan.calls)
    except ContractConflict as exc:
        raise InitRefused([f"{log_file.name}: {p}" for p in exc.problems]
                          + ["a role has one contract: keep one variant in the log, or give the variants "
                             "different names, and run slm init again"]) from None
    command = command or f"slm init {name} --from {comment_safe(log_file.name)}"
    with tempfile.TemporaryDirectory(prefix="slm-init-") as tmp:
        roles, unreadable = verify_calls(name, roles, Path(tmp) / "check")
        rejected = sorted(scan.rejected + unreadable, key=lambda r: r.line)
        if not roles:
            shown = [f"line {r.line}: {r.reason}" for r in rejected[:REASONS_SHOWN]]
            more = len(rejected) - len(shown)
            raise InitRefused([f"{log_file.name}: no usable call in {scan.lines} lines"] + shown
                              + ([f"({more} more rejected lines not shown)"] if more else []))
        plan = plan_domain(name, log_file.name, scan.lines, roles, rejected)
        stage = Path(tmp) / name
        files = _write(stage, plan, command, _shown(folder))
        Domain.load(stage)  # what `slm validate` loads: a failure here is a bug in slm init, and nothing is published
        _publish(stage, folder)
    return InitResult(folder, plan, files)


def _shown(folder: Path) -> str:
    """The folder as a user would type it: relative to the working directory when under it."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(folder)


def _write(stage: Path, plan: DomainPlan, command: str, folder_hint: str) -> list[str]:
    files: dict[str, str] = {
        "slm.config.yaml": templates.config_yaml(plan, command),
        "oracle.py": templates.oracle_py(plan, folder_hint),
        "simulate.py": templates.SIMULATE_PY,
        "README.md": templates.readme_md(plan, command),
    }
    for r in plan.roles:
        files[r.prompt_file] = templates.prompt_text(r)
        files[r.contract_file] = templates.contract_json(r)
    for rel, text in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_text(text, encoding="utf-8")
    written = list(files)
    for r in plan.roles:
        write_seed(stage / r.seed_file, r.role)
        written.append(r.seed_file)
    if plan.rejected:
        with open(stage / "data" / "rejected.jsonl", "w", encoding="utf-8") as f:
            for line in plan.rejected:
                f.write(json.dumps(line.record(), ensure_ascii=False) + "\n")
        written.append("data/rejected.jsonl")
    return sorted(written)


def _publish(stage: Path, folder: Path) -> None:
    """Move the staged files into a folder created here: mkdir fails if anything took the name meanwhile."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        raise InitRefused([f"{folder} already exists; slm init never overwrites a folder"]) from None
    for child in sorted(stage.iterdir()):
        shutil.move(str(child), str(folder / child.name))
