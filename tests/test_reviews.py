"""Reviewed labels reach captured turns at ingest: applied by id, corrected by a later review,
rejected with the file and line when unreadable or against the contract, never carrying who reviewed."""

from __future__ import annotations

import json
from pathlib import Path

from slm_platform.artifacts import ArtifactStore
from slm_platform.data.stages import REVIEWS_QUARANTINE_FILE, build_dataset, captured_turns, ingest_capture
from slm_platform.domain import Domain

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-20"
EMAIL = "reviewer.private@example.org"


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gateway_like(turns: list[dict]) -> list[dict]:
    """Simulated turns as the gateway captures the champion's answers: the answer served, no label."""
    return [{**t, "labels": {}, "meta": {**t["meta"], "source": "gateway", "route": "slm"}} for t in turns]


def test_reviews_label_captured_turns(tmp_path: Path) -> None:
    domain = Domain.load(ROOT / "domains" / "support_triage")
    turns = list(domain.simulator().simulate(400, seed=11, day=DAY))
    truth = {t["id"]: t["output"] for t in turns}
    inbox = tmp_path / "inbox"
    write_jsonl(inbox / f"date={DAY}" / "traffic.jsonl", gateway_like(turns))
    ids = [t["id"] for t in turns]
    wrong = {**truth[ids[0]], "priority": "low" if truth[ids[0]]["priority"] != "low" else "high"}
    write_jsonl(inbox / "reviews" / "a.jsonl", [
        *({"id": i, "label": truth[i], "reviewer": "Alice Example"} for i in ids[1:300]),
        {"id": ids[0], "label": wrong},                                  # corrected below (a later file wins)
        {"id": ids[300], "label": {**truth[ids[300]], "priority": "whenever"}},        # not one of the enum
        {"id": ids[301], "label": {**truth[ids[301]], "note": f"ask {EMAIL}"}},       # a key the schema forbids
        "{not json",
        {"id": "", "label": truth[ids[302]]},
        {"id": ids[303], "label": "billing"},
        {"id": "st-from-another-day-0000001", "label": truth[ids[1]]},
        {"id": ids[304], "label": None},                                 # exported for review, not reviewed yet
    ])
    write_jsonl(inbox / "reviews" / "b.jsonl", [{"id": ids[0], "label": truth[ids[0]]}])

    store = ArtifactStore(str(tmp_path / "artifacts"))
    result = ingest_capture(domain, DAY, store, inbox=inbox)
    reviews = result.stats["reviews"]
    assert reviews == {"rows": 308, "applied": 300, "rejected": 5, "superseded": 1, "blank": 1}, reviews
    folder = store.open_verified(f"support_triage/capture/date={DAY}")
    kept = {t["id"]: t for t in read_jsonl(folder / "turns.jsonl")}
    assert len(kept) == result.stats["kept"] > 300
    for i in ids[:300]:
        assert kept[i]["labels"] == {"gold": truth[i]}, i   # the correction, not the first review, for ids[0]
        assert kept[i]["meta"]["review"].startswith("b.jsonl:" if i == ids[0] else "a.jsonl:")
    for i in ids[300:]:
        assert "gold" not in kept[i]["labels"], i
    rejected = read_jsonl(folder / REVIEWS_QUARANTINE_FILE)
    assert len(rejected) == reviews["rejected"]
    reasons = " | ".join(r["reason"] for r in rejected)
    for expected in ("a.jsonl:303: not JSON", "a.jsonl:304: `id` must be", "a.jsonl:305: `label` must be",
                     f"review of turn {ids[300]}", f"review of turn {ids[301]}"):
        assert expected in reasons, (expected, reasons)
    published = "".join(p.read_text() for p in folder.iterdir())
    assert "Alice" not in published and EMAIL not in published  # who reviewed is never kept; PII is redacted

    # the dataset trains on the reviewed turns as gold; the unreviewed gateway turns have no label
    dataset = build_dataset(domain, store, "v0001", progress=False)
    assert dataset.stats["labels"]["chosen"]["gold"] >= 280  # some reviewed turns are duplicates (dedupe)
    data = store.open_verified("support_triage/datasets/v0001")
    quarantine = read_jsonl(data / "quarantine.jsonl")
    assert sum(r["kind"] == "unlabeled" for r in quarantine) >= len(ids) - 300 - 10


