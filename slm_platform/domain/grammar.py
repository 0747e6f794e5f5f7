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
`GUIDED_MAX_PROPERTIES` per free-form object (one that admits keys it does not name) and
`GUIDED_MAX_KEY_CHARS` per key it does not name, never loosening a bound the schema sets. A string
format xgrammar writes with unbounded repetitions (an email, a URI, a date-time's fraction of a
second) is decoded through `FORMAT_PATTERNS`, a bounded regex whose every match is valid in that
format; a format xgrammar does not know is a string under the same length bound. Anything inside
those bounds is valid under the schema; validation still uses the schema itself.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

# the formats xgrammar writes its own grammar for; any other it decodes as a plain (bounded) string
from slm_platform.domain.enforceable import ENFORCED_FORMATS


GUIDED_MAX_STRING_CHARS = 200  # a longer free-text argument is rare in a structured answer or a tool call
GUIDED_MAX_ITEMS = 16  # items per array the schema leaves unbounded
GUIDED_MAX_PROPERTIES = 16  # keys per object that admits keys it does not name (a BFCL `dict` argument)
GUIDED_MAX_KEY_CHARS = 64  # characters per key such an object's schema does not name
# Digits of a number the schema gives no range (a range has its own, shorter grammar): enough for any
# int64 and any double written in full, not enough to loop "0.000000000..." until max_tokens.
GUIDED_MAX_INTEGER_DIGITS = 19
GUIDED_MAX_FRACTION_DIGITS = 17
GUIDED_MAX_EXPONENT_DIGITS = 3
UTF8_MAX_BYTES = 4  # a bounded string's characters are unescaped: at most 4 bytes each
JSON_CHAR_MAX_BYTES = 6  # a character a pattern admits may come as a six-byte JSON escape
# xgrammar 0.2.8's compiler fails a check on `[a-f]{1,129}` and above (found on JSONSchemaBench)
PATTERN_MAX_REPEAT = 100
PATTERN_UNBOUNDED = 65535  # a regex width this large comes from an unbounded repetition

# A bounded regex per string format, each match valid in that format (a subset of it: a URI with an
# authority, an email with a dotted domain). Decoding uses it in place of xgrammar's own format
# grammar, whose repetitions are unbounded (a date-time's seconds fraction, an email's local part),
# so such a string closes and its schema has a token budget. Validation still checks the format.
_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_LABEL = r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?"
_HOST = rf"{_LABEL}(\.{_LABEL}){{0,3}}"
# an http(s) URL: a richer URI grammar (any scheme, port, query, fragment) took 7-30 s to compile
# against SmolLM2's vocabulary; this one takes 0.8 s (xgrammar precomputes a token mask per state)
_URI = rf"https?://{_HOST}(/[A-Za-z0-9._~%/-]{{0,64}})?"
FORMAT_PATTERNS = {
    "date": f"^{_DATE}$",
    "time": f"^{_TIME}$",
    "date-time": f"^{_DATE}T{_TIME}$",
    "email": rf"^[A-Za-z0-9_+-]{{1,32}}(\.[A-Za-z0-9_+-]{{1,32}}){{0,3}}@{_LABEL}(\.{_LABEL}){{1,3}}$",
    "hostname": f"^{_HOST}$",
    "uri": f"^{_URI}$",
    "uri-reference": f"^{_URI}$",  # an absolute URI is a URI reference
    "uuid": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "ipv4": r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$",
    "ipv6": r"^([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}$",
}


