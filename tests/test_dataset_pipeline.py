"""The dataset stage end to end on real domains: conservation, quarantine, label policy, PII."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import LabelPolicy
from slm_platform.data.pipeline import DatasetBuilder, SourceSpec
from slm_platform.data.stages import build_dataset, ingest_capture
from slm_platform.domain import Domain

from pii_cases import (ACCEPTED_IDS, BROKEN_LINES, CARD_NUMBER, CUE_ACCENTED, NOT_UTF8, PII, PII_TEXT,  # tests/
                       TURN_CASES, leaks, pii_turn)

ROOT = Path(__file__).resolve().parent.parent
TRIAGE = ROOT / "domains" / "support_triage"
TRAVEL = ROOT / "domains" / "travel"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def triage() -> Domain:
    return Domain.load(TRIAGE)


def test_bad_rows_are_quarantined_and_counts_add_up(triage: Domain, tmp_path: Path) -> None:
    good = list(triage.simulator().simulate(300, seed=3))

    def fresh(row: dict, text: str, **changes) -> dict:  # a distinct input, so dedupe keeps it
        return dict(row, input={"messages": [{"role": "user", "content": text}]}, **changes)

    bad_label = fresh(good[0], "Refund me for the double charge on invoice 7781 please", id="bad-label",
                      labels={"capture": dict(good[0]["output"], category="nonsense")})
    unknown_role = fresh(good[1], "Summarize this thread for me", id="bad-role", role="summarize")
    unlabeled = {k: v for k, v in fresh(good[2], "The calendar app crashes when I open invites").items()
                 if k not in ("labels", "output")} | {"id": "no-label"}
    rows = good + ["{not json", bad_label, unknown_role, unlabeled, json.dumps(good[5])]  # last: exact duplicate
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    # the oracle labels the unlabeled row unless the policy keeps it out of the truth order
    triage_cfg = triage.config.model_copy(deep=True)
    triage_cfg.data.labels = LabelPolicy(truth=["gold", "capture"], cross_check=["oracle"])
    domain = Domain(triage.root, triage_cfg, triage.roles)
    stats = DatasetBuilder(domain, progress=False).run([SourceSpec("t", src)], tmp_path / "out")
    assert stats.rows_in == len(rows)
    assert stats.conserved
    assert stats.quarantined["parse_error"] == 1
    assert stats.quarantined["invalid_label"] == 1
    assert stats.quarantined["unknown_role"] == 1
    assert stats.quarantined["unlabeled"] == 1
    assert stats.duplicates_removed >= 1
    quarantine = read_jsonl(tmp_path / "out" / "quarantine.jsonl")
    assert len(quarantine) == stats.quarantined_total
    by_kind = {q["kind"]: q for q in quarantine}
    assert "in.jsonl:301" in by_kind["parse_error"]["location"]
    assert "output.category: 'nonsense' is not one of" in by_kind["invalid_label"]["reason"]
    # the reason says what was expected and quotes no value; the (redacted) row is beside it
    assert by_kind["unknown_role"]["reason"] == "field 'role' is not one of ['triage']"
    assert by_kind["unknown_role"]["location"] == "in.jsonl:303" and '"summarize"' in by_kind["unknown_role"]["raw"]
    split_rows = sum(len(read_jsonl(tmp_path / "out" / f"{s}.jsonl")) for s in ("train", "val", "test"))
    assert split_rows == sum(stats.split.values())


@pytest.mark.parametrize("rule", ["drop", "review"])
def test_disagreement_rule(triage: Domain, tmp_path: Path, rule: str) -> None:
    rows = list(triage.simulator().simulate(400, seed=11))
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = triage.config.model_copy(deep=True)
    cfg.data.labels = LabelPolicy(truth=["capture"], cross_check=["oracle"], on_disagreement=rule)
    stats = DatasetBuilder(Domain(triage.root, cfg, triage.roles), progress=False).run(
        [SourceSpec("t", src)], tmp_path / "out")
    agreement = stats.labels["agreement"]["oracle"] if stats.labels else None
    disagreeing = stats.quarantined["needs_review" if rule == "review" else "disagreement"]
    assert disagreeing > 0 and stats.conserved
    assert (stats.review > 0) == (rule == "review")
    if rule == "review":
        assert len(read_jsonl(tmp_path / "out" / "review.jsonl")) == stats.review == disagreeing
    # every kept row agrees with the oracle
    for split in ("train", "val", "test"):
        for row in read_jsonl(tmp_path / "out" / f"{split}.jsonl"):
            assert row["labels"]["oracle"] == row["output"]
    assert agreement is None or 0 < agreement < 1


def test_splits_keep_duplicate_groups_together(triage: Domain, tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    result = build_dataset(triage, store, "v0001", progress=False)
    assert all(c["passed"] for c in result.checks.values()), result.checks
    folder = store.open_verified("support_triage/datasets/v0001")
    group_split: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for row in read_jsonl(folder / f"{split}.jsonl"):
            assert group_split.setdefault(row["meta"]["dup_group"], split) == split
            assert row["label_source"] == "gold"
    assert result.stats["dedupe"]["near_duplicate"] > 0
    assert "Dataset card: support_triage v0001" in result.card


def test_leakage_check_fails_on_a_planted_leak(triage: Domain, tmp_path: Path) -> None:
    from slm_platform.data.checks import run_dataset_checks

    store = ArtifactStore(str(tmp_path / "artifacts"))
    result = build_dataset(triage, store, "v0001", progress=False)
    folder = tmp_path / "copy"
    folder.mkdir()
    for split in ("train", "val", "test"):
        (folder / f"{split}.jsonl").write_text((store.open_verified("support_triage/datasets/v0001") /
                                                 f"{split}.jsonl").read_text())
    leaked = read_jsonl(folder / "train.jsonl")[0]
    with open(folder / "test.jsonl", "a") as f:
        f.write(json.dumps(leaked) + "\n")
    checks = run_dataset_checks(triage, folder, result.stats)
    assert not checks["no_split_leakage"]["passed"]
    assert leaked["id"] in checks["no_split_leakage"]["detail"]


@pytest.mark.parametrize("domain_dir", [TRIAGE, TRAVEL])
def test_no_seeded_pii_reaches_the_artifact_root(domain_dir: Path, tmp_path: Path) -> None:
    """PII in every field of good rows and on every Turn-line rejection path, through capture and dataset
    (no Dagster; tests/test_pii_end_to_end.py runs the same through `run_pass` and greps its storage)."""
    domain = Domain.load(domain_dir)
    rows: list = list(domain.simulator().simulate(200, seed=5, day="2026-11-20"))
    for i, row in enumerate(rows[:60]):
        row["input"]["messages"][-1]["content"] = PII_TEXT + " " + row["input"]["messages"][-1]["content"]
        row["meta"].update(customer=CUE_ACCENTED, card_number=CARD_NUMBER, **{PII["email"]: PII["ip"]})
        if i < len(ACCEPTED_IDS):
            row["id"] = ACCEPTED_IDS[i]
    bad = [pii_turn(f"bad-{name}", **changes) for name, changes, _ in TURN_CASES] + BROKEN_LINES
    inbox = tmp_path / "inbox" / "date=2026-11-20"
    write_jsonl(inbox / "traffic.jsonl", rows + bad)
    (inbox / "z_not_utf8.jsonl").write_bytes(NOT_UTF8 + b"\n")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    capture = ingest_capture(domain, "2026-11-20", store, inbox=tmp_path / "inbox")
    s = capture.stats
    assert s["quarantined"] == len(bad) + 1 and s["kept"] == len(rows)
    assert s["rows_in"] == s["kept"] + s["quarantined"] + s["not_sampled"]
    assert s["quarantine"]["unknown_role"] >= 1 and s["redaction"]["email"] >= 60
    result = build_dataset(domain, store, "v0001", progress=False)
    assert result.stats["conserved"] and result.stats["rows_in"] > 200
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert any(p.name == "quarantine.jsonl" and p.stat().st_size for p in files)
    for path in files:
        assert leaks(path.read_bytes()) == [], f"{leaks(path.read_bytes())} leaked into {path}"
