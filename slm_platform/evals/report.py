"""Eval reports: JSON for machines, markdown for people, a PNG chart, predictions as JSONL.

One report compares several entries (floor, base candidates, adapter, teacher) on the same turns,
so every number a decision rests on sits in one table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from slm_platform import tracing
from slm_platform.evals.decision import BaselineDecision
from slm_platform.evals.gates import GateResult
from slm_platform.evals.runner import EntryReport, EvalResult
from slm_platform.models.spec import ModelSpec

REPORT_FILE = "report.json"


class EvalReport(BaseModel):
    """`report.json` of an eval: every entry on the same turns, and what was decided from them."""

    model_config = ConfigDict(extra="forbid")
    title: str
    primary_metric: str
    entries: dict[str, EntryReport]  # str(ModelSpec) -> scores
    decision: BaselineDecision | None = None  # a baseline eval's fine-tune decision
    gates: dict[str, GateResult] | None = None  # a candidate eval's gate results
    reference: str | None = None  # what the candidate was compared with
    subject: str | None = None  # the entry the gates judged (a candidate eval's adapter)

    def entry(self, spec: ModelSpec) -> EntryReport | None:
        return self.entries.get(str(spec))

    def metric(self, spec: ModelSpec | str | None, name: str) -> float | None:
        entry = self.entries.get(str(spec)) if spec is not None else None
        return entry.metric(name) if entry is not None else None

    def subject_metric(self, name: str) -> float | None:
        return self.metric(self.subject, name)

    @classmethod
    def read(cls, folder: Path) -> "EvalReport":
        return cls.model_validate_json((folder / REPORT_FILE).read_text(encoding="utf-8"))

HEADLINE = ("exact_match_rate", "schema_valid_rate", "json_valid_rate", "name_match_rate", "args_exact_rate",
            "bfcl_ast_rate", "valid_call_rate")


Results = dict[ModelSpec, EvalResult]


def headline_metrics(results: Results) -> list[str]:
    present = {m for r in results.values() for m in r.report.metrics}
    return [m for m in HEADLINE if m in present]


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if isinstance(value, float) and 0 <= value <= 1 else str(value)


def render_markdown(title: str, results: Results, *, primary: str, notes: list[str] | None = None,
                    slice_keys: list[str] | None = None) -> str:
    metrics = headline_metrics(results)
    lines = [f"# {title}", ""]
    lines += ["| entry | n | " + " | ".join(metrics) + " | p50 ms | p95 ms |",
              "|---|---|" + "---|" * len(metrics) + "---|---|"]
    for name, res in results.items():
        lat = res.report.latency_ms or {}
        cells = [_fmt(res.report.metric(m)) for m in metrics]
        ms = [f"{lat[k]:.1f}" if lat.get(k) is not None else "–" for k in ("p50", "p95")]
        lines.append(f"| {name} | {res.report.n} | " + " | ".join(cells) + f" | {ms[0]} | {ms[1]} |")
    lines += ["", f"Primary metric: `{primary}`.", ""]
    for name, res in results.items():
        for role, rep in (res.report.by_role or {}).items():
            lines.append(f"- {name} / {role}: " + ", ".join(f"{m} {_fmt(rep.metric(m))}" for m in metrics
                                                           if m in rep.metrics))
    for key in slice_keys or []:
        values = sorted({v for r in results.values() for v in (r.report.by_slice.get(key) or {})})
        if not values:
            continue
        lines += ["", f"## `{primary}` by `{key}`", "", "| " + key + " | " + " | ".join(map(str, results)) + " |",
                  "|---|" + "---|" * len(results)]
        for v in values:
            cells = []
            for r in results.values():
                s = (r.report.by_slice.get(key) or {}).get(v)
                cells.append(f"{_fmt(s['metrics'].get(primary))} (n={s['n']})" if s else "–")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def render_chart(path: Path, title: str, results: Results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = headline_metrics(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) + 2), 4), dpi=100)
    width = 0.8 / max(1, len(results))
    for i, (name, res) in enumerate(results.items()):
        values = [100 * (res.report.metric(m) or 0) for m in metrics]
        xs = [j + i * width for j in range(len(metrics))]
        bars = ax.bar(xs, values, width, label=str(name))
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([m.removesuffix("_rate") for m in metrics], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(folder: Path, title: str, results: Results, *, primary: str,
                 decision: BaselineDecision | None = None, gates: dict[str, GateResult] | None = None,
                 reference: str | None = None, subject: ModelSpec | None = None, notes: list[str] | None = None,
                 slice_keys: list[str] | None = None) -> str:
    """Write report.json, report.md, chart.png and predictions/<entry>.jsonl; return the markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions").mkdir(exist_ok=True)
    for name, res in results.items():
        with open(folder / "predictions" / f"{str(name).replace('/', '_')}.jsonl", "w", encoding="utf-8") as f:
            for row in res.rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    report = EvalReport(title=title, primary_metric=primary, entries={str(n): r.report for n, r in results.items()},
                        decision=decision, gates=gates, reference=reference,
                        subject=str(subject) if subject is not None else None)
    (folder / REPORT_FILE).write_text(report.model_dump_json(indent=2))
    markdown = render_markdown(title, results, primary=primary, notes=notes, slice_keys=slice_keys)
    (folder / "report.md").write_text(markdown)
    render_chart(folder / "chart.png", title, results)
    return markdown


