"""The Domain object: one folder's config plus everything it points to, loaded and checked.

`Domain.load()` is what `slm validate` runs: the config, the JSON Schemas (valid JSON Schema),
the tool catalogs, prompt files, oracle imports and seed sources. It gathers every problem
before raising, so one run shows the user all there is to fix.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from slm_platform.config import ConfigError, DomainConfig, Problem, load_config
from slm_platform.config.errors import describe
from slm_platform.config.loader import CONFIG_FILE
from slm_platform.domain.contract import RoleContract
from slm_platform.errors import format_json_path


@dataclass
class Domain:
    root: Path
    config: DomainConfig
    roles: dict[str, RoleContract]

    @property
    def name(self) -> str:
        return self.config.name

    def role(self, role_id: str) -> RoleContract:
        try:
            return self.roles[role_id]
        except KeyError:
            raise KeyError(f"domain {self.name!r} has no role {role_id!r}; roles: {sorted(self.roles)}") from None

    @property
    def default_role(self) -> str | None:
        """The role rows belong to when their format does not say: the only role, if there is one."""
        return next(iter(self.roles)) if len(self.roles) == 1 else None

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def import_module(self, module: str) -> ModuleType:
        """Import `<root>/<module>.py` under a private name (domains are folders, not packages)."""
        file = self.root / (module.replace(".", "/") + ".py")
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found")
        qualified = f"slm_domains.{self.name}.{module}"
        cached = sys.modules.get(qualified)
        # two folders may hold a domain of the same name (tests, copies): reuse only the same file
        if cached is not None and getattr(cached, "__file__", None) == str(file):
            return cached
        spec = importlib.util.spec_from_file_location(qualified, file)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[qualified]
            raise
        return mod

    def simulator(self) -> ModuleType:
        """The domain's `simulate.py` (seeded generator of capture-format turns)."""
        return self.import_module("simulate")

    @classmethod
    def load(cls, folder: Path | str) -> "Domain":
        root = Path(folder).resolve()
        config = load_config(root)
        cfg_file = str(root / CONFIG_FILE)
        problems: list[Problem] = []
        domain = cls(root=root, config=config, roles={})
        for i, role in enumerate(config.contract.roles):
            at = f"contract.roles[{i}]"
            prompt = domain._read_text(role.system_prompt, f"{at}.system_prompt", cfg_file, problems, "a non-empty prompt")
            output_schema = domain._read_schema(role.output_schema, f"{at}.output_schema", cfg_file, problems)
            input_schema = domain._read_schema(role.input_schema, f"{at}.input_schema", cfg_file, problems)
            tools = domain._read_tools(role.tools, f"{at}.tools", cfg_file, problems)
            oracle = domain._load_oracle(role.oracle, f"{at}.oracle", cfg_file, problems)
            if prompt is not None:
                domain.roles[role.id] = RoleContract(role, prompt, output_schema, tools, input_schema, oracle)
        for i, src in enumerate(config.data.sources):
            for key in ("path", "answers"):
                value = getattr(src, key)
                if value is not None and not domain.path(value).exists():
                    problems.append(Problem(cfg_file, f"data.sources[{i}].{key}", repr(value), "an existing file or folder"))
            if src.role is None and src.format != "jsonl" and len(config.contract.roles) > 1:
                problems.append(Problem(cfg_file, f"data.sources[{i}].role", "nothing", "a role id (this format does not name one)"))
        if problems:
            raise ConfigError(problems)
        return domain

    # --- loading helpers: each records a Problem instead of raising ---------------------------
    def _read_text(
        self, rel: str | None, at: str, cfg: str, problems: list[Problem], non_empty: str = "a non-empty file"
    ) -> str | None:
        if rel is None:
            return None
        p = self.path(rel)
        try:
            text = p.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            problems.append(Problem(cfg, at, repr(rel), f"an existing text file (looked for {p})"))
            return None
        except UnicodeDecodeError:
            problems.append(Problem(cfg, at, f"{rel} with bytes that are not UTF-8", "a UTF-8 text file"))
            return None
        except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte
            problems.append(Problem(cfg, at, f"{rel!r} that cannot be read ({getattr(exc, 'strerror', None) or exc})", "a readable text file"))
            return None
        if not text.strip():
            problems.append(Problem(cfg, at, f"{rel} is empty", non_empty))
            return None
        return text

    def _read_json(self, rel: str, at: str, cfg: str, problems: list[Problem]) -> Any:
        text = self._read_text(rel, at, cfg, problems, "a non-empty JSON file")
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            found = f"invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})"
            problems.append(Problem(str(self.path(rel)), "", found, "valid JSON"))
            return None

    def _read_schema(self, rel: str | None, at: str, cfg: str, problems: list[Problem]) -> dict | None:
        if rel is None:
            return None
        schema = self._read_json(rel, at, cfg, problems)
        if schema is None:
            return None
        if not isinstance(schema, dict):
            problems.append(Problem(str(self.path(rel)), "", type(schema).__name__, "a JSON Schema object"))
            return None
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            path = format_json_path("", exc.absolute_path)
            problems.append(Problem(str(self.path(rel)), path, describe(exc.instance), f"valid JSON Schema ({exc.message[:120]})"))
            return None
        return schema

    def _read_tools(self, rel: str | None, at: str, cfg: str, problems: list[Problem]) -> list | None:
        if rel is None:
            return None
        tools = self._read_json(rel, at, cfg, problems)
        if tools is None:
            return None
        file = str(self.path(rel))
        if not isinstance(tools, list) or not tools:
            problems.append(Problem(file, "", type(tools).__name__, "a non-empty list of tools in OpenAI format"))
            return None
        names = set()
        before = len(problems)
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                problems.append(Problem(file, f"[{i}]", describe(tool), '{"type": "function", "function": {"name": ..., "parameters": {...}}}'))
                continue
            if fn["name"] in names:
                problems.append(Problem(file, f"[{i}].function.name", repr(fn["name"]), "a tool name not used before"))
            names.add(fn["name"])
            params = fn.get("parameters") or {}
            if not isinstance(params, dict):
                problems.append(Problem(file, f"[{i}].function.parameters", describe(params), "a JSON Schema object"))
                continue
            try:
                Draft202012Validator.check_schema(params)
            except SchemaError as exc:
                where = format_json_path(f"[{i}].function.parameters", exc.absolute_path)
                problems.append(Problem(file, where, describe(exc.instance), f"valid JSON Schema ({exc.message[:120]})"))
        # a catalog with problems is not handed to RoleContract (it would fail on the bad entries)
        return tools if len(problems) == before else None

    def _load_oracle(self, spec: str | None, at: str, cfg: str, problems: list[Problem]):
        if spec is None:
            return None
        module, _, func = spec.partition(":")
        if not (self.root / (module.replace(".", "/") + ".py")).is_file():
            problems.append(Problem(cfg, at, repr(spec), f"a module file {module.replace('.', '/')}.py in {self.root}"))
            return None
        try:
            mod = self.import_module(module)
        except (Exception, SystemExit) as exc:  # the user's module failed to import: say how, without a traceback
            problems.append(Problem(cfg, at, f"{spec} raising {type(exc).__name__}: {exc}", "a module that imports cleanly"))
            return None
        fn = getattr(mod, func, None)
        if not callable(fn):
            problems.append(Problem(cfg, at, repr(spec), f"a function {func!r} in {module}.py"))
            return None
        return fn
