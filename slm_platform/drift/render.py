"""How a drift report reads: a markdown table per role (the UI and report.md) and one chart.

Every value is shown with its n and its threshold; a measure without a value shows why
("insufficient data", "not measured"), never a number in its place.
"""

from __future__ import annotations

from pathlib import Path

from slm_platform.drift.report import DriftReport, Measure, RoleDrift

_SOURCE = {"champion": "the champion's dataset", "latest_dataset": "the latest dataset (no champion serves)"}


def _n(m: Measure) -> str:
    return str(m.n) if m.n_reference is None else f"{m.n} / {m.n_reference}"


def _flag(m: Measure) -> str:
    return {True: "**yes**", False: "no", None: "–"}[m.drifted]


def _row(name: str, m: Measure, threshold: str | None = None) -> str:
    thr = threshold if threshold is not None else ("–" if m.threshold is None else f"{m.threshold:.3f}")
    note = f" ({m.note})" if m.note and m.status != "ok" else ""
    return f"| {name} | {m.text()}{note} | {_n(m)} | {thr} | {_flag(m)} |"


def role_markdown(r: RoleDrift) -> list[str]:
    ref = r.reference
    head = "DRIFTED" if r.drifted else ("insufficient data" if r.status == "insufficient_data" else "no drift")
    lines = [f"## {r.role} ({r.kind}): {head}", "",
             f"{r.n} captured turns against the train split of {_SOURCE[ref.source]} {ref.version} "
             f"({ref.rows} turns of this role).", "",
             "| measure | value | n (day / training) | threshold | drifted |", "|---|---|---|---|---|",
             _row("unseen share (new value or far from every training cluster)", r.unseen_share)]
    if r.embedding is not None:
        e = r.embedding
        lines += [_row("domain classifier ROC AUC (MiniLM embeddings)", e.classifier_auc),
                  _row("centroid cosine distance", e.centroid_distance),
                  _row(f"novel share ({e.clusters} clusters)", e.novel_share)]
    lines += [_row("champion-vs-oracle disagreement", r.oracle_disagreement),
              _row("training-label-vs-oracle disagreement", r.oracle_disagreement_reference),
              _row("schema-valid rate at the gateway", r.schema_valid_rate),
              _row("fallback rate at the gateway", r.fallback_rate)]
    if r.slices:
        lines += ["", "| key | JS distance | noise floor | PSI | unseen share | unseen values | n (day / training) | drifted |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in r.slices:
            floor = "–" if s.js_noise_floor is None else f"{s.js_noise_floor:.3f}"
            unseen = ", ".join(s.unseen_values) or "–"
            lines.append(f"| {s.key} | {s.js.text()} | {floor} | {s.psi.text()} | {s.unseen_share.text()} | {unseen} "
                         f"| {_n(s.js)} | {_flag(s.js)} |")
    if r.reasons:
        lines += ["", "Why drifted:", *[f"- {reason}" for reason in r.reasons]]
    return lines + [""]


def render_markdown(report: DriftReport) -> str:
    t = report.thresholds
    lines = [f"# Drift: {report.domain}, {report.day}", "",
             f"{report.capture.rows} captured turns ({report.capture.rel}). Drift when: a key's JS distance > "
             f"{t['js_distance']:g} and above its noise floor; unseen share > {t['unseen_share']:.0%}; domain "
             f"classifier AUC > {t['classifier_auc']:g} and above chance; centroid distance > "
             f"{t['centroid_distance']:g} and above the reference's bootstrap p99; oracle disagreement "
             f"{t['oracle_disagreement_margin']:.0%} above training. Fewer than "
             f"{t['min_rows']:g} turns on a side: insufficient data.", ""]
    for role in report.roles.values():
        lines += role_markdown(role)
    return "\n".join(lines)


def render_chart(path: Path, report: DriftReport) -> None:
    """JS distance per key and role (red: drifted), the threshold as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = list(report.roles.values())
    rows = [max(1, len(r.slices)) for r in roles]
    fig, axes = plt.subplots(len(roles), 1, figsize=(7, 1.2 + 0.28 * sum(rows) + 0.5 * len(roles)), dpi=80,
                             squeeze=False, gridspec_kw={"height_ratios": rows})
    for ax, r in zip(axes[:, 0], roles):
        measured = [s for s in r.slices if s.js.value is not None]
        title = f"{r.role}: n={r.n}"
        if r.embedding is not None and r.embedding.classifier_auc.value is not None:
            title += f", AUC {r.embedding.classifier_auc.value:.2f}"
        if r.unseen_share.value is not None:
            title += f", unseen {r.unseen_share.value:.1%}"
        ax.set_title(title + (" (drifted)" if r.drifted else ""), fontsize=9)
        if not measured:
            ax.text(0.5, 0.5, "insufficient data", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax.barh([s.key for s in measured], [s.js.value for s in measured],
                color=["tab:red" if s.js.drifted else "tab:blue" for s in measured])
        ax.axvline(report.thresholds["js_distance"], color="gray", linestyle="--", linewidth=1)
        ax.set_xlim(0, max(0.3, max(s.js.value or 0 for s in measured) * 1.15))
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    axes[-1, 0].set_xlabel("Jensen-Shannon distance vs training (dashed: threshold)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
