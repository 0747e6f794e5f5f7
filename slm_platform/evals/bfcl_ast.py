"""BFCL's AST match for one tool call, written from `shared/notes/bfcl-ast-rules.md` (rules 1-9).

`ast_match(call, ground_truth, functions)` says whether a model's call matches a BFCL
possible-answer entry, and why not when it does not. `strict=True` is the `args_exact_rate`
variant: no string normalisation, no int->float leniency, and values compared with JSON types
(`1` is not `1.0`, `true` is not `1`), so the arguments must equal one combination of the
acceptable values (omission only where `""` is listed).

Inputs
------
- `call`: `{"name": str, "arguments": {...}}` (our Turn output form; exactly these two keys), or a
  list of them (the call count is checked against the gold, rule 2). Anything else fails rule 1.
- `ground_truth`: BFCL's `[{function_name: {param: [acceptable, ...]}}]`.
- `functions`: the offered functions, BFCL-style (`{"name", "parameters": {"type": "dict", ...}}`)
  or OpenAI tools (`{"type": "function", "function": {...}}`, e.g. `bfcl_function_to_tool`'s
  output). Both carry the same type information: the conversion maps `float->number`,
  `dict->object`, `tuple->array` and `any->string` (BFCL itself checks `any` as `str`), so
  `number` is checked as BFCL's `float` and `integer` stays `int`.

Names follow the `.`->`_` convention on both sides (rule 4): OpenAI-style tools cannot carry dots,
so `math.factorial` and `math_factorial` are the same name; otherwise names are case-sensitive.

Value routing follows the value's shape: a dict is checked with the flat-dict rule, a list whose
items are all dicts with the list-of-dicts rule, another list with the ordered-list rule, a
string with the string rule, everything else by membership.
"""

from __future__ import annotations

from typing import Any

from slm_platform.data.sources import bfcl_tool_name

__all__ = ["ast_match", "find_function", "normalize_string", "python_type", "strict_equal"]

# BFCL (original) and JSON Schema (converted) type names -> the Python type a JSON value must have.
_PY_TYPES: dict[str, type] = {
    "string": str, "str": str, "any": str,
    "integer": int, "int": int,
    "float": float, "number": float,
    "boolean": bool, "bool": bool,
    "array": list, "tuple": list, "list": list,
    "dict": dict, "object": dict,
    "null": type(None),
}
_FLOAT_TYPES = frozenset({"float", "number"})
_ARRAY_TYPES = frozenset({"array", "tuple", "list"})
_STRIP = str.maketrans({c: None for c in " ,./-_*^"})
_NO_TYPE = object()


def normalize_string(text: str) -> str:
    """BFCL's string normalisation: drop spaces and `,./-_*^`, lowercase, `'` -> `"`."""
    return text.translate(_STRIP).lower().replace("'", '"')


def python_type(type_desc: Any) -> tuple[type, ...] | None:
    """The Python type(s) a schema `type` asks for; None when it names nothing we check."""
    if isinstance(type_desc, str):
        t = _PY_TYPES.get(type_desc)
        return (t,) if t is not None else None
    if isinstance(type_desc, list):
        ts = tuple(_PY_TYPES[t] for t in type_desc if isinstance(t, str) and t in _PY_TYPES)
        return ts or None
    return None


def _fn_body(fn: dict[str, Any]) -> dict[str, Any]:
    inner = fn.get("function")
    return inner if isinstance(inner, dict) else fn


