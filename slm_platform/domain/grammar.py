"""The grammar of the renderer's layout: guided decoding admits exactly the text training targets have.

`render.render_target` writes every training target with `json.dumps` defaults: one line, `", "`
between items, `": "` after keys, keys in the schema's order. `exact_json_grammar` is the xgrammar
EBNF for JSON valid under a schema with that layout and no free whitespace, and every guided path
uses it: the gateway (vLLM completions), the evals on vLLM (chat completions) and the transformers
engine. A grammar with free whitespace (vLLM's `response_format: json_schema`) lets a small model
emit newlines until `max_tokens` so the JSON never closes; vLLM's `disable_any_whitespace` forces
`,`/`:`, a layout training never shows.
"""

from __future__ import annotations

import functools
import json
from typing import Any


@functools.lru_cache(maxsize=512)
def exact_json_grammar(schema_json: str) -> str:
    """EBNF for JSON valid under `schema_json` in the renderer's layout (no free whitespace)."""
    import xgrammar

    return str(xgrammar.Grammar.from_json_schema(schema_json, any_whitespace=False, strict_mode=True))


def schema_grammar(schema: dict[str, Any]) -> str:
    """`exact_json_grammar` of a schema object (key order kept: the grammar emits keys in that order)."""
    return exact_json_grammar(json.dumps(schema, ensure_ascii=False))
