"""Issue 11's proof of the loop: a simulated week on a real Dagster instance with the real daemon, the
real gateway (`slm serve`) in front of the session's real vLLM CPU server, and a tiny recipe.

- Day 0: `run_pass` (what `slm run` does) builds v0001 (capture, dataset, baseline, a 4-step LoRA,
  eval, package) on yesterday's simulated capture and promotes it: a champion serves.
- Drifted traffic (the simulator's drift knob at 1.0: a new product launch, more non-English, more
  chat) flows through the gateway into today's capture inbox.
- The operator turns the loop on (`dagster schedule start` / `dagster sensor start`, as the UI's
  toggles do); from here on nothing is called by the test but the gateway: the daemon's schedule
  ingests the day (`improvement.capture_day: current`) and its drift report, the retrain sensor
  fires on the inputs' drift with its numbers, v0002 trains (warm start from v0001), passes its gates and is
  packaged, the challenger sensor makes it the challenger, the gateway shadows it, the shadow
  sensor judges the pairs and promotes it.
- The promoted champion's adapter then fails at vLLM (a proxy answers HTTP 500 for it): every call
  falls back to the oracle, and the demotion sensor rolls it back to v0001 with the verdict.
- The budget (two training runs a week) is spent: the retrain sensor defers, recorded on
  `<domain>/retrain`.

The asserts read the registry history (the `<domain>/release` observations) and the retrain
observations, not logs. Evals run on the transformers engine in the run's own process (no second
vLLM server); the floor gate is off (`eval.floor: none`) because four optimizer steps cannot beat
the keyword rules (tests/test_lifecycle_pass.py shows that gate failing), so a version passes on
schema validity and no regression against the reference.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
import pytest
import yaml

from conftest import seed_base_model  # tests/conftest.py
from test_gateway import GatewayProcess  # tests/test_gateway.py
from test_gateway_shadow import AdapterProxy  # tests/test_gateway_shadow.py

ROOT = Path(__file__).resolve().parent.parent
DOMAIN, ROLE = "support_triage", "triage"
KEY = "sk-week-test"
pytestmark = pytest.mark.integration

LOOP = {  # the knobs the week runs with: a tiny recipe and a loop that decides in seconds, not days
    "data": {"simulate_per_day": 300},
    "model": {"recipe": {"max_steps": 4, "batch_size": 2}},
    "eval": {"floor": "none", "max_examples": 20, "regression_tolerance": 0.1},
    "serving": {"engine": "transformers", "latency_budget_ms": 120_000,
                "shadow": {"rate": 1.0, "queue_size": 256, "timeout_ms": 120_000}},
    "improvement": {
        "promotion": "auto", "capture_schedule": "* * * * *", "capture_day": "current",
        "retrain_interval_s": 30,
        # only the inputs' drift may start the retrain: at drift 1.0 a MiniLM classifier tells 60 gateway
        # tickets from training's at AUC ~0.78 (0.777 measured); 0.65 keeps sampling noise from deciding
        "triggers": {"max_input_auc": 0.65, "min_new_labelled_rows": 100_000},
        "budget": {"period_days": 7, "max_training_runs": 2},
        "warm_start": {"max_steps": 4, "lr": 1.0e-5},
        "shadow": {"min_pairs": 20, "min_agreement": 0.6, "latency_tolerance": 1.0, "interval_s": 30},
        "demotion": {"window": 10, "max_error_rate": 0.2, "interval_s": 10},
    },
}
SENSORS = [f"{DOMAIN}_retrain", f"{DOMAIN}_challenger", f"{DOMAIN}_shadow", f"{DOMAIN}_demotion"]


def _merge(doc: dict, update: dict) -> None:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            _merge(doc[k], v)
        else:
            doc[k] = v


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, logs: list[Path], every_s: float = 2.0) -> Any:
    """Poll `check` until it returns something truthy; on timeout fail with the processes' last words."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every_s)
    tails = "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-2500:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")