def bounded(schema: Any) -> Any:
    """A copy of `schema` with a maxLength on every unbounded string, a maxItems on every unbounded
    array and a maxProperties on every free-form object (the values a model can repeat forever)."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (bounded(v) if k not in ("enum", "const", "default", "examples", "required") else v)
           for k, v in schema.items()}
    if isinstance(out.get("patternProperties"), dict):  # its keys are patterns too
        out["patternProperties"] = {bounded_pattern(k): v for k, v in out["patternProperties"].items()}
    if (_is_type(out, "string") and out.get("format") in FORMAT_PATTERNS and "pattern" not in out
            and "minLength" not in out and "maxLength" not in out):
        out["pattern"] = FORMAT_PATTERNS[out.pop("format")]  # bounded, and every match is in the format
    if isinstance(out.get("pattern"), str) and "format" not in out:
        # xgrammar ignores minLength/maxLength beside a pattern: put them into the pattern where it can
        out["pattern"] = bounded_pattern(_pattern_of_length(out["pattern"], out.get("minLength"), out.get("maxLength")))
    if _is_type(out, "string") and "enum" not in out and "const" not in out and "pattern" not in out:
        out["maxLength"] = min(int(out.get("maxLength", GUIDED_MAX_STRING_CHARS)), GUIDED_MAX_STRING_CHARS)
        if isinstance(out.get("minLength"), int) and out["minLength"] > out["maxLength"]:  # never below the schema's
            out["maxLength"] = out["minLength"]
    if (_is_type(out, "object") and not {"properties", "patternProperties", "additionalProperties"} & set(out)):
        out["additionalProperties"] = True  # JSON Schema's open object (strict decoding would close it to {})
    required = [k for k in out.get("required") or [] if isinstance(k, str)] if isinstance(out.get("required"), list) else []
    named = out.get("properties") if isinstance(out.get("properties"), dict) else {}
    missing = [k for k in required if k not in named]
    if missing and ("type" not in out or _is_type(out, "object")) and out.get("additionalProperties") is not False:
        # strict decoding only writes keys the schema names: a required key it does not name is added
        # with the schema any other key would have, else it could never appear
        extra = out.get("additionalProperties")
        out["properties"] = {**named, **{k: extra if isinstance(extra, dict) else {} for k in missing}}
    if _is_type(out, "object") and ("properties" not in out or out.get("additionalProperties") not in (None, False)):
        # strict decoding closes an object that names its properties; one that names none is free-form
        out["maxProperties"] = min(int(out.get("maxProperties", GUIDED_MAX_PROPERTIES)), GUIDED_MAX_PROPERTIES)
        out["maxProperties"] = max(out["maxProperties"], len(out.get("required") or []))
        if "propertyNames" not in out and "patternProperties" not in out:  # a key is a string: bound it too
            out["propertyNames"] = {"maxLength": GUIDED_MAX_KEY_CHARS}
    if _is_type(out, "array"):
        out["maxItems"] = min(int(out.get("maxItems", GUIDED_MAX_ITEMS)), GUIDED_MAX_ITEMS)
        if int(out.get("minItems", 0)) > out["maxItems"]:  # the schema demands more: keep its own
            out["maxItems"] = int(out["minItems"])
    return out


def token_budget(schema: Any) -> int | None:
    """The most tokens any answer `schema_grammar(schema)` admits can take, or None where it leaves a
    value unbounded (a string with a format or pattern, a value of any type, keys it does not name,
    recursion). Every token is at least one byte, so this is the byte length of the longest text the
    grammar admits: with `max_tokens` at least this, a guided answer always closes."""
    return _token_budget_of(json.dumps(schema, ensure_ascii=False))


@functools.lru_cache(maxsize=512)
def _token_budget_of(schema_json: str) -> int | None:
    """Cached by the schema's text, as `exact_json_grammar` is: the gateway asks on every request."""
    schema = bounded(json.loads(schema_json))
    return _max_bytes(schema, schema, ())


