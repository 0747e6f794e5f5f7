"""A role's contract: what a valid output is, checked the same way in data, eval and serving.

Structured roles validate against their JSON Schema; tool-call roles against the tool catalog
(a known tool name, and arguments valid for that tool's parameter schema). `guided_schema()` is
the JSON Schema handed to guided decoding, so generation and validation agree by construction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from jsonschema import Draft202012Validator

from slm_platform.config.models import Role
from slm_platform.errors import format_json_path


@dataclass
class RoleContract:
    role: Role
    system_prompt: str
    output_schema: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None  # OpenAI tools format
    input_schema: dict[str, Any] | None = None
    oracle: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.output_schema is not None:
            self._validators[""] = Draft202012Validator(self.output_schema)
        for name, params in self.tool_parameters().items():
            self._validators[name] = Draft202012Validator(params)
        if self.input_schema is not None:
            self._validators["\x00input"] = Draft202012Validator(self.input_schema)

    @property
    def id(self) -> str:
        return self.role.id

    @property
    def kind(self) -> str:
        return self.role.kind

    def tool_parameters(self) -> dict[str, dict[str, Any]]:
        """Tool name -> its parameters JSON Schema."""
        out = {}
        for tool in self.tools or []:
            fn = tool.get("function", tool)
            out[fn["name"]] = fn.get("parameters") or {"type": "object", "properties": {}}
        return out

    def validate_output(self, output: Any) -> list[str]:
        """Every reason `output` breaks the contract; an empty list means valid."""
        if not isinstance(output, dict):
            return [f"output must be a JSON object, found {type(output).__name__}"]
        if self.kind == "structured":
            return _errors(self._validators[""], output, "output")
        name, arguments = output.get("name"), output.get("arguments")
        extra = sorted(set(output) - {"name", "arguments"})
        problems = [f"tool call has unexpected keys {extra}"] if extra else []
        if not isinstance(name, str) or name not in self.tool_parameters():
            return problems + [f"tool name {name!r} is not in the catalog {sorted(self.tool_parameters())}"]
        if not isinstance(arguments, dict):
            return problems + [f"arguments of {name!r} must be a JSON object, found {type(arguments).__name__}"]
        return problems + _errors(self._validators[name], arguments, f"{name}.arguments")

    def fingerprint(self) -> str:
        """sha256 of what the model is trained to honour (kind, prompt, schemas, catalog): a changed
        contract means the champion was trained for another one (the `contract_changed` trigger)."""
        body = {"kind": self.kind, "system_prompt": self.system_prompt, "output_schema": self.output_schema,
                "tools": self.tools, "input_schema": self.input_schema}
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def validate_input(self, input_: Any) -> list[str]:
        validator = self._validators.get("\x00input")
        return _errors(validator, input_, "input") if validator else []

    def guided_schema(self) -> dict[str, Any]:
        """The schema guided decoding enforces: the output schema, or exactly one catalog call."""
        if self.kind == "structured":
            assert self.output_schema is not None
            return self.output_schema
        return {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"name": {"const": name}, "arguments": params},
                    "required": ["name", "arguments"],
                    "additionalProperties": False,
                }
                for name, params in self.tool_parameters().items()
            ]
        }


def _errors(validator: Draft202012Validator, value: Any, prefix: str) -> list[str]:
    return [
        f"{format_json_path(prefix, err.absolute_path)}: {err.message}"
        for err in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    ]