def record_trace(trace: tracing.Run, results: Results, *, primary: str, decision: BaselineDecision | None = None,
                 gates: dict[str, GateResult] | None = None, reference: str | None = None,
                 subject: ModelSpec | None = None) -> None:
    """An eval run's outcome on its trace: every entry's metrics (``slm.eval.<entry>.<metric>``), the
    fine-tune decision (``slm.decision.*``) and the gate results (``slm.gate.<name>.*``). Numbers and
    verdicts only: no turn, prediction or gold answer."""
    if not trace.recording:
        return
    attrs: dict[str, Any] = {"slm.eval.primary_metric": primary, "slm.eval.entries": [str(s) for s in results],
                             "slm.eval.reference": reference, "slm.eval.subject": str(subject) if subject else None}
    metrics: dict[str, dict[str, Any]] = {}
    for spec, res in results.items():
        r, name = res.report, str(spec)
        values = {m: v for m, v in r.metrics.items() if v is not None}
        metrics[name] = {"n": r.n, "errors": r.errors, "truncated": r.truncated, **values}
        attrs.update({f"slm.eval.{name}.{k}": v for k, v in metrics[name].items()})
    if subject is not None and subject in results and results[subject].report.metric(primary) is not None:
        attrs["slm.eval.primary_value"] = results[subject].report.metric(primary)
    output: dict[str, Any] = {"metrics": metrics}
    if decision is not None:
        attrs.update({"slm.decision.fine_tune": decision.fine_tune, "slm.decision.chosen_base": decision.chosen_base,
                      "slm.decision.best_base_value": decision.best_base_value, "slm.decision.floor": decision.floor,
                      "slm.decision.ceiling": decision.ceiling, "slm.decision.reasons": list(decision.reasons),
                      "slm.decision.summary": decision.summary})
        output["decision"] = decision.model_dump()
    if gates is not None:
        attrs["slm.gates.passed"] = all(g.passed for g in gates.values())
        attrs["slm.gates.failed"] = [g.name for g in gates.values() if not g.passed]
        for g in gates.values():
            attrs.update({f"slm.gate.{g.name}.passed": g.passed, f"slm.gate.{g.name}.value": g.value,
                          f"slm.gate.{g.name}.reference": g.reference, f"slm.gate.{g.name}.detail": g.detail})
        output["gates"] = {g.name: g.model_dump() for g in gates.values()}
    trace.set(attrs)
    trace.set_output(output)
