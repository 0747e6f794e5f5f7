"""`shadow_report[v]`: pairs as the gateway writes them (its own writer, `write_object`), captured
turns with truth labels published as `captured_traffic` publishes them, the real report, gates
and asset on a Dagster instance. The pairs' outputs are simulator tickets, edited where a case needs
a challenger that is wrong, invalid or slow. The gateway writing real pairs is
tests/test_gateway_shadow.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dagster as dg
import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import ShadowJudgeBlock
from slm_platform.data.stages import CAPTURE_FILE
from slm_platform.domain import Domain
from slm_platform.layout import capture_dir, shadow_dir
from slm_platform.serving.shadow import write_object
from slm_platform.shadow.pairs import ShadowPair, ShadowSide, read_pairs
from slm_platform.shadow.report import wilson
from slm_platform.shadow.stage import build_shadow_report

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-28"
NAME = "support_triage"


def judged_by(domain: Domain, **fields) -> Domain:
    cfg = domain.config
    improvement = cfg.improvement.model_copy(update={"shadow": ShadowJudgeBlock(**fields)})
    return dataclasses.replace(domain, config=cfg.model_copy(update={"improvement": improvement}))


@pytest.fixture(scope="module")
def domain() -> Domain:
    return judged_by(Domain.load(ROOT / "domains" / NAME), min_pairs=40, min_labelled=20, min_agreement=0.8,
                     latency_tolerance=0.1)


@pytest.fixture(scope="module")
def tickets(domain):
    return list(domain.simulator().simulate(80, seed=3, day=DAY))


def capture(store: ArtifactStore, tickets, labelled: int) -> None:
    """A published capture day: every ticket captured with its request id; the first `labelled` gold."""
    rows = []
    for i, t in enumerate(tickets):
        labels = {"gold": t["output"]} if i < labelled else {}
        rows.append({**t, "labels": labels, "meta": {**t["meta"], "request_id": f"req-{i}", "route": "slm",
                                                      "version": "v0001"}})
    with store.publish(capture_dir(NAME, DAY), kind="capture", version=DAY, producer="tests") as staging:
        (staging / CAPTURE_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))


def pair(i: int, truth: dict, challenger_output: dict | None, *, challenger: str = "v0002", error=None,
         champion_ms: float = 100.0, challenger_ms: float = 100.0, champion_tokens: int | None = 250,
         challenger_tokens: int | None = 250) -> ShadowPair:
    valid = {"schema_valid_rate": challenger_output is not None and error is None}
    return ShadowPair(
        request_id=f"req-{i}", model=f"{NAME}/triage", day=DAY, received_at=1_764_300_000.0 + i,
        champion=ShadowSide(version="v0001", output=truth, latency_ms=champion_ms,
                            validity={"schema_valid_rate": True}, tokens=champion_tokens),
        challenger=ShadowSide(version=challenger, output=challenger_output, latency_ms=challenger_ms,
                              validity=valid if error != "shutdown" else {}, error=error,
                              tokens=challenger_tokens if challenger_output is not None else None),
        agreement=None if challenger_output is None else float(challenger_output == truth),
        exact_match=None if challenger_output is None else float(challenger_output == truth))


def write_pairs(store: ArtifactStore, pairs, *, extra_lines: str = "") -> None:
    data = "".join(p.model_dump_json() + "\n" for p in pairs) + extra_lines
    write_object(store, f"{shadow_dir(NAME, DAY)}/gw-000001.jsonl", data.encode())


def test_wilson_interval_matches_the_textbook_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (Wilson score without correction)
    for (k, n), bounds in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611)}.items():
        r = wilson(k, n)
        assert (round(r.low, 4), round(r.high, 4)) == bounds and r.value == k / n
    assert wilson(0, 0).value is None and wilson(10, 10).high == 1.0


def test_a_challenger_as_good_as_the_champion_passes_every_gate(tmp_path, domain, tickets):
    store = ArtifactStore(tmp_path)
    capture(store, tickets, labelled=30)
    pairs = [pair(i, t["output"], t["output"], challenger_ms=90.0 + i % 20) for i, t in enumerate(tickets[:60])]
    other = [pair(70 + i, tickets[70 + i]["output"], tickets[70 + i]["output"], challenger="v0003") for i in range(5)]
    stopped = [pair(60, tickets[60]["output"], None, error="shutdown")]
    write_pairs(store, pairs + other + stopped, extra_lines='{"request_id": 7}\nnot json\n')

    result = build_shadow_report(domain, store, "v0002")
    report = result.report
    assert report.decided and report.passed, report.gates
    assert (report.lines_read, report.other_versions, report.rejected) == (68, 5, 2)  # 61 + 5 + 2: nothing lost
    assert report.rejected_examples[0].endswith("gw-000001.jsonl:67: request_id: Input should be a valid string")
    assert report.rejected_examples[1].endswith("gw-000001.jsonl:68: not JSON (Expecting value)")
    r = report.roles["triage"]
    assert (r.pairs, r.not_judged, r.errors) == (60, 1, {})  # the gateway's shutdown is not the challenger's fault
    assert r.agreement.k == 60 and r.challenger_correct.n == r.champion_correct.n == 30
    assert r.challenger_latency_ms.p95 < r.champion_latency_ms.p95 * 1.1
    assert report.gates["shadow_quality"].detail.startswith("triage: right 100.0%")
    languages = {s.value: s.pairs for s in r.slices if s.key == "language"}
    assert sum(languages.values()) == 60 and "en" in languages  # slices from the captured turns
    assert store.verify(result.rel).kind == "shadow_report" and "| triage | all | 60 |" in result.markdown
    assert r.challenger_cost.tokens == r.champion_cost.tokens == 250.0 and r.challenger_cost.n == 60
    assert r.challenger_cost.usd is None  # no serving.cost_per_1m_tokens: compared in tokens
    assert report.gates["shadow_cost"].detail == ("(+10% allowed) triage: 250.0 tokens per request vs champion "
                                                  "250.0 (n=60)")
    assert "| triage | challenger | " in result.markdown and "| 250.0 (n=60) | - |" in result.markdown


def test_a_challenger_that_costs_more_per_request_fails_the_cost_gate(tmp_path, domain, tickets):
    """Same answers, but the challenger spends 40% more tokens (it pads or repeats): over the
    tolerance; priced, it also has to fit the budget per request; without usage it is not measured."""
    store = ArtifactStore(tmp_path)
    write_pairs(store, [pair(i, t["output"], t["output"], challenger_tokens=350) for i, t in enumerate(tickets[:50])])
    gate = build_shadow_report(domain, store, "v0002").report.gates["shadow_cost"]
    assert not gate.passed and gate.detail.endswith("triage: 350.0 tokens per request vs champion 250.0 (n=50)")

    cfg = domain.config
    priced = dataclasses.replace(domain, config=cfg.model_copy(update={
        "serving": cfg.serving.model_copy(update={"cost_per_1m_tokens": 0.2})}))
    priced = judged_by(priced, min_pairs=40, min_agreement=0.8, cost_tolerance=0.5, max_cost_per_request=0.00005)
    report = build_shadow_report(priced, store, "v0002").report
    gate = report.gates["shadow_cost"]  # 350 tokens at $0.20 per million: $0.00007 > $0.00005
    assert not gate.passed and "$0.000070 per request vs budget $5e-05" in gate.detail, gate.detail
    assert report.roles["triage"].champion_cost.usd == pytest.approx(0.00005)
    write_pairs(store, [pair(i, t["output"], t["output"], challenger_tokens=240) for i, t in enumerate(tickets[:50])])
    assert build_shadow_report(priced, store, "v0002").report.gates["shadow_cost"].passed  # $0.000048

    write_pairs(store, [pair(i, t["output"], t["output"], champion_tokens=None, challenger_tokens=None)
                        for i, t in enumerate(tickets[:50])])
    gate = build_shadow_report(domain, store, "v0002").report.gates["shadow_cost"]
    assert not gate.passed and "cost not measured" in gate.detail


def test_too_few_pairs_decide_nothing(tmp_path, domain, tickets):
    store = ArtifactStore(tmp_path)
    write_pairs(store, [pair(i, t["output"], t["output"]) for i, t in enumerate(tickets[:10])])
    report = build_shadow_report(domain, store, "v0002").report
    assert not report.decided and not report.passed
    assert report.gates["shadow_pairs"].detail == "at least 40 judged pairs per role: short in triage 10"
    assert {g.detail for n, g in report.gates.items() if n != "shadow_pairs"} == {"not decided: fewer than 40 pairs"}


def test_a_wrong_invalid_and_slow_challenger_fails_with_reasons(tmp_path, domain, tickets):
    store = ArtifactStore(tmp_path)
    capture(store, tickets, labelled=40)
    pairs = []
    for i, t in enumerate(tickets[:60]):
        wrong = {**t["output"], "priority": "low" if t["output"]["priority"] != "low" else "high"}
        out = wrong if i % 3 == 0 else t["output"]  # wrong on a third of the tickets
        pairs.append(pair(i, t["output"], out, challenger_ms=300.0))
    pairs += [pair(60, tickets[60]["output"], None, error="timeout"),
              pair(61, tickets[61]["output"], None, error="invalid")]
    write_pairs(store, pairs)
    report = build_shadow_report(domain, store, "v0002").report
    assert report.decided and not report.passed
    g = report.gates
    assert not g["shadow_validity"].passed and "(invalid 1, timeout 1)" in g["shadow_validity"].detail
    assert not g["shadow_quality"].passed and "vs champion 100.0% (tolerance 2%)" in g["shadow_quality"].detail
    assert not g["shadow_latency"].passed and "p95 300.0 ms vs champion 100.0 ms" in g["shadow_latency"].detail
    assert g["shadow_pairs"].passed


def test_without_labels_the_challenger_must_agree_with_the_champion(tmp_path, domain, tickets):
    store = ArtifactStore(tmp_path)
    alike = [pair(i, t["output"], t["output"]) for i, t in enumerate(tickets[:50])]
    write_pairs(store, alike)
    assert build_shadow_report(domain, store, "v0002").report.gates["shadow_quality"].passed
    half = [pair(i, t["output"], {**t["output"], "needs_human": not t["output"]["needs_human"]} if i % 2 else
                 t["output"]) for i, t in enumerate(tickets[:50])]
    write_pairs(store, half)
    gate = build_shadow_report(domain, store, "v0002").report.gates["shadow_quality"]
    assert not gate.passed and "agreement 50.0%" in gate.detail and "0 labelled pairs < 20" in gate.detail


def test_the_asset_reports_the_gates_as_blocking_checks(tmp_path, domain, tickets, monkeypatch):
    from slm_platform.orchestration.factory import build_domain_defs
    from slm_platform.orchestration.partitions import versions_partitions
    from slm_platform.orchestration.resources import ArtifactStoreResource

    store = ArtifactStore(tmp_path / "artifacts")
    capture(store, tickets, labelled=0)
    write_pairs(store, [pair(i, t["output"], t["output"]) for i, t in enumerate(tickets[:12])])
    defs = build_domain_defs(domain)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(versions_partitions(NAME).name, ["v0002"])
    everything = [*(defs.assets or []), *(defs.asset_checks or [])]
    result = dg.materialize(everything, selection=[dg.AssetKey([NAME, "shadow_report"])], partition_key="v0002",
                            instance=instance, resources={**(defs.resources or {}), "artifacts": ArtifactStoreResource(root=str(store.root))},
                            raise_on_error=False)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"shadow_pairs": False, "shadow_validity": False, "shadow_quality": False,
                      "shadow_latency": False, "shadow_cost": False}
    md = result.asset_materializations_for_node(f"{NAME}__shadow_report")[0].metadata
    assert md["triage/pairs"].value == 12 and md["decided"].value is False


def test_a_failed_shadow_report_refuses_the_move_to_champion_and_a_passed_one_is_its_evidence(
        tmp_path, domain, tickets, monkeypatch):
    """Approval of a waiting challenger reads shadow_report[v]: a decided failure refuses, a pass is
    recorded as the event's evidence, an undecided report is recorded as such."""
    from test_registry import publish_version

    from slm_platform.orchestration import registry as reg
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.registry.releases import reference_name

    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    store = ArtifactStore(tmp_path / "artifacts")
    publish_version(store, "v0001")
    publish_version(store, "v0002", reference=reference_name("v0001"))
    instance = get_instance(tmp_path / "dagster")
    try:
        reg.promote(instance, store, NAME, "v0001", actor="ana", reason="first")
        reg.promote(instance, store, NAME, "v0002", alias="challenger", actor="slm run", reason="waiting")
        slow = [pair(i, t["output"], t["output"], challenger_ms=500.0) for i, t in enumerate(tickets[:50])]
        write_pairs(store, slow)
        build_shadow_report(domain, store, "v0002")
        with pytest.raises(reg.ReleaseRefused, match="shadow gate 'shadow_latency' failed for v0002"):
            reg.approve(instance, store, NAME, "v0002", actor="bo", reason="ship it")

        write_pairs(store, [pair(i, t["output"], t["output"]) for i, t in enumerate(tickets[:50])])  # rewritten: fast
        build_shadow_report(domain, store, "v0002")
        [moved] = reg.approve(instance, store, NAME, "v0002", actor="bo", reason="shadow passed")
        assert moved.event.evidence["shadow_latency"].startswith("passed:")
        assert moved.event.evidence["shadow_quality"].startswith("passed: triage: agreement 100.0%")
        assert moved.event.evidence["no_regression"].startswith("passed")  # the offline gates still there
    finally:
        instance.dispose()


