"""Automatic demotion (improvement/demotion.py and the `<domain>_demotion` sensor): the gateway's
capture rows (built by the gateway's own `capture_turn`) in the inbox, judged over the champion's last
calls; a champion that fails too often is rolled back on a real instance, the verdict as reason."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.improvement.demotion import gateway_rows, judge_champion
from slm_platform.serving.capture import capture_turn
from slm_platform.serving.hooks import Exchange

ROOT = Path(__file__).resolve().parent.parent
NAME, ROLE, MODEL = "support_triage", "triage", "support_triage/triage"
OUT = {"category": "billing", "priority": "high", "product": "mail", "needs_human": False, "language": "en"}


def row(i: int, at: float, *, route: str = "slm", fallbacks: tuple[str, ...] = (), champion: str = "v0002") -> dict:
    version = champion
    ex = Exchange(request_id=f"req-{i}", domain=NAME, role=ROLE, route=route, version=version if route == "slm"
                  else route, input={"messages": [{"role": "user", "content": "hi"}]}, messages=(),
                  prompt_token_ids=None, output=OUT, latency_ms=10.0, upstream_ms=9.0,
                  validity={"schema_valid_rate": True}, fallbacks=fallbacks, received_at=at, stream=False,
                  champion=champion, challenger=None)
    return capture_turn(ex)


def traffic(n: int, failing: dict[int, str], start: float) -> list[dict]:
    """n champion calls; call i in `failing` fell back to the oracle after the SLM failed that way."""
    return [row(i, start + i, route="oracle", fallbacks=(f"slm:{failing[i]}",)) if i in failing else
            row(i, start + i) for i in range(n)]


def write_inbox(inbox: Path, rows: list[dict], *, torn_tail: bool = False) -> None:
    day = rows[0]["meta"]["day"]
    folder = inbox / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + ('{"id": "half-writ' if torn_tail else "")
    (folder / "gateway-host-1-20261130T000000000000Z.jsonl").write_text(text)


def test_the_window_counts_only_champion_attempts_and_judges_the_limit(tmp_path):
    start = time.time() - 600
    rows = traffic(50, {35: "invalid", 45: "timeout"}, start)
    rows += [row(100, start + 100, route="oracle", fallbacks=("slm:breaker_open",)),  # turned away: the champion's
             row(101, start + 101, route="oracle"),  # an oracle route: not the champion's call
             row(102, start + 102, route="oracle", fallbacks=("slm:unavailable",))]  # vLLM not ready: not an attempt
    write_inbox(tmp_path, rows, torn_tail=True)
    since = datetime.fromtimestamp(start, timezone.utc)
    read = list(gateway_rows(tmp_path, since))
    assert len(read) == 53  # the torn last line is skipped, not an error

    ok = judge_champion(read, model=MODEL, role=ROLE, champion="v0002", window=50, max_error_rate=0.07)
    assert (ok.attempts, ok.demote, ok.error_rate) == (50, False, 0.06)
    assert ok.reason == ("champion v0002 failed 3 of its last 50 calls (6%; slm:breaker_open 1, slm:invalid 1, "
                         "slm:timeout 1) ≤ improvement.demotion.max_error_rate 7%")
    bad = judge_champion(read, model=MODEL, role=ROLE, champion="v0002", window=20, max_error_rate=0.05)
    assert bad.demote and bad.attempts == 20 and "failed 3 of its last 20 calls (15%" in bad.reason
    early = judge_champion(read[:12], model=MODEL, role=ROLE, champion="v0002", window=50, max_error_rate=0.05)
    assert not early.demote and early.reason.startswith("12 of 50 champion calls so far")
    later = list(gateway_rows(tmp_path, since + timedelta(seconds=40)))
    assert len(later) == 13  # rows captured before `since` (an earlier champion's) are not read


def test_the_sensor_rolls_back_a_failing_champion_once(tmp_path, monkeypatch):
    from test_registry import publish_version

    from slm_platform.orchestration import registry as reg
    from slm_platform.orchestration.factory import build_domain_defs
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.resources import ArtifactStoreResource
    from slm_platform.registry.releases import current_release, reference_name

    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))  # the inbox: <SLM_HOME>/inbox/<domain>
    store = ArtifactStore(tmp_path / "artifacts")
    publish_version(store, "v0001")
    publish_version(store, "v0002", reference=reference_name("v0001"))
    domain = Domain.load(ROOT / "domains" / NAME)
    sensor = next(s for s in build_domain_defs(domain).sensors if s.name == f"{NAME}_demotion")
    instance = get_instance(tmp_path / "dagster")

    def tick() -> str:
        with dg.build_sensor_context(instance=instance, resources={
                "artifacts": ArtifactStoreResource(root=str(store.local_root))}) as context:
            return sensor(context).skip_message

    try:
        assert tick() == "triage: no champion"
        reg.promote(instance, store, NAME, "v0001", actor="ana", reason="first")
        reg.promote(instance, store, NAME, "v0002", actor="ana", reason="better")
        inbox = tmp_path / "home" / "inbox" / NAME
        write_inbox(inbox, traffic(50, {i: "error" for i in range(0, 50, 10)}, time.time() + 1))  # 5 of 50: 10%
        said = tick()
        assert said.startswith("triage: rolled back to v0001: champion v0002 failed 5 of its last 50 calls (10%; "
                               "slm:error 5) > improvement.demotion.max_error_rate 5%"), said
        assert current_release(store, NAME, ROLE).version == "v0001"
        last = reg.read_log(instance, NAME)[-1].event
        assert (last.action, last.actor, last.from_version, last.to_version) == (
            "rollback", f"sensor {NAME}_demotion", "v0002", "v0001")
        assert last.reason.startswith("demoted: champion v0002 failed 5 of its last 50 calls")
        # the calls were v0002's (meta.champion): the restored champion starts a new window
        assert tick() == "triage: 0 of 50 champion calls so far; failures none"
        assert len(reg.read_log(instance, NAME)) == 3
    finally:
        instance.dispose()