def find_function(name: str, functions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The function description whose name equals `name` under the `.`->`_` convention."""
    key = bfcl_tool_name(name)
    for fn in functions or []:
        body = _fn_body(fn) if isinstance(fn, dict) else None
        if body is not None and isinstance(body.get("name"), str) and bfcl_tool_name(body["name"]) == key:
            return body
    return None


# --- rule 1/2: decode, count ---------------------------------------------------------------------
def _decode(call: Any) -> list[dict[str, Any]] | str:
    calls = call if isinstance(call, list) else [call]
    for i, c in enumerate(calls):
        where = f"call {i}" if isinstance(call, list) else "call"
        if not isinstance(c, dict):
            return f"{where} is {type(c).__name__}; expected {{name, arguments}}"
        if set(c) != {"name", "arguments"}:
            return f"{where} has keys {sorted(c)}; expected exactly ['arguments', 'name']"
        if not isinstance(c["name"], str):
            return f"{where} name is {type(c['name']).__name__}; expected a string"
        if not isinstance(c["arguments"], dict):
            return f"{where} arguments are {type(c['arguments']).__name__}; expected an object"
    return calls


def ast_match(
    call: Any,
    ground_truth: list[dict[str, Any]],
    functions: list[dict[str, Any]],
    *,
    strict: bool = False,
) -> tuple[bool, str]:
    """(passed, reason when failed) for `call` against BFCL `ground_truth` (rules 1-9; 10 if several calls)."""
    calls = _decode(call)
    if isinstance(calls, str):
        return False, f"decode: {calls}"
    if not isinstance(ground_truth, list) or not all(isinstance(g, dict) and len(g) == 1 for g in ground_truth):
        return False, "ground truth is not a list of {function_name: {param: [acceptable...]}}"
    if len(calls) != len(ground_truth):
        return False, f"call count: expected {len(ground_truth)}, found {len(calls)}"
    if len(calls) == 1:
        return _match_one(calls[0], ground_truth[0], functions, strict)
    # parallel form (rule 10, unused by our roles): each gold call matched by a distinct call, any order
    reasons: list[str] = []

    def assign(g: int, used: frozenset[int]) -> bool:
        if g == len(ground_truth):
            return True
        for i, c in enumerate(calls):
            if i in used:
                continue
            ok, why = _match_one(c, ground_truth[g], functions, strict)
            if ok and assign(g + 1, used | {i}):
                return True
            if not ok:
                reasons.append(why)
        return False

    if assign(0, frozenset()):
        return True, ""
    return False, "parallel: no one-to-one assignment of calls to gold calls" + (f" ({reasons[0]})" if reasons else "")


def _match_one(call: dict[str, Any], gold: dict[str, Any], functions: list[dict[str, Any]],
               strict: bool) -> tuple[bool, str]:
    ((gname, gparams),) = gold.items()
    if not isinstance(gparams, dict):
        return False, f"ground truth of {gname!r} is not {{param: [acceptable...]}}"
    fn = find_function(gname, functions)  # rule 3: check against the gold's function
    if fn is None:
        return False, f"function: the gold's function {gname!r} is not among the offered functions"
    if bfcl_tool_name(call["name"]) != bfcl_tool_name(gname):  # rule 4
        return False, f"function name: expected {bfcl_tool_name(gname)!r}, found {call['name']!r}"
    params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    required = params.get("required") if isinstance(params.get("required"), list) else []
    args = call["arguments"]
    for name in required:  # rule 5
        if name not in args:
            return False, f"missing required parameter {name!r}"
    for name, value in args.items():
        if name not in props:  # rule 6
            return False, f"unexpected parameter {name!r}: not declared in the function's schema"
        if name not in gparams:
            return False, f"unexpected parameter {name!r}: not in the ground truth"
        acceptable = gparams[name] if isinstance(gparams[name], list) else [gparams[name]]
        prop = props[name] if isinstance(props[name], dict) else {}
        ok, why = _check_param(value, prop, acceptable, strict)
        if not ok:
            return False, f"parameter {name!r}: {why}"
    for name, acceptable in gparams.items():  # rule 9
        if name not in args and not (isinstance(acceptable, list) and "" in acceptable):
            return False, f"parameter {name!r} omitted, but the ground truth does not allow omitting it"
    return True, ""


# --- rule 7: types -------------------------------------------------------------------------------
def _gold_type(acceptable: list[Any]) -> Any:
    """The type of the first acceptable value that is not the omission marker ""."""
    for a in acceptable:
        if a != "" or type(a) is not str:
            return type(a)
    return _NO_TYPE


def _check_type(value: Any, prop: dict[str, Any], acceptable: list[Any], strict: bool) -> tuple[Any, str]:
    """(value after the int->float leniency, error or "")."""
    type_desc = prop.get("type")
    expected = python_type(type_desc)
    if expected is None:
        return value, ""
    floats = {type_desc} if isinstance(type_desc, str) else set(type_desc or [])
    if not strict and type(value) is int and (floats & _FLOAT_TYPES) and int not in expected:
        value = float(value)
    if type(value) in expected:
        names = {type_desc} if isinstance(type_desc, str) else set(type_desc)
        if type(value) is list and names & _ARRAY_TYPES:
            return value, _check_items(value, prop.get("items"), acceptable)
        return value, ""
    if type(value) is _gold_type(acceptable):  # the "variable" escape: the gold's own type
        return value, ""
    return value, f"type: expected {type_desc}, found {_json_type(value)}"


def _check_items(value: list[Any], items: Any, acceptable: list[Any]) -> str:
    """Array items one level deep against items.type (with the escape for each acceptable list)."""
    expected = python_type(items.get("type")) if isinstance(items, dict) else None
    if expected is None:
        return ""
    lists = [a for a in acceptable if type(a) is list]
    for cand in lists or [None]:
        escape = _gold_type(cand) if cand is not None else _NO_TYPE
        if all(type(v) in expected or type(v) is escape for v in value):
            return ""
    bad = next(v for v in value if type(v) not in expected)
    return f"type: array items should be {items.get('type')}, found {_json_type(bad)}"


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "dict", type(None): "null"}.get(type(value), type(value).__name__)


# --- rule 8: values ------------------------------------------------------------------------------
def _check_param(value: Any, prop: dict[str, Any], acceptable: list[Any], strict: bool) -> tuple[bool, str]:
    value, err = _check_type(value, prop, acceptable, strict)
    if err:
        return False, err
    if type(value) is dict:
        return _check_dict(value, [a for a in acceptable if type(a) is dict], strict)
    if type(value) is list and value and all(type(v) is dict for v in value):
        return _check_list_of_dicts(value, [a for a in acceptable if type(a) is list], strict)
    if _value_in(value, acceptable, strict):
        return True, ""
    shown = [a for a in acceptable if a != ""]
    return False, f"value {value!r} is not one of the acceptable values {shown!r}" + (
        "" if strict or type(value) not in (str, list) else " (after normalising strings)")


def _norm_elems(items: list[Any]) -> list[Any]:
    return [normalize_string(v) if type(v) is str else v for v in items]


def _value_in(value: Any, acceptable: list[Any], strict: bool) -> bool:
    """Membership for a string, a list, or a number/bool/null (rule 8's scalar and list rules)."""
    if strict:
        return any(strict_equal(value, a) for a in acceptable)
    if type(value) is str:
        v = normalize_string(value)
        return any(type(a) is str and normalize_string(a) == v for a in acceptable)
    if type(value) is list:
        v = _norm_elems(value)
        return any(type(a) is list and _norm_elems(a) == v for a in acceptable)
    return value in acceptable  # Python semantics: 5 == 5.0 after the type check; no tolerance


def _check_dict(value: dict[str, Any], candidates: list[dict[str, Any]], strict: bool) -> tuple[bool, str]:
    """Flat dicts: every given key allowed, each value in its list; omitted keys need ""."""
    if not candidates:
        return False, "value is a dict, but no acceptable value is one"
    why = ""
    for cand in candidates:
        why = _dict_fails(value, cand, strict)
        if not why:
            return True, ""
    return False, why if len(candidates) == 1 else f"matches none of {len(candidates)} acceptable dicts ({why})"


def _dict_fails(value: dict[str, Any], cand: dict[str, Any], strict: bool) -> str:
    for key, v in value.items():
        if key not in cand:
            return f"key {key!r} is not an acceptable key"
        choices = cand[key] if isinstance(cand[key], list) else [cand[key]]
        if not _dict_value_in(v, choices, strict):
            return f"key {key!r}: {v!r} is not one of {[c for c in choices if c != '']!r}"
    for key, choices in cand.items():
        if key not in value and not (isinstance(choices, list) and "" in choices):
            return f"key {key!r} is missing"
    return ""


def _dict_value_in(value: Any, choices: list[Any], strict: bool) -> bool:
    """A dict entry: a string is normalised; any other value (lists included) by plain membership."""
    if strict:
        return any(strict_equal(value, c) for c in choices)
    if type(value) is str:
        v = normalize_string(value)
        return any(type(c) is str and normalize_string(c) == v for c in choices)
    return value in choices


def _check_list_of_dicts(value: list[dict[str, Any]], candidates: list[list[Any]], strict: bool) -> tuple[bool, str]:
    """Same length as an acceptable list, dicts compared pairwise in order with the dict rule."""
    why = "no acceptable value is a list"
    for cand in candidates:
        if len(cand) != len(value):
            why = f"length {len(value)}, expected {len(cand)}"
            continue
        for i, (v, c) in enumerate(zip(value, cand)):
            if type(c) is not dict:
                why = f"item {i}: expected {c!r}"
                break
            fail = _dict_fails(v, c, strict)
            if fail:
                why = f"item {i}: {fail}"
                break
        else:
            return True, ""
    return False, why


def strict_equal(a: Any, b: Any) -> bool:
    """Equality with JSON types kept apart (what canonical-JSON equality gives): 1 != 1.0 != true."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(strict_equal(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return a == b
