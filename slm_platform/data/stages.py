"""The two data stages as the rest of the platform calls them: capture ingest and dataset build.

Both publish through the artifact store (atomic, manifest with hashes and parents) and return a
small result the Dagster assets turn into metadata and the CLI prints.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore, sha256_file
from slm_platform.data.card import render_card
from slm_platform.data.checks import run_capture_checks, run_dataset_checks
from slm_platform.data.pipeline import DatasetBuilder, SourceSpec, quarantine_row
from slm_platform.data.redaction import Redactor
from slm_platform.data.reviews import read_reviews, review_folder
from slm_platform.data.sources import Rejected, read_source
from slm_platform.domain import Domain
from slm_platform.layout import capture_dir, capture_root, dataset_dir
from slm_platform.records import sampled
from slm_platform.teachers.base import Teacher


@dataclass
class CaptureResult:
    uri: str
    manifest_hash: str
    stats: dict[str, Any]
    checks: dict[str, dict[str, Any]]  # the day's gates (data.checks.CAPTURE_CHECKS), from the written files


@dataclass
class DatasetResult:
    uri: str
    manifest_hash: str
    stats: dict[str, Any]
    checks: dict[str, dict[str, Any]]
    card: str


CAPTURE_FILE = "turns.jsonl"  # the kept, redacted Turns of one capture day
REVIEWS_QUARANTINE_FILE = "reviews_quarantine.jsonl"  # reviews that could not label a turn, with reasons


def capture_days(store: ArtifactStore, domain: str, since_day: str = "0000-00-00") -> list[str]:
    """The published capture days from `since_day` on, oldest first."""
    days = sorted(n.removeprefix("date=") for n in store.list(capture_root(domain)) if n.startswith("date="))
    return [day for day in days if day >= since_day]


def captured_day_rows(store: ArtifactStore, domain: str, day: str) -> Iterator[dict[str, Any]]:
    """The kept Turns of one published capture day (verified before it is read)."""
    folder = store.open_verified(capture_dir(domain, day))
    with open(folder / CAPTURE_FILE, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def captured_rows(store: ArtifactStore, domain: str, since_day: str = "0000-00-00") -> Iterator[dict[str, Any]]:
    """The kept Turns of every published capture day from `since_day` on, oldest day first."""
    for day in capture_days(store, domain, since_day):
        yield from captured_day_rows(store, domain, day)


def captured_turns(store: ArtifactStore, domain: str, days: list[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(day, turn) for every kept Turn of `days` (default: every published capture day), oldest first."""
    for day in capture_days(store, domain) if days is None else days:
        for turn in captured_day_rows(store, domain, day):
            yield day, turn


