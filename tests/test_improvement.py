"""The retrain triggers, the budget and the retrain sensor (issue 11).

The triggers are judged on typed evidence; the sensor is evaluated on a real SQLite instance with a
real artifact store (small verifiable packages from tests/test_registry.py, a real drift report
file written through the store), and must: start one version run tagged with the fired triggers,
never a second on the same evidence, wait while a version run of the domain is in progress, and
defer over budget with the deferral recorded on `<domain>/retrain`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import BudgetBlock, TriggersBlock
from slm_platform.domain import Domain
from slm_platform.improvement import TrainingRun, TriggerInputs, check_budget, decide_retrain, evaluate_triggers, \
    gather_inputs
from slm_platform.improvement.triggers import LiveQuality
from slm_platform.layout import capture_dir, dataset_dir
from slm_platform.orchestration import registry as reg
from slm_platform.orchestration.instance import get_instance
from test_registry import DOMAIN, ROLE, publish_version  # tests/test_registry.py

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def by_name(results):
    return {r.name: r for r in results}


# --- triggers, budget, decision on typed evidence ---------------------------------------------------------
def test_each_trigger_fires_past_its_threshold_and_only_then():
    policy = TriggersBlock()
    quiet = TriggerInputs(now=NOW, champion="v0001", drift_day="2026-11-29", unseen_share={ROLE: 0.03},
                          input_auc={ROLE: 0.74},
                          schema_valid_rate={ROLE: 0.999}, live_quality={ROLE: LiveQuality(0.79, 400, 0.80)},
                          new_labelled_rows=120, contract_changed=[], last_version_at=NOW - timedelta(days=3))
    assert [r.name for r in evaluate_triggers(policy, quiet) if r.fired] == []
    loud = TriggerInputs(now=NOW, champion="v0001", drift_day="2026-11-29", unseen_share={ROLE: 0.061},
                         input_auc={ROLE: 0.81},
                         schema_valid_rate={ROLE: 0.99}, live_quality={ROLE: LiveQuality(0.76, 400, 0.80)},
                         new_labelled_rows=500, contract_changed=[ROLE], last_version_at=NOW - timedelta(days=31))
    fired = by_name(evaluate_triggers(policy, loud))
    assert all(r.fired for r in fired.values()), [r.line for r in fired.values()]
    assert fired["quality_regression"].value.endswith("(+4.0 points drop)")
    assert fired["distribution_drift"].value == f"{ROLE}: 6.1% unseen (drift report 2026-11-29)"
    assert fired["input_drift"].line == ("input_drift: FIRED: triage: today's inputs told from training's at AUC "
                                         "0.810 (drift report 2026-11-29) (threshold > 0.75 AUC)")
    assert fired["staleness"].line == "staleness: FIRED: 31.0 days since the last version (threshold > 30 days)"


def test_missing_evidence_is_not_measured_and_never_fires():
    results = by_name(evaluate_triggers(TriggersBlock(), TriggerInputs(now=NOW, champion="v0001",
                                                                       last_version_at=NOW)))
    for name in ("quality_regression", "schema_validity", "distribution_drift", "input_drift", "new_labelled_rows",
                 "contract_changed"):
        assert (results[name].fired, results[name].measured) == (False, False), results[name]
    off = by_name(evaluate_triggers(TriggersBlock(max_unseen_share=None, contract_change=False),
                                    TriggerInputs(now=NOW, unseen_share={ROLE: 0.9}, contract_changed=[ROLE])))
    assert not off["distribution_drift"].fired and not off["contract_changed"].fired
    assert off["distribution_drift"].value == "off in improvement.triggers"
    # a domain that never built a version is stale at once: the loop's first run
    assert by_name(evaluate_triggers(TriggersBlock(), TriggerInputs(now=NOW)))["staleness"].fired


def test_budget_counts_runs_and_hours_in_the_period():
    runs = [TrainingRun("v0001", NOW - timedelta(days=10), 1.0), TrainingRun("v0002", NOW - timedelta(days=2), 0.5),
            TrainingRun("v0003", NOW - timedelta(hours=5), 0.75)]
    assert check_budget(BudgetBlock(), runs, NOW).allowed  # no limit set
    hours = check_budget(BudgetBlock(period_days=7, training_hours=1.25), runs, NOW)
    assert not hours.allowed and (hours.runs, hours.hours) == (2, 1.25)
    assert "at the limit of 1.25 hours" in hours.detail
    assert check_budget(BudgetBlock(period_days=7, max_training_runs=3), runs, NOW).allowed
    assert not check_budget(BudgetBlock(period_days=30, max_training_runs=3), runs, NOW).allowed


def test_decision_waits_for_a_running_version_and_defers_over_budget():
    fired = evaluate_triggers(TriggersBlock(), TriggerInputs(now=NOW))  # staleness fires
    ok, over = check_budget(BudgetBlock(), [], NOW), check_budget(BudgetBlock(max_training_runs=1),
                                                                  [TrainingRun("v1", NOW, 0.1)], NOW)
    assert decide_retrain(fired, ok, running=[]).action == "retrain"
    busy = decide_retrain(fired, ok, running=["abc12345"])
    assert busy.action == "wait" and "in progress (abc12345)" in busy.reason
    pending = decide_retrain(fired, over, running=[], challengers=["v0003"])  # its verdict first, not a deferral
    assert pending.action == "wait" and pending.reason.startswith("challenger v0003 is shadowed or awaits approval")
    deferred = decide_retrain(fired, over, running=[])
    assert deferred.action == "defer" and deferred.reason.startswith("over budget: 1 training runs")
    assert deferred.evidence.startswith("staleness: no version was ever built")


# --- evidence gathered from the store -----------------------------------------------------------------------
@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("SLM_ARTIFACTS", str(tmp_path / "artifacts"))
    store = ArtifactStore(tmp_path / "artifacts")
    domain = Domain.load(ROOT / "domains" / DOMAIN)
    publish_version(store, "v0001", extra={"primary_value": 0.9, "contracts": {
        ROLE: domain.roles[ROLE].fingerprint()}})
    with store.publish(dataset_dir(DOMAIN, "v0001"), kind="dataset", version="v0001") as st:
        (st / "card.md").write_text("a dataset")
    instance = get_instance(tmp_path / "dagster")
    instance.add_dynamic_partitions(f"{DOMAIN}_versions", ["v0001"])  # as `slm run` or the sensor made it
    try:
        yield instance, store, domain
    finally:
        instance.dispose()


def write_capture_day(store: ArtifactStore, day: str, rows: list[dict]) -> None:
    with store.publish(capture_dir(DOMAIN, day), kind="capture", version=day) as st:
        (st / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_gather_reads_the_champion_labelled_live_rows_and_the_contracts(world):
    instance, store, domain = world
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="first")
    right = {"category": "billing", "priority": "high", "product": "drive", "needs_human": False, "language": "en"}
    wrong = {**right, "priority": "low"}
    served = lambda out, gold: {"role": ROLE, "output": out, "labels": {"gold": gold},  # noqa: E731
                                "meta": {"route": "slm", "version": "v0001"}}
    today = datetime.now(timezone.utc).date().isoformat()
    write_capture_day(store, today, [served(right, right)] * 3 + [served(wrong, right)]
                      + [{"role": ROLE, "output": right, "labels": {"capture": right}, "meta": {}}])  # no truth
    inputs = gather_inputs(domain, store, NOW)
    assert inputs.champion == "v0001" and inputs.new_labelled_rows == 4
    q = inputs.live_quality[ROLE]
    assert (q.value, q.n) == (0.75, 4)
    assert q.offline == 0.9 and inputs.contract_changed == [] and inputs.last_version_at is not None
    edited = domain.roles[ROLE]
    from dataclasses import replace
    changed = Domain(domain.root, domain.config, {ROLE: replace(edited, system_prompt=edited.system_prompt + " Be brief.")})
    assert gather_inputs(changed, store, NOW).contract_changed == [ROLE]  # the prompt changed: retrain


# --- the sensor on a real instance ------------------------------------------------------------------------
def _sensor(domain: Domain, name: str):
    from slm_platform.orchestration.factory import build_domain_defs

    defs = build_domain_defs(domain)
    return next(s for s in defs.sensors if s.name == f"{DOMAIN}_{name}")


def _evaluate(sensor, instance, store, cursor=None):
    from slm_platform.orchestration.resources import ArtifactStoreResource

    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={
            "artifacts": ArtifactStoreResource(root=str(store.local_root))}) as context:
        return sensor(context), context


def test_retrain_sensor_starts_one_tagged_run_then_never_again_on_the_same_evidence(world):
    instance, store, domain = world
    cfg = domain.config.model_copy(deep=True)
    cfg.improvement.triggers = TriggersBlock(max_days_since_version=1)  # the dataset is "old" once the clock moves
    sensor = _sensor(Domain(domain.root, cfg, domain.roles), "retrain")
    result, _ = _evaluate(sensor, instance, store)
    # the dataset was just built and nothing else fired: the sensor waits, saying why
    assert isinstance(result, dg.SkipReason) and result.skip_message == "no trigger fired"

    cfg.improvement.triggers = TriggersBlock(contract_change=False, max_days_since_version=None, min_new_labelled_rows=1)
    sensor = _sensor(Domain(domain.root, cfg, domain.roles), "retrain")
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="first")
    gold = {"category": "billing", "priority": "high", "product": "drive", "needs_human": False, "language": "en"}
    write_capture_day(store, datetime.now(timezone.utc).date().isoformat(),
                      [{"role": ROLE, "output": gold, "labels": {"gold": gold}, "meta": {}}])
    result, _ = _evaluate(sensor, instance, store)
    [request] = result.run_requests
    assert request.partition_key == "v0002" and request.tags["slm/trigger"] == "new_labelled_rows"
    assert "1 truth-labelled rows captured" in request.tags["slm/evidence"]
    [add] = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["v0002"]
    obs = instance.fetch_observations(dg.AssetKey([DOMAIN, "retrain"]), limit=1).records[0].asset_observation
    assert obs.metadata["action"].value == "retrain" and obs.metadata["version"].value == "v0002"
    assert "| new_labelled_rows | FIRED |" in obs.metadata["triggers"].value

    again, _ = _evaluate(sensor, instance, store, cursor=result.cursor)  # same evidence: no second run
    assert isinstance(again, dg.SkipReason) and "already decided on this evidence" in again.skip_message


def test_retrain_sensor_defers_over_budget_and_records_it(world):
    instance, store, domain = world
    cfg = domain.config.model_copy(deep=True)
    cfg.improvement.budget = BudgetBlock(max_training_runs=1)
    cfg.improvement.triggers = TriggersBlock(max_days_since_version=None, contract_change=False,
                                             min_new_labelled_rows=None)
    with store.publish("support_triage/adapters/v0001", kind="adapter", version="v0001",
                       extra={"wall_time_s": 1800}) as st:
        (st / "adapter_config.json").write_text("{}")
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="first")
    day = "2026-11-29"
    folder = store.local_root / DOMAIN / "drift" / day
    from slm_platform.drift.report import CaptureRef, DriftReport, Measure, Reference, RoleDrift

    ref = Reference(version="v0001", source="champion", rel=dataset_dir(DOMAIN, "v0001"), manifest_hash="x", rows=300)
    missing = Measure.missing("not_measured", 0, "-")
    role = RoleDrift(role=ROLE, kind="structured", reference=ref, n=250, status="ok",
                     unseen_share=Measure(value=0.2, n=250), oracle_disagreement=missing,
                     oracle_disagreement_reference=missing, schema_valid_rate=missing, fallback_rate=missing)
    report = DriftReport(domain=DOMAIN, day=day, capture=CaptureRef(rel="c", manifest_hash="x", rows=250),
                         roles={ROLE: role})
    with store.publish(f"{DOMAIN}/drift/{day}", kind="drift_report", version=day) as st:
        (st / "report.json").write_text(report.model_dump_json())
    assert folder.is_dir()
    sensor = _sensor(Domain(domain.root, cfg, domain.roles), "retrain")
    result, _ = _evaluate(sensor, instance, store)
    assert not result.run_requests and "over budget: 1 training runs" in result.skip_reason.skip_message
    obs = instance.fetch_observations(dg.AssetKey([DOMAIN, "retrain"]), limit=1).records[0].asset_observation
    assert obs.metadata["action"].value == "defer"
    assert "distribution_drift: triage: 20.0% unseen (drift report 2026-11-29)" in obs.metadata["evidence"].value
    assert instance.get_dynamic_partitions(f"{DOMAIN}_versions") == ["v0001"]  # nothing was added or launched


def _drift_report(store: ArtifactStore, day: str, reference: str, unseen: float) -> None:
    from slm_platform.drift.report import CaptureRef, DriftReport, Measure, Reference, RoleDrift

    ref = Reference(version=reference, source="champion", rel=dataset_dir(DOMAIN, reference), manifest_hash="x",
                    rows=300)
    missing = Measure.missing("not_measured", 0, "-")
    role = RoleDrift(role=ROLE, kind="structured", reference=ref, n=250, status="ok",
                     unseen_share=Measure(value=unseen, n=250), oracle_disagreement=missing,
                     oracle_disagreement_reference=missing, schema_valid_rate=missing, fallback_rate=missing)
    report = DriftReport(domain=DOMAIN, day=day, capture=CaptureRef(rel="c", manifest_hash="x", rows=250),
                         roles={ROLE: role})
    with store.publish(f"{DOMAIN}/drift/{day}", kind="drift_report", version=day, overwrite=True) as st:
        (st / "report.json").write_text(report.model_dump_json())


def test_a_drift_report_against_an_earlier_champion_does_not_fire_again(world):
    """The drift that started v0002 was measured against v0001's data; once v0002 (trained on that drift)
    is champion, the same report is not evidence against it: not measured, saying why, until the next."""
    instance, store, domain = world
    from slm_platform.registry.releases import reference_name

    publish_version(store, "v0002", reference=reference_name("v0001"),
                    extra={"contracts": {ROLE: domain.roles[ROLE].fingerprint()}})
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="first")
    _drift_report(store, "2026-11-29", "v0001", unseen=0.2)
    fired = by_name(evaluate_triggers(TriggersBlock(), gather_inputs(domain, store, NOW)))
    assert fired["distribution_drift"].fired
    reg.promote(instance, store, DOMAIN, "v0002", actor="ana", reason="trained on the drift")
    stale = by_name(evaluate_triggers(TriggersBlock(), gather_inputs(domain, store, NOW)))["distribution_drift"]
    assert (stale.fired, stale.measured) == (False, False)
    assert stale.value == ("the drift report of 2026-11-29 compares with v0001's training data, not champion "
                           "v0002's: not measured until the next report"), stale.value
    reg.rollback(instance, store, DOMAIN, actor="ana", reason="back")  # v0001 again: the report is its evidence
    assert by_name(evaluate_triggers(TriggersBlock(), gather_inputs(domain, store, NOW)))["distribution_drift"].fired


def test_labelled_rows_the_champion_trained_on_are_not_new(tmp_path, monkeypatch):
    """new_labelled_rows counts truth-labelled captured rows the champion's dataset did not read: a capture
    day that is one of the dataset's parents not at all, the same day published again with more rows only
    for the rows the dataset does not hold (by turn id)."""
    monkeypatch.setenv("SLM_ARTIFACTS", str(tmp_path / "artifacts"))
    store = ArtifactStore(tmp_path / "artifacts")
    domain = Domain.load(ROOT / "domains" / DOMAIN)
    instance = get_instance(tmp_path / "dagster")
    gold = {"category": "billing", "priority": "high", "product": "drive", "needs_human": False, "language": "en"}
    row = lambda i: {"id": f"t-{i}", "role": ROLE, "output": gold, "labels": {"gold": gold}, "meta": {}}  # noqa: E731
    today = datetime.now(timezone.utc).date().isoformat()
    try:
        write_capture_day(store, today, [row(i) for i in range(4)])
        capture_hash = store.read_manifest(capture_dir(DOMAIN, today)).hash
        with store.publish(dataset_dir(DOMAIN, "v0001"), kind="dataset", version="v0001",
                           parents=[{"uri": store.uri(capture_dir(DOMAIN, today)), "sha256": capture_hash}]) as st:
            (st / "train.jsonl").write_text("".join(json.dumps(row(i)) + "\n" for i in range(3)))
            (st / "test.jsonl").write_text(json.dumps(row(3)) + "\n")
        publish_version(store, "v0001", extra={"contracts": {ROLE: domain.roles[ROLE].fingerprint()}})
        reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="first")
        assert gather_inputs(domain, store, NOW).new_labelled_rows == 0  # the day the dataset read, as it was
        with store.publish(capture_dir(DOMAIN, today), kind="capture", version=today, overwrite=True) as st:
            (st / "turns.jsonl").write_text("".join(json.dumps(row(i)) + "\n" for i in range(6)))
        assert gather_inputs(domain, store, NOW).new_labelled_rows == 2  # t-4, t-5: captured after the dataset
    finally:
        instance.dispose()
