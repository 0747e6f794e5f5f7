"""Reviewed labels for captured turns: the way live traffic gets a truth label without a teacher.

Reviewers (a labelling tool, a support team correcting tickets, the rows a dataset sent to
`review.jsonl`) drop JSONL files in the capture inbox's review folder (`data.capture.reviews`,
default `<inbox>/reviews/`), one row per reviewed turn:

    {"id": "<the turn id: the request's x-request-id>", "label": {...the role's answer...}}

`ingest_capture` reads them all and, for each turn of the day it ingests, sets `labels.gold` from
the turn's latest review (a later file or line replaces an earlier one: a correction), before the
turn is redacted. A label that breaks the role's contract goes to the day's `reviews_quarantine.jsonl`
with the reason, and the turn keeps no gold. Reviews wait in the folder for their day: a day is
re-ingested (its partition re-materialized) to take reviews that came after it.

Only the label is kept, never who reviewed (a reviewer's name is personal data).

`slm review pending` exports the captured turns no truth source labelled (id, role, redacted input,
the served answer as a suggestion, `"label": null`); `slm review submit FILE` checks a reviewed file
against the contracts at once (rows still null are skipped, not rejected) and drops the good rows
in the review folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm_platform import settings
from slm_platform.data.sources import Rejected
from slm_platform.domain.contract import RoleContract
from slm_platform.records import stable_hash

if TYPE_CHECKING:
    from slm_platform.domain import Domain

RAW_SCAN = 2000  # characters of a bad row kept for its quarantine record (redacted before written)


@dataclass(frozen=True)
class Review:
    turn_id: str
    label: dict[str, Any]
    location: str  # "file.jsonl:17": which review gave the label (the turn's meta.review)


@dataclass
class ReviewBook:
    """Every readable review by turn id (the latest wins) and the rows that could not be read."""

    reviews: dict[str, Review] = field(default_factory=dict)
    unreadable: list[Rejected] = field(default_factory=list)
    rows: int = 0  # review rows read, readable or not
    blank: int = 0  # rows whose label is still null: exported for review, not reviewed yet
    superseded: int = 0  # readable rows replaced by a later review of the same turn

    def label_for(self, turn: dict[str, Any], contract: RoleContract) -> Review | Rejected | None:
        """The turn's review when its label fits the role's contract; a Rejected when it does not."""
        review = self.reviews.get(turn.get("id") or "")
        if review is None:
            return None
        problems = contract.validate_output(review.label)
        if problems:
            row = {"id": review.turn_id, "label": review.label}
            return _reject(review.location, f"{review.location}: review of turn {review.turn_id}: the label breaks "
                                            f"role {contract.id}'s contract: " + "; ".join(problems[:3]),
                           json.dumps(row), row)
        return review


def _reject(location: str, reason: str, line: str, value: Any = None) -> Rejected:
    return Rejected("reviews", location, reason, line[:RAW_SCAN], kind="bad_review", value=value)


def read_reviews(folder: Path) -> ReviewBook:
    """Every `*.jsonl` under `folder` (sorted by path, so a later file's review wins); none if absent."""
    book = ReviewBook()
    if folder.is_dir():
        for path in sorted(folder.rglob("*.jsonl")):
            _read_file(path, path.relative_to(folder).as_posix(), book)
    return book


def _read_file(path: Path, name: str, book: ReviewBook, roles: dict[str, str] | None = None) -> None:
    """Add `path`'s reviews to `book`; `roles` (when given) collects each row's optional `role`."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            book.rows += 1
            location = f"{name}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                book.unreadable.append(_reject(location, f"{location}: not JSON ({exc.msg} at column {exc.colno})", line))
                continue
            if not isinstance(row, dict):
                book.unreadable.append(_reject(location, f"{location}: a review must be a JSON object "
                                                         f"{{\"id\": ..., \"label\": {{...}}}}", line))
                continue
            turn_id, label = row.get("id"), row.get("label")
            if label is None and "label" in row:
                book.blank += 1
                continue
            if not isinstance(turn_id, str) or not turn_id.strip():
                book.unreadable.append(_reject(location, f"{location}: `id` must be the reviewed turn's id "
                                                         "(a non-empty string)", line, row))
                continue
            if not isinstance(label, dict):
                book.unreadable.append(_reject(location, f"{location}: `label` must be the role's answer as a "
                                                         f"JSON object, found {type(label).__name__}", line, row))
                continue
            book.superseded += turn_id in book.reviews
            book.reviews[turn_id] = Review(turn_id, label, location)
            if roles is not None and isinstance(row.get("role"), str):
                roles[turn_id] = row["role"]


def review_folder(domain: Domain, inbox: Path | None = None) -> Path:
    """Where reviews wait for their capture day's ingest: `data.capture.reviews` under the inbox
    (`inbox`, else the configured one); an absolute `reviews` stays as is."""
    cfg = domain.config.data.capture
    return (inbox or settings.inbox_dir(domain.name, cfg.inbox)) / cfg.reviews


def write_reviews(domain: Domain, reviews: list[Review], name: str) -> Path:
    """Drop `reviews` ({id, label} rows only) as one file in the domain's review folder, whole or not at all."""
    folder = review_folder(domain)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.jsonl"
    staging = folder / f".{name}.jsonl.tmp"
    staging.write_text("".join(json.dumps({"id": r.turn_id, "label": r.label}, ensure_ascii=False) + "\n"
                               for r in reviews), encoding="utf-8")
    staging.replace(target)
    return target


@dataclass
class Submitted:
    accepted: list[Review]
    rejected: list[Rejected]  # reasons name the file:line; a rejected review is not submitted
    rows: int
    path: Path | None  # the file written to the review folder (None when nothing was accepted)


def submit_reviews(domain: Domain, source: Path) -> Submitted:
    """Check a reviewers' file against the domain's contracts now (not at the next ingest), then drop
    the good rows in the review folder. A row names its `role` unless the domain has only one."""
    book, roles = ReviewBook(), {}
    _read_file(source, source.name, book, roles)
    accepted, rejected = [], list(book.unreadable)
    for review in book.reviews.values():
        role = roles.get(review.turn_id) or (domain.default_role if len(domain.roles) == 1 else None)
        if role not in domain.roles:
            rejected.append(_reject(review.location, f"{review.location}: `role` must be one of "
                                                     f"{sorted(domain.roles)} (this domain has several)", ""))
            continue
        checked = book.label_for({"id": review.turn_id}, domain.roles[role])
        (rejected if isinstance(checked, Rejected) else accepted).append(checked)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = write_reviews(domain, accepted, f"{stamp}-{source.stem}") if accepted else None
    return Submitted(accepted, rejected, book.rows, path)


def folder_signature(folder: Path) -> str:
    """Names, sizes and modification times of the review files: changes when a review is added."""
    if not folder.is_dir():
        return "none"
    parts = [f"{p.relative_to(folder).as_posix()}:{st.st_size}:{st.st_mtime_ns}"
             for p in sorted(folder.rglob("*.jsonl")) for st in [p.stat()]]
    return stable_hash("|".join(parts))


def days_with_new_reviews(domain: Domain, book: ReviewBook,
                          captured: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """The capture days (of `captured`: (day, turn) pairs, `data.stages.captured_turns`) holding turns
    whose latest valid review is not what their last ingest applied (a new review or a correction):
    day -> how many. Re-ingesting those days applies them."""
    out: dict[str, int] = {}
    for day, turn in captured:
        contract = domain.roles.get(turn.get("role") or "")
        review = book.reviews.get(turn.get("id") or "")
        if review is None or contract is None or (turn.get("meta") or {}).get("review") == review.location:
            continue
        if isinstance(book.label_for(turn, contract), Review):
            out[day] = out.get(day, 0) + 1
    return out


def pending_reviews(domain: Domain, captured: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """The captured turns (day, turn) that no truth source in `data.labels.truth` labelled, as a
    reviewer sees them: id, role, the (redacted) input, and the answer served as a suggestion."""
    truth = [s for s in domain.config.data.labels.truth if s != "oracle"]
    for day, turn in captured:
        labels = turn.get("labels") or {}
        if any(labels.get(s) is not None for s in truth):
            continue
        yield {"id": turn["id"], "role": turn["role"], "day": day, "input": turn["input"],
               "suggested": turn.get("output"), "label": None}


__all__ = ["Review", "ReviewBook", "Submitted", "days_with_new_reviews", "folder_signature", "pending_reviews",
           "read_reviews", "review_folder", "submit_reviews", "write_reviews"]
