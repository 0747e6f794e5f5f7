"""`slm validate`, run as the real console script in a subprocess: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from slm_platform import cli

FIXTURES = Path(__file__).parent / "fixtures" / "configs"
SLM = Path(sys.executable).parent / "slm"
COMMAND = [str(SLM)] if SLM.exists() else [sys.executable, "-m", "slm_platform.cli"]


def slm(*args: str | Path, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        [*COMMAND, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "LANG": "C.UTF-8"},
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def make_domain(tmp_path: Path, name: str = "full") -> Path:
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    return folder


def edit_config(folder: Path, change) -> None:
    path = folder / "slm.config.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# --- good folders ---------------------------------------------------------------------------------
def test_minimal_is_valid():
    rc, out, err = slm("validate", FIXTURES / "minimal")
    assert rc == 0, err
    assert "valid" in out and "classify" in out and "structured" in out and "oracle:classify" in out
    assert err == ""


def test_full_is_valid_and_summarised():
    rc, out, err = slm("validate", FIXTURES / "full")
    assert rc == 0, err
    for text in ("triage", "act", "tool_call", "2 tools", "seed", "actions", "chat_logs", "openai_compatible"):
        assert text in out, (text, out)
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.split()[:1] in (["seed"], ["actions"], ["chat_logs"])}
    assert rows == {"seed": "4", "actions": "2", "chat_logs": "2"}


def test_paths_are_shown_relative_to_the_working_directory(tmp_path):
    make_domain(tmp_path)
    rc, out, _ = slm("validate", "full", cwd=tmp_path)
    assert rc == 0 and out.startswith("full: valid")


# --- bad config -----------------------------------------------------------------------------------
def test_bad_config_names_file_path_found_expected(tmp_path):
    folder = make_domain(tmp_path)
    edit_config(folder, lambda d: d["eval"]["metrics"][1].update(target="high"))
    rc, out, err = slm("validate", "full", cwd=tmp_path)
    assert rc == 1
    assert "full: invalid (1 problem)" in err
    assert "full/slm.config.yaml: eval.metrics[1].target: found 'high', expected a valid number" in err.splitlines()


def test_yaml_syntax_error(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "slm.config.yaml").write_text("domain:\n  name: full\ncontract: [\n")
    rc, _, err = slm("validate", folder)
    assert rc == 1
    assert "slm.config.yaml: found invalid YAML at line 4, column 1" in err


def test_every_problem_on_its_own_line(tmp_path):
    folder = make_domain(tmp_path)
    edit_config(folder, lambda d: (d["domain"].update(owners=["x"]), d["model"].update(candidates=["gpt2"])))
    (folder / "oracle.py").write_text("raise RuntimeError('line one\\nline two')\n")
    rc, _, err = slm("validate", folder)
    assert rc == 1
    lines = err.splitlines()
    assert lines[0].endswith("full: invalid (2 problems)")
    assert lines[1].endswith("slm.config.yaml: domain.owners[0]: found 'x', expected an email address or 'team:<name>'")
    assert "model.candidates[0]: found 'gpt2'" in lines[2]
    assert len(lines) == 3


# --- bad files the config points to ---------------------------------------------------------------
def test_bad_schema_json(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "contracts" / "triage.schema.json").write_text('{"type": "objekt"}')
    (folder / "prompts" / "act.md").unlink()
    rc, _, err = slm("validate", "full", cwd=tmp_path)
    assert rc == 1
    assert "full: invalid (2 problems)" in err
    assert "full/contracts/triage.schema.json: type: found 'objekt', expected valid JSON Schema" in err
    assert "full/slm.config.yaml: contract.roles[1].system_prompt: found 'prompts/act.md'" in err


def test_oracle_failing_on_import(tmp_path):
    folder = make_domain(tmp_path, "minimal")
    (folder / "oracle.py").write_text("import sys\nprint('side effect')\n1 / 0\n")
    rc, _, err = slm("validate", folder)
    assert rc == 1
    assert "contract.roles[0].oracle: found oracle:classify raising ZeroDivisionError: division by zero" in err


def test_missing_folder(tmp_path):
    rc, _, err = slm("validate", tmp_path / "nope")
    assert rc == 1
    assert f"{tmp_path / 'nope'}: found no such folder, expected a domain folder holding slm.config.yaml" in err


# --- seed rows ------------------------------------------------------------------------------------
def test_bad_seed_rows_listed_with_file_and_line(tmp_path):
    folder = make_domain(tmp_path)
    with open(folder / "data" / "seed.jsonl", "a") as f:
        f.write('{"id": "s5", "input": {"messages": []}, "labels": {"gold": {"category": "spam", "priority": "low"}}}\n')
        f.write("{not json\n")
        f.write('{"id": "s6", "role": "ghost", "input": {}}\n')
    with open(folder / "data" / "actions.jsonl", "a") as f:
        f.write('{"role": "act", "input": {}, "labels": {"gold": {"name": "refund", "arguments": {"order_id": 5, "amount": 1}}}}\n')
        f.write('{"role": "act", "input": {}, "labels": {"teacher": {"name": ["refund"], "arguments": {}}}}\n')
    rc, out, err = slm("validate", "full", cwd=tmp_path)
    assert rc == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == "full: invalid (5 problems)"
    assert lines[1:] == [
        "full/data/seed.jsonl:6: labels.gold: output.category: 'spam' is not one of ['billing', 'bug', 'account', 'other']",
        lines[2],
        "full/data/seed.jsonl:8: field 'role' is not one of ['act', 'triage']",  # the value is never echoed
        "source 'seed': 3 of 7 rows rejected",
        "full/data/actions.jsonl:3: labels.gold: refund.arguments.order_id: 5 is not of type 'string'",
        lines[6],
        "source 'actions': 2 of 4 rows rejected",
    ]
    assert lines[2].startswith("full/data/seed.jsonl:7: line is not valid JSON")
    assert lines[6].startswith("full/data/actions.jsonl:4: labels.teacher: ")


def test_rejected_rows_are_capped_at_20_per_source(tmp_path):
    folder = make_domain(tmp_path)
    bad = {"input": {"messages": []}, "labels": {"gold": {"category": "spam", "priority": "low"}}}
    with open(folder / "data" / "seed.jsonl", "a") as f:
        for i in range(25):
            f.write(json.dumps({"id": f"bad{i}", **bad}) + "\n")
    rc, _, err = slm("validate", folder)
    assert rc == 1
    row_lines = [line for line in err.splitlines() if "seed.jsonl:" in line]
    assert len(row_lines) == 20
    assert row_lines[0].endswith("seed.jsonl:6: labels.gold: output.category: 'spam' is not one of ['billing', 'bug', 'account', 'other']")
    assert "source 'seed': 25 of 29 rows rejected (5 more not shown)" in err
    assert "invalid (25 problems)" in err


def test_source_folder_without_data_files(tmp_path):
    folder = make_domain(tmp_path)
    for f in (folder / "data" / "chat").iterdir():
        f.unlink()
    rc, _, err = slm("validate", folder)
    assert rc == 1
    assert "slm.config.yaml: data.sources[2].path: found 'data/chat', expected a folder with *.jsonl or *.json files" in err


# --- several folders ------------------------------------------------------------------------------
def test_several_folders_one_bad(tmp_path):
    good = make_domain(tmp_path, "minimal")
    bad = make_domain(tmp_path)
    (bad / "contracts" / "tools.json").write_text("{}")
    rc, out, err = slm("validate", good, bad)
    assert rc == 1
    assert "minimal: valid" in out and "1 of 2 domain folders valid" in out
    assert "contracts/tools.json: found dict, expected a non-empty list of tools in OpenAI format" in err


def test_all_validates_every_folder_under_domains(tmp_path):
    domains = tmp_path / "domains"
    make_domain(domains, "minimal")
    make_domain(domains, "full")
    (domains / "not_a_domain").mkdir()
    (domains / "README.md").write_text("domains live here\n")
    rc, out, err = slm("validate", "--all", cwd=tmp_path)
    assert rc == 1
    assert "domains/full: valid" in out and "domains/minimal: valid" in out
    assert "domains/not_a_domain/slm.config.yaml: found no such file" in err
    (domains / "not_a_domain").rmdir()
    rc, out, _ = slm("validate", "--all", cwd=tmp_path)
    assert rc == 0 and "2 of 2 domain folders valid" in out
    rc, _, err = slm("validate", "--all", "--domains-dir", tmp_path / "elsewhere")
    assert rc == 1 and "found no such folder" in err


# --- usage and unexpected errors ------------------------------------------------------------------
def test_usage_errors_exit_2():
    rc, _, err = slm()
    assert rc == 2 and "validate" in err
    rc, _, err = slm("validate")
    assert rc == 2 and "--all" in err
    rc, _, err = slm("frobnicate")
    assert rc == 2 and "invalid choice" in err
    rc, out, _ = slm("--help")
    assert rc == 0 and "validate" in out


def test_unexpected_exception_is_one_line_exit_2(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setitem(cli.SUBCOMMANDS, "validate", cli.Subcommand("validate", "x", lambda p: None, boom))
    assert cli.main(["validate"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: RuntimeError: disk on fire second line\n"


def test_config_error_escaping_a_subcommand_is_printed(monkeypatch, capsys):
    from slm_platform.config import ConfigError, Problem

    def fails(args):
        raise ConfigError([Problem("a.yaml", "x.y", "'1'", "a number")])

    monkeypatch.setitem(cli.SUBCOMMANDS, "validate", cli.Subcommand("validate", "x", lambda p: None, fails))
    assert cli.main(["validate"]) == 1
    assert capsys.readouterr().err == "a.yaml: x.y: found '1', expected a number\n"


def test_subcommands_are_a_table():
    assert "validate" in cli.SUBCOMMANDS
    parser = cli.build_parser()
    args = parser.parse_args(["validate", "--all"])
    assert args.command == "validate" and args.all


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "slm_platform.cli", "validate", str(FIXTURES / "minimal")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "minimal" in proc.stdout


def test_user_text_is_not_read_as_rich_markup(tmp_path):
    folder = make_domain(tmp_path / "odd [/dir]")
    edit_config(folder, lambda d: d["teacher"].update(model="[/bold]m[1]"))
    rc, out, err = slm("validate", folder)
    assert rc == 0, err
    assert "odd [/dir]/full: valid" in out and "teacher: openai_compatible [/bold]m[1];" in out