@pytest.fixture(scope="module")
def week(vllm_server, tmp_path_factory):
    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain import Domain
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.lifecycle import run_pass

    home = tmp_path_factory.mktemp("week")
    domains = home / "domains"
    shutil.copytree(ROOT / "domains" / DOMAIN, domains / DOMAIN)
    config = domains / DOMAIN / "slm.config.yaml"
    doc = yaml.safe_load(config.read_text())
    _merge(doc, LOOP)
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    artifacts = home / "artifacts"
    seed_base_model(artifacts)
    env = {"SLM_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "SLM_DOMAINS": str(domains),
           "SLM_ARTIFACTS": str(artifacts)}
    mp = pytest.MonkeyPatch()
    mp.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    for k, v in env.items():
        mp.setenv(k, v)
    instance = get_instance(home / "dagster")
    procs: list[subprocess.Popen] = []
    gateway = proxy = None
    logs = {name: home / f"{name}.log" for name in ("daemon", "gateway")}
    try:
        # day 0: a champion serves
        domain = Domain.load(domains / DOMAIN)
        yesterday = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).date().isoformat()
        result = run_pass(domain, instance, day=yesterday, until="package", log=lambda *_: None)
        assert result.success and result.version == "v0001", result
        assert result.release == f"champion of {ROLE}", result.release  # improvement.promotion: auto
        store = ArtifactStore(artifacts)

        proxy = AdapterProxy(vllm_server.url)  # forwards, until told to fail one adapter's calls
        gateway = GatewayProcess({**env, "SLM_GATEWAY_VLLM_URL": proxy.url, "SLM_GATEWAY_API_KEYS": KEY,
                                  "SLM_GATEWAY_RATE_LIMIT_RPS": "1000", "SLM_GATEWAY_RATE_LIMIT_BURST": "1000"},
                                 logs["gateway"])
        ready = gateway.wait_ready()
        assert ready["routes"][f"{DOMAIN}/{ROLE}"]["champion"] == "v0001", ready
        daemon_env = {**os.environ, **env}
        daemon_env.pop("SLM_DAGSTER_STORAGE_URL", None)
        bin_dir = Path(sys.executable).parent
        workspace = ["-w", str(ROOT / "workspace.yaml")]
        procs.append(subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", *workspace], cwd=ROOT, env=daemon_env,
                                      stdout=open(logs["daemon"], "w"), stderr=subprocess.STDOUT))

        def toggle(kind: str, verb: str, name: str) -> None:
            done = subprocess.run([str(bin_dir / "dagster"), kind, verb, name, *workspace], cwd=ROOT, env=daemon_env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr

        yield {"home": home, "instance": instance, "store": store, "domain": domain, "gateway": gateway,
               "proxy": proxy, "toggle": toggle, "logs": list(logs.values())}
    finally:
        if gateway is not None:
            gateway.stop()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if proxy is not None:
            proxy.close()
        instance.dispose()
        mp.undo()


def _send(gateway: GatewayProcess, texts: list[str]) -> list[dict]:
    """Each ticket as the application sends it (the OpenAI client), 4 at a time; the headers it got back."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=300)

    def ask(text: str) -> dict:
        raw = client.chat.completions.with_raw_response.create(
            model=f"{DOMAIN}/{ROLE}", max_tokens=96, messages=[{"role": "user", "content": text}])
        raw.parse()
        return {"route": raw.headers["x-slm-route"], "version": raw.headers.get("x-slm-version")}

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(ask, texts))


def _tickets(domain, n: int, seed: int, drift: float) -> list[str]:
    return [t["input"]["messages"][-1]["content"] for t in domain.simulator().simulate(n, seed=seed, drift=drift)]


def _events(instance) -> list:
    from slm_platform.orchestration.registry import read_log
    return [logged.event for logged in read_log(instance, DOMAIN)]


def _retrain_observations(instance) -> list[dict[str, str]]:
    import dagster as dg

    from slm_platform.orchestration.automation import retrain_key
    records = instance.fetch_observations(retrain_key(DOMAIN), limit=100).records
    out = []
    for r in records:
        md = r.asset_observation.metadata
        out.append({k: (v.value if hasattr(v, "value") else v) for k, v in md.items()
                    if k in ("action", "version", "reason", "evidence", "budget")})
        out[-1]["triggers"] = md["triggers"].value if "triggers" in md else ""
    return out


def test_a_simulated_week_drift_retrain_shadow_promote_demote_and_defer(week):
    import dagster as dg

    instance, gateway, proxy, logs = week["instance"], week["gateway"], week["proxy"], week["logs"]
    domain, toggle = week["domain"], week["toggle"]
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()

    # drifted production traffic, answered by the champion
    answered = _send(gateway, _tickets(domain, 60, seed=11, drift=1.0))
    assert {a["route"] for a in answered} == {"slm"} and {a["version"] for a in answered} == {"v0001"}, answered

    # the operator turns the loop on; the daemon does the rest
    toggle("schedule", "start", f"{DOMAIN}_daily_capture")
    for sensor in SENSORS:
        toggle("sensor", "start", sensor)

    drift_key = dg.AssetKey([DOMAIN, "drift_report"])
    wait_for(f"drift_report[{today}] from the schedule's run",
             lambda: instance.get_latest_materialization_event(drift_key), 420, logs)
    started = wait_for("the retrain sensor to start v0002",
                       lambda: [o for o in _retrain_observations(instance) if o["action"] == "retrain"], 300, logs)
    toggle("schedule", "stop", f"{DOMAIN}_daily_capture")  # the day's evidence is in; spare the 2 cores
    assert started[0]["version"] == "v0002", started
    assert started[0]["reason"] == "fired: input_drift", started[0]  # and nothing else
    assert "told from training's at AUC" in started[0]["evidence"], started[0]
    assert "| input_drift | FIRED |" in started[0]["triggers"], started[0]
    # gateway turns record no simulator slices: those keys are not measured, and nothing is "unseen"
    assert "| distribution_drift | ok |" in started[0]["triggers"], started[0]

    # v0002 trains, passes its gates, is packaged and becomes the challenger; the gateway shadows it
    wait_for("v0002 to become the challenger",
             lambda: any(e.alias == "challenger" and e.to_version == "v0002" for e in _events(instance)), 900, logs)
    wait_for("the gateway to load the challenger",
             lambda: gateway.readyz()["routes"][f"{DOMAIN}/{ROLE}"].get("challenger") == "v0002", 60, logs, 0.5)
    runs = instance.get_runs(dg.RunsFilter(tags={"slm/domain": DOMAIN, "slm/kind": "retrain"}))
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS], runs
    assert runs[0].tags["slm/trigger"] == "input_drift", runs[0].tags

    answered = _send(gateway, _tickets(domain, 30, seed=12, drift=1.0))
    assert {a["version"] for a in answered} == {"v0001"}  # the challenger answers nobody
    promoted = wait_for("the shadow sensor to promote v0002",
                        lambda: [e for e in _events(instance) if e.action == "approve" and e.to_version == "v0002"],
                        420, logs)
    assert promoted[0].actor == f"sensor {DOMAIN}_shadow", promoted[0]
    evidence = promoted[0].evidence
    assert {k for k in evidence if k.startswith("shadow_")} == {"shadow_pairs", "shadow_validity", "shadow_quality",
                                                                  "shadow_latency", "shadow_cost"}, evidence
    assert all(v.startswith("passed") for k, v in evidence.items() if k.startswith("shadow_")), evidence
    assert "tokens per request vs champion" in evidence["shadow_cost"], evidence  # vLLM's usage, both sides

    # the new champion's adapter starts failing at vLLM: every call falls back, and it is rolled back
    wait_for("the gateway to serve v0002",
             lambda: gateway.readyz()["routes"][f"{DOMAIN}/{ROLE}"]["champion"] == "v0002", 60, logs, 0.5)
    proxy.broken_prefix, proxy.mode = f"{DOMAIN}--v0002--", "error"
    answered = _send(gateway, _tickets(domain, 12, seed=13, drift=0.0))
    assert {a["route"] for a in answered} == {"oracle"}, answered  # the application still got its answers
    rolled = wait_for("the demotion sensor to roll v0002 back",
                      lambda: [e for e in _events(instance) if e.action == "rollback"], 240, logs)
    assert rolled[0].to_version == "v0001" and rolled[0].actor == f"sensor {DOMAIN}_demotion", rolled[0]
    assert "demoted" in rolled[0].reason and "v0002" in rolled[0].reason, rolled[0].reason
    proxy.mode = "forward"

    # two training runs this week (v0001, v0002): the drift still fires, and the retrain is deferred
    deferred = wait_for("the retrain sensor to defer over budget",
                        lambda: [o for o in _retrain_observations(instance) if o["action"] == "defer"], 240, logs)
    assert "budget" in deferred[0]["reason"].lower() or "2" in deferred[0]["budget"], deferred[0]
    assert not [r for r in instance.get_runs(dg.RunsFilter(tags={"slm/domain": DOMAIN, "slm/kind": "retrain"}))
                if r.run_id != runs[0].run_id], "a retrain ran over budget"

    # the registry history tells the week
    moves = [(e.alias, e.action, e.from_version, e.to_version, e.actor) for e in _events(instance)]
    assert moves == [
        ("champion", "promote", None, "v0001", getpass.getuser()),
        ("challenger", "promote", None, "v0002", f"sensor {DOMAIN}_challenger"),
        ("champion", "approve", "v0001", "v0002", f"sensor {DOMAIN}_shadow"),
        ("champion", "rollback", "v0002", "v0001", f"sensor {DOMAIN}_demotion"),
    ], moves