def test_undecided_or_missing_shadow_is_recorded_not_refused(tmp_path, domain, tickets):
    from slm_platform.orchestration.registry import shadow_verdict

    store = ArtifactStore(tmp_path)
    assert shadow_verdict(store, NAME, "v0002") == ({"shadow": "not shadowed (no shadow_report)"}, [])
    write_pairs(store, [pair(i, t["output"], t["output"]) for i, t in enumerate(tickets[:7])])
    build_shadow_report(domain, store, "v0002")
    assert shadow_verdict(store, NAME, "v0002") == ({"shadow": "not decided: triage 7 of 40 pairs"}, [])


def test_the_shadow_sensor_judges_until_decided_then_promotes_or_rejects(tmp_path, domain, tickets, monkeypatch):
    """The `<domain>_shadow` sensor on a real instance: judge the challenger while undecided, reject a
    failing one (a `reject` event with its failed gates: off the challenger alias, shadowed no more),
    promote a passing one under `auto` (an `approve` event by the sensor)."""
    from test_registry import publish_version

    from slm_platform.orchestration import registry as reg
    from slm_platform.orchestration.factory import build_domain_defs
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.resources import ArtifactStoreResource
    from slm_platform.registry.releases import current_release, reference_name

    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    store = ArtifactStore(tmp_path / "artifacts")
    for v, ref in (("v0001", None), ("v0002", reference_name("v0001")), ("v0003", reference_name("v0001"))):
        publish_version(store, v, reference=ref)
    sensor = next(s for s in build_domain_defs(domain).sensors if s.name == f"{NAME}_shadow")
    instance = get_instance(tmp_path / "dagster")

    def tick():
        with dg.build_sensor_context(instance=instance, resources={
                "artifacts": ArtifactStoreResource(root=str(store.local_root))}) as context:
            return sensor(context)

    try:
        assert tick().skip_message == "no challenger to shadow"
        reg.promote(instance, store, NAME, "v0001", actor="ana", reason="first")
        reg.promote(instance, store, NAME, "v0003", alias="challenger", actor="retrain", reason="shadow it")
        request = tick()
        assert isinstance(request, dg.RunRequest) and request.partition_key == "v0003" and "no report yet" in request.tags["slm/shadow"]

        wrong = [pair(i, t["output"], {**t["output"], "language": "xx"}) for i, t in enumerate(tickets[:50])]
        write_pairs(store, [p.model_copy(update={"challenger": p.challenger.model_copy(update={"version": "v0003"})})
                            for p in wrong])
        build_shadow_report(domain, store, "v0003")
        rejected = tick()
        assert rejected.skip_message.startswith(
            "v0003 rejected: failed its shadow gates: shadow_quality: triage: agreement 0.0%"), rejected.skip_message
        assert current_release(store, NAME, "triage").version == "v0001"
        event = reg.read_log(instance, NAME)[-1].event  # off the challenger alias, with the shadow evidence
        assert (event.alias, event.action, event.from_version, event.to_version, event.actor) == (
            "challenger", "reject", "v0003", "v0003", f"sensor {NAME}_shadow")
        assert event.evidence["shadow_quality"].startswith("failed: triage: agreement 0.0%"), event.evidence
        assert event.evidence["shadow_validity"].startswith("passed"), event.evidence
        state = reg.registry_state(instance, NAME)
        assert state.awaiting_approval() == {} and state.version("triage") == "v0001"
        assert tick().skip_message == "no challenger to shadow"  # the gateway shadows it no more
        with pytest.raises(reg.ReleaseRefused, match="v0003 is not the challenger"):
            reg.approve(instance, store, NAME, "v0003", actor="bo", reason="ship it anyway")

        reg.promote(instance, store, NAME, "v0002", alias="challenger", actor="retrain", reason="next try")
        write_pairs(store, [pair(i, t["output"], t["output"]) for i, t in enumerate(tickets[:50])])
        build_shadow_report(domain, store, "v0002")
        done = tick()
        assert done.skip_message.startswith("v0002 promoted to champion: shadow passed on triage 50 pairs")
        assert current_release(store, NAME, "triage").version == "v0002"
        last = reg.read_log(instance, NAME)[-1].event
        assert (last.action, last.actor, last.to_version) == ("approve", f"sensor {NAME}_shadow", "v0002")
        assert last.evidence["shadow_validity"].startswith("passed")
    finally:
        instance.dispose()
