"""Issue 11's proof of the loop: a simulated week on a real Dagster instance with the real daemon, the
real gateway (`slm serve`) in front of the session's real vLLM CPU server, and a tiny recipe.

- Day 0: `run_pass` (what `slm run` does) builds v0001 (capture, dataset, baseline, a 4-step LoRA,
  eval, package) on yesterday's simulated capture and promotes it: a champion serves.
- Drifted traffic (the simulator's drift knob at 1.0: a new product launch, more non-English, more
  chat) flows through the gateway into today's capture inbox.
- The operator turns the loop on (`dagster schedule start` / `dagster sensor start`, as the UI's
  toggles do); from here on the test only sends traffic and drops files: the daemon's schedule
  ingests the day (`improvement.capture_day: current`) and its drift report, the retrain sensor
  fires on the inputs' drift with its numbers, v0002 trains (warm start from v0001), passes its
  gates and is packaged, and the challenger sensor makes it the challenger.
- The champion answers and v0002 is shadowed on the same requests; it shadows cleanly and the shadow
  sensor promotes it, the gates as evidence.
- The promoted champion's adapter then fails at vLLM (a proxy between the gateway and vLLM answers
  HTTP 500 for it): every call falls back to the oracle, and the demotion sensor rolls it back to
  v0001 with the verdict.
- v0001 serves again, so the day's drift counts again and the trigger fires; the budget (two training
  runs a week) is spent: the retrain sensor defers, recorded on `<domain>/retrain`.

One retrain, so the week fits CI on 2 slow cores (it ran ~37 minutes with a second one). What the
daemon no longer drives here is tested on a real instance with the sensors evaluated directly: a
challenger that fails its shadow gates is rejected (tests/test_shadow_report.py), reviewers' labels
start a retrain (tests/test_improvement.py).

The asserts read the registry history (the `<domain>/release` observations) and the retrain
observations, not logs. Evals run on the transformers engine in the run's own process (no second
vLLM server); the floor gate is off (`eval.floor: none`) because four optimizer steps cannot beat
the keyword rules (tests/test_lifecycle_pass.py shows that gate failing), so a version passes on
schema validity and no regression against the reference.

Then `test_the_dagster_ui_shows_the_loop` (issue 12) opens the real webserver on the week's instance in Debian's
Chromium (Playwright) and checks what a person sees there against the instance; its screenshots are docs/ui/.
"""

from __future__ import annotations

