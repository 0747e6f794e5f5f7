"""Draw one domain's real asset graph, with its checks and the automation that drives it, to a PNG.

Read from the same Definitions the UI loads (`orchestration.definitions.build_definitions`): the
assets, their dependencies and their checks; the schedule and sensors with the assets their jobs
materialize. The README's loop picture is this script's output:

    .venv/bin/python scripts/asset_graph.py support_triage docs/asset_graph.png
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# what a sensor moves or records besides the job it launches (aliases on `release`, decisions on `retrain`)
ACTS_ON = {"retrain": ["retrain"], "challenger": ["release"], "shadow": ["release"], "demotion": ["release"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("domain")
    p.add_argument("out", type=Path)
    args = p.parse_args()

    import dagster as dg

    from slm_platform.orchestration.definitions import build_definitions

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if k.path[0] == args.domain]
    if not keys:
        raise SystemExit(f"no assets of domain {args.domain!r}")
    names = {k: k.path[-1] for k in keys}
    parents = {names[k]: [names[p] for p in graph.get(k).parent_keys if p in names] for k in keys}
    checks = {names[k]: sorted(c.name for c in graph.get(k).check_keys) for k in keys}

    depth: dict[str, int] = {}

    def level(n: str) -> int:
        if n not in depth:
            depth[n] = 1 + max((level(p) for p in parents[n]), default=-1)
        return depth[n]

    for n in parents:
        level(n)
    automation: dict[str, list[str]] = {}
    for s in [*defs.schedules, *defs.sensors]:
        if not s.name.startswith(args.domain + "_"):
            continue
        short = s.name.removeprefix(args.domain + "_")
        try:
            job = s.job
        except Exception:  # noqa: BLE001 - a sensor without a job: see ACTS_ON
            job = None
        sel = getattr(job, "selection", None) or getattr(job, "asset_selection", None)
        launched = {names[k] for k in sel.resolve(graph) if k in names} if sel is not None else set()
        targets = sorted(n for n in launched if not set(parents[n]) & launched)  # where its run starts
        kind = "schedule" if s in defs.schedules else "sensor"
        automation[f"{kind}: {short}"] = targets + ACTS_ON.get(short, [])

    columns: dict[int, list[str]] = defaultdict(list)
    for n in sorted(parents, key=lambda n: (depth[n], n)):
        columns[depth[n]].append(n)
    pos: dict[str, tuple[float, float]] = {}
    for d, ns in columns.items():
        for i, n in enumerate(ns):
            pos[n] = (d * 3.2, -i * 2.1)
    auto_y = min(y for _, y in pos.values()) - 2.6
    for i, a in enumerate(automation):
        pos[a] = (i * 3.0, auto_y)

    xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
    fig, ax = plt.subplots(figsize=((max(xs) - min(xs) + 3.2) * 0.62, (max(ys) - min(ys) + 2.4) * 0.62))
    ax.set_xlim(min(xs) - 1.6, max(xs) + 1.6)
    ax.set_ylim(min(ys) - 1.2, max(ys) + 1.2)
    ax.set_aspect("equal")
    ax.axis("off")
    patches: dict[str, FancyBboxPatch] = {}

    def box(name: str, text: str, color: str, style: str = "round,pad=0.1") -> None:
        x, y = pos[name]
        patches[name] = FancyBboxPatch((x - 1.25, y - 0.75), 2.5, 1.5, boxstyle=style, fc=color, ec="#333", lw=1)
        ax.add_patch(patches[name])
        ax.text(x, y, text, ha="center", va="center", fontsize=7, family="monospace")

    def arrow(a: str, b: str, **kw) -> None:
        ax.annotate("", xy=pos[b], xytext=pos[a], arrowprops=dict(
            arrowstyle="->", color=kw.get("color", "#444"), ls=kw.get("ls", "-"), lw=1,
            patchA=patches[a], patchB=patches[b], connectionstyle="arc3,rad=0.05"))

    for n in parents:
        listed = "\n".join(f"✓ {c}" for c in checks[n])
        box(n, f"{n}\n{listed}" if listed else n, "#dbe9f6" if graph.get(dg.AssetKey([args.domain, n])).is_materializable
            else "#eeeeee")
    for a in automation:
        box(a, a.replace(": ", ":\n"), "#fbe3cc", "round4,pad=0.1")
    for n, ps in parents.items():
        for parent in ps:
            arrow(parent, n)
    for a, targets in automation.items():
        for t in targets:
            arrow(a, t, color="#b5651d", ls="--")
    ax.set_title(f"{args.domain}: assets (blue: materialized; grey: observed), blocking checks (✓), "
                 "and the schedule and sensors (orange, dashed: what they launch or move)", fontsize=10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out} ({len(parents)} assets, {len(automation)} schedules and sensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
