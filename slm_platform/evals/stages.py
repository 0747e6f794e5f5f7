"""The two evaluation stages as the rest of the platform calls them: baseline and candidate eval.

`run_baseline_eval` measures the floor (oracle), the ceiling (teacher, when configured) and every
base candidate zero-shot on a dataset version's test split, picks the base model and decides
whether to fine-tune. `run_candidate_eval` measures the version's adapter against the floor and a
reference (the current champion, re-evaluated on the same turns; else the chosen base model from
the baseline) and judges the promotion gates. Both publish a report artifact (report.json as an
`EvalReport`, report.md, chart.png, predictions) and return it typed; the Dagster assets and the
CLI only present what comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slm_platform import tracing
from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals.decision import BaselineDecision, baseline_decision
from slm_platform.evals.gates import evaluate_gates, gate_names, has_floor
from slm_platform.evals.report import EvalReport, Results, record_trace
from slm_platform.evals.runner import EntryReport
from slm_platform.evals.session import EvalSession
from slm_platform.layout import adapter_dir, base_model_dir, baseline_eval_dir, candidate_eval_dir, dataset_dir
from slm_platform.models import candidate_key
from slm_platform.models.spec import ModelSpec
from slm_platform.registry.releases import current_release, reference_name

Log = Callable[[str], None]


@dataclass(frozen=True)
class EvalStageResult:
    rel: str  # the report artifact, relative to the store root
    uri: str
    manifest_hash: str
    report: EvalReport
    markdown: str
    chart_png: bytes
    n_turns: int


def _publish(store: ArtifactStore, rel: str, session: EvalSession, results: Results, *, parents: list[str],
             notes: list[str], trace: tracing.Run = tracing.NOOP_RUN, **typed) -> EvalStageResult:
    with store.publish(rel, kind="eval_report", parents=parents, producer="slm_platform.evals.stages",
                       overwrite=True) as staging:
        markdown = session.write(staging, results, notes=notes, **typed)
        png = (staging / "chart.png").read_bytes()
        report = EvalReport.read(staging)
    out = EvalStageResult(rel, store.uri(rel), store.read_manifest(rel).hash, report, markdown, png,
                          len(session.turns))
    record_trace(trace, results, primary=session.primary, **typed)
    trace.set({"slm.report.uri": out.uri, "slm.report.manifest_hash": out.manifest_hash})
    return out


def _session(domain: Domain, store: ArtifactStore, version: str, specs: list[ModelSpec]) -> EvalSession:
    return EvalSession.for_domain_split(domain, store, version, "test", specs, engine=domain.config.serving.engine,
                                        guided=domain.config.serving.guided_decoding)


def baseline_specs(domain: Domain) -> list[ModelSpec]:
    specs = [ModelSpec.base(c) for c in domain.config.model.candidates]
    if has_floor(domain):
        specs.insert(0, ModelSpec.oracle())
    if domain.config.eval.ceiling == "teacher" and domain.config.teacher.provider != "none":
        specs.append(ModelSpec.teacher())
    return specs


def run_baseline_eval(domain: Domain, store: ArtifactStore, version: str, *, log: Log | None = None) -> EvalStageResult:
    session = _session(domain, store, version, baseline_specs(domain))
    with tracing.run("baseline_eval", session.trace_inputs("baseline_eval", version)) as trace:
        results = session.run(log=log)
        decision = baseline_decision(domain, results)
        parents = [dataset_dir(domain.name, version)] + [base_model_dir(candidate_key(c))
                                                         for c in domain.config.model.candidates]
        return _publish(store, baseline_eval_dir(domain.name, version), session, results, parents=parents,
                        notes=[decision.summary], decision=decision, trace=trace)


def read_baseline_decision(store: ArtifactStore, domain: str, version: str) -> BaselineDecision:
    report = EvalReport.read(store.open_verified(baseline_eval_dir(domain, version)))
    if report.decision is None:
        raise ValueError(f"{store.uri(baseline_eval_dir(domain, version))}: the baseline report has no decision")
    return report.decision


def run_candidate_eval(domain: Domain, store: ArtifactStore, version: str, *,
                       log: Log | None = None) -> EvalStageResult:
    name = domain.name
    candidate = ModelSpec.adapter(adapter_dir(name, version))
    specs = [candidate]
    if has_floor(domain):
        specs.insert(0, ModelSpec.oracle())
    release = current_release(store, name, next(iter(domain.roles)))  # a package serves every role
    incumbent = ModelSpec.adapter(release.adapter) if release is not None else None
    if incumbent is not None:
        specs.append(incumbent)
    session = _session(domain, store, version, specs)
    with tracing.run("eval_report", session.trace_inputs("eval_report", version)) as trace:
        results = session.run(log=log)
        floor = results[ModelSpec.oracle()].report if ModelSpec.oracle() in results else None
        reference: EntryReport | None
        if release is not None and incumbent is not None:
            reference, ref_name = results[incumbent].report, reference_name(release.version)
        else:
            baseline = EvalReport.read(store.open_verified(baseline_eval_dir(name, version)))
            chosen = baseline.decision.chosen_base if baseline.decision else domain.config.model.candidates[0]
            reference, ref_name = baseline.entry(ModelSpec.base(chosen)), f"base model {chosen}"
        gates = evaluate_gates(domain.config.eval, results[candidate].report, floor=floor, reference=reference,
                               reference_name=ref_name)
        gates = {g: gates[g] for g in gate_names(domain)}
        lines = [f"- {'PASS' if g.passed else 'FAIL'} `{g.name}`: {g.detail}" for g in gates.values()]
        return _publish(store, candidate_eval_dir(name, version), session, results,
                        parents=[adapter_dir(name, version), baseline_eval_dir(name, version)],
                        notes=["## Gates", "", *lines], subject=candidate, gates=gates, reference=ref_name,
                        trace=trace)
