"""Real components end to end around the evals, on the session's shared vLLM server (tests/conftest.py):

- the teacher (an OpenAI-compatible client on the local vLLM) labels turns in the dataset stage;
- `slm eval` as a subprocess (the real entry point) on a domain dataset, on a BFCL file, and with
  `--out` writing the report folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NO_VLLM_REASON, SERVED_NAME, VLLM_VENV, vllm_venv_missing  # tests/conftest.py
from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import LabelPolicy, MinRows, Source, TeacherBlock
from slm_platform.data.stages import build_dataset
from slm_platform.domain import Domain
from slm_platform.teachers import teacher_from_config

ROOT = Path(__file__).resolve().parent.parent
TRIAGE = ROOT / "domains" / "support_triage"
BFCL_SIMPLE = Path("/work/shared/external/bfcl/BFCL_v4_simple_python.json")
SLM = Path(sys.executable).parent / "slm"

pytestmark = [pytest.mark.integration, pytest.mark.skipif(vllm_venv_missing(), reason=NO_VLLM_REASON)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the teacher in the dataset stage -----------------------------------------------------------------
def test_teacher_labels_in_the_dataset_stage(vllm_server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))  # the teacher's response cache lives there
    triage = Domain.load(TRIAGE)
    turns = list(triage.simulator().simulate(60, seed=21))
    for t in turns:  # no capture label, no output: only the teacher and the oracle can label them
        t.pop("output", None)
        t["labels"] = {}
    src = tmp_path / "unlabeled.jsonl"
    src.write_text("".join(json.dumps(t) + "\n" for t in turns))

    cfg = triage.config.model_copy(deep=True)
    cfg.data.sources = [Source(name="sim", format="jsonl", path=str(src), role="triage")]
    cfg.data.labels = LabelPolicy(truth=["gold", "capture", "teacher", "oracle"], cross_check=["oracle"])
    cfg.data.min_rows = MinRows(train=1, val=1, test=1)
    cfg.teacher = TeacherBlock(provider="openai_compatible", base_url=vllm_server.base_url, model=SERVED_NAME,
                               rate_limit_rps=50.0, timeout_s=300.0, max_retries=2)
    domain = Domain(triage.root, cfg, triage.roles)
    teacher = teacher_from_config(cfg.teacher)
    store = ArtifactStore(str(tmp_path / "artifacts"))

    result = build_dataset(domain, store, "v0001", teacher=teacher, progress=False)

    stats = result.stats
    assert stats["rows_in"] == 60 and stats["conserved"], stats
    assert teacher.stats.failures == 0 and teacher.stats.requests >= stats["rows_in"] - stats["duplicates_removed"]
    folder = store.open_verified("support_triage/datasets/v0001")
    rows = [r for split in ("train", "val", "test") for r in read_jsonl(folder / f"{split}.jsonl")]
    kept = sum(stats["split"].values())
    assert len(rows) == kept and kept + stats["duplicates_removed"] + stats["quarantined_total"] == 60
    assert kept >= 50, stats  # guided decoding: teacher labels are valid, so little is quarantined
    assert rows and all(r["label_source"] == "teacher" and r["labels"]["teacher"] == r["output"] for r in rows)
    assert all("oracle" in r["labels"] for r in rows)
    labels = stats["labels"]
    assert labels["chosen"] == {"teacher": len(rows)}
    assert labels["compared"]["oracle"] == len(rows) and 0.0 <= labels["agreement"]["oracle"] <= 1.0
    # the card's label table: the teacher chosen for every row, the oracle's agreement with it
    teacher_line = next(line for line in result.card.splitlines() if line.startswith("| teacher "))
    oracle_line = next(line for line in result.card.splitlines() if line.startswith("| oracle "))
    assert f"| {len(rows)} | {len(rows)} |" in teacher_line, teacher_line
    assert oracle_line.rstrip(" |").endswith(f"{100 * labels['agreement']['oracle']:.1f}%"), oracle_line


# --- `slm eval` as a subprocess ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slm_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("slm_home")
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLM_ARTIFACTS", "DAGSTER_HOME", "SLM_DAGSTER_STORAGE_URL", "SLM_DOMAINS")}
    env.update(SLM_HOME=str(home), SLM_VLLM_VENV=str(VLLM_VENV), SLM_ENV="local")
    return env


def slm(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(SLM), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"slm {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def triage_dataset(slm_env) -> str:
    slm(slm_env, "run", "support_triage", "--until", "dataset", "--simulate", "300")
    versions = ArtifactStore(str(Path(slm_env["SLM_HOME"]) / "artifacts")).list("support_triage/datasets")
    assert versions == ["v0001"], versions
    return versions[0]


def test_slm_eval_on_a_domain_dataset_with_out(vllm_server, slm_env, triage_dataset, tmp_path: Path) -> None:
    url = f"url:{vllm_server.base_url}#{SERVED_NAME}"
    out = tmp_path / "report"
    proc = slm(slm_env, "eval", "support_triage", "--model", "oracle", "--model", url, "--limit", "20",
               "--json", "--out", str(out))
    data = json.loads(proc.stdout)
    assert set(data) == {"oracle", url}
    for name, report in data.items():
        assert report["n"] == 20, (name, report)
        for metric in ("exact_match_rate", "schema_valid_rate"):
            assert 0.0 <= report["metrics"][metric] <= 1.0, (name, metric, report["metrics"])
    assert data[url]["metrics"]["schema_valid_rate"] == 1.0  # guided decoding by default
    assert data[url]["errors"] == 0
    assert data["oracle"]["metrics"]["exact_match_rate"] > data[url]["metrics"]["exact_match_rate"]
    # --out: the report folder
    assert {"report.json", "report.md", "chart.png", "predictions"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "report.json").read_text())
    assert "oracle" in json.dumps(saved) and url in json.dumps(saved)
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "exact_match_rate" in (out / "report.md").read_text()
    predictions = sorted((out / "predictions").glob("*.jsonl"))
    assert len(predictions) == 2 and all(len(read_jsonl(p)) == 20 for p in predictions)


@pytest.mark.skipif(not BFCL_SIMPLE.exists(), reason=f"no BFCL file at {BFCL_SIMPLE}")
def test_slm_eval_on_bfcl(vllm_server, slm_env) -> None:
    url = f"url:{vllm_server.base_url}#{SERVED_NAME}"
    proc = slm(slm_env, "eval", "--bfcl", str(BFCL_SIMPLE), "--model", url, "--limit", "10", "--json")
    report = json.loads(proc.stdout)[url]
    assert report["n"] == 10 and report["errors"] == 0, report
    for metric in ("bfcl_ast_rate", "valid_call_rate", "name_match_rate"):
        assert 0.0 <= report["metrics"][metric] <= 1.0, (metric, report["metrics"])
    # guided decoding: nearly always one valid catalog call (95.2% on the whole file with SmolLM2)
    assert report["metrics"]["valid_call_rate"] >= 0.8, report["metrics"]
