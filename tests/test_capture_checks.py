"""Gates of one capture day, computed from its written files (not from the ingest's own counters)."""

from __future__ import annotations

from slm_platform.data.checks import run_capture_checks


def _day(tmp_path, kept: int, quarantined: int):
    (tmp_path / "turns.jsonl").write_text("{}\n" * kept)
    (tmp_path / "quarantine.jsonl").write_text("{}\n" * quarantined)
    return tmp_path


def test_a_healthy_day_passes(tmp_path):
    checks = run_capture_checks(_day(tmp_path, 95, 3), {"rows_in": 100, "not_sampled": 2}, 0.05)
    assert {k: c["passed"] for k, c in checks.items()} == {
        "day_not_empty": True, "quarantine_share": True, "rows_conserved": True}


def test_a_day_of_only_rejected_rows_fails(tmp_path):
    checks = run_capture_checks(_day(tmp_path, 0, 10), {"rows_in": 10, "not_sampled": 0}, 0.5)
    assert not checks["day_not_empty"]["passed"] and not checks["quarantine_share"]["passed"]
    assert "10 of 10 rows quarantined" in checks["quarantine_share"]["detail"]


def test_an_empty_inbox_fails_and_says_so(tmp_path):
    checks = run_capture_checks(_day(tmp_path, 0, 0), {"rows_in": 0, "not_sampled": 0}, 0.1)
    assert checks["day_not_empty"] == {"passed": False, "detail": "no rows in the inbox for this day"}


def test_lost_rows_break_conservation(tmp_path):
    # the ingest counted 100 rows but the files hold 90: a row was lost between parse and write
    checks = run_capture_checks(_day(tmp_path, 88, 2), {"rows_in": 100, "not_sampled": 0}, 0.1)
    assert not checks["rows_conserved"]["passed"]
    assert "100 in != 88 kept + 2 quarantined + 0 not sampled" == checks["rows_conserved"]["detail"]