def _max_bytes(node: Any, root: Any, refs: tuple[str, ...]) -> int | None:
    if node is True or node == {}:
        return None  # any JSON value
    if node is False or not isinstance(node, dict):
        return 0
    if "const" in node:
        return _json_bytes(node["const"])
    if "enum" in node:
        return max((_json_bytes(v) for v in node["enum"]), default=0)
    if "$ref" in node:
        ref = node["$ref"]
        target = _resolve(root, ref) if ref not in refs else None
        return None if target is None else _max_bytes(target, root, refs + (ref,))
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [_max_bytes({**{k: v for k, v in node.items() if k != key}, **b} if isinstance(b, dict) else b,
                                   root, refs) for b in node[key]]
            return None if not branches or None in branches else max(b for b in branches if b is not None)
    if "allOf" in node or "not" in node or "if" in node or "patternProperties" in node:
        return None  # how xgrammar combines these is not a bound we can state
    types = node.get("type")
    if types is None:
        types = "object" if "properties" in node else "array" if "items" in node or "prefixItems" in node else None
    if types is None:
        return None
    if isinstance(types, list):
        each = [_max_bytes({**node, "type": t}, root, refs) for t in types]
        return None if not each or None in each else max(e for e in each if e is not None)
    if types == "string":
        if "pattern" in node and "format" not in node:
            chars = _pattern_max_chars(node["pattern"])
            return None if chars is None else 2 + JSON_CHAR_MAX_BYTES * chars
        if node.get("format") in ENFORCED_FORMATS or "maxLength" not in node:
            return None  # xgrammar's own format grammar (FORMAT_PATTERNS replaced the ones we bound)
        return 2 + UTF8_MAX_BYTES * int(node["maxLength"])
    if types in ("integer", "number"):
        ranged = [len(json.dumps(node[k])) + 8 for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
                  if isinstance(node.get(k), (int, float))]  # a range's grammar: its bounds' digits, 6 decimals
        full = 1 + GUIDED_MAX_INTEGER_DIGITS
        if types == "number":
            full += 1 + GUIDED_MAX_FRACTION_DIGITS + 2 + GUIDED_MAX_EXPONENT_DIGITS
        return max([full, *ranged])
    if types == "boolean":
        return 5
    if types == "null":
        return 4
    if types == "object":
        extra = node.get("additionalProperties", False)
        props = node.get("properties") or {}
        sizes = [_max_bytes(v, root, refs) for v in props.values()]
        if None in sizes:
            return None
        keys = sum(_json_bytes(k) + 2 for k in props)  # '"key": '
        named = 2 + keys + sum(s for s in sizes if s is not None) + 2 * max(0, len(props) - 1)
        if extra is False or node.get("maxProperties", 1) == 0:
            return named
        key_chars = (node.get("propertyNames") or {}).get("maxLength") if isinstance(node.get("propertyNames"),
                                                                                      dict) else None
        value = _max_bytes({} if extra is True else extra, root, refs)
        if key_chars is None or value is None:
            return None  # keys it does not name are any string, or their values are unbounded
        # every key the object may hold beyond the named ones: '"key": value, '
        return named + int(node.get("maxProperties", GUIDED_MAX_PROPERTIES)) * (
            2 + UTF8_MAX_BYTES * int(key_chars) + 2 + value + 2)
    if types == "array":
        prefix = [_max_bytes(v, root, refs) for v in node.get("prefixItems") or []]
        items = node.get("items", {} if not prefix else False)
        rest = 0 if items is False else int(node.get("maxItems", GUIDED_MAX_ITEMS)) - len(prefix)
        item = _max_bytes(items, root, refs) if rest > 0 else 0
        if None in prefix or item is None:
            return None
        count = len(prefix) + max(0, rest)
        return 2 + sum(p for p in prefix if p is not None) + max(0, rest) * item + 2 * max(0, count - 1)
    return None


