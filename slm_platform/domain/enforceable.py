"""Which parts of a JSON Schema guided decoding enforces, and which it only validates afterwards.

The grammar (`domain.grammar`, xgrammar) enforces types, properties, required keys, enums and
consts, string lengths, patterns and most formats, numeric ranges and multiples, array and object
sizes, `anyOf` and local `$ref`. A few keywords it compiles but does not enforce: an answer can
break them although every token obeyed the grammar. `unenforced(schema)` names each one with
where it sits, so `slm validate` can say so before traffic does; the gateway and the evals still
validate every answer against the schema itself, and an answer that breaks such a keyword is
invalid (a fallback at the gateway, an invalid answer in a report). `tests/test_enforceable.py`
checks every entry against the installed xgrammar, both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slm_platform.domain.contract import RoleContract

# keyword -> what the grammar does with it
NOT_ENFORCED: dict[str, str] = {
    "uniqueItems": "items may repeat",
    "contains": "an array may lack the item it must contain",
    "not": "ignored",
    "if": "conditional subschemas are ignored",
    "then": "conditional subschemas are ignored",
    "else": "conditional subschemas are ignored",
    "dependentRequired": "a key's dependent keys may be missing",
    "dependencies": "a key's dependent keys may be missing",
    "dependentSchemas": "ignored",
    "oneOf": "decoded as anyOf: an answer may match more than one branch",
    "allOf": "not every branch is enforced",
    "unevaluatedProperties": "ignored",
    "unevaluatedItems": "ignored",
}
# string formats xgrammar has a grammar for; any other format is validated only
ENFORCED_FORMATS = frozenset({
    "date", "time", "date-time", "duration", "email", "hostname", "ipv4", "ipv6", "uri", "uri-reference",
    "uri-template", "uuid", "json-pointer", "relative-json-pointer",
})
# keywords whose values are schemas (walked) or maps/lists of schemas
_SUBSCHEMA = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
              "additionalItems", "unevaluatedItems", "unevaluatedProperties")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


@dataclass(frozen=True)
class Unenforced:
    keyword: str  # "uniqueItems", or "format: color"
    path: str  # where in the schema, e.g. "properties.tags"
    effect: str  # what decoding does instead

    def __str__(self) -> str:
        return f"{self.keyword} at {self.path or '(root)'} ({self.effect})"


def unenforced(schema: Any, path: str = "") -> list[Unenforced]:
    """Every keyword of `schema` (and its subschemas) that guided decoding does not enforce."""
    if not isinstance(schema, dict):
        return []
    found = [Unenforced(k, path, NOT_ENFORCED[k]) for k in schema if k in NOT_ENFORCED]
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt not in ENFORCED_FORMATS:
        found.append(Unenforced(f"format: {fmt}", path, "an unknown format is not constrained"))
    here = f"{path}." if path else ""
    for key in _SUBSCHEMA:
        if isinstance(schema.get(key), dict):
            found += unenforced(schema[key], f"{here}{key}")
        elif key == "items" and isinstance(schema.get(key), list):  # draft-04 tuple form
            found += [u for i, s in enumerate(schema[key]) for u in unenforced(s, f"{here}items[{i}]")]
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            found += [u for name, s in schema[key].items() for u in unenforced(s, f"{here}{key}.{name}")]
    for key in _SCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            found += [u for i, s in enumerate(schema[key]) for u in unenforced(s, f"{here}{key}[{i}]")]
    return found


def contract_unenforced(contract: "RoleContract") -> list[Unenforced]:
    """`unenforced` over a role's output schema (paths under `output`) or each tool's parameters
    (paths under `<tool>.arguments`)."""
    if contract.kind == "structured":
        return unenforced(contract.output_schema, "output")
    return [u for name, params in contract.tool_parameters().items() for u in unenforced(params, f"{name}.arguments")]
