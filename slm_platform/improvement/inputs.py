"""Gather what the triggers and the budget read, from the artifact store alone: the release
pointer (champion), the latest drift report, the capture days since the champion's dataset, the
champion package's contract fingerprints, the dataset and adapter manifests."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from slm_platform.artifacts import ArtifactError, ArtifactStore
from slm_platform.domain import Domain
from slm_platform.drift.report import DriftReport
from slm_platform.evals.metrics import score_example
from slm_platform.improvement.budget import TrainingRun
from slm_platform.improvement.triggers import LiveQuality, TriggerInputs
from slm_platform.data.stages import captured_day_rows, capture_days
from slm_platform.layout import adapters_root, capture_dir, dataset_dir, datasets_root, drift_dir
from slm_platform.registry.releases import current_release

TRUTH = ("gold", "teacher")  # labels that judge a served answer (capture/oracle labels do not)


def _when(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _created(store: ArtifactStore, rel: str) -> datetime | None:
    try:
        return _when(store.read_manifest(rel).created_at)
    except ArtifactError:
        return None


def training_runs(store: ArtifactStore, domain: str) -> list[TrainingRun]:
    runs = []
    for version in store.list(adapters_root(domain)):
        rel = f"{adapters_root(domain)}/{version}"
        try:
            manifest = store.read_manifest(rel)
        except ArtifactError:
            continue
        at = _when(manifest.created_at)
        if at is not None:
            runs.append(TrainingRun(version, at, float((manifest.extra or {}).get("wall_time_s") or 0.0) / 3600))
    return runs


class _TrainedOn:
    """Which captured rows the champion's dataset already read: a capture day whose published hash is
    one of the dataset's parents is wholly in it; a day published again since (the same day, more
    rows) is checked row by row against the ids the dataset kept (loaded once, on first need)."""

    def __init__(self, store: ArtifactStore, domain: str, dataset_rel: str):
        self.store, self.domain, self.rel = store, domain, dataset_rel
        try:
            self.parents = {p.get("sha256") for p in store.read_manifest(dataset_rel).parents}
        except ArtifactError:
            self.parents = set()
        self._ids: set[str] | None = None

    def whole_day(self, day: str) -> bool:
        try:
            return self.store.read_manifest(capture_dir(self.domain, day)).hash in self.parents
        except ArtifactError:
            return False

    def holds(self, row: dict[str, Any]) -> bool:
        if self._ids is None:
            self._ids = set()
            try:
                folder = self.store.open_verified(self.rel)
            except ArtifactError:
                return False
            for file in sorted(folder.glob("*.jsonl")):  # splits, quarantine, review: every row it read and kept
                with open(file, encoding="utf-8") as f:
                    self._ids.update(json.loads(line).get("id") for line in f if line.strip())
        return row.get("id") in self._ids


def gather_inputs(domain: Domain, store: ArtifactStore, now: datetime) -> TriggerInputs:
    name = domain.name
    first_role = next(iter(domain.roles))
    release = current_release(store, name, first_role)
    champion = release.version if release else None

    datasets = {v: _created(store, dataset_dir(name, v)) for v in store.list(datasets_root(name))}
    built = [at for at in datasets.values() if at is not None]
    last_version_at = max(built) if built else None

    unseen, auc, valid, drift_day, drift_note = {}, {}, {}, None, None
    days = store.list(f"{name}/drift")
    if days:
        drift_day = days[-1]
        report = DriftReport.read(store.open_verified(drift_dir(name, drift_day)))
        for role, r in report.roles.items():
            if champion is not None and r.reference.version != champion:
                # measured against another version's training data (the champion changed since): a drift
                # the new champion may have trained on must not start a retrain again
                drift_note = (f"the drift report of {drift_day} compares with {r.reference.version}'s training "
                              f"data, not champion {champion}'s: not measured until the next report")
                continue
            if r.unseen_share.value is not None:
                unseen[role] = r.unseen_share.value
            if r.embedding is not None and r.embedding.classifier_auc.value is not None:
                auc[role] = r.embedding.classifier_auc.value
            if r.schema_valid_rate.value is not None:
                valid[role] = r.schema_valid_rate.value

    live: dict[str, LiveQuality] = {}
    new_rows: int | None = None
    changed: list[str] | None = None
    if release is not None:
        manifest = store.read_manifest(release.package_rel)
        extra = manifest.extra or {}
        fingerprints = extra.get("contracts")
        if isinstance(fingerprints, dict):
            changed = sorted(r for r, c in domain.roles.items() if fingerprints.get(r) != c.fingerprint())
        since = datasets.get(champion) or _when(manifest.created_at)
        trained_on = _TrainedOn(store, name, dataset_dir(name, champion))
        primary = domain.config.eval.primary_metric
        offline = extra.get("primary_value")
        scores: dict[str, list[bool]] = {}
        new_rows = 0
        for day in capture_days(store, name, since.date().isoformat() if since else "0000-00-00"):
            whole = trained_on.whole_day(day)
            for row in captured_day_rows(store, name, day):
                labels = row.get("labels") or {}
                truth = next((labels[s] for s in TRUTH if labels.get(s) is not None), None)
                if truth is None:
                    continue
                new_rows += not (whole or trained_on.holds(row))  # rows the champion trained on are not new
                meta = row.get("meta") or {}
                contract = domain.roles.get(row.get("role") or "")
                if contract is None or meta.get("route") != "slm" or meta.get("version") != champion:
                    continue
                score = score_example(contract.kind, contract, row.get("output"), truth).get(primary)
                if score is not None:
                    scores.setdefault(contract.id, []).append(bool(score))
        if isinstance(offline, (int, float)):
            live = {role: LiveQuality(sum(s) / len(s), len(s), float(offline)) for role, s in scores.items() if s}
    return TriggerInputs(now=now, champion=champion, drift_day=drift_day, drift_note=drift_note,
                         unseen_share=unseen, input_auc=auc,
                         schema_valid_rate=valid,
                         live_quality=live, new_labelled_rows=new_rows, contract_changed=changed,
                         last_version_at=last_version_at)
