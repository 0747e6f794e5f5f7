"""How stage results look in the Dagster UI: typed metadata values, inline charts, reports."""

from __future__ import annotations

import base64
from typing import Any

import dagster as dg

from slm_platform.evals.stages import EvalStageResult


def chart_markdown(png: bytes, alt: str, limit: int = 120_000) -> str:
    """A small chart inline (the UI shows it); a big one is only linked, to keep the event log lean."""
    if len(png) > limit:
        return ""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})\n\n"


def eval_metadata(result: EvalStageResult, alt: str) -> dict[str, Any]:
    """The report, its location and every entry's primary metric (plotted over versions in the UI)."""
    report = result.report
    md: dict[str, Any] = {
        "dagster/uri": dg.MetadataValue.path(result.uri),
        "report": dg.MetadataValue.md(chart_markdown(result.chart_png, alt) + result.markdown),
        "n_test": dg.MetadataValue.int(result.n_turns),
        "primary_metric": report.primary_metric,
    }
    for spec, entry in report.entries.items():
        value = entry.metric(report.primary_metric)
        if value is not None:
            md[f"{report.primary_metric}/{spec.replace(':', '_')}"] = dg.MetadataValue.float(float(value))
    if report.subject is not None:  # the judged entry under fixed names, so the UI plots it over versions
        for metric in {report.primary_metric, "schema_valid_rate"}:
            value = report.subject_metric(metric)
            if value is not None:
                md[metric] = dg.MetadataValue.float(float(value))
    return md
