"""What a package is built from, verified, and the refusal when a version may not be packaged.

A version is packaged only when its candidate eval report exists, judged this version's adapter,
and every gate in it passed; and only from the exact artifacts that were evaluated: the adapter
the report names by hash, the dataset and base model the adapter names by hash. Every reason a
version cannot be packaged is gathered before refusing, so one error lists all there is to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from slm_platform.artifacts import ArtifactError, ArtifactStore, Manifest
from slm_platform.domain import Domain
from slm_platform.evals.report import EvalReport
from slm_platform.layout import adapter_dir, baseline_eval_dir, candidate_eval_dir, dataset_dir
from slm_platform.models import BaseModel, BaseModelError, candidate_key, resolve_base_model
from slm_platform.models.spec import ModelSpec

Log = Callable[[str], Any]


class PackageRefusedError(ValueError):
    """The version cannot be packaged: each reason names the artifact (and gate) at fault."""

    def __init__(self, domain: str, version: str, reasons: list[str]):
        self.domain, self.version, self.reasons = domain, version, list(reasons)
        super().__init__(f"{domain} {version} is not packaged:\n" + "\n".join(f"- {r}" for r in self.reasons))


@dataclass(frozen=True)
class ArtifactRef:
    """One verified input artifact: where it is, its manifest (hash = identity), a local copy."""

    rel: str
    uri: str
    manifest: Manifest
    local: Path

    @property
    def manifest_hash(self) -> str:
        return self.manifest.hash

    def parent(self) -> dict[str, str]:
        return {"uri": self.uri, "sha256": self.manifest.hash}


@dataclass(frozen=True)
class PackageInputs:
    domain: Domain
    version: str
    dataset: ArtifactRef
    dataset_stats: dict[str, Any]
    adapter: ArtifactRef
    base: BaseModel
    base_parent: dict[str, str]  # {uri, sha256}: the base model as lineage records it
    base_artifact: str | None  # base_models/<key>, or None for a path: candidate
    candidate_eval: ArtifactRef
    candidate_report: EvalReport
    baseline_eval: ArtifactRef | None
    baseline_report: EvalReport | None

    def parents(self) -> list[dict[str, str]]:
        refs = [self.dataset.parent(), self.base_parent, self.adapter.parent(), self.candidate_eval.parent()]
        return refs + ([self.baseline_eval.parent()] if self.baseline_eval is not None else [])


def _open(store: ArtifactStore, rel: str, kind: str, what: str, reasons: list[str]) -> ArtifactRef | None:
    try:
        manifest = store.read_manifest(rel)
        local = store.open_verified(rel)
    except ArtifactError as e:
        reasons.append(f"{what}: {e}")
        return None
    if manifest.kind != kind:
        reasons.append(f"{what} {store.uri(rel)}: artifact kind is {manifest.kind!r}, expected {kind!r}")
        return None
    return ArtifactRef(rel, store.uri(rel), manifest, local)


def _read_report(ref: ArtifactRef, what: str, reasons: list[str]) -> EvalReport | None:
    try:
        return EvalReport.read(ref.local)
    except (OSError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        reasons.append(f"{what} {ref.uri}/report.json: unreadable ({str(e).splitlines()[0]})")
        return None


def _check_lineage(child: ArtifactRef, parent: ArtifactRef, what: str, reasons: list[str]) -> None:
    """The child names the parent by hash: refuse when the parent changed since the child was made."""
    for p in child.manifest.parents:
        if p.get("uri") == parent.uri and p.get("sha256") != parent.manifest_hash:
            reasons.append(f"{what}: {parent.uri} changed after {child.uri} was made from it "
                           f"(recorded manifest {p.get('sha256', '')[:12]}, now {parent.manifest_hash[:12]})")


def _gate_reasons(report: EvalReport, ref: ArtifactRef, subject: str) -> list[str]:
    where = f"{ref.uri}/report.json"
    reasons = []
    if report.subject != subject:
        reasons.append(f"{where}: field subject: the report judged {report.subject!r}, not {subject!r}")
    if not report.gates:
        reasons.append(f"{where}: field gates: the report has no gate results")
    for gate in (report.gates or {}).values():
        if not gate.passed:
            reasons.append(f"gate {gate.name!r} failed: {gate.detail}")
    return reasons


def _base_candidate(domain: Domain, adapter: ArtifactRef, baseline: EvalReport | None) -> str | None:
    """The candidate the adapter was trained on: its manifest names it (or its key), else the baseline's choice."""
    extra = adapter.manifest.extra or {}
    if extra.get("base_candidate"):
        return str(extra["base_candidate"])
    keys = {candidate_key(c): c for c in domain.config.model.candidates}
    if extra.get("base_model") in keys:
        return keys[extra["base_model"]]
    if baseline is not None and baseline.decision is not None:
        return baseline.decision.chosen_base
    return None


