"""The Dagster UI serves both domains' asset groups with their checks, and a broken domain folder as
its own group that says what is wrong (real webserver, real HTTP)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

QUERY = """{ assetNodes { assetKey { path } groupName description
  assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""
BROKEN = "help_desk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("ui")
    domains = home / "domains"
    for name in ("support_triage", "travel"):
        shutil.copytree(ROOT / "domains" / name, domains / name)
    shutil.copytree(ROOT / "domains" / "support_triage", domains / BROKEN)  # a copy whose name does not match
    port = free_port()
    env = dict(os.environ, SLM_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), SLM_DOMAINS=str(domains))
    subprocess.run([sys.executable, "-c", "from slm_platform.orchestration.instance import prepare_home; prepare_home()"],
                   env=env, check=True)
    log = open(home / "webserver.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p",
                             str(port), "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError((home / "webserver.log").read_text()[-3000:])
            try:
                if httpx.get(f"{base}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise TimeoutError("dagster-webserver did not answer /server_info in 180 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_ui_lists_both_groups_with_blocking_checks(webserver: str) -> None:
    deadline = time.monotonic() + 120
    while True:  # the code location loads in the background after the server answers
        body = httpx.post(f"{webserver}/graphql", json={"query": QUERY}, timeout=30).json()
        nodes = body.get("data", {}).get("assetNodes") or []
        if nodes or time.monotonic() > deadline:
            break
        time.sleep(2)
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    for domain in ("support_triage", "travel"):
        dataset = by_key[f"{domain}/dataset"]
        assert dataset["groupName"] == domain
        checks = {c["name"]: c["blocking"] for c in dataset["assetChecksOrError"]["checks"]}
        assert checks == {"no_split_leakage": True, "labels_valid": True, "min_rows": True, "rows_conserved": True}
        assert by_key[f"{domain}/captured_traffic"]["groupName"] == domain
    # the broken folder took nothing down and says what is wrong: file, field path, found, expected
    broken = by_key[f"{BROKEN}/config_error"]
    assert broken["groupName"] == BROKEN
    assert f"{BROKEN}/slm.config.yaml: domain.name: found 'support_triage', expected the folder name" \
        in broken["description"], broken["description"]
    page = httpx.get(f"{webserver}/assets", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
