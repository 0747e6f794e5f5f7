"""Dataset gates, computed from the written split files (not from the builder's own bookkeeping),
so a bug in the builder shows up as a failed check instead of a silently wrong dataset.

Each check returns {"passed": bool, "detail": str, ...numbers}. The Dagster asset turns them into
blocking asset checks; the dataset card lists them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slm_platform.data.split import check_no_leakage
from slm_platform.domain import Domain

SPLITS = ("train", "val", "test")

DATASET_CHECKS = {
    "no_split_leakage": "No id and no duplicate group appears in two splits.",
    "labels_valid": "Every label in train/val/test validates against its role's schema or tool catalog.",
    "min_rows": "Each split has at least data.min_rows rows.",
    "rows_conserved": "rows in = train + val + test + duplicates removed + quarantined.",
}


def _rows(folder: Path, split: str):
    with open(folder / f"{split}.jsonl", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def run_dataset_checks(domain: Domain, folder: Path, stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    membership = []
    invalid: dict[str, int] = {s: 0 for s in SPLITS}
    counts: dict[str, int] = {s: 0 for s in SPLITS}
    examples: list[str] = []
    seen: dict[tuple[str, str], list[str]] = {}
    for split in SPLITS:
        for row in _rows(folder, split):
            counts[split] += 1
            membership.append((row["id"], row["meta"]["dup_group"], split))
            key = (row["role"], json.dumps(row.get("output"), sort_keys=True))
            errors = seen.get(key)
            if errors is None:
                errors = seen[key] = domain.role(row["role"]).validate_output(row.get("output"))
            if errors:
                invalid[split] += 1
                if len(examples) < 5:
                    examples.append(f"{split}:{row['id']}: {errors[0]}")
    leaks = check_no_leakage(membership)
    min_rows = domain.config.data.min_rows.model_dump()
    short = {s: (counts[s], min_rows[s]) for s in SPLITS if counts[s] < min_rows[s]}
    total = sum(counts.values())
    return {
        "no_split_leakage": {
            "passed": not leaks,
            "detail": "no id or duplicate group in two splits" if not leaks else "; ".join(leaks[:5]),
            "violations": len(leaks),
        },
        "labels_valid": {
            "passed": total > 0 and not any(invalid.values()),
            "detail": (f"{total} labels valid" if total and not any(invalid.values())
                       else ("no rows" if not total else "; ".join(examples))),
            "validity": {s: (1.0 - invalid[s] / counts[s]) if counts[s] else None for s in SPLITS},
        },
        "min_rows": {
            "passed": not short,
            "detail": ", ".join(f"{s} has {n} < {m}" for s, (n, m) in short.items()) or
                      ", ".join(f"{s} {counts[s]} >= {min_rows[s]}" for s in SPLITS),
        },
        "rows_conserved": {
            "passed": bool(stats["conserved"]),
            "detail": f"{stats['rows_in']} in = {stats['rows_out']} out",
        },
    }


CAPTURE_CHECKS = {
    "day_not_empty": "At least one row of the day was kept (a day of only rejected rows is an upstream fault).",
    "quarantine_share": "The share of the day's rows sent to quarantine is at most data.capture.max_quarantine_share.",
    "rows_conserved": "rows in = kept + quarantined + not sampled, counted from the written files.",
}


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def run_capture_checks(folder: Path, stats: dict[str, Any], max_quarantine_share: float) -> dict[str, dict[str, Any]]:
    """Gates of one capture day, from its published `turns.jsonl` and `quarantine.jsonl`."""
    kept, quarantined = _count_lines(folder / "turns.jsonl"), _count_lines(folder / "quarantine.jsonl")
    rows_in, not_sampled = int(stats["rows_in"]), int(stats["not_sampled"])
    share = quarantined / rows_in if rows_in else 0.0
    return {
        "day_not_empty": {
            "passed": kept > 0,
            "detail": f"{kept} rows kept of {rows_in}" if rows_in else "no rows in the inbox for this day",
        },
        "quarantine_share": {
            "passed": share <= max_quarantine_share,
            "detail": f"{quarantined} of {rows_in} rows quarantined ({100 * share:.1f}%, ceiling "
                      f"{100 * max_quarantine_share:.1f}%)",
            "share": share,
        },
        "rows_conserved": {
            "passed": rows_in == kept + quarantined + not_sampled,
            "detail": f"{rows_in} in = {kept} kept + {quarantined} quarantined + {not_sampled} not sampled"
                      if rows_in == kept + quarantined + not_sampled else
                      f"{rows_in} in != {kept} kept + {quarantined} quarantined + {not_sampled} not sampled",
        },
    }
