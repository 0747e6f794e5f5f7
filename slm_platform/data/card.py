"""The dataset card: a markdown page a person reads before trusting a dataset version."""

from __future__ import annotations

from typing import Any

SPLITS = ("train", "val", "test")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_card(domain: str, version: str, stats: dict[str, Any], checks: dict[str, Any] | None = None) -> str:
    split = stats["split"]
    out = [f"# Dataset card: {domain} {version}", ""]
    out += ["## Conservation", "",
            _table(["rows in", "train", "val", "test", "duplicates removed", "quarantined", "rows out", "balanced"],
                   [[stats["rows_in"], split["train"], split["val"], split["test"], stats["duplicates_removed"],
                     stats["quarantined_total"], stats["rows_out"], "yes" if stats["conserved"] else "NO"]]), ""]
    out += ["Rows per source: " + ", ".join(f"{k} {v}" for k, v in stats["per_source"].items()), ""]
    if stats["quarantined"]:
        out += ["## Quarantine", "", _table(["reason", "rows"], [[k, v] for k, v in sorted(stats["quarantined"].items())]),
                "", f"Rows sent to review: {stats['review']}", ""]
    out += ["## Rows per split and role", "",
            _table(["split/role", "rows"], [[k, v] for k, v in sorted(stats["roles"].items())]), ""]
    slice_keys = sorted({k.split("/", 1)[1] for k in stats["slices"]})
    for key in slice_keys:
        values = sorted({v for s in SPLITS for v in stats["slices"].get(f"{s}/{key}", {})})
        rows = [[v] + [stats["slices"].get(f"{s}/{key}", {}).get(v, 0) for s in SPLITS] for v in values]
        out += [f"## Slice `{key}`", "", _table([key, *SPLITS], rows), ""]
    labels = stats["labels"]
    out += ["## Labels", "",
            _table(["source", "rows with label", "chosen as truth", "agreement with truth"],
                   [[s, labels["present"].get(s, 0), labels["chosen"].get(s, 0),
                     _pct(labels["agreement"].get(s))] for s in ("gold", "capture", "teacher", "oracle")]), ""]
    if labels.get("oracle_errors"):
        out += [f"Oracle raised on {labels['oracle_errors']} rows (treated as no oracle label).", ""]
    dd = stats["dedupe"]
    out += ["## Duplicates", "",
            f"Unique {dd.get('unique', 0)}, exact duplicates {dd.get('exact_duplicate', 0)}, "
            f"near duplicates {dd.get('near_duplicate', 0)} (kept, grouped in one split unless configured otherwise); "
            f"{stats['duplicates_removed']} removed; {stats['dup_groups']} groups.", ""]
    out += ["## Redaction (hits per detector)", "",
            _table(["detector", "hits"], [[k, v] for k, v in sorted(stats["redaction"].items())] or [["(none)", 0]]), ""]
    if stats["clusters"]:
        terms = stats.get("cluster_terms", {})
        out += ["## Clusters", "", _table(["cluster", "rows", "top terms"],
                                          [[k, v, ", ".join(terms.get(k, []))] for k, v in stats["clusters"].items()]), ""]
    if checks:
        out += ["## Checks", "", _table(["check", "passed", "detail"],
                                        [[k, "yes" if v["passed"] else "NO", v.get("detail", "")] for k, v in checks.items()]), ""]
    return "\n".join(out)
