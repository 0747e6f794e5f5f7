"""Issue 9's "Done means", driven through the Dagster UI's own API on a real webserver + daemon:
a packaged version that passed its gates is promoted with a recorded reason from the launchpad
(`support_triage_promote`), a second one goes in as challenger and is approved, a failed one is
refused with its reasons, and one rollback run restores the first; the release asset's latest
observation then shows the champion and the history table that its page renders.

The packages are the small, verifiable ones of tests/test_registry.py (`publish_version`); every
run goes through the queued run coordinator, so the daemon launches it, as in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.registry.pointer import read_pointer
from slm_platform.registry.releases import reference_name
from test_registry import DOMAIN, ROLE, publish_version  # tests/test_registry.py
from test_ui import free_port  # tests/test_ui.py

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status
  eventConnection { events { __typename ... on ExecutionStepFailureEvent { error { message } } } } } } }"""
OBSERVATIONS = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetObservations(limit: 2) { description metadataEntries { label __typename
    ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr } } } } } }"""


def _wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {seconds} s")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("ui_release")
    domains = home / "domains"
    shutil.copytree(ROOT / "domains" / DOMAIN, domains / DOMAIN)
    store = ArtifactStore(home / "artifacts")
    publish_version(store, "v0001")
    publish_version(store, "v0002", reference=reference_name("v0001"))
    publish_version(store, "v0003", reference=reference_name("v0001"), failed=("schema_valid",))
    env = {k: v for k, v in os.environ.items() if k not in ("SLM_DAGSTER_STORAGE_URL", "SLM_ARTIFACTS")}
    env.update(SLM_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), SLM_DOMAINS=str(domains))
    subprocess.run([sys.executable, "-c", "from slm_platform.orchestration.instance import prepare_home; prepare_home()"],
                   env=env, check=True)
    bin_dir = Path(sys.executable).parent
    workspace = ["-w", str(ROOT / "workspace.yaml")]
    port = free_port()
    logs = {name: open(home / f"{name}.log", "w") for name in ("webserver", "daemon")}
    procs = [subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), *workspace],
                              cwd=ROOT, env=env, stdout=logs["webserver"], stderr=subprocess.STDOUT),
             subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", *workspace], cwd=ROOT, env=env,
                              stdout=logs["daemon"], stderr=subprocess.STDOUT)]
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/server_info", procs[0], home / "webserver.log")
        yield base, store, home
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        for f in logs.values():
            f.close()


def _graphql(base: str, query: str, **variables) -> dict:
    body = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables}, timeout=60).json()
    assert "errors" not in body, body
    return body["data"]


def launch(base: str, action: str, home: Path, **config) -> tuple[str, list[str]]:
    """Launch `<domain>_<action>` as the launchpad does; wait for the daemon to run it."""
    params = {"selector": {"repositoryLocationName": "slm_platform", "repositoryName": "__repository__",
                           "jobName": f"{DOMAIN}_{action}"},
              "runConfigData": {"ops": {f"{DOMAIN}_{action}_op": {"config": config}}}}
    deadline = time.monotonic() + 120
    while True:  # the code location loads in the background after the server answers
        result = _graphql(base, LAUNCH, params=params)["launchRun"]
        if result["__typename"] == "LaunchRunSuccess" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["runId"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        run = _graphql(base, RUN, id=run_id)["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            failures = [e["error"]["message"] for e in run["eventConnection"]["events"]
                        if e["__typename"] == "ExecutionStepFailureEvent"]
            return run["status"], failures
        time.sleep(1)
    raise TimeoutError(f"run {run_id} ({action}) did not finish; daemon log:\n"
                       + (home / "daemon.log").read_text()[-3000:])


def test_promote_approve_refuse_and_roll_back_from_the_ui(ui):
    base, store, home = ui

    def champion() -> str | None:
        pointer = read_pointer(store, DOMAIN)
        target = pointer.roles[ROLE].champion if pointer else None
        return target.version if target else None

    assert launch(base, "promote", home, version="v0001", reason="first release", actor="ana") == ("SUCCESS", [])
    assert champion() == "v0001"
    assert launch(base, "promote", home, version="v0002", reason="shadow it", alias="challenger")[0] == "SUCCESS"
    status, failures = launch(base, "promote", home, version="v0003", reason="try")
    assert status == "FAILURE" and any("gate 'schema_valid' failed for v0003" in f for f in failures), failures
    assert launch(base, "approve", home, version="v0002", reason="report reviewed")[0] == "SUCCESS"
    assert champion() == "v0002"
    assert launch(base, "rollback", home, reason="p95 latency up")[0] == "SUCCESS"  # one run, one pointer write
    assert champion() == "v0001"

    [state, event] = _graphql(base, OBSERVATIONS, path=[DOMAIN, "release"])["assetOrError"]["assetObservations"]
    meta = {m["label"]: m.get("text") or m.get("mdStr") for m in state["metadataEntries"]}
    assert meta[f"champion/{ROLE}"] == "v0001" and meta["awaiting approval"] == "-"
    rows = meta["history"].splitlines()[2:]
    assert [r.split(" | ")[4:7] for r in rows] == [["rollback", "v0002", "v0001"], ["approve", "v0001", "v0002"],
                                                    ["promote", "-", "v0002"], ["promote", "-", "v0001"]]
    assert "| ana | first release | applied |" in rows[-1] and "p95 latency up" in rows[0]
    assert "champion: triage v0001" in state["description"]
    event_meta = {m["label"]: m.get("text") for m in event["metadataEntries"]}
    assert (event_meta["action"], event_meta["reason"]) == ("rollback", "p95 latency up")
    assert event_meta["actor"].startswith("dagster run ")
