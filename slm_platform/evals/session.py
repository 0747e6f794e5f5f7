"""One evaluation session: a set of turns, how to ask about them, and the models to ask.

Shared by `slm eval` and the eval stages: turns come from a dataset version's split, any JSONL of
Turns, or a BFCL file; every model spec is opened, run and closed in turn (one server at a time).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_platform import settings, tracing
from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.domain.contract import RoleContract
from slm_platform.evals.decision import BaselineDecision
from slm_platform.evals.gates import GateResult
from slm_platform.evals.report import Results, render_markdown, write_report
from slm_platform.evals.runner import evaluate
from slm_platform.evals.targets import open_predictor
from slm_platform.layout import dataset_dir, datasets_root
from slm_platform.models.spec import ModelSpec, SpecKind
from slm_platform.records import TurnError, check_turn


class NoDatasetError(LookupError):
    """A domain split was asked for before any dataset version was published."""


@dataclass
class EvalSession:
    title: str
    turns: list[dict[str, Any]]
    contract_for: Callable[[dict[str, Any]], RoleContract]
    input_for: Callable[[dict[str, Any]], dict[str, Any]] | None
    specs: list[ModelSpec]
    domain: Domain | None = None
    store: ArtifactStore = field(default_factory=lambda: ArtifactStore(settings.artifacts_root()))
    engine: str = "vllm"
    guided: bool = True
    base: str | None = None
    primary: str = "exact_match_rate"
    slice_keys: list[str] = field(default_factory=list)
    max_model_len: int = 2048
    max_tokens: int = 256

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def for_domain_split(cls, domain: Domain, store: ArtifactStore, version: str, split: str, specs: list[ModelSpec],
                         *, limit: int | None = None, **kw: Any) -> "EvalSession":
        folder = store.open_verified(dataset_dir(domain.name, version))
        turns = read_turns(folder / f"{split}.jsonl", limit or domain.config.eval.max_examples, domain=domain)
        return cls(f"{domain.name} {version} {split}", turns, lambda t: domain.role(t["role"]), None, specs,
                   domain=domain, store=store, **{**cls._domain_defaults(domain), **kw})

    @classmethod
    def for_domain_turns(cls, domain: Domain, path: Path, specs: list[ModelSpec], *, limit: int | None = None,
                         **kw: Any) -> "EvalSession":
        """Any JSONL of Turns, scored with the domain's contracts and eval settings."""
        return cls(f"{domain.name} {path.name}", read_turns(path, limit, domain=domain),
                   lambda t: domain.role(t["role"]), None,
                   specs, domain=domain, **{**cls._domain_defaults(domain), **kw})

    @staticmethod
    def _domain_defaults(domain: Domain) -> dict[str, Any]:
        return {"primary": domain.config.eval.primary_metric,
                "slice_keys": [s.key for s in domain.config.eval.slices],
                # the longest prompt training kept plus the longest answer evaluation allows
                "max_model_len": max(2048, domain.config.model.recipe.max_seq_len + domain.config.eval.max_tokens),
                "max_tokens": domain.config.eval.max_tokens}

    # --- running -------------------------------------------------------------------------------
    def run(self, *, progress: bool = False, log: Callable[[str], None] | None = None) -> Results:
        results: Results = {}
        pricing = self.domain.config.teacher.pricing if self.domain is not None else None
        for spec in self.specs:
            (log or (lambda m: None))(f"evaluating {spec} on {len(self.turns)} turns ({self.title})")
            with open_predictor(spec, domain=self.domain, store=self.store, engine=self.engine, guided=self.guided,
                                base=self.base, max_model_len=self.max_model_len, max_tokens=self.max_tokens,
                                progress=progress) as predictor:
                results[spec] = evaluate(self.turns, self.contract_for, predictor, slice_keys=self.slice_keys,
                                         pricing=pricing if spec.kind == SpecKind.TEACHER else None,
                                         input_for=self.input_for)
        return results

    def trace_inputs(self, kind: str, version: str | None = None) -> dict[str, Any]:
        """What this eval run was asked, as trace attributes (names, counts and settings; no turn)."""
        name = self.domain.name if self.domain is not None else None
        inputs = {"title": self.title, "models": [str(s) for s in self.specs], "turns": len(self.turns),
                  "engine": self.engine, "guided": self.guided}
        return {"slm.run.kind": kind, "slm.domain": name, "slm.version": version,
                "langfuse.session.id": f"{name}/{version}" if name and version else None,
                "slm.eval.title": self.title, "slm.eval.models": inputs["models"], "slm.eval.turns": len(self.turns),
                "slm.eval.engine": self.engine, "slm.eval.guided": self.guided,
                "langfuse.trace.input": tracing.as_json(inputs)}

    def markdown(self, results: Results, notes: list[str] | None = None) -> str:
        return render_markdown(self.title, results, primary=self.primary, notes=notes, slice_keys=self.slice_keys)

    def write(self, folder: Path, results: Results, *, decision: BaselineDecision | None = None,
              gates: dict[str, GateResult] | None = None, reference: str | None = None,
              subject: ModelSpec | None = None, notes: list[str] | None = None) -> str:
        return write_report(folder, self.title, results, primary=self.primary, slice_keys=self.slice_keys,
                            decision=decision, gates=gates, reference=reference, subject=subject, notes=notes)


class TurnsFileError(ValueError):
    """A file of turns to evaluate holds a line that is not a Turn of the domain."""


def read_turns(path: Path, limit: int | None = None, *, domain: Domain | None = None) -> list[dict[str, Any]]:
    """Turns to evaluate, each checked as a `records.Turn` (of `domain`, with one of its roles).

    The file may come from anywhere (`slm eval --turns`), so a bad line is refused with its file,
    line and field; the message never quotes the value."""
    turns = []
    roles = tuple(domain.roles) if domain is not None else None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise TurnError("line is not a JSON object; expected a Turn")
                check_turn(row, domain=domain.name if domain is not None else None, roles=roles)
            except (json.JSONDecodeError, TurnError) as exc:
                what = "line is not valid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise TurnsFileError(f"{path}:{lineno}: {what}") from None
            turns.append(row)
            if limit and len(turns) >= limit:
                break
    return turns


def latest_version(store: ArtifactStore, domain: str) -> str:
    versions = store.list(datasets_root(domain))
    if not versions:
        raise NoDatasetError(f"no dataset version of {domain} in {store.root}: run `slm run {domain}` first")
    return versions[-1]
