"""Capture through the real `slm serve` process: every answered request lands in the capture inbox
exactly once, redacted, in files the capture stage ingests as they are; SIGTERM mid-load loses none.

The oracle answers (no champion is released in these folders and routes say oracle), so no vLLM
is needed: the point is the gateway's capture writer, not the model.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.data.stages import ingest_capture
from slm_platform.domain import Domain
from slm_platform.records import check_turn
from test_gateway import ROOT, TICKET, GatewayProcess, edit_config  # tests/test_gateway.py

pytestmark = pytest.mark.integration

KEY = "sk-capture-test"
N = 60


@pytest.fixture
def gateway_env(tmp_path):
    domains = tmp_path / "domains"
    shutil.copytree(ROOT / "domains" / "support_triage", domains / "support_triage")
    edit_config(domains / "support_triage", routes={"triage": "oracle"})
    env = {"SLM_DOMAINS": str(domains), "SLM_ARTIFACTS": str(tmp_path / "artifacts"), "SLM_HOME": str(tmp_path / "home"),
           "SLM_GATEWAY_VLLM_URL": "http://127.0.0.1:9", "SLM_GATEWAY_API_KEYS": KEY,
           "SLM_GATEWAY_RATE_LIMIT_RPS": "10000", "SLM_GATEWAY_RATE_LIMIT_BURST": "10000"}
    return env, tmp_path


def _inbox(tmp: Path) -> Path:
    return tmp / "home" / "inbox" / "support_triage"


def _rows(tmp: Path) -> list[dict]:
    rows = []
    for f in sorted(_inbox(tmp).glob("date=*/*.jsonl")):
        data = f.read_text(encoding="utf-8")
        assert data == "" or data.endswith("\n"), f"{f} ends in a partial line"
        rows += [json.loads(line) for line in data.splitlines()]
    return rows


def test_sigterm_mid_load_every_answered_request_is_captured_exactly_once(gateway_env):
    env, tmp = gateway_env
    gw = GatewayProcess(env, tmp / "gw.log")
    gw.wait_ready()
    statuses: dict[str, int | str] = {}

    async def one(c: httpx.AsyncClient, i: int) -> None:
        rid = f"cap-{i:03d}"
        await asyncio.sleep(i * 0.025)  # a steady stream over ~1.5 s; SIGTERM lands in the middle
        try:
            r = await c.post("/v1/chat/completions", headers={"x-request-id": rid},
                             json={"model": "support_triage/triage",
                                   "messages": [{"role": "user", "content": f"{TICKET} (order {i})"}]})
            statuses[rid] = r.status_code
            if r.status_code == 200:
                assert r.headers["x-request-id"] == rid and r.headers["x-slm-route"] == "oracle"
        except httpx.HTTPError as exc:
            statuses[rid] = type(exc).__name__

    async def load() -> None:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)  # a new connection each
        async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits,
                                     timeout=30) as c:
            tasks = [asyncio.create_task(one(c, i)) for i in range(N)]
            await asyncio.sleep(0.6)
            gw.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks)

    t0 = time.perf_counter()
    asyncio.run(load())
    code = gw.stop()
    answered = sorted(rid for rid, s in statuses.items() if s == 200)
    refused = [rid for rid, s in statuses.items() if s != 200]
    print(f"capture drain: {len(answered)} answered, {len(refused)} refused after SIGTERM, "
          f"{time.perf_counter() - t0:.1f} s")
    assert code in (0, -signal.SIGTERM)
    assert answered and refused, f"SIGTERM did not land mid-load: {statuses}"
    assert all(s != 500 and s != 503 for s in statuses.values()), statuses

    rows = _rows(tmp)
    ids = [r["meta"]["request_id"] for r in rows]
    assert sorted(ids) == answered  # every answered request, exactly once; nothing that was not answered
    files = sorted(_inbox(tmp).glob("date=*/*.jsonl"))
    assert len(files) == 1 and files[0].name.startswith("gateway-") and str(gw.proc.pid) in files[0].name
    triage = Domain.load(Path(env["SLM_DOMAINS"]) / "support_triage")
    for row in rows:
        check_turn(row, domain="support_triage", roles=["triage"])
        meta = row["meta"]
        # the oracle answered: its answer is the output, never a label (only a hosted model's answer is)
        assert row["id"] == meta["request_id"] and row["labels"] == {}
        assert (meta["route"], meta["version"], meta["model"]) == ("oracle", "oracle", "support_triage/triage")
        assert meta["validity"]["schema_valid_rate"] is True and meta["fallbacks"] == []  # the route is oracle: nothing passed over
        assert meta["latency_ms"] > 0 and meta["day"] == files[0].parent.name.removeprefix("date=")
        assert triage.role("triage").validate_output(row["output"]) == []

    # the capture stage ingests these files unchanged: every row in is kept, nothing quarantined
    day = files[0].parent.name.removeprefix("date=")
    store = ArtifactStore(tmp / "store")
    result = ingest_capture(triage, day, store, inbox=_inbox(tmp))
    assert (result.stats["rows_in"], result.stats["kept"], result.stats["quarantined"]) == (len(answered),) * 2 + (0,)
    assert all(c["passed"] for c in result.checks.values() if c.get("blocking")), result.checks
    log = (tmp / "gw.log").read_text()
    assert "Traceback" not in log and KEY not in log


def test_personal_data_in_a_request_never_reaches_the_capture_file(gateway_env):
    env, tmp = gateway_env
    email, phone, card = "jane.doe@example.com", "+44 20 7946 0958", "4111 1111 1111 1111"
    gw = GatewayProcess(env, tmp / "gw.log")
    try:
        gw.wait_ready()
        text = f"My card {card} was charged twice, mail me at {email} or call {phone}. My name is Jane Doe."
        r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}",
                                                                 "x-request-id": f"ticket-{email}"},
                       json={"model": "support_triage/triage", "messages": [{"role": "user", "content": text}]},
                       timeout=30)
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        while not _rows(tmp) and time.monotonic() < deadline:  # written within the flush interval, while serving
            time.sleep(0.05)
        raw = "".join(f.read_text() for f in _inbox(tmp).glob("date=*/*.jsonl"))
        assert raw, "nothing captured while the gateway runs"
    finally:
        gw.stop()
    [row] = _rows(tmp)
    for secret in (email, phone, card, "4111111111111111", "7946 0958", "Jane Doe", "jane.doe"):
        assert secret not in raw
    assert "<EMAIL_1>" in row["input"]["messages"][0]["content"] and "<CARD_1>" in row["input"]["messages"][0]["content"]
    assert row["id"].startswith("pii-")  # an id with personal data in it is replaced whole
    # and the stage keeps it: the sample decision is made on the id as written
    day = row["meta"]["day"]
    result = ingest_capture(Domain.load(Path(env["SLM_DOMAINS"]) / "support_triage"), day,
                            ArtifactStore(tmp / "store"), inbox=_inbox(tmp))
    assert (result.stats["rows_in"], result.stats["kept"]) == (1, 1)
    assert email not in (tmp / "gw.log").read_text()