import datetime as dt
import getpass
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
    "eval": {"floor": "none", "max_examples": 12, "regression_tolerance": 0.1},
    "serving": {"engine": "transformers", "latency_budget_ms": 120_000,
                "shadow": {"rate": 1.0, "queue_size": 256, "timeout_ms": 120_000}},
    "improvement": {
        "promotion": "auto", "capture_schedule": "* * * * *", "capture_day": "current",
        "retrain_interval_s": 30,
        # only the inputs' drift may start the retrain: at drift 1.0 a MiniLM classifier tells 60 gateway
        # tickets from training's at AUC ~0.78 (0.777 measured); 0.65 keeps sampling noise from deciding
        "triggers": {"max_input_auc": 0.65, "min_new_labelled_rows": 40},
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
    shutil.copytree(ROOT / "domains" / "travel", domains / "travel")  # a second group for the UI; its loop stays off
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
               "proxy": proxy, "toggle": toggle, "logs": list(logs.values()), "env": daemon_env}
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

    # v0002 trains (warm start from v0001), passes its gates, is packaged and becomes the challenger
    wait_for("v0002 to become the challenger",
             lambda: any(e.alias == "challenger" and e.to_version == "v0002" for e in _events(instance)), 900, logs)
    wait_for("the gateway to load the challenger",
             lambda: gateway.readyz()["routes"][f"{DOMAIN}/{ROLE}"].get("challenger") == "v0002", 60, logs, 0.5)
    runs = instance.get_runs(dg.RunsFilter(tags={"slm/domain": DOMAIN, "slm/kind": "retrain"}))
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS], runs
    assert runs[0].tags["slm/trigger"] == "input_drift", runs[0].tags

    # the champion answers, the challenger is shadowed on the same requests; it shadows cleanly and the
    # shadow sensor promotes it with the gates as evidence
    answered = _send(gateway, _tickets(domain, 30, seed=12, drift=1.0))
    # the challenger answers nobody: v0001 does until the shadow sensor promotes v0002, which 20 pairs may
    # decide before the 30th request (CI saw it). A request is routed when it starts, and the 20 pairs need
    # 20 answered requests, so the first 20 (4 in flight at a time) all started before any promotion
    versions = [a["version"] for a in answered]
    assert versions[:20] == ["v0001"] * 20 and set(versions) <= {"v0001", "v0002"}, versions
    promoted = wait_for("the shadow sensor to promote v0002",
                        lambda: [e for e in _events(instance) if e.action == "approve" and e.to_version == "v0002"],
                        420, logs)
    assert promoted[0].actor == f"sensor {DOMAIN}_shadow", promoted[0]
    evidence = promoted[0].evidence
    assert {k for k in evidence if k.startswith("shadow_")} == {"shadow_pairs", "shadow_validity", "shadow_quality",
                                                                  "shadow_latency", "shadow_cost"}, evidence
    assert all(v.startswith("passed") for k, v in evidence.items() if k.startswith("shadow_")), evidence
    assert "tokens per request vs champion" in evidence["shadow_cost"], evidence  # vLLM's usage, both sides

    # the new champion's adapter starts failing at vLLM (the proxy answers HTTP 500 for it): every call
    # falls back, and it is rolled back
    wait_for("the gateway to serve v0002",
             lambda: gateway.readyz()["routes"][f"{DOMAIN}/{ROLE}"]["champion"] == "v0002", 60, logs, 0.5)
    proxy.broken_prefix, proxy.mode = f"{DOMAIN}--v0002--", "error"
    answered = _send(gateway, _tickets(domain, 12, seed=13, drift=0.0))
    # the application still got its answers: v0002's fell back to the oracle (the first request was routed
    # to it before any failure), and a request that started after the rollback may find v0001 restored
    assert answered[0]["route"] == "oracle", answered
    assert all(a["route"] == "oracle" or a["version"] == "v0001" for a in answered), answered
    rolled = wait_for("the demotion sensor to roll v0002 back",
                      lambda: [e for e in _events(instance) if e.action == "rollback"], 240, logs)
    assert rolled[0].to_version == "v0001" and rolled[0].actor == f"sensor {DOMAIN}_demotion", rolled[0]
    assert "demoted" in rolled[0].reason and "v0002" in rolled[0].reason, rolled[0].reason
    proxy.mode = "forward"

    # v0001 serves again, so the day's drift (measured against v0001's training data) counts again and the
    # trigger fires; two training runs this week (v0001, v0002) spend the budget: the retrain is deferred
    deferred = wait_for("the retrain sensor to defer over budget",
                        lambda: [o for o in _retrain_observations(instance) if o["action"] == "defer"], 240, logs)
    assert "budget" in deferred[0]["reason"].lower() or "2" in deferred[0]["budget"], deferred[0]
    retrains = instance.get_runs(dg.RunsFilter(tags={"slm/domain": DOMAIN, "slm/kind": "retrain"}))
    assert [r.tags["dagster/partition"] for r in retrains] == ["v0002"], "a retrain ran over budget"

    # the registry history tells the week
    moves = [(e.alias, e.action, e.from_version, e.to_version, e.actor) for e in _events(instance)]
    assert moves == [
        ("champion", "promote", None, "v0001", getpass.getuser()),
        ("challenger", "promote", None, "v0002", f"sensor {DOMAIN}_challenger"),
        ("champion", "approve", "v0001", "v0002", f"sensor {DOMAIN}_shadow"),
        ("champion", "rollback", "v0002", "v0001", f"sensor {DOMAIN}_demotion"),
    ], moves


# --- the Dagster UI, in a real browser, on the week's instance ---------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")  # Debian's (`make setup` installs it); Playwright never downloads a browser
SHOTS = ROOT / "docs" / "ui"  # the README shows these


class Webserver:
    """`dagster-webserver` on the week's instance and workspace (the daemon already runs), on a free port."""

    def __init__(self, env: dict[str, str], log: Path):
        from slm_platform.inference.vllm_engine import free_port

        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port),
             "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"dagster-webserver exited:\n{self.log.read_text()[-2500:]}"
            try:
                return httpx.get(self.url + "/server_info", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for("dagster-webserver", up, timeout_s, [self.log], every_s=1.0)
        # the community sign-up dialog would cover the first page a person opens: dismiss it as "Skip" does
        httpx.post(self.url + "/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=30).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _markdown_dialog(page, key: str):
    """Open a metadata entry's `[Show Markdown]` on the current asset page; the dialog it opens."""
    from playwright.sync_api import expect

    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True)).first
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    return dialog