def ingest_capture(domain: Domain, day: str, store: ArtifactStore, *, inbox: Path | None = None,
                   log: Callable[[str], None] | None = None) -> CaptureResult:
    """Redact one day of raw captured traffic from the inbox into `capture/date=<day>/turns.jsonl`.

    The inbox is outside input: every row is checked as a `records.Turn` of this domain (one of its
    roles, a sane id, typed fields) by `read_source`; a bad row goes to `quarantine.jsonl` with a
    reason that quotes no value and the row redacted; a good one is redacted in every field, after
    its review (data/reviews.py), if it has one, set `labels.gold`.
    """
    cfg = domain.config.data.capture
    folder = (inbox or settings.inbox_dir(domain.name, cfg.inbox)) / f"date={day}"
    book = read_reviews(review_folder(domain, inbox))
    redactor = Redactor(domain.config.data.redaction)
    stats: Counter = Counter()
    kinds: Counter = Counter()
    hits: Counter = Counter()
    # re-ingesting a day replaces it atomically (late traffic); dataset versions keep the old hash
    with store.publish(capture_dir(domain.name, day), kind="capture", version=day, parents=[], overwrite=True,
                       producer="slm_platform.data.stages.ingest_capture") as staging:
        with open(staging / "turns.jsonl", "w", encoding="utf-8") as turns, \
                open(staging / "quarantine.jsonl", "w", encoding="utf-8") as quarantine, \
                open(staging / REVIEWS_QUARANTINE_FILE, "w", encoding="utf-8") as bad_reviews:
            def reject_review(item: Rejected) -> None:
                record, h = quarantine_row(item, redactor)
                hits.update(h)
                bad_reviews.write(json.dumps(record, ensure_ascii=False) + "\n")

            for item in book.unreadable:
                reject_review(item)
            if folder.exists():
                (log or (lambda m: None))(f"ingesting {folder}")
                for item in read_source(folder, cfg.format, domain=domain.name, source="capture",
                                         role=domain.default_role, roles=domain.roles):
                    stats["rows_in"] += 1
                    if isinstance(item, Rejected):
                        record, h = quarantine_row(item, redactor)
                        hits.update(h)
                        quarantine.write(json.dumps(record, ensure_ascii=False) + "\n")
                        stats["quarantined"] += 1
                        kinds[record["kind"]] += 1
                        continue
                    if not sampled(item["id"], cfg.sample_rate):  # as the gateway samples (records.sampled)
                        stats["not_sampled"] += 1
                        continue
                    review = book.label_for(item, domain.roles[item["role"]])
                    if isinstance(review, Rejected):
                        reject_review(review)
                        stats["reviews_rejected"] += 1
                    elif review is not None:  # before redaction: the label is redacted with the turn
                        item.setdefault("labels", {})["gold"] = review.label
                        item.setdefault("meta", {})["review"] = review.location
                        stats["reviewed"] += 1
                    turn, h = redactor.redact_turn(item)
                    hits.update(h)
                    turn.setdefault("meta", {}).setdefault("captured_at", f"{day}T00:00:00Z")
                    turns.write(json.dumps(turn, ensure_ascii=False) + "\n")
                    stats["kept"] += 1
        summary = {"rows_in": stats["rows_in"], "kept": stats["kept"], "quarantined": stats["quarantined"],
                   "not_sampled": stats["not_sampled"], "quarantine": dict(kinds), "redaction": dict(hits),
                   "inbox_found": folder.exists(),
                   # reviews: rows in the review folder; applied to this day's turns; rejected (unreadable,
                   # or a label that breaks the contract: both in reviews_quarantine.jsonl); the rest are
                   # other days' (or superseded by a later review of the same turn)
                   "reviews": {"rows": book.rows, "applied": stats["reviewed"],
                               "rejected": len(book.unreadable) + stats["reviews_rejected"],
                               "superseded": book.superseded, "blank": book.blank}}
        (staging / "stats.json").write_text(json.dumps(summary, indent=2))
        checks = run_capture_checks(staging, summary, cfg.max_quarantine_share)
        (staging / "checks.json").write_text(json.dumps(checks, indent=2))
    manifest = store.read_manifest(capture_dir(domain.name, day))
    return CaptureResult(store.uri(capture_dir(domain.name, day)), manifest.hash, summary, checks)


def dataset_sources(domain: Domain, store: ArtifactStore, days: list[str] | None = None) -> tuple[list[SourceSpec], list[dict]]:
    """The configured seed sources plus the published capture days; and their parent records."""
    specs, parents = [], []
    for src in domain.config.data.sources:
        path = domain.path(src.path)
        answers = domain.path(src.answers) if src.answers else None
        specs.append(SourceSpec(src.name, path, src.format, src.role or domain.default_role, answers))
        for f in ([path] if path.is_file() else sorted(path.glob("*.json*"))) + ([answers] if answers else []):
            parents.append({"uri": str(f), "sha256": sha256_file(f)})
    published = store.list(capture_root(domain.name))
    wanted = [d for d in published if days is None or d.removeprefix("date=") in days]
    for day_dir in wanted[-domain.config.data.capture.days:]:
        rel = capture_dir(domain.name, day_dir.removeprefix("date="))
        local = store.open_verified(rel)
        specs.append(SourceSpec(f"capture_{day_dir.removeprefix('date=')}".replace("-", "_"), local / "turns.jsonl",
                                "jsonl", domain.default_role, redacted=True))
        parents.append({"uri": store.uri(rel), "sha256": store.read_manifest(rel).hash})
    return specs, parents


def build_dataset(domain: Domain, store: ArtifactStore, version: str, *, days: list[str] | None = None,
                  teacher: Teacher | None = None, log: Callable[[str], None] | None = None,
                  progress: bool = True) -> DatasetResult:
    """Build and publish `datasets/<version>`: splits, quarantine, review, stats, card."""
    specs, parents = dataset_sources(domain, store, days)
    rel = dataset_dir(domain.name, version)
    with store.publish(rel, kind="dataset", version=version, parents=parents,
                       producer="slm_platform.data.stages.build_dataset") as staging:
        builder = DatasetBuilder(domain, teacher=teacher, log=log, progress=progress)
        stats = builder.run(specs, staging).to_dict()
        checks = run_dataset_checks(domain, staging, stats)
        card = render_card(domain.name, version, stats, checks)
        (staging / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
        (staging / "checks.json").write_text(json.dumps(checks, indent=2))
        (staging / "card.md").write_text(card)
    manifest = store.read_manifest(rel)
    return DatasetResult(store.uri(rel), manifest.hash, stats, checks, card)
