"""No seeded PII anywhere on disk after `slm run support_triage --until dataset` (`run_pass`) on a
real SQLite Dagster instance: not in the artifact store (capture day, dataset version, quarantine,
stats, card, manifests) and not in the Dagster storage (run and event-log databases, compute logs).

A capture day gets simulated traffic plus rows with known PII in every field: good rows (PII in the
id, meta, an extra input field, a slice value) and one row per rejection path of a Turn line (each
of those paths used to quote the value in its reason). Two extra seed sources bring the other
formats' rejection paths: OpenAI chat logs (tool-call arguments, assistant content that is not
JSON, a refusal, a bad timestamp, an unknown role) and a Langfuse export. Every file is then read
as bytes and searched for each PII value and its telling fragments, raw and JSON-escaped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pii_cases import (ACCEPTED_IDS, BROKEN_LINES, CHAT_ACCEPTED, CHAT_CASES, INVALID_LABEL, LANGFUSE_ACCEPTED,
                       LANGFUSE_CASES, NOT_UTF8, PII_TEXT, TURN_CASES, leaks, pii_turn)
from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import Source
from slm_platform.domain import Domain
from slm_platform.records import stable_hash

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-20"

pytestmark = pytest.mark.integration


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_no_seeded_pii_on_disk_after_a_pass_to_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.lifecycle import run_pass, simulate_inbox

    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLM_ARTIFACTS", str(tmp_path / "artifacts"))

    # the other formats arrive as seed sources (the capture inbox is one format: jsonl)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    chat = inputs / "chat.jsonl"
    chat.write_text("".join(json.dumps(r) + "\n" for r in [*(row for _, row, _ in CHAT_CASES), *CHAT_ACCEPTED]))
    langfuse = inputs / "langfuse.json"
    langfuse.write_text(json.dumps([*(trace for _, trace, _ in LANGFUSE_CASES), *LANGFUSE_ACCEPTED]))
    loaded = Domain.load(ROOT / "domains" / "support_triage")
    cfg = loaded.config.model_copy(deep=True)
    cfg.data.sources = [*cfg.data.sources, Source(name="chat_logs", format="openai_chat", path=str(chat)),
                        Source(name="langfuse", format="langfuse", path=str(langfuse))]
    domain = Domain(loaded.root, cfg, loaded.roles)

    # the day's traffic: 300 simulated turns, then the PII rows beside them (run_pass keeps a filled inbox)
    simulated = simulate_inbox(domain, DAY, 300)
    assert simulated is not None
    good = [pii_turn(tid, input={"messages": [{"role": "user", "content": f"{PII_TEXT} (ticket {i})"}]})
            for i, tid in enumerate(ACCEPTED_IDS)]
    bad = [pii_turn(f"bad-{name}", **changes) for name, changes, _ in TURN_CASES] + BROKEN_LINES
    (simulated.parent / "pii.jsonl").write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in [*good, INVALID_LABEL, *bad]))
    (simulated.parent / "pii_not_utf8.jsonl").write_bytes(NOT_UTF8 + b"\n")

    instance = get_instance(tmp_path / "dagster")
    try:
        result = run_pass(domain, instance, day=DAY, until="dataset", log=lambda m: None)
    finally:
        instance.dispose()
    assert result.stages == ["dataset"] and result.version == "v0001"
    assert {k: v for k, v in result.checks.items() if k.startswith("dataset.")} == {
        "dataset.no_split_leakage": True, "dataset.labels_valid": True, "dataset.min_rows": True,
        "dataset.rows_conserved": True}, result.checks

    # capture: every bad row quarantined (kind and place), the good ones kept, the counts add up
    store = ArtifactStore(str(tmp_path / "artifacts"))
    day_dir = store.open_verified(f"support_triage/capture/date={DAY}")
    cap = json.loads((day_dir / "stats.json").read_text())
    n_bad = len(bad) + 1  # + the line that is not UTF-8
    assert cap["rows_in"] == 300 + len(good) + 1 + n_bad
    assert cap["rows_in"] == cap["kept"] + cap["quarantined"] + cap["not_sampled"]
    assert cap["quarantined"] == n_bad and cap["kept"] == 300 + len(good) + 1
    quarantine = read_jsonl(day_dir / "quarantine.jsonl")
    first_bad = len(good) + 2  # line of the first bad row in pii.jsonl
    assert sorted(q["location"] for q in quarantine) == sorted(
        [f"pii.jsonl:{first_bad + i}" for i in range(len(bad))] + ["pii_not_utf8.jsonl:1"])
    kinds = {q["location"]: q["kind"] for q in quarantine}
    assert [kinds[f"pii.jsonl:{first_bad + i}"] for i in range(len(TURN_CASES))] == [k for _, _, k in TURN_CASES]
    assert all("<EMAIL_1>" in q["raw"] and q["reason"] for q in quarantine)  # redacted, not dropped
    kept = {t["id"] for t in read_jsonl(day_dir / "turns.jsonl")}
    assert {"pii-" + stable_hash(tid) for tid in ACCEPTED_IDS} <= kept  # PII-bearing ids: a stable hash

    # dataset: rows in = splits + duplicates + quarantine; the other formats' bad rows and the bad label
    # are in its quarantine, the good PII rows in a split under their hashed ids
    md = result.metadata["dataset"]
    ds = store.open_verified("support_triage/datasets/v0001")
    stats = json.loads((ds / "stats.json").read_text())
    assert stats["conserved"] and stats["rows_in"] == stats["rows_out"] == md["rows_in"]
    assert stats["per_source"]["chat_logs"] == len(CHAT_CASES) + len(CHAT_ACCEPTED)
    assert stats["per_source"]["langfuse"] == len(LANGFUSE_CASES) + len(LANGFUSE_ACCEPTED)
    assert stats["per_source"][f"capture_{DAY.replace('-', '_')}"] == cap["kept"]
    dq = read_jsonl(ds / "quarantine.jsonl")
    assert len(dq) == stats["quarantined_total"] == md["quarantined"]
    places = {q.get("location") or q["turn"]["id"]: q["kind"] for q in dq}
    assert {f"chat.jsonl:{i + 1}": k for i, (_, _, k) in enumerate(CHAT_CASES)}.items() <= places.items()
    assert {f"langfuse.json:[{i}].observations[0]": k
            for i, (_, _, k) in enumerate(LANGFUSE_CASES)}.items() <= places.items()
    assert places["bad-label-1"] == "invalid_label"
    split_ids = {r["id"] for s in ("train", "val", "test") for r in read_jsonl(ds / f"{s}.jsonl")}
    hashed = {"pii-" + stable_hash(tid) for tid in ACCEPTED_IDS}
    hashed |= {"pii-" + stable_hash(r["response"]["id"]) for r in CHAT_ACCEPTED}
    hashed |= {"pii-" + stable_hash(t["observations"][0]["id"]) for t in LANGFUSE_ACCEPTED}
    assert hashed <= split_ids

    # the grep: every file the pass wrote (artifacts, Dagster home with its SQLite databases, event
    # log and compute logs, SLM_HOME less the raw inbox), as bytes, every needle in every form
    inbox = simulated.parent.resolve()
    written = [p for p in tmp_path.rglob("*") if p.is_file()
               and not p.resolve().is_relative_to(inbox) and not p.resolve().is_relative_to(inputs.resolve())]
    assert any(p.suffix == ".db" for p in written) and any(p.name == "quarantine.jsonl" for p in written)
    in_dagster = [p for p in written if p.resolve().is_relative_to((tmp_path / "dagster").resolve())]
    assert any(b"Dataset card: support_triage v0001" in p.read_bytes() for p in in_dagster)  # the event log greps
    found = {str(p.relative_to(tmp_path)): hits for p in written if (hits := leaks(p.read_bytes()))}
    assert found == {}
    assert leaks(json.dumps(result.metadata, default=str)) == []  # what the run reported (the UI shows it)
