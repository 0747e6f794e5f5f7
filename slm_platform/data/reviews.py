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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_platform.data.sources import Rejected
from slm_platform.domain.contract import RoleContract

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
    superseded: int = 0  # readable rows replaced by a later review of the same turn

    def label_for(self, turn: dict[str, Any], contract: RoleContract) -> Review | Rejected | None:
        """The turn's review when its label fits the role's contract; a Rejected when it does not."""
        review = self.reviews.get(turn.get("id") or "")
        if review is None:
            return None
        problems = contract.validate_output(review.label)
        if problems:
            return Rejected("reviews", review.location,
                            f"review of turn {review.turn_id}: the label breaks role {contract.id}'s contract: "
                            + "; ".join(problems[:3]), json.dumps({"id": review.turn_id, "label": review.label}),
                            kind="bad_review", value={"id": review.turn_id, "label": review.label})
        return review


def _reject(location: str, reason: str, line: str, value: Any = None) -> Rejected:
    return Rejected("reviews", location, reason, line[:RAW_SCAN], kind="bad_review", value=value)


def read_reviews(folder: Path) -> ReviewBook:
    """Every `*.jsonl` under `folder` (sorted by path, so a later file's review wins); none if absent."""
    book = ReviewBook()
    if not folder.is_dir():
        return book
    for path in sorted(folder.rglob("*.jsonl")):
        name = path.relative_to(folder).as_posix()
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
    return book


__all__ = ["Review", "ReviewBook", "read_reviews"]