def test_pending_reviews_then_submit_round_trip(tmp_path: Path, monkeypatch) -> None:
    """`slm review pending` -> a reviewer fills some labels, botches two, leaves the rest -> `slm review
    submit` takes the good ones at once, says why the two are not -> the day's next ingest applies them."""
    from slm_platform import settings
    from slm_platform.data.reviews import pending_reviews, review_folder, submit_reviews

    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    domain = Domain.load(ROOT / "domains" / "support_triage")
    turns = list(domain.simulator().simulate(60, seed=12, day=DAY))
    truth = {t["id"]: t["output"] for t in turns}
    write_jsonl(settings.inbox_dir(domain.name) / f"date={DAY}" / "traffic.jsonl", gateway_like(turns))
    store = ArtifactStore(str(tmp_path / "artifacts"))
    kept = ingest_capture(domain, DAY, store).stats["kept"]

    pending = list(pending_reviews(domain, captured_turns(store, domain.name, [DAY])))
    assert len(pending) == kept == 60 and all(p["label"] is None and p["role"] == "triage" for p in pending)
    assert pending[0]["suggested"] == turns[0]["output"]  # what was served, to correct rather than retype
    for row in pending[:40]:
        row["label"] = truth[row["id"]]
    pending[40]["label"] = {**truth[pending[40]["id"]], "language": "klingon"}
    pending[41]["label"] = ["billing"]
    reviewed = tmp_path / "reviewed.jsonl"
    write_jsonl(reviewed, pending)

    submitted = submit_reviews(domain, reviewed)
    assert (len(submitted.accepted), len(submitted.rejected), submitted.rows) == (40, 2, 60)
    assert sorted(r.location for r in submitted.rejected) == ["reviewed.jsonl:41", "reviewed.jsonl:42"]
    assert all(r.reason.startswith(r.location) or r.location in r.reason for r in submitted.rejected)
    assert submitted.path is not None and submitted.path.parent == review_folder(domain)
    assert all(set(json.loads(line)) == {"id", "label"} for line in submitted.path.read_text().splitlines())

    again = ingest_capture(domain, DAY, store)  # the day's partition re-materialized
    assert again.stats["reviews"]["applied"] == 40
    assert len(list(pending_reviews(domain, captured_turns(store, domain.name, [DAY])))) == 20


def test_the_reviews_sensor_reingests_the_days_that_got_new_reviews(tmp_path: Path, monkeypatch) -> None:
    """On a real SQLite instance: the sensor requests `<domain>_capture` for exactly the days with an
    unapplied review, not again on an unchanged folder, and after the re-ingest a correction counts again."""
    import dagster as dg

    from slm_platform import settings
    from slm_platform.data.reviews import Review, review_folder, write_reviews
    from slm_platform.orchestration.factory import build_domain_defs
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.resources import ArtifactStoreResource

    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    domain = Domain.load(ROOT / "domains" / "support_triage")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    days = {"2026-11-20": list(domain.simulator().simulate(30, seed=1, day="2026-11-20")),
            "2026-11-21": list(domain.simulator().simulate(30, seed=2, day="2026-11-21"))}
    for day, turns in days.items():
        write_jsonl(settings.inbox_dir(domain.name) / f"date={day}" / "traffic.jsonl", gateway_like(turns))
        ingest_capture(domain, day, store)
    sensor = next(s for s in build_domain_defs(domain).sensors if s.name == "support_triage_reviews")
    instance = get_instance(tmp_path / "dagster")

    def evaluate(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={
                "artifacts": ArtifactStoreResource(root=str(store.local_root))}) as context:
            return sensor(context)

    try:
        late = days["2026-11-21"]
        write_reviews(domain, [Review(t["id"], t["output"], "-") for t in late[:5]], "batch-1")
        write_reviews(domain, [Review("not-a-captured-turn", late[0]["output"], "-")], "batch-2")
        result = evaluate(None)
        [request] = result.run_requests
        assert request.partition_key == "2026-11-21" and request.job_name in (None, "support_triage_capture")
        assert request.tags["slm/reviews"] == "5 turns with a new review"
        again = evaluate(result.cursor)  # nothing changed in the folder: no scan, no run
        assert not again.run_requests if isinstance(again, dg.SensorResult) else "no new review" in again.skip_message

        ingest_capture(domain, "2026-11-21", store)  # what the requested run does
        write_reviews(domain, [Review(late[1]["id"], {**late[1]["output"], "needs_human": not late[1]["output"]["needs_human"]}, "-")],
                      "batch-3")  # a correction of an applied review
        result = evaluate(result.cursor)
        [request] = result.run_requests
        assert request.partition_key == "2026-11-21" and request.tags["slm/reviews"] == "1 turns with a new review"
        assert review_folder(domain).is_dir()
    finally:
        instance.dispose()