def gather_inputs(domain: Domain, store: ArtifactStore, version: str, *, log: Log) -> PackageInputs:
    """Every input of `package[version]`, verified; `PackageRefusedError` listing all reasons otherwise."""
    name = domain.name
    reasons: list[str] = []
    cand_rel = candidate_eval_dir(name, version)
    cand_ref = _open(store, cand_rel, "eval_report", "candidate eval report", reasons)
    if cand_ref is None and not store.exists(cand_rel):
        reasons[-1] += f" (materialize eval_report[{version}] first; only a version whose gates passed is packaged)"
    adapter = _open(store, adapter_dir(name, version), "adapter", "adapter", reasons)
    dataset = _open(store, dataset_dir(name, version), "dataset", "dataset", reasons)
    baseline: ArtifactRef | None = None
    if store.exists(baseline_eval_dir(name, version)):  # optional: ceiling and base scores for the card
        baseline = _open(store, baseline_eval_dir(name, version), "eval_report", "baseline eval report", reasons)
    report = _read_report(cand_ref, "candidate eval report", reasons) if cand_ref else None
    base_report = _read_report(baseline, "baseline eval report", reasons) if baseline else None
    if cand_ref is not None and report is not None:
        reasons += _gate_reasons(report, cand_ref, str(ModelSpec.adapter(adapter_dir(name, version))))
    if cand_ref is not None and adapter is not None:
        _check_lineage(cand_ref, adapter, "adapter", reasons)
    if adapter is not None and dataset is not None:
        _check_lineage(adapter, dataset, "dataset", reasons)
    stats: dict[str, Any] = {}
    if dataset is not None:
        try:
            stats = json.loads((dataset.local / "stats.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            reasons.append(f"dataset {dataset.uri}/stats.json: unreadable ({e})")
    candidate = _base_candidate(domain, adapter, base_report) if adapter is not None else None
    if adapter is not None and candidate is None:
        reasons.append(f"adapter {adapter.uri}/manifest.json: field extra.base_candidate: missing, and no "
                       f"candidate of the domain has key {adapter.manifest.extra.get('base_model')!r}")
    if reasons:
        raise PackageRefusedError(name, version, reasons)
    assert cand_ref and report and adapter and dataset and candidate
    try:
        base = resolve_base_model(candidate, store, log=log)
    except (BaseModelError, ArtifactError) as e:
        raise PackageRefusedError(name, version, [f"base model {candidate}: {e}"]) from None
    base_artifact = base.uri[len(store.root) + 1:] if base.uri.startswith(store.root + "/") else None
    if base_artifact is not None:
        base_ref = ArtifactRef(base_artifact, base.uri, store.read_manifest(base_artifact), base.local_dir)
        _check_lineage(adapter, base_ref, "base model", reasons)
        base_parent = base_ref.parent()
    else:
        base_parent = {"uri": base.uri, "sha256": base.weights_sha256}
    if reasons:
        raise PackageRefusedError(name, version, reasons)
    return PackageInputs(domain=domain, version=version, dataset=dataset, dataset_stats=stats, adapter=adapter,
                         base=base, base_parent=base_parent, base_artifact=base_artifact, candidate_eval=cand_ref,
                         candidate_report=report, baseline_eval=baseline, baseline_report=base_report)