def _rendered_images(dialog) -> list[dict]:
    """Each inline chart the dialog shows, as the browser decoded it (a broken image has no natural size)."""
    return dialog.locator("img[src^='data:image/png;base64,']").evaluate_all(
        "imgs => imgs.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))")


def _table_headers(dialog) -> list[list[str]]:
    return dialog.locator("table").evaluate_all(
        "ts => ts.map(t => Array.from(t.querySelectorAll('th')).map(th => th.innerText.trim()))")


def _shoot(page, shots: Path, name: str, target=None) -> None:
    page.wait_for_timeout(1000)  # let charts and late queries settle
    (target or page).screenshot(path=str(shots / name))


def walk_the_ui(page, url: str, instance, domain, shots: Path, logs: list[Path]) -> None:
    """What a person checks in the UI, step by step, each against the instance; one screenshot per step."""
    import dagster as dg
    from playwright.sync_api import expect

    from slm_platform import settings
    from slm_platform.config import discover_domains
    from slm_platform.orchestration.partitions import next_version
    from slm_platform.orchestration.registry import HISTORY_ROWS, registry_state
    from slm_platform.registry.history import history_rows

    shots.mkdir(parents=True, exist_ok=True)

    # (a) every domain folder is an asset group; one group's lineage is its model registry
    page.goto(f"{url}/asset-groups")
    groups = sorted(folder.name for folder in discover_domains(settings.domains_dir()))
    assert groups == ["support_triage", "travel"], groups
    for group in groups:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    _shoot(page, shots, "asset_groups.png")
    page.goto(f"{url}/locations/slm_platform/asset-groups/{DOMAIN}/lineage")
    for stage in ("captured_traffic", "dataset", "adapter", "eval_report", "package", "release", "shadow_report"):
        expect(page.get_by_text(stage, exact=True).first).to_be_visible()
    _shoot(page, shots, "lineage.png")

    # (b) materialize a new dataset version from the UI: Materialize, add a partition, launch
    version = next_version(instance, DOMAIN)
    page.goto(f"{url}/assets/{DOMAIN}/dataset")
    page.get_by_role("button", name="Materialize").first.click()
    launch = page.get_by_role("dialog").filter(has_text=f"Launch runs to materialize {DOMAIN} / dataset")
    launch.get_by_text("Add a partition").click()
    add = page.get_by_role("dialog").filter(has_text=f"Add a partition for {DOMAIN}_versions")
    add.get_by_placeholder("name").fill(version)
    add.get_by_role("button", name="Save").click()
    expect(launch.get_by_text("1 partition", exact=True)).to_be_visible()
    _shoot(page, shots, "materialize_dataset.png")
    launch.get_by_role("button", name="Launch 1 run").click()
    expect(launch).to_be_hidden()

    def finished() -> dg.DagsterRun | None:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": version}))
        done = [r for r in runs if r.is_finished]
        return done[0] if done else None
    run = wait_for(f"the dataset run for {version} launched from the UI", finished, 600, logs)
    assert run.status == dg.DagsterRunStatus.SUCCESS, run
    assert run.asset_selection == {dg.AssetKey([DOMAIN, "dataset"])}, run.asset_selection
    materialized = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([DOMAIN, "dataset"]), asset_partitions=[version]), limit=1).records
    assert materialized and materialized[0].run_id == run.run_id, materialized
    page.goto(f"{url}/runs/{run.run_id}")
    expect(page.get_by_text("Success").first).to_be_visible()
    _shoot(page, shots, "dataset_run.png")

    # (c) the eval report's metadata: its chart and the primary metric by slice, as tables; the loss curve and the
    #     drift chart likewise (markdown metadata: the UI renders GitHub tables and inline PNGs in its dialog)
    slice_keys = [s.key for s in domain.config.eval.slices]
    page.set_viewport_size({"width": 1440, "height": 1800})  # the whole report fits in one screenshot
    for asset, key, shot in (("eval_report", "report", "eval_report.png"), ("adapter", "loss_curve", "loss_curve.png"),
                             ("drift_report", "report", "drift_report.png")):
        page.goto(f"{url}/assets/{DOMAIN}/{asset}")
        dialog = _markdown_dialog(page, key)
        images = _rendered_images(dialog)
        assert len(images) == 1 and images[0]["complete"] and images[0]["width"] >= 300, (asset, images)
        headers = _table_headers(dialog)
        if asset == "eval_report":
            assert headers[0][:2] == ["entry", "n"], headers
            assert [h[0] for h in headers[1:]] == slice_keys, headers  # one table per slice key
        elif asset == "drift_report":
            assert headers and headers[0][:2] == ["measure", "value"], headers
        _shoot(page, shots, shot, dialog)
        dialog.get_by_role("button", name="Close").click()

    # (d) the release asset: who serves (the champion) and the history of every move, as the registry says
    state = registry_state(instance, DOMAIN)
    page.set_viewport_size({"width": 1800, "height": 1100})  # the history table is wide
    page.goto(f"{url}/assets/{DOMAIN}/release")
    champion = page.get_by_role("row").filter(has=page.get_by_role("cell", name=f"champion/{ROLE}", exact=True))
    expect(champion.get_by_role("cell", name=state.version(ROLE), exact=True)).to_be_visible()
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="history", exact=True)).first
    expect(row).to_be_visible()
    inline = row.locator("table").count() > 0  # the UI shows markdown under 1,000 characters inline, else a button
    page.get_by_text("Metadata", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start', inline: 'start'})")
    _shoot(page, shots, "release.png")
    dialog = None if inline else _markdown_dialog(page, "history")
    history = row.locator("table") if inline else dialog.locator("table").first
    expected = history_rows(state, newest_first=True, limit=HISTORY_ROWS)  # what `slm registry history` prints
    expect(history.locator("tbody tr")).to_have_count(len(expected))
    shown = history.locator("tbody tr").evaluate_all(
        "trs => trs.map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()))")
    columns = [0, *range(2, 8)]  # event, role, alias, action, from, to, actor
    assert [[row[i] for i in columns] for row in shown] == [[row[i] for i in columns] for row in expected], shown
    if dialog is not None:
        _shoot(page, shots, "release_history.png", dialog)
        dialog.get_by_role("button", name="Close").click()
    page.goto(f"{url}/assets/{DOMAIN}/release?view=events")  # each move and each resulting state, observed
    expect(page.get_by_text(f"champion: {ROLE} {state.version(ROLE)}").first).to_be_visible()
    _shoot(page, shots, "release_events.png")
    page.set_viewport_size({"width": 1440, "height": 900})

    # (e) the sensors and the schedule, with their last ticks and the runs they launched
    page.goto(f"{url}/automation")
    for name in [f"{DOMAIN}_daily_capture", *SENSORS]:
        expect(page.get_by_text(name, exact=True)).to_be_visible()
    _shoot(page, shots, "automation.png")
    for kind, name, tag in [("schedules", f"{DOMAIN}_daily_capture", "dagster/schedule_name"),
                            *[("sensors", s, "dagster/sensor_name") for s in SENSORS]]:
        page.goto(f"{url}/locations/slm_platform/{kind}/{name}")
        expect(page.get_by_text("Latest tick").first).to_be_visible()
        expect(page.get_by_text("View logs").first).to_be_visible()  # the tick table has a row
        launched = instance.get_runs(dg.RunsFilter(tags={tag: name}), limit=1)
        if name in (f"{DOMAIN}_daily_capture", f"{DOMAIN}_retrain"):  # the week's day ingested, v0002 retrained
            _shoot(page, shots, f"{name}.png")
            assert launched, f"{name} launched no run"
        if launched:  # the latest run it launched is listed with it
            if kind == "schedules":
                page.get_by_role("tab", name="Run history", exact=True).click()
            else:
                page.get_by_role("button", name="Runs", exact=True).click()
            expect(page.get_by_text(launched[0].run_id[:8]).first).to_be_visible()


def test_the_dagster_ui_shows_the_loop(week):
    """After the week: a person opens the real webserver on the same instance (the daemon still runs) in Debian's
    Chromium and finds both domains' groups, materializes a dataset version, reads the eval report (chart and slice
    tables), the loss curve and the drift chart, the release with its champion and history, and the sensors' and
    the schedule's last ticks. The screenshots land in docs/ui/ for the README."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium as root")
    from playwright.sync_api import sync_playwright

    web = Webserver(week["env"], week["home"] / "webserver.log")
    try:
        web.wait_ready()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM))
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.set_default_timeout(60_000)  # two cores, a daemon and its runs share them
                walk_the_ui(page, web.url, week["instance"], week["domain"], SHOTS, [*week["logs"], web.log])
            finally:
                browser.close()
    finally:
        web.stop()
