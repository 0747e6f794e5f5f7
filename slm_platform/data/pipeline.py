"""The streaming dataset stage: rows in -> redacted, deduplicated, clustered, labeled, validated splits.

One pass, constant memory per row: sources are read line by line, every row is redacted before
anything is written, and each row ends in exactly one place (train, val, test, removed as a
duplicate, or quarantine with its reason), so `rows_in` always equals the sum of the outcomes.
Quarantine records are redacted as a whole (reason, location, the row) by `quarantine_row` and
`DatasetBuilder._quarantine`: a reason never quotes a raw value, and if one ever did, it is redacted.
Clustering needs a vocabulary, so the first `clustering.fit_sample` rows are buffered, the
clusterer is fitted on them, and from then on rows flow in chunks.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from slm_platform.data.clustering import Clusterer
from slm_platform.data.dedupe import Deduplicator
from slm_platform.data.labeling import Labeler
from slm_platform.data.redaction import Redactor, strip_placeholders
from slm_platform.data.sources import RAW_LIMIT, Rejected, read_source
from slm_platform.data.split import Splitter, strata_of
from slm_platform.domain import Domain
from slm_platform.records import canonical_json, input_text
from slm_platform.teachers.base import Teacher

SPLITS = ("train", "val", "test")
CHUNK = 1000


@dataclass(frozen=True)
class SourceSpec:
    """One input of the stage: a file or folder in one of the capture formats."""

    name: str
    path: Path
    format: str = "jsonl"
    role: str | None = None
    answers: Path | None = None
    redacted: bool = False  # capture artifacts were redacted on ingest; redaction is idempotent anyway


@dataclass
class StageStats:
    rows_in: int = 0
    per_source: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)  # reason kind -> rows
    review: int = 0
    duplicates_removed: int = 0
    dedupe: Counter = field(default_factory=Counter)  # unique / exact_duplicate / near_duplicate
    split: Counter = field(default_factory=Counter)
    slices: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # "split/key" -> value counts
    roles: Counter = field(default_factory=Counter)  # "split/role" -> rows
    redaction: Counter = field(default_factory=Counter)
    clusters: Counter = field(default_factory=Counter)
    cluster_terms: dict[int, list[str]] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    groups: int = 0

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def rows_out(self) -> int:
        return sum(self.split.values()) + self.duplicates_removed + self.quarantined_total

    @property
    def conserved(self) -> bool:
        return self.rows_in == self.rows_out

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "conserved": self.conserved,
            "per_source": dict(self.per_source),
            "split": {s: self.split.get(s, 0) for s in SPLITS},
            "duplicates_removed": self.duplicates_removed,
            "quarantined": dict(self.quarantined),
            "quarantined_total": self.quarantined_total,
            "review": self.review,
            "dedupe": dict(self.dedupe),
            "dup_groups": self.groups,
            "slices": {k: dict(v) for k, v in sorted(self.slices.items())},
            "roles": dict(self.roles),
            "redaction": dict(self.redaction),
            "clusters": {str(k): v for k, v in sorted(self.clusters.items())},
            "cluster_terms": {str(k): v for k, v in sorted(self.cluster_terms.items())},
            "labels": self.labels,
        }


def quarantine_row(item: Rejected, redactor: Redactor) -> tuple[dict[str, Any], Counter]:
    """A rejected row as quarantine stores it, and the redaction hits: every string redacted (the
    row field by field when it parsed as JSON, else as text; reason and location too), then the
    row cut to RAW_LIMIT characters (after redaction, so no value is cut in half unredacted)."""
    raw: Any = item.raw if item.value is None else item.value
    record, hits = redactor.redact_value({"kind": item.kind, "reason": item.reason, "source": item.source,
                                          "location": item.location, "raw": raw})
    if not isinstance(record["raw"], str):
        record["raw"] = json.dumps(record["raw"], ensure_ascii=False)
    record["raw"] = record["raw"][:RAW_LIMIT]
    return record, hits


class _Writers:
    """Open JSONL files of one output folder; one line per row, written as the stream goes."""

    def __init__(self, out_dir: Path, names: Iterable[str]):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, TextIO] = {n: open(out_dir / f"{n}.jsonl", "w", encoding="utf-8") for n in names}

    def write(self, name: str, row: dict[str, Any]) -> None:
        self.files[name].write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class ValidityCache:
    """Validate labels once per distinct (role, output): outputs repeat a lot, jsonschema is slow."""

    def __init__(self, domain: Domain, limit: int = 100_000):
        self.domain, self.limit, self.cache = domain, limit, {}

    def errors(self, role: str, output: Any) -> list[str]:
        key = (role, canonical_json(output))
        hit = self.cache.get(key)
        if hit is None:
            if len(self.cache) >= self.limit:
                self.cache.clear()
            hit = self.cache[key] = self.domain.role(role).validate_output(output)
        return hit


class DatasetBuilder:
    """Runs the stage for one domain into a local folder (the staging dir of an artifact publish)."""

    def __init__(self, domain: Domain, *, teacher: Teacher | None = None, log: Callable[[str], None] | None = None,
                 progress: bool = True):
        cfg = domain.config.data
        self.domain = domain
        self.redactor = Redactor(cfg.redaction)
        self.dedupe = Deduplicator(cfg.dedupe) if cfg.dedupe.enabled else None
        self.clusterer = Clusterer(cfg.clustering) if cfg.clustering.enabled else None
        self.splitter = Splitter(cfg.split)
        self.labeler = Labeler(cfg.labels, domain.roles)
        self.validity = ValidityCache(domain)
        self.teacher = teacher
        self.log = log or (lambda msg: None)
        self.progress = progress
        self.stats = StageStats()

    # --- the stream ------------------------------------------------------------------------------
    def run(self, sources: Iterable[SourceSpec], out_dir: Path) -> StageStats:
        writers = _Writers(out_dir, (*SPLITS, "quarantine", "review"))
        try:
            buffer: list[dict[str, Any]] = []
            fit_size = self.domain.config.data.clustering.fit_sample if self.clusterer else CHUNK
            fitted = self.clusterer is None
            bar = tqdm(desc=f"{self.domain.name} dataset", unit=" turns", disable=not self.progress, mininterval=1.0)
            for row in self._admitted(sources, writers):
                bar.update(1)
                buffer.append(row)
                if not fitted and len(buffer) >= fit_size:
                    self._fit(buffer)
                    fitted = True
                if fitted and len(buffer) >= CHUNK:
                    self._finish_chunk(buffer, writers)
                    buffer = []
            if buffer:
                if not fitted:
                    self._fit(buffer)
                self._finish_chunk(buffer, writers)
            bar.close()
        finally:
            writers.close()
        self._summarize()
        if not self.stats.conserved:  # a bug, never a data problem: refuse to publish
            raise RuntimeError(f"row conservation broken: {self.stats.rows_in} in, {self.stats.rows_out} out")
        return self.stats

    def _admitted(self, sources: Iterable[SourceSpec], writers: _Writers) -> Iterator[dict[str, Any]]:
        """Parse, check the role, redact and dedupe; yield the rows that go on."""
        roles = self.domain.roles
        drop_near = self.domain.config.data.dedupe.drop == "exact_and_near"
        for spec in sources:
            self.log(f"reading source {spec.name} ({spec.format}) from {spec.path}")
            for item in read_source(spec.path, spec.format, domain=self.domain.name, source=spec.name,
                                    role=spec.role, answers=spec.answers, roles=roles):
                self.stats.rows_in += 1
                self.stats.per_source[spec.name] += 1
                if isinstance(item, Rejected):
                    record, hits = quarantine_row(item, self.redactor)
                    self.stats.redaction.update(hits)
                    self.stats.quarantined[record["kind"]] += 1
                    writers.write("quarantine", record)
                    continue
                turn, hits = self.redactor.redact_turn(item)
                self.stats.redaction.update(hits)
                if turn["role"] not in roles:  # read_source checked it already; a guard, not a path
                    self._quarantine(writers, "unknown_role", f"field 'role' is not one of {sorted(roles)}",
                                     turn=turn)
                    continue
                input_errors = roles[turn["role"]].validate_input(turn["input"])
                if input_errors:
                    self._quarantine(writers, "invalid_input", "; ".join(input_errors[:3]), turn=turn)
                    continue
                meta = turn.setdefault("meta", {})
                meta.setdefault("source", spec.name)
                meta.setdefault("slice", {})
                if self.dedupe is not None:
                    group, status = self.dedupe.assign(turn)
                else:
                    group, status = turn["id"], "unique"
                meta["dup_group"] = group
                self.stats.dedupe[status] += 1
                if status == "exact_duplicate" or (status == "near_duplicate" and drop_near):
                    self.stats.duplicates_removed += 1
                    continue
                yield turn

    def _fit(self, rows: list[dict[str, Any]]) -> None:
        if self.clusterer is None:
            return
        self.log(f"fitting clusters on {len(rows)} turns")
        self.clusterer.fit([strip_placeholders(input_text(r)) for r in rows])
        self.stats.cluster_terms = self.clusterer.top_terms(5)

    def _finish_chunk(self, rows: list[dict[str, Any]], writers: _Writers) -> None:
        """Cluster, label, validate and split one chunk of admitted rows."""
        if self.clusterer is not None:
            texts = [strip_placeholders(input_text(r)) for r in rows]
            for row, cluster in zip(rows, self.clusterer.predict(texts)):
                row["meta"]["cluster"] = int(cluster)
        for row in rows:
            self.labeler.add_oracle_label(row)
        if self.teacher is not None:
            self._teacher_labels(rows)
        stratify = self.domain.config.data.split.stratify
        for row in rows:
            decision = self.labeler.decide(row)
            if not decision.keep:
                if decision.review:
                    self.stats.review += 1
                    writers.write("review", row)
                kind = decision.kind or "unlabeled"
                self._quarantine(writers, kind, decision.reason or kind, turn=row)
                continue
            errors = self.validity.errors(row["role"], row["output"])
            if errors:
                self._quarantine(writers, "invalid_label",
                                 f"{row['label_source']} label breaks the contract: " + "; ".join(errors[:3]), turn=row)
                continue
            split = self.splitter.assign(row["meta"]["dup_group"], strata_of(row, stratify))
            writers.write(split, row)
            self.stats.split[split] += 1
            self.stats.roles[f"{split}/{row['role']}"] += 1
            if self.clusterer is not None:
                self.stats.clusters[row["meta"]["cluster"]] += 1
            for key, value in row["meta"]["slice"].items():
                self.stats.slices[f"{split}/{key}"][str(value)] += 1

    def _teacher_labels(self, rows: list[dict[str, Any]]) -> None:
        """Ask the teacher, per role, for the rows the policy wants a teacher label on."""
        policy = self.domain.config.data.labels
        better = policy.truth[: policy.truth.index("teacher")] if "teacher" in policy.truth else policy.truth
        by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            labels = row.get("labels") or {}
            if not policy.teacher_labels_unlabeled or not any(labels.get(s) for s in better):
                by_role[row["role"]].append(row)
        for role, batch in by_role.items():
            outputs = self.teacher.label(self.domain.role(role), [r["input"] for r in batch])
            for row, out in zip(batch, outputs):
                if out is not None:
                    row.setdefault("labels", {})["teacher"] = out

    def _quarantine(self, writers: _Writers, kind: str, reason: str, **row: Any) -> None:
        """Count and write one quarantined row; the record goes through the redactor as a whole (the
        turn is redacted already; the reason may quote a value, e.g. a schema error's)."""
        self.stats.quarantined[kind] += 1
        record, _ = self.redactor.redact_value({"kind": kind, "reason": reason, **row})
        writers.write("quarantine", record)

    def _summarize(self) -> None:
        ls = self.labeler.stats
        self.stats.labels = {
            "chosen": dict(ls.chosen),
            "present": dict(ls.present),
            "agreement": {k: round(v, 4) for k, v in ls.agreement().items()},
            "compared": dict(ls.compared),
            "oracle_errors": ls.oracle_errors,
        }
        if self.dedupe is not None:
            self.stats.groups = int(self.dedupe.stats["groups"])
