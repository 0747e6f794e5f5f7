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
