"""Domain.load: everything the config points to (prompts, schemas, tool catalogs, oracles, sources)
is read and checked, and every problem names the right file and field path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from slm_platform.config import ConfigError, Problem
from slm_platform.domain import Domain

FIXTURES = Path(__file__).parent / "fixtures" / "configs"


def make_domain(tmp_path: Path, name: str = "full") -> Path:
    """A private copy of a fixture domain (the folder name is the domain name)."""
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    return folder


def edit_config(folder: Path, change) -> None:
    path = folder / "slm.config.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def load_problems(folder: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        Domain.load(folder)
    problems = info.value.problems
    assert problems and all(p.file and p.found and p.expected for p in problems)
    assert all("\n" not in str(p) for p in problems)
    return problems


def one(folder: Path) -> Problem:
    problems = load_problems(folder)
    assert len(problems) == 1, problems
    return problems[0]


def cfg(folder: Path) -> str:
    return str(folder.resolve() / "slm.config.yaml")


# --- the good fixtures ----------------------------------------------------------------------------
def test_minimal_fixture_loads():
    domain = Domain.load(FIXTURES / "minimal")
    assert domain.name == "minimal" and list(domain.roles) == ["classify"]
    role = domain.role("classify")
    assert role.kind == "structured" and "Classify" in role.system_prompt
    out = role.oracle({"messages": [{"role": "user", "content": "the app shows an error"}]})
    assert out == {"label": "bug"} and role.validate_output(out) == []
    with pytest.raises(KeyError, match="no role 'nope'"):
        domain.role("nope")


def test_full_fixture_loads():
    domain = Domain.load(FIXTURES / "full")
    assert set(domain.roles) == {"triage", "act"}
    act = domain.role("act")
    assert sorted(act.tool_parameters()) == ["escalate", "refund"]
    assert act.validate_output(act.oracle({"messages": [{"role": "user", "content": "invoice"}]})) == []
    triage = domain.role("triage")
    assert triage.input_schema is not None and triage.validate_input({"messages": []}) != []


# --- prompts --------------------------------------------------------------------------------------
def test_missing_prompt_file(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "prompts" / "act.md").unlink()
    p = one(folder)
    assert (p.file, p.path, p.found) == (cfg(folder), "contract.roles[1].system_prompt", "'prompts/act.md'")
    assert p.expected == f"an existing text file (looked for {folder.resolve() / 'prompts' / 'act.md'})"


def test_prompt_path_is_a_folder(tmp_path):
    folder = make_domain(tmp_path)
    edit_config(folder, lambda d: d["contract"]["roles"][0].update(system_prompt="prompts"))
    p = one(folder)
    assert (p.file, p.path, p.found) == (cfg(folder), "contract.roles[0].system_prompt", "'prompts'")


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_empty_prompt(tmp_path, text):
    folder = make_domain(tmp_path)
    (folder / "prompts" / "triage.md").write_text(text)
    p = one(folder)
    assert str(p) == f"{cfg(folder)}: contract.roles[0].system_prompt: found prompts/triage.md is empty, expected a non-empty prompt"


def test_prompt_not_utf8(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "prompts" / "triage.md").write_bytes(b"caf\xe9\n")
    p = one(folder)
    assert p.path == "contract.roles[0].system_prompt" and p.expected == "a UTF-8 text file"


# --- JSON Schemas ---------------------------------------------------------------------------------
def test_schema_with_invalid_json(tmp_path):
    folder = make_domain(tmp_path)
    schema = folder / "contracts" / "triage.schema.json"
    schema.write_text('{\n  "type": "object",\n  "properties": {,}\n}\n')
    p = one(folder)
    assert (p.file, p.path) == (str(schema.resolve()), "")
    assert p.found.startswith("invalid JSON at line 3, column 18 (")
    assert p.expected == "valid JSON"


def test_empty_schema_file(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "contracts" / "triage.schema.json").write_text("")
    p = one(folder)
    assert (p.path, p.found, p.expected) == (
        "contract.roles[0].output_schema",
        "contracts/triage.schema.json is empty",
        "a non-empty JSON file",
    )


def test_invalid_json_schema(tmp_path):
    folder = make_domain(tmp_path)
    schema = folder / "contracts" / "triage.schema.json"
    schema.write_text(json.dumps({"type": "objekt"}))
    p = one(folder)
    assert (p.file, p.path, p.found) == (str(schema.resolve()), "type", "'objekt'")
    assert p.expected.startswith("valid JSON Schema (")


def test_invalid_json_schema_deep_inside(tmp_path):
    folder = make_domain(tmp_path)
    schema = folder / "contracts" / "triage.input.schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"messages": {"type": "array", "minItems": -1}}}))
    p = one(folder)
    assert (p.file, p.path, p.found) == (str(schema.resolve()), "properties.messages.minItems", "-1")


def test_schema_must_be_an_object(tmp_path):
    folder = make_domain(tmp_path)
    schema = folder / "contracts" / "triage.schema.json"
    schema.write_text("[1, 2]")
    p = one(folder)
    assert (p.file, p.found, p.expected) == (str(schema.resolve()), "list", "a JSON Schema object")


def test_missing_schema_file(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "contracts" / "triage.input.schema.json").unlink()
    p = one(folder)
    assert (p.file, p.path, p.found) == (cfg(folder), "contract.roles[0].input_schema", "'contracts/triage.input.schema.json'")


# --- tool catalogs --------------------------------------------------------------------------------
def tools_file(folder: Path) -> Path:
    return folder / "contracts" / "tools.json"


def catalog(folder: Path) -> list:
    return json.loads(tools_file(folder).read_text())


@pytest.mark.parametrize(("content", "found"), [({"refund": {}}, "dict"), ([], "list"), ("refund", "str")])
def test_tool_catalog_not_a_list(tmp_path, content, found):
    folder = make_domain(tmp_path)
    tools_file(folder).write_text(json.dumps(content))
    p = one(folder)
    assert (p.file, p.path, p.found) == (str(tools_file(folder).resolve()), "", found)
    assert p.expected == "a non-empty list of tools in OpenAI format"


def test_duplicate_tool_names(tmp_path):
    folder = make_domain(tmp_path)
    tools = catalog(folder)
    tools[1]["function"]["name"] = "refund"
    tools_file(folder).write_text(json.dumps(tools))
    p = one(folder)
    assert str(p) == f"{tools_file(folder).resolve()}: [1].function.name: found 'refund', expected a tool name not used before"


def test_tool_with_bad_parameters_schema(tmp_path):
    folder = make_domain(tmp_path)
    tools = catalog(folder)
    tools[0]["function"]["parameters"]["properties"]["amount"]["type"] = "money"
    tools_file(folder).write_text(json.dumps(tools))
    p = one(folder)
    assert (p.file, p.path, p.found) == (
        str(tools_file(folder).resolve()),
        "[0].function.parameters.properties.amount.type",
        "'money'",
    )
    assert p.expected.startswith("valid JSON Schema (")


def test_tool_parameters_not_an_object(tmp_path):
    folder = make_domain(tmp_path)
    tools = catalog(folder)
    tools[1]["function"]["parameters"] = ["team"]
    tools_file(folder).write_text(json.dumps(tools))
    p = one(folder)
    assert (p.path, p.found, p.expected) == ("[1].function.parameters", "['team']", "a JSON Schema object")


@pytest.mark.parametrize("entry", [1, "refund", {"type": "function"}, {"function": {"name": 7}}])
def test_malformed_tool_entry_is_a_problem_not_a_crash(tmp_path, entry):
    folder = make_domain(tmp_path)
    tools_file(folder).write_text(json.dumps([*catalog(folder), entry]))
    p = one(folder)
    assert (p.file, p.path) == (str(tools_file(folder).resolve()), "[2]")
    assert p.expected.startswith('{"type": "function", "function": {"name"')


# --- oracles --------------------------------------------------------------------------------------
def test_oracle_module_missing(tmp_path):
    folder = make_domain(tmp_path)
    edit_config(folder, lambda d: d["contract"]["roles"][0].update(oracle="rules:triage"))
    p = one(folder)
    assert (p.file, p.path, p.found) == (cfg(folder), "contract.roles[0].oracle", "'rules:triage'")
    assert p.expected == f"a module file rules.py in {folder.resolve()}"


def test_oracle_raising_on_import(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "oracle.py").write_text("import json\nraise RuntimeError('no rules table')\n")
    problems = load_problems(folder)  # both roles use oracle.py
    assert [p.path for p in problems] == ["contract.roles[0].oracle", "contract.roles[1].oracle"]
    assert problems[0].found == "oracle:triage raising RuntimeError: no rules table"
    assert problems[0].expected == "a module that imports cleanly"


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("def triage(:\n", "SyntaxError"),
        ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
        ("open('missing-table.csv')\n", "FileNotFoundError"),
    ],
)
def test_oracle_import_failures_are_problems(tmp_path, source, error):
    folder = make_domain(tmp_path)
    (folder / "oracle.py").write_text(source)
    problems = load_problems(folder)
    assert problems[0].path == "contract.roles[0].oracle"
    assert error in problems[0].found


def test_oracle_function_missing(tmp_path):
    folder = make_domain(tmp_path)
    edit_config(folder, lambda d: d["contract"]["roles"][1].update(oracle="oracle:acts"))
    p = one(folder)
    assert str(p) == f"{cfg(folder)}: contract.roles[1].oracle: found 'oracle:acts', expected a function 'acts' in oracle.py"


def test_oracle_attribute_not_callable(tmp_path):
    folder = make_domain(tmp_path)
    with open(folder / "oracle.py", "a") as f:
        f.write("\nTABLE = {}\n")
    edit_config(folder, lambda d: d["contract"]["roles"][1].update(oracle="oracle:TABLE"))
    assert one(folder).path == "contract.roles[1].oracle"


def test_same_domain_name_in_two_folders_imports_each_oracle(tmp_path):
    good = make_domain(tmp_path / "a")
    assert Domain.load(good).role("triage").oracle is not None
    bad = make_domain(tmp_path / "b")
    (bad / "oracle.py").write_text("raise ValueError('broken copy')\n")
    assert "broken copy" in load_problems(bad)[0].found
    fixed = make_domain(tmp_path / "c")
    (fixed / "oracle.py").write_text("def triage(i):\n    return {'category': 'other', 'priority': 'low'}\n"
                                     "def act(i):\n    return None\n")
    assert Domain.load(fixed).role("triage").oracle({}) == {"category": "other", "priority": "low"}


# --- sources --------------------------------------------------------------------------------------
def test_source_path_missing(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "data" / "actions.jsonl").unlink()
    p = one(folder)
    assert str(p) == f"{cfg(folder)}: data.sources[1].path: found 'data/actions.jsonl', expected an existing file or folder"


def test_source_answers_missing(tmp_path):
    folder = make_domain(tmp_path)
    edit_config(folder, lambda d: d["data"]["sources"][0].update(answers="data/possible_answer.jsonl"))
    assert one(folder).path == "data.sources[0].answers"


def test_non_jsonl_source_needs_a_role_when_there_are_several(tmp_path):
    folder = make_domain(tmp_path)
    edit_config(folder, lambda d: d["data"]["sources"][2].pop("role"))
    p = one(folder)
    assert (p.path, p.found) == ("data.sources[2].role", "nothing")


# --- everything at once ---------------------------------------------------------------------------
def test_several_problems_are_all_reported(tmp_path):
    folder = make_domain(tmp_path)
    (folder / "prompts" / "triage.md").unlink()
    (folder / "contracts" / "triage.schema.json").write_text('{"type": "objekt"}')
    tools_file(folder).write_text("[")
    (folder / "data" / "seed.jsonl").unlink()
    edit_config(folder, lambda d: d["contract"]["roles"][1].update(oracle="oracle:nope"))
    problems = load_problems(folder)
    got = [(Path(p.file).name, p.path) for p in problems]
    assert got == [
        ("slm.config.yaml", "contract.roles[0].system_prompt"),
        ("triage.schema.json", "type"),
        ("tools.json", ""),
        ("slm.config.yaml", "contract.roles[1].oracle"),
        ("slm.config.yaml", "data.sources[0].path"),
    ]


def test_config_errors_come_first(tmp_path):
    folder = make_domain(tmp_path)
    edit_config(folder, lambda d: d["eval"]["metrics"][1].update(target="high"))
    (folder / "prompts" / "triage.md").unlink()
    p = one(folder)  # the config is checked before the files it points to
    assert (p.path, p.found) == ("eval.metrics[1].target", "'high'")


def test_missing_folder(tmp_path):
    p = one(tmp_path / "nowhere")
    assert p.found == "no such file"


# --- a loaded tool_call role checks outputs against its catalog -----------------------------------
@pytest.fixture(scope="module")
def full_domain() -> Domain:
    return Domain.load(FIXTURES / "full")


def test_tool_call_valid_output(full_domain):
    act = full_domain.role("act")
    assert act.validate_output({"name": "refund", "arguments": {"order_id": "ORD-000123", "amount": 9.5}}) == []
    assert act.validate_output({"name": "escalate", "arguments": {"team": "billing"}}) == []


def test_tool_call_unknown_tool(full_domain):
    errors = full_domain.role("act").validate_output({"name": "delete_account", "arguments": {}})
    assert errors == ["tool name 'delete_account' is not in the catalog ['escalate', 'refund']"]


def test_tool_call_bad_arguments_name_the_path(full_domain):
    errors = full_domain.role("act").validate_output(
        {"name": "refund", "arguments": {"order_id": "123", "amount": -5, "note": "x"}}
    )
    assert errors == [
        "refund.arguments: Additional properties are not allowed ('note' was unexpected)",
        "refund.arguments.amount: -5 is less than or equal to the minimum of 0",
        "refund.arguments.order_id: '123' does not match '^ORD-[0-9]{6}$'",
    ]


def test_tool_call_missing_argument_and_wrong_shapes(full_domain):
    act = full_domain.role("act")
    assert act.validate_output({"name": "escalate", "arguments": {}}) == [
        "escalate.arguments: 'team' is a required property"
    ]
    assert act.validate_output({"name": "escalate", "arguments": "team=billing"}) == [
        "arguments of 'escalate' must be a JSON object, found str"
    ]
    assert act.validate_output(["escalate"]) == ["output must be a JSON object, found list"]


def test_tool_call_extra_keys(full_domain):
    errors = full_domain.role("act").validate_output({"name": "escalate", "arguments": {"team": "billing"}, "why": "x"})
    assert errors == ["tool call has unexpected keys ['why']"]


def test_structured_output_errors_name_the_path(full_domain):
    errors = full_domain.role("triage").validate_output({"category": "billing", "priority": "asap"})
    assert errors == ["output.priority: 'asap' is not one of ['low', 'normal', 'high']"]
