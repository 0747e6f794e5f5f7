"""The grammar of the renderer's layout: guided decoding admits exactly the text training targets have.

`render.render_target` writes every training target with `json.dumps` defaults: one line, `", "`
between items, `": "` after keys, keys in the schema's order. `exact_json_grammar` is the xgrammar
EBNF for JSON valid under a schema with that layout and no free whitespace, and every guided path
uses it: the gateway (vLLM completions), the evals on vLLM (chat completions) and the transformers
engine. A grammar with free whitespace (vLLM's `response_format: json_schema`) lets a small model
emit newlines until `max_tokens` so the JSON never closes; vLLM's `disable_any_whitespace` forces
`,`/`:`, a layout training never shows.

With whitespace fixed, what is left for a small model to loop in is an unbounded value: a string,
or an array, that repeats until `max_tokens` (measured on BFCL simple_python with the base model:
all 15 invalid answers of 400 were such loops). The grammar therefore bounds what the schema left
unbounded, `GUIDED_MAX_STRING_CHARS` per string, `GUIDED_MAX_ITEMS` per array and
`GUIDED_MAX_PROPERTIES` per free-form object (one that admits keys it does not name), never
loosening a bound the schema sets. Anything inside those bounds is valid under the schema; validation still
uses the schema itself.
"""

from __future__ import annotations

import functools
import json
from typing import Any


GUIDED_MAX_STRING_CHARS = 200  # a longer free-text argument is rare in a structured answer or a tool call
GUIDED_MAX_ITEMS = 16  # items per array the schema leaves unbounded
GUIDED_MAX_PROPERTIES = 16  # keys per object that admits keys it does not name (a BFCL `dict` argument)


def bounded(schema: Any) -> Any:
    """A copy of `schema` with a maxLength on every unbounded string, a maxItems on every unbounded
    array and a maxProperties on every free-form object (the values a model can repeat forever)."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (bounded(v) if k not in ("enum", "const", "default", "examples", "required") else v)
           for k, v in schema.items()}
    if _is_type(out, "string") and "enum" not in out and "const" not in out and "pattern" not in out:
        out["maxLength"] = min(int(out.get("maxLength", GUIDED_MAX_STRING_CHARS)), GUIDED_MAX_STRING_CHARS)
    if _is_type(out, "object") and ("properties" not in out or out.get("additionalProperties") not in (None, False)):
        # strict decoding closes an object that names its properties; one that names none is free-form
        out["maxProperties"] = min(int(out.get("maxProperties", GUIDED_MAX_PROPERTIES)), GUIDED_MAX_PROPERTIES)
        out["maxProperties"] = max(out["maxProperties"], len(out.get("required") or []))
    if _is_type(out, "array"):
        out["maxItems"] = min(int(out.get("maxItems", GUIDED_MAX_ITEMS)), GUIDED_MAX_ITEMS)
        if int(out.get("minItems", 0)) > out["maxItems"]:  # the schema demands more: keep its own
            out["maxItems"] = int(out["minItems"])
    return out


def _is_type(schema: dict[str, Any], name: str) -> bool:
    t = schema.get("type")
    return t == name or (isinstance(t, list) and name in t)


@functools.lru_cache(maxsize=512)
def exact_json_grammar(schema_json: str) -> str:
    """EBNF for JSON valid under `schema_json` in the renderer's layout (no free whitespace)."""
    import xgrammar

    return str(xgrammar.Grammar.from_json_schema(schema_json, any_whitespace=False, strict_mode=True))


def schema_grammar(schema: dict[str, Any]) -> str:
    """`exact_json_grammar` of a schema object, bounded (key order kept: the grammar emits keys in that order)."""
    return exact_json_grammar(json.dumps(bounded(schema), ensure_ascii=False))
