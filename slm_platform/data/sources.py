"""Every seed/capture format mapped into the Turn record (see `slm_platform.records`).

`read_source` yields plain Turn dicts, or a `Rejected` for each row it cannot map, so one bad row
never stops a dataset build: the caller quarantines it with its reason and location. Only a
missing file raises. Line-based formats are read one line at a time (constant memory) and parsed
with `json.loads`; every mapped row is then checked against `records.Turn` (`check_turn`: the
domain, a role among the domain's, a sane id, typed labels and meta) before it is yielded.

Rows come from outside and may carry personal data in any field, so a reason says which field was
wrong and what was expected and never quotes a value; the raw row travels in `Rejected.raw` /
`Rejected.value` and the caller redacts it before anything is written (`pipeline.quarantine_row`).

Formats
-------
- `jsonl`        one Turn per line (records.Turn shape); `domain`, `role` and `id` may be omitted.
- `openai_chat`  chat-completion logs, `{"request": {...}, "response": {...}, "metadata"?}` per
                 line, or the flat form `{"messages": [...], "choices": [...], ...}` (also with
                 the completion under `response`).
- `langfuse`     a Langfuse export: traces with full details (`GET /api/public/traces/{id}`
                 shape: `id`, `timestamp`, `observations: [...]`) as a JSON list, `{"data": [...]}`,
                 one trace object, or JSON Lines; bare observations (the observations API / table
                 export) are accepted too. Every `GENERATION` observation becomes one Turn.
- `bfcl`         a BFCL question file plus its possible-answer file, matched by `id`.

Folders: every `*.jsonl` / `*.json` file directly inside, in name order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slm_platform.records import Turn, TurnError, check_turn, safe_key, turn_id
from slm_platform.records import json_type as _jtype

FORMATS = ("jsonl", "openai_chat", "langfuse", "bfcl")
RAW_LIMIT = 2000  # characters of a rejected row kept in quarantine, cut AFTER redaction
RAW_SCAN = 65536  # characters of a rejected row handed to the caller: redaction never sees a value cut short

_TURN_KEYS = tuple(Turn.model_fields)
_TURN_KEY_SET = frozenset(_TURN_KEYS)
_MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "function_call", "refusal", "additional_kwargs"})


@dataclass(frozen=True)
class Rejected:
    """A row that could not be mapped to a Turn; it goes to quarantine with the reason.

    Only `reason` is safe to show as is; `raw`, `value` and (a file name) `location` come from the
    input and are redacted by whoever writes them.
    """

    source: str  # source name from the config
    location: str  # "file.jsonl:17" (1-based line) or "file.json:[3]" (index in the document)
    reason: str  # which field was wrong and what was expected; never quotes a value
    raw: str  # the raw row as text, at most RAW_SCAN characters (unredacted)
    kind: str = "parse_error"  # "unknown_role": role not one of the domain's; "unanswered": a BFCL question without answer
    value: Any = None  # the parsed row when it was JSON (unredacted): redacted field by field, then dumped


class _Bad(Exception):
    """A row-level problem; its message becomes `Rejected.reason` (so it never quotes a value)."""

    def __init__(self, message: str, kind: str = "parse_error"):
        super().__init__(message)
        self.kind = kind


# --- entry point ---------------------------------------------------------------------------------
def read_source(
    path: Path,
    fmt: str,
    *,
    domain: str,
    source: str,
    role: str | None,
    answers: Path | None = None,
    roles: Collection[str] | None = None,
) -> Iterator[dict[str, Any] | Rejected]:
    """Yield one Turn dict (with `meta.source = source`) or one `Rejected` per row of `path`.

    Every yielded dict is a valid `records.Turn` of `domain`; with `roles` (the domain's role ids)
    a row naming another role is rejected with kind "unknown_role". Raises only when `path` (or a
    BFCL answers file) does not exist, or for an unknown `fmt`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    files = _files(path, source)
    check = _checker(domain, roles)
    if fmt == "jsonl":
        return _read_lines(files, source, lambda obj: check(_from_turn_line(obj, domain, role, source)))
    if fmt == "openai_chat":
        return _read_lines(files, source, lambda obj: check(_from_openai_chat(obj, domain, role, source)))
    if fmt == "langfuse":
        return _read_langfuse(files, domain, role, source, check)
    pairs = [(f, _bfcl_answers_file(f, path, Path(answers) if answers is not None else None)) for f in files]
    return _read_bfcl(pairs, domain, role, source, check)


def _checker(domain: str, roles: Collection[str] | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The boundary check every mapped row passes: `records.check_turn`, failures as `_Bad`."""
    allowed = frozenset(roles) if roles is not None else None

    def check(turn: dict[str, Any]) -> dict[str, Any]:
        try:
            check_turn(turn, domain=domain, roles=allowed)
        except TurnError as exc:
            raise _Bad(str(exc), exc.kind) from None
        return turn

    return check


def _files(path: Path, source: str) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".jsonl", ".json"))
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"source {source!r}: {path} does not exist (expected a file or a folder)")


# --- shared helpers ------------------------------------------------------------------------------
def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    """json.loads that also refuses NaN/Infinity (Python accepts them; JSON does not)."""
    return json.loads(text, parse_constant=_bad_constant)


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        if exc.lineno > 1:
            return f"{exc.msg} at line {exc.lineno} col {exc.colno}"
        return f"{exc.msg} at col {exc.colno}"
    return str(exc)


def _line_error(text: str) -> str:
    """The JSON error of one line without its line break (so the position reads 'col N' of that line)."""
    try:
        _loads(text)
    except ValueError as exc:
        return _json_error(exc)
    except RecursionError:
        return "nested too deeply"
    return "unknown error"


def _truncate(text: str) -> str:
    return text if len(text) <= RAW_SCAN else text[:RAW_SCAN]


def _dump_raw(obj: Any) -> str:
    try:
        return _truncate(json.dumps(obj, ensure_ascii=False))
    except (TypeError, ValueError):
        return _truncate(repr(obj))


def _iso_utc(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    dt = dt.astimezone(timezone.utc)
    return dt.isoformat(timespec="seconds" if dt.microsecond == 0 else "milliseconds").replace("+00:00", "Z")


def _unix_to_iso(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"{what} is {_jtype(value)}; expected unix seconds (a number)")
    if value > 1e11:  # milliseconds, as some loggers write
        value = value / 1000.0
    try:
        return _iso_utc(datetime.fromtimestamp(value, tz=timezone.utc))
    except (OverflowError, OSError, ValueError):
        raise _Bad(f"{what} is out of range; expected unix seconds") from None


def _text_to_iso(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} is {_jtype(value)}; expected an ISO-8601 timestamp string")
    try:
        return _iso_utc(datetime.fromisoformat(value))
    except ValueError:
        raise _Bad(f"{what} is not an ISO-8601 timestamp; expected e.g. 2024-05-01T12:00:00Z") from None


def _json_lines(file: Path, source: str) -> Iterator[tuple[int, str, Any] | Rejected]:
    """Stream one JSON Lines file: (line number, line, parsed value), or a Rejected for a bad line."""
    name = file.name
    with open(file, "rb") as fh:
        for lineno, bline in enumerate(fh, 1):
            try:
                line = bline.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Rejected(source, f"{name}:{lineno}", f"line is not valid UTF-8 ({exc.reason} at byte "
                               f"{exc.start}); expected UTF-8 text", _truncate(bline.decode("utf-8", "replace")))
                continue
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            if not line.strip():
                continue
            try:
                yield lineno, line, _loads(line)
            except ValueError:
                text = line.rstrip("\r\n")
                yield Rejected(source, f"{name}:{lineno}", f"line is not valid JSON ({_line_error(text)})",
                               _truncate(text))
            except RecursionError:
                yield Rejected(source, f"{name}:{lineno}", "line is nested too deeply to parse",
                               _truncate(line.rstrip("\r\n")))


def _read_lines(files: list[Path], source: str, convert: Any) -> Iterator[dict[str, Any] | Rejected]:
    """Stream JSON Lines files; `convert(obj)` returns a Turn or raises _Bad."""
    for file in files:
        name = file.name
        for item in _json_lines(file, source):
            if type(item) is Rejected:
                yield item
                continue
            lineno, line, obj = item
            try:
                yield convert(obj)
            except _Bad as exc:
                yield Rejected(source, f"{name}:{lineno}", str(exc), _truncate(line.rstrip("\r\n")), exc.kind, obj)


# --- jsonl: one Turn per line --------------------------------------------------------------------
def _from_turn_line(obj: Any, domain: str, role_default: str | None, source: str) -> dict[str, Any]:
    """Fill in what a Turn line may omit (domain, role, id, meta.source); `check_turn` types the rest."""
    if type(obj) is not dict:
        raise _Bad(f"line is a JSON {_jtype(obj)}; expected an object (one Turn per line)")
    if not _TURN_KEY_SET.issuperset(obj):
        extra = [k for k in obj if k not in _TURN_KEY_SET]
        raise _Bad(f"unknown field(s) {', '.join(safe_key(k) for k in extra[:5])}; a Turn has only "
                   f"{', '.join(_TURN_KEYS)}")
    inp = obj.get("input")
    if type(inp) is not dict:  # needed here: a missing id is derived from the input
        if "input" not in obj:
            raise _Bad("field 'input' missing; expected an object")
        raise _Bad(f"field 'input' is {_jtype(inp)}; expected an object")
    role = obj.get("role")
    if role is None:
        if role_default is None:
            raise _Bad("field 'role' missing and the source names no role; expected a role id "
                       "(in the row, or as data.sources[].role)")
        role = role_default
    labels = obj.get("labels")
    if labels is None:
        labels = {}
    elif type(labels) is dict:
        labels = {k: v for k, v in labels.items() if v is not None}  # a null label is an absent one
    meta = obj.get("meta")
    if meta is None:
        meta = {"source": source, "slice": {}}
    elif type(meta) is dict:
        meta = dict(meta)
        meta["source"] = source
        if meta.get("slice") is None:
            meta["slice"] = {}
        if "captured_at" in meta and meta["captured_at"] is None:
            del meta["captured_at"]  # absent, so a caller's setdefault can fill it
    tid = obj.get("id")
    if tid is None:
        tid = turn_id(domain, role if type(role) is str else "", inp)
    dom = obj.get("domain")
    return {"id": tid, "domain": domain if dom is None else dom, "role": role, "input": inp,
            "output": obj.get("output"), "labels": labels, "label_source": obj.get("label_source"), "meta": meta}


# --- the assistant's answer -> output ------------------------------------------------------------
def _parse_arguments(args: Any, what: str) -> dict[str, Any]:
    if isinstance(args, str):
        try:
            args = _loads(args) if args.strip() else {}
        except ValueError as exc:
            raise _Bad(f"{what} arguments are not valid JSON ({_json_error(exc)}); "
                       "expected a JSON object string") from None
    if type(args) is not dict:
        raise _Bad(f"{what} arguments are a JSON {_jtype(args)}; expected an object")
    return args


def _tool_call_output(calls: list[Any], where: str) -> dict[str, Any]:
    if len(calls) != 1:
        raise _Bad(f"{len(calls)} tool calls in {where}; this role expects exactly one")
    call = calls[0]
    if type(call) is not dict:
        raise _Bad(f"tool call in {where} is {_jtype(call)}; expected an object")
    fn = call.get("function")
    if isinstance(fn, dict):
        name, args = fn.get("name"), fn.get("arguments")
    else:  # LangChain-style {"name", "args"} or {"name", "arguments"}
        name, args = call.get("name"), call.get("arguments", call.get("args"))
    if not isinstance(name, str) or not name:
        raise _Bad(f"tool call in {where} has no function name; expected function.name (a string)")
    return {"name": name, "arguments": _parse_arguments(args, f"tool call in {where}:")}


def _content_output(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") in
                          ("text", "output_text"))
    if not isinstance(content, str):
        raise _Bad(f"assistant content in {where} is {_jtype(content)}; expected a JSON object as text")
    try:
        value = _loads(content)
    except ValueError as exc:
        raise _Bad(f"assistant content in {where} is not valid JSON ({_json_error(exc)}); "
                   "expected a JSON object (free text is not an answer of this role)") from None
    if type(value) is not dict:
        raise _Bad(f"assistant content in {where} is a JSON {_jtype(value)}; expected an object")
    return value


def _message_output(message: dict[str, Any], where: str) -> dict[str, Any]:
    """An assistant message -> the Turn output (tool call wins over content, as clients read it)."""
    calls = message.get("tool_calls")
    extra_kwargs = message.get("additional_kwargs")  # LangChain messages as Langfuse's handler logs them
    if not calls and isinstance(extra_kwargs, dict):
        calls = extra_kwargs.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise _Bad(f"tool_calls in {where} is {_jtype(calls)}; expected an array")
        return _tool_call_output(calls, where)
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and legacy:
        return _tool_call_output([legacy], where)
    content = message.get("content")
    if content is None or content == "":
        refusal = message.get("refusal")
        extra = " (a refusal)" if isinstance(refusal, str) and refusal else ""
        raise _Bad(f"assistant message in {where} has no content and no tool call{extra}; "
                   "expected a JSON object or one tool call")
    return _content_output(content, where)


def _chat_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise _Bad(f"{where} is {_jtype(messages)}; expected an array of chat messages")
    kept = []
    for i, m in enumerate(messages):
        if type(m) is not dict or not isinstance(m.get("role"), str):
            raise _Bad(f"{where}[{i}] is not a chat message; expected an object with a 'role'")
        if m["role"] not in ("system", "developer"):
            kept.append(m)
    if not kept:
        raise _Bad(f"{where} has no non-system message; expected at least one user message")
    return kept


def _role_from(domain: str, role_default: str | None, *metadatas: Any, model: Any = None) -> str | None:
    """The row's own role (metadata.role, or a gateway model name '<domain>/<role>'), else the source's."""
    for md in metadatas:
        if isinstance(md, dict) and isinstance(md.get("role"), str) and md["role"]:
            return md["role"]
    if isinstance(model, str) and model.startswith(domain + "/") and len(model) > len(domain) + 1:
        return model[len(domain) + 1:]
    return role_default


def _slice_from(*metadatas: Any) -> dict[str, Any]:
    for md in metadatas:
        if isinstance(md, dict) and isinstance(md.get("slice"), dict):
            return dict(md["slice"])
    return {}


_NO_ROLE = ("no role: the row names none (metadata.role or model '<domain>/<role>') and the source "
            "names none; expected a role id as data.sources[].role")


# --- openai_chat ---------------------------------------------------------------------------------
def _from_openai_chat(obj: Any, domain: str, role_default: str | None, source: str) -> dict[str, Any]:
    if type(obj) is not dict:
        raise _Bad(f"line is a JSON {_jtype(obj)}; expected an object (one chat-completion log per line)")
    if "request" in obj:
        req, resp = obj["request"], obj.get("response")
        if type(req) is not dict:
            raise _Bad(f"field 'request' is {_jtype(req)}; expected an object with 'messages'")
        where = "request.messages"
    elif "messages" in obj:  # flat: request fields at top level, completion in 'response' or merged
        req = obj
        resp = obj.get("response")
        if resp is None and "choices" in obj:
            resp = obj
        where = "messages"
    else:
        raise _Bad("no 'request' object and no 'messages' array; expected an OpenAI chat log "
                   "{request: {messages, ...}, response: {choices, ...}}")
    messages = _chat_messages(req.get("messages"), where)
    metadata = obj.get("metadata")
    model = req.get("model")
    role = _role_from(domain, role_default, metadata, model=model)
    if role is None:
        raise _Bad(_NO_ROLE)
    inp = {"messages": messages}
    meta: dict[str, Any] = {"source": source, "slice": _slice_from(metadata)}
    output = None
    tid = None
    if resp is not None:
        if type(resp) is not dict:
            raise _Bad(f"field 'response' is {_jtype(resp)}; expected a chat completion object or null")
        rid = resp.get("id")
        if isinstance(rid, str) and rid:
            tid = rid
        if resp.get("created") is not None:
            meta["captured_at"] = _unix_to_iso(resp["created"], "response.created")
        model = resp.get("model") or model
        choices = resp.get("choices")
        if choices:
            if not isinstance(choices, list) or type(choices[0]) is not dict:
                raise _Bad("response.choices is not an array of objects; expected [{message: {...}}]")
            message = choices[0].get("message")
            if type(message) is not dict:
                raise _Bad("response.choices[0].message missing; expected an assistant message object")
            output = _message_output(message, "response.choices[0].message")
        elif "error" not in resp:  # an error response is unlabeled traffic; anything else is malformed
            raise _Bad("response has no choices; expected response.choices[0].message (or null for no response)")
    if tid is None:
        tid = turn_id(domain, role, inp)
    if isinstance(model, str) and model:
        meta["model"] = model
    labels = {"capture": output} if output is not None else {}
    return {"id": tid, "domain": domain, "role": role, "input": inp, "output": output, "labels": labels,
            "label_source": None, "meta": meta}


# --- langfuse ------------------------------------------------------------------------------------
def _read_langfuse(files: list[Path], domain: str, role_default: str | None, source: str,
                   check: Callable[[dict[str, Any]], dict[str, Any]]) -> Iterator[Any]:
    for file in files:
        if file.suffix == ".jsonl":
            yield from _langfuse_lines(file, domain, role_default, source, check)
            continue
        name = file.name
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            yield Rejected(source, name, f"file is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                           "expected UTF-8 JSON", "")
            continue
        if not text.strip():
            continue
        try:
            doc = _loads(text)
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError) and exc.msg == "Extra data":  # JSON Lines named .json
                del text
                yield from _langfuse_lines(file, domain, role_default, source, check)
            else:
                yield Rejected(source, name, f"file is not valid JSON ({_json_error(exc)}); expected a Langfuse "
                               "export (a list of traces, {\"data\": [...]}, or JSON Lines)", _truncate(text))
            continue
        if isinstance(doc, dict) and isinstance(doc.get("data"), list):
            items = doc["data"]
        elif isinstance(doc, list):
            items = doc
        elif isinstance(doc, dict):
            yield from _langfuse_item(doc, name, domain, role_default, source, check)
            continue
        else:
            yield Rejected(source, name, f"file is a JSON {_jtype(doc)}; expected a list of traces or "
                           "{\"data\": [...]}", _truncate(text))
            continue
        for i, item in enumerate(items):
            yield from _langfuse_item(item, f"{name}:[{i}]", domain, role_default, source, check)


def _langfuse_lines(file: Path, domain: str, role_default: str | None, source: str,
                    check: Callable[[dict[str, Any]], dict[str, Any]]) -> Iterator[Any]:
    for item in _json_lines(file, source):
        if type(item) is Rejected:
            yield item
        else:
            yield from _langfuse_item(item[2], f"{file.name}:{item[0]}", domain, role_default, source, check)


def _rejected(source: str, loc: str, reason: str, obj: Any, kind: str = "parse_error") -> Rejected:
    return Rejected(source, loc, reason, _dump_raw(obj), kind, obj)


def _langfuse_item(item: Any, loc: str, domain: str, role_default: str | None, source: str,
                   check: Callable[[dict[str, Any]], dict[str, Any]]) -> Iterator[Any]:
    if type(item) is not dict:
        yield _rejected(source, loc, f"item is a JSON {_jtype(item)}; expected a trace object", item)
        return
    if "observations" not in item:
        if "type" in item and ("traceId" in item or "startTime" in item):  # a bare observation
            if _is_generation(item):
                yield _langfuse_generation(item, None, loc, domain, role_default, source, check)
            return
        yield _rejected(source, loc, "trace has no 'observations'; expected a trace with full details "
                        "(GET /api/public/traces/{id}) or an observation", item)
        return
    observations = item["observations"]
    if not isinstance(observations, list):
        yield _rejected(source, loc, f"field 'observations' is {_jtype(observations)}; expected an array of "
                        "observation objects", item)
        return
    for j, obs in enumerate(observations):
        oloc = f"{loc}.observations[{j}]"
        if type(obs) is not dict:
            what = "an observation id only (the trace list API)" if isinstance(obs, str) else _jtype(obs)
            yield _rejected(source, oloc, f"observation is {what}; expected a full observation object "
                            "(export traces with GET /api/public/traces/{id})", obs)
            continue
        if _is_generation(obs):
            yield _langfuse_generation(obs, item, oloc, domain, role_default, source, check)


def _is_generation(obs: dict[str, Any]) -> bool:
    kind = obs.get("type")
    return isinstance(kind, str) and kind.upper() == "GENERATION"


def _langfuse_generation(obs: dict[str, Any], trace: dict[str, Any] | None, loc: str, domain: str,
                         role_default: str | None, source: str,
                         check: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | Rejected:
    try:
        return check(_langfuse_turn(obs, trace, domain, role_default, source))
    except _Bad as exc:
        return _rejected(source, loc, str(exc), obs, exc.kind)


def _langfuse_turn(obs: dict[str, Any], trace: dict[str, Any] | None, domain: str, role_default: str | None,
                   source: str) -> dict[str, Any]:
    oid = obs.get("id")
    if not isinstance(oid, str) or not oid:
        raise _Bad("generation has no 'id'; expected the observation id (a string)")
    raw_in = obs.get("input")
    if isinstance(raw_in, dict) and "messages" in raw_in:
        messages = _chat_messages(raw_in["messages"], "input.messages")
    elif isinstance(raw_in, list):
        messages = _chat_messages(raw_in, "input")
    else:
        raise _Bad(f"generation input is {_jtype(raw_in)}; expected a list of chat messages or {{messages: [...]}}")
    trace_md = trace.get("metadata") if trace else None
    role = _role_from(domain, role_default, obs.get("metadata"), trace_md, model=obs.get("model"))
    if role is None:
        raise _Bad(_NO_ROLE)
    out = obs.get("output")
    if out is None:
        output = None
    elif isinstance(out, str):
        output = _content_output(out, "output")
    elif isinstance(out, dict):
        # an assistant message, or (manually logged generations) the structured answer itself
        output = _message_output(out, "output") if _MESSAGE_KEYS.intersection(out) else out
    else:
        raise _Bad(f"generation output is {_jtype(out)}; expected an assistant message, a string or null")
    meta: dict[str, Any] = {"source": source, "slice": _slice_from(obs.get("metadata"), trace_md)}
    stamp = obs.get("startTime")
    if stamp is not None:
        meta["captured_at"] = _text_to_iso(stamp, "startTime")
    elif trace and trace.get("timestamp") is not None:
        meta["captured_at"] = _text_to_iso(trace["timestamp"], "trace timestamp")
    trace_id = obs.get("traceId") or (trace.get("id") if trace else None)
    if isinstance(trace_id, str):
        meta["trace_id"] = trace_id
    if isinstance(obs.get("model"), str) and obs["model"]:
        meta["model"] = obs["model"]
    labels = {"capture": output} if output is not None else {}
    return {"id": oid, "domain": domain, "role": role, "input": {"messages": messages}, "output": output,
            "labels": labels, "label_source": None, "meta": meta}


# --- bfcl ----------------------------------------------------------------------------------------
# BFCL's Python type names -> JSON Schema. A `float` parameter accepts an int too (JSON's number does);
# `any` admits every value, so it becomes no `type` at all; a `tuple` is written as a JSON array.
_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "bool": "boolean",
               "list": "array", "int": "integer", "str": "string"}


def bfcl_tool_name(name: str) -> str:
    """BFCL names may contain dots; OpenAI-style tool names may not (BFCL itself maps '.' -> '_')."""
    return name.replace(".", "_")


def _bfcl_schema(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "optional":  # non-standard; `required` already says it
            continue
        if key == "type":
            types = value if isinstance(value, list) else [value]
            if "any" in types:
                continue
            mapped = [_BFCL_TYPES.get(t, t) for t in types]
            out[key] = mapped if isinstance(value, list) else mapped[0]
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _bfcl_schema(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = [_bfcl_schema(v) for v in value] if isinstance(value, list) else _bfcl_schema(value)
        else:
            out[key] = value
    return out


def bfcl_function_to_tool(fn: dict[str, Any]) -> dict[str, Any]:
    """A BFCL function description -> an OpenAI tool with real JSON Schema parameters."""
    params = _bfcl_schema(fn.get("parameters") or {})
    params["type"] = "object"
    params.setdefault("properties", {})
    tool = {"name": bfcl_tool_name(fn["name"])}
    if fn.get("description") is not None:
        tool["description"] = fn["description"]
    tool["parameters"] = params
    return {"type": "function", "function": tool}


def _first_acceptable(value: Any) -> Any:
    """One concrete value out of BFCL's acceptable-set form (dicts map each key to a list of choices)."""
    if isinstance(value, dict):
        out = {}
        for key, choices in value.items():
            if isinstance(choices, list):
                pick = next((c for c in choices if c != ""), "")
                if pick == "" and "" in choices:
                    continue  # may (or must) be omitted
                out[key] = _first_acceptable(pick)
            else:
                out[key] = _first_acceptable(choices)
        return out
    if isinstance(value, list):
        return [_first_acceptable(v) if isinstance(v, dict) else v for v in value]
    return value


def bfcl_gold(call: dict[str, Any]) -> dict[str, Any]:
    """`{function_name: {param: [acceptable...]}}` -> `{"name", "arguments"}` with the first acceptable values."""
    ((name, params),) = call.items()
    return {"name": bfcl_tool_name(name), "arguments": _first_acceptable(params)}


def _bfcl_answers_file(question_file: Path, path: Path, answers: Path | None) -> Path:
    if answers is None:
        base = path if path.is_dir() else path.parent
        candidate = base / "possible_answer" / question_file.name
    elif answers.is_dir():
        candidate = answers / question_file.name
    else:
        candidate = answers
    if not candidate.is_file():
        raise FileNotFoundError(f"BFCL answers for {question_file.name}: {candidate} does not exist "
                                "(set data.sources[].answers to the possible-answer file)")
    return candidate


def _load_bfcl_answers(file: Path) -> tuple[dict[str, Any], list[tuple[int, str, str]]]:
    answers: dict[str, Any] = {}
    problems: list[tuple[int, str, str]] = []
    with open(file, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = _loads(line)
            except (ValueError, RecursionError):
                problems.append((lineno, f"answer line is not valid JSON ({_line_error(line.rstrip())})", line))
                continue
            if isinstance(row, dict) and isinstance(row.get("id"), str):
                answers[row["id"]] = row
            else:
                problems.append((lineno, "answer line has no 'id'; expected {id, ground_truth}", line))
    return answers, problems


def _read_bfcl(pairs: list[tuple[Path, Path]], domain: str, role: str | None, source: str,
               check: Callable[[dict[str, Any]], dict[str, Any]]) -> Iterator[dict[str, Any] | Rejected]:
    loaded: dict[Path, dict[str, Any]] = {}
    for file, afile in pairs:
        if afile not in loaded:
            loaded[afile], problems = _load_bfcl_answers(afile)
            for lineno, reason, line in problems:
                yield Rejected(source, f"{afile.name}:{lineno}", reason, _truncate(line.rstrip("\r\n")))
        table = loaded[afile]
        stem = file.stem.split("BFCL_v4_")[-1].split("BFCL_v3_")[-1]

        def convert(obj: Any, table: dict[str, Any] = table, stem: str = stem) -> dict[str, Any]:
            return check(_from_bfcl(obj, table, stem, domain, role, source))

        yield from _read_lines([file], source, convert)


def _from_bfcl(obj: Any, answers: dict[str, Any], file_category: str, domain: str, role: str | None,
               source: str) -> dict[str, Any]:
    if type(obj) is not dict:
        raise _Bad(f"line is a JSON {_jtype(obj)}; expected a BFCL question {{id, question, function}}")
    qid = obj.get("id")
    if not isinstance(qid, str) or not qid:
        raise _Bad("question has no 'id'; expected a string id matching the answer file")
    if role is None:
        raise _Bad("no role: BFCL rows name none; expected a role id as data.sources[].role")
    question = obj.get("question")
    if not isinstance(question, list) or not question or not isinstance(question[0], list):
        raise _Bad("field 'question' is not a list of turns; expected [[{role, content}, ...]]")
    messages = _chat_messages(question[0], "question[0]")
    functions = obj.get("function")
    if not isinstance(functions, list) or not functions:
        raise _Bad("field 'function' is missing or empty; expected a list of function descriptions")
    try:
        tools = [bfcl_function_to_tool(fn) for fn in functions]
    except (KeyError, TypeError, AttributeError):
        raise _Bad("a function description has no 'name' or is not an object; expected {name, description, "
                   "parameters}") from None
    answer = answers.get(qid)
    if answer is None:
        raise _Bad("question has no answer in the possible-answer file; expected a row with the same id", "unanswered")
    truth = answer.get("ground_truth")
    if not isinstance(truth, list) or not all(isinstance(c, dict) and len(c) == 1 for c in truth):
        raise _Bad("answer ground_truth is not a list of {function_name: {param: [values]}}")
    if len(truth) != 1:
        raise _Bad(f"answer has {len(truth)} expected calls; this role expects exactly one")
    ((_, params),) = truth[0].items()
    if not isinstance(params, dict):
        raise _Bad(f"answer parameters are {_jtype(params)}; expected an object")
    gold = bfcl_gold(truth[0])
    category = qid.rsplit("_", 1)[0] if qid.rsplit("_", 1)[-1].isdigit() else file_category
    return {
        "id": qid,
        "domain": domain,
        "role": role,
        "input": {"messages": messages, "tools": tools},
        "output": None,
        "labels": {"gold": gold},
        "label_source": None,
        "meta": {"source": source, "slice": {"category": category},
                 "bfcl": {"ground_truth": truth, "category": category}},
    }


__all__ = ["FORMATS", "Rejected", "bfcl_function_to_tool", "bfcl_gold", "bfcl_tool_name", "read_source"]
