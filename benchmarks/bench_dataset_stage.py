"""Dataset-stage throughput and memory, side by side with the cost of merely parsing the input.

    python benchmarks/bench_dataset_stage.py [--n 100000] [--domain support_triage]

Simulates N captured turns into a raw JSONL file, then runs, each in a fresh subprocess so peak
RSS is its own: (1) parse only — the floor any pipeline pays; (2) the full streaming stage —
redaction, dedupe, clustering, oracle labels, validation and split, writing the splits. Prints
turns/s, peak RSS and the ratio between the two. Target (issue 2): >= 2,000 turns/s, < 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(mode: str, domain_dir: str, raw: str, out: str) -> None:
    from slm_platform.data.pipeline import DatasetBuilder, SourceSpec
    from slm_platform.data.sources import read_source
    from slm_platform.domain import Domain

    domain = Domain.load(domain_dir)
    start = time.perf_counter()
    if mode == "parse":
        rows = sum(1 for _ in read_source(Path(raw), "jsonl", domain=domain.name, source="bench", role=None))
    else:
        stats = DatasetBuilder(domain, progress=False).run([SourceSpec("bench", Path(raw))], Path(out))
        rows = stats.rows_in
        assert stats.conserved
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mib": peak_kib / 1024}))


def measure(mode: str, domain_dir: Path, raw: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(domain_dir), str(raw), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--domain", default="support_triage")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "DOMAIN", "RAW", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from slm_platform.domain import Domain

    domain_dir = ROOT / "domains" / args.domain
    domain = Domain.load(domain_dir)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.jsonl"
        t0 = time.perf_counter()
        with open(raw, "w", encoding="utf-8") as f:
            for turn in domain.simulator().simulate(args.n, seed=7):
                f.write(json.dumps(turn, ensure_ascii=False) + "\n")
        print(f"simulated {args.n:,} {args.domain} turns ({raw.stat().st_size / 2**20:.1f} MiB) "
              f"in {time.perf_counter() - t0:.1f}s")
        parse = measure("parse", domain_dir, raw, Path(tmp) / "parse_out")
        full = measure("full", domain_dir, raw, Path(tmp) / "full_out")
    rate_parse = parse["rows"] / parse["seconds"]
    rate_full = full["rows"] / full["seconds"]
    print(f"{'stage':<28}{'turns/s':>12}{'seconds':>10}{'peak RSS MiB':>14}")
    print(f"{'parse only (floor)':<28}{rate_parse:>12,.0f}{parse['seconds']:>10.1f}{parse['peak_rss_mib']:>14.0f}")
    print(f"{'full dataset stage':<28}{rate_full:>12,.0f}{full['seconds']:>10.1f}{full['peak_rss_mib']:>14.0f}")
    print(f"full stage costs {parse['rows'] / rate_full / parse['seconds']:.1f}x the parse floor; "
          f"target >= 2,000 turns/s: {'met' if rate_full >= 2000 else 'NOT met'}; "
          f"peak < 2 GiB: {'met' if full['peak_rss_mib'] < 2048 else 'NOT met'}")


if __name__ == "__main__":
    main()