def bounded_pattern(pattern: str) -> str:
    """`pattern` with each unbounded repetition (`+`, `*`, `{n,}`) given an upper bound, the bounds
    sharing GUIDED_MAX_STRING_CHARS, and each bound above PATTERN_MAX_REPEAT (`{1,255}`) lowered
    to it: every match of the result matches `pattern`. A pattern this cannot read is returned
    unchanged (and stays unbounded)."""
    spots = _repetitions(pattern)
    if not spots:
        return pattern
    unbounded = sum(high is None for _, _, _, high in spots)
    each = max(1, min(PATTERN_MAX_REPEAT, GUIDED_MAX_STRING_CHARS // max(1, unbounded)))
    out, last = [], 0
    for start, end, low, high in spots:
        out += [pattern[last:start], f"{{{low},{max(low, each if high is None else PATTERN_MAX_REPEAT)}}}"]
        last = end
    result = "".join(out) + pattern[last:]
    return result if _pattern_max_chars(result) is not None else pattern


def _pattern_of_length(pattern: str, min_length: Any, max_length: Any) -> str:
    """`pattern` with its one unbounded repetition bounded so that every match has between
    `min_length` and `max_length` characters, when the rest of the pattern has a fixed width;
    otherwise `pattern` unchanged (the lengths are then validated only)."""
    if not isinstance(max_length, int) and not isinstance(min_length, int):
        return pattern
    spots = [s for s in _repetitions(pattern) if s[3] is None]
    if len(spots) != 1:
        return pattern
    start, end, low, _ = spots[0]
    widths = [_pattern_width(pattern[:start] + f"{{{k}}}" + pattern[end:]) for k in (1, 2)]
    if None in widths or widths[0][0] != widths[0][1] or widths[1][0] != widths[1][1]:  # type: ignore[index]
        return pattern
    atom = widths[1][0] - widths[0][0]  # type: ignore[index]
    rest = widths[0][0] - atom  # type: ignore[index]
    if atom < 1:
        return pattern
    least = max(low, -(-(int(min_length) - rest) // atom)) if isinstance(min_length, int) else low
    most = (int(max_length) - rest) // atom if isinstance(max_length, int) else None
    if most is not None and most < least:
        return pattern
    bound = f"{{{least},{most}}}" if most is not None else f"{{{least},}}"
    return pattern[:start] + bound + pattern[end:]


def _pattern_width(pattern: str) -> tuple[int, int] | None:
    """(shortest, longest) match of a regex by the stdlib's own parser; None if it cannot read it."""
    import re._parser as sre_parse

    try:
        return sre_parse.parse(pattern).getwidth()
    except (re.error, RecursionError, OverflowError):
        return None


def _repetitions(pattern: str) -> list[tuple[int, int, int, int | None]]:
    """(start, end, minimum, maximum) of every `+`, `*` and `{n,}` quantifier outside a character
    class (maximum None), and of every `{n,m}` with m above PATTERN_MAX_REPEAT."""
    spots, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]" or pattern[i + 1:i + 3] == "^]":  # a leading ] is a literal
                i += 2 if pattern[i + 1] == "]" else 3
                continue
        elif c in "+*" and i > 0 and pattern[i - 1] not in "(|":
            spots.append((i, i + 1, 1 if c == "+" else 0, None))
        elif c == "{":
            m = re.match(r"\{(\d+),(\d*)\}", pattern[i:])
            if m and (not m.group(2) or int(m.group(2)) > PATTERN_MAX_REPEAT):
                spots.append((i, i + m.end(), int(m.group(1)), int(m.group(2)) if m.group(2) else None))
                i += m.end()
                continue
        i += 1
    return spots


def _pattern_max_chars(pattern: str) -> int | None:
    """The longest match of a regex, or None when a repetition is unbounded (`+`, `*`, `{n,}`)."""
    width = _pattern_width(pattern)
    return None if width is None or width[1] >= PATTERN_UNBOUNDED else width[1]


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _resolve(root: Any, ref: str) -> Any:
    """A local `#/...` JSON pointer inside `root`; None for anything else (remote, missing)."""
    if not ref.startswith("#"):
        return None
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _is_type(schema: dict[str, Any], name: str) -> bool:
    t = schema.get("type")
    return t == name or (isinstance(t, list) and name in t)


@functools.lru_cache(maxsize=512)
def exact_json_grammar(schema_json: str) -> str:
    """EBNF for JSON valid under `schema_json` in the renderer's layout (no free whitespace)."""
    import xgrammar

    return _bound_numbers(str(xgrammar.Grammar.from_json_schema(schema_json, any_whitespace=False, strict_mode=True)))


# xgrammar's built-in number rules repeat digits without end (`[0-9]*`, `digits{1, -1}`); each is
# rewritten to a bounded repetition. A rule it no longer prints in this form fails loudly (tests).
_NUMBER_RULES = {
    "basic_integer ::= ": ("[1-9] [0-9]*", f"[1-9] [0-9]{{0, {GUIDED_MAX_INTEGER_DIGITS - 1}}}"),
    "basic_number_2 ::= ": ("[1-9] [0-9]*", f"[1-9] [0-9]{{0, {GUIDED_MAX_INTEGER_DIGITS - 1}}}"),
    "basic_number_3 ::= ": ("basic_number_digits{1, -1}", f"basic_number_digits{{1, {GUIDED_MAX_FRACTION_DIGITS}}}"),
    "basic_number_5 ::= ": ("basic_number_digits{1, -1}", f"basic_number_digits{{1, {GUIDED_MAX_EXPONENT_DIGITS}}}"),
}


def _bound_numbers(ebnf: str) -> str:
    lines = ebnf.split("\n")
    for i, line in enumerate(lines):
        for head, (old, new) in _NUMBER_RULES.items():
            if line.startswith(head):
                if old not in line:
                    raise RuntimeError(f"xgrammar's rule {line!r} no longer has {old!r}: update _NUMBER_RULES")
                lines[i] = line.replace(old, new)
    return "\n".join(lines)


def schema_grammar(schema: dict[str, Any]) -> str:
    """`exact_json_grammar` of a schema object, bounded (key order kept: the grammar emits keys in that order)."""
    return exact_json_grammar(json.dumps(bounded(schema), ensure_ascii=False))
