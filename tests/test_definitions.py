"""The code location: what the factory builds, that Dagster loads it, and that it runs on a real
instance (SQLite by default, PostgreSQL as in production)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from slm_platform.orchestration.definitions import build_definitions
from slm_platform.domain import Domain
from slm_platform.orchestration.lifecycle import run_pass

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ("support_triage", "travel")


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions(ROOT / "domains")


def test_one_group_per_domain_with_blocking_partitioned_checks(defs: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for domain in DOMAINS:
        assert {f"{domain}/captured_traffic", f"{domain}/dataset", f"{domain}/package"} <= keys
        package = graph.get(dg.AssetKey([domain, "package"]))
        assert dg.AssetKey([domain, "eval_report"]) in package.parent_keys  # after the blocking gates
        node = graph.get(dg.AssetKey([domain, "dataset"]))
        assert node.group_name == domain
        assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition)
        assert node.partitions_def.name == f"{domain}_versions"
        checks = {c.name: c for c in defs.resolve_assets_def(node.key).check_specs}
        assert set(checks) == {"no_split_leakage", "labels_valid", "min_rows", "rows_conserved"}
        assert all(c.blocking for c in checks.values())
        assert all(c.partitions_def == node.partitions_def for c in checks.values())
        capture = graph.get(dg.AssetKey([domain, "captured_traffic"]))
        assert isinstance(capture.partitions_def, dg.DailyPartitionsDefinition)
        capture_checks = defs.resolve_assets_def(capture.key).check_specs
        assert {c.name for c in capture_checks} == {"day_not_empty", "quarantine_share", "rows_conserved"}
        assert all(c.blocking and c.partitions_def == capture.partitions_def for c in capture_checks)


def test_a_new_domain_folder_is_a_new_group(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "domains" / "support_triage", tmp_path / "support_triage")
    clone = tmp_path / "helpdesk"
    shutil.copytree(ROOT / "domains" / "support_triage", clone)
    cfg = (clone / "slm.config.yaml").read_text().replace("name: support_triage", "name: helpdesk", 1)
    (clone / "slm.config.yaml").write_text(cfg)
    defs = build_definitions(tmp_path)
    groups = {n.group_name for n in defs.resolve_asset_graph().asset_nodes}
    assert groups == {"support_triage", "helpdesk"}


def test_a_broken_domain_folder_does_not_take_the_others_down(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "domains" / "support_triage", tmp_path / "support_triage")
    broken = tmp_path / "help-desk"
    shutil.copytree(ROOT / "domains" / "support_triage", broken)
    cfg = (broken / "slm.config.yaml").read_text().replace("name: support_triage", "name: help-desk", 1)
    (broken / "slm.config.yaml").write_text(cfg.replace("  seed: ", "  seed: not-a-number #", 1))
    defs = build_definitions(tmp_path)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {n.group_name for n in graph.asset_nodes}
    assert groups == {"support_triage", "help_desk"}
    assert dg.AssetKey(["support_triage", "dataset"]) in graph.get_all_asset_keys()
    node = graph.get(dg.AssetKey(["help_desk", "config_error"]))
    text = node.description or ""
    assert str(broken / "slm.config.yaml") in text and "domain.name" in text  # file and field path
    assert "expected" in text
    from slm_platform import cli

    assert cli.main(["validate", str(broken)]) == 1


def test_dg_check_defs_passes() -> None:
    env = dict(os.environ, SLM_HOME=str(ROOT / ".slm"))
    dg_bin = Path(sys.executable).parent / "dg"
    proc = subprocess.run([str(dg_bin), "check", "defs", "--use-active-venv"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


def _run_pass(instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLM_ARTIFACTS", str(tmp_path / "artifacts"))
    domain = Domain.load(ROOT / "domains" / "support_triage")
    first = run_pass(domain, instance, day="2026-11-20", simulate=400, until="dataset", log=lambda m: None)
    assert first.success, first.checks
    assert first.version == "v0001"
    assert first.checks == {
        **{f"captured_traffic.{c}": True for c in ("day_not_empty", "quarantine_share", "rows_conserved")},
        **{f"dataset.{c}": True for c in ("no_split_leakage", "labels_valid", "min_rows", "rows_conserved")}}
    assert first.metadata["dataset"]["rows_in"] == 400 + 400  # seed file + one simulated capture day
    second = run_pass(domain, instance, day="2026-11-20", simulate=400, until="dataset", log=lambda m: None)
    assert second.version == "v0002"
    key = dg.AssetKey(["support_triage", "dataset"])
    assert instance.get_latest_materialization_event(key) is not None
    assert set(instance.get_materialized_partitions(key)) == {"v0001", "v0002"}
    # a gate that cannot pass fails the run and is recorded as failed for that version only
    domain.config.data.min_rows.train = 10_000
    third = run_pass(domain, instance, day="2026-11-20", simulate=400, until="dataset", log=lambda m: None)
    assert not third.success and third.checks["dataset.min_rows"] is False
    assert third.version == "v0003"
    # a capture day whose every row is rejected fails its blocking checks (it used to succeed)
    inbox = tmp_path / "home" / "inbox" / "support_triage" / "date=2026-11-21"
    inbox.mkdir(parents=True)
    (inbox / "broken.jsonl").write_text("not json\n" * 5 + '{"id": "x", "domain": "support_triage"}\n')
    fourth = run_pass(domain, instance, day="2026-11-21", simulate=0, until="dataset", log=lambda m: None)
    assert not fourth.success
    assert fourth.checks["captured_traffic.day_not_empty"] is False
    assert fourth.checks["captured_traffic.quarantine_share"] is False
    assert fourth.checks["captured_traffic.rows_conserved"] is True


def test_data_pass_on_sqlite_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slm_platform.orchestration.instance import get_instance

    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    instance = get_instance(tmp_path / "dagster")
    try:
        assert "sqlite" in type(instance.run_storage).__name__.lower()
        assert (tmp_path / "dagster" / "dagster.yaml").exists()
        _run_pass(instance, tmp_path, monkeypatch)
    finally:
        instance.dispose()


@pytest.mark.postgres
def test_data_pass_on_postgres_instance(postgres_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fresh database of this test's own on the session's server (SLM_TEST_POSTGRES_URL, the local
    # server or a throwaway one: see tests/conftest.py), dropped after the test
    monkeypatch.setenv("SLM_DAGSTER_STORAGE_URL", postgres_db_url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    from slm_platform.orchestration.instance import get_instance

    instance = get_instance(tmp_path / "dagster")
    try:
        assert "postgres" in type(instance.run_storage).__name__.lower()
        _run_pass(instance, tmp_path, monkeypatch)
    finally:
        instance.dispose()
