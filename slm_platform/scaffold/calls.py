"""Reading a log of hosted-LLM calls: each line becomes a `LoggedCall` or a `RejectedLine`.

The log is what `slm init` starts a domain from: OpenAI chat-completion logs, one call per line, in
the shapes the `openai_chat` source reads (`{"request": {...}, "response": {...}}`, or the flat
form with `messages` and `choices` / `response` at the top). A call is usable when its request
states a contract (`response_format: {type: json_schema, ...}` or `tools`, legacy `functions`
too) and its response holds the answer (JSON content, or tool calls). Every other line is
rejected with its line number and a reason, never skipped, so `lines = calls + rejected`.

Each usable call is rebuilt as a seed line from a whitelist of fields (model, messages, the
contract, the response's id, created, model and first choice; `metadata.slice` only): headers,
keys, `user` ids and other metadata are not copied, and every string is scrubbed of secrets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from slm_platform.records import json_type
from slm_platform.scaffold.secrets import scrub, scrub_text

RAW_LIMIT = 2000  # characters of a rejected line kept in data/rejected.jsonl

Kind = Literal["structured", "tool_call"]
# why a line was rejected, for the counts `slm init` prints
REJECT_KINDS = ("not_utf8", "blank", "not_json", "not_a_call", "no_response", "no_contract", "bad_contract",
                "bad_answer", "unreadable")

_MESSAGE_KEYS = ("role", "content", "tool_calls", "function_call", "refusal", "tool_call_id")


@dataclass(frozen=True)
class RejectedLine:
    """A line of the log that is not a usable call; `raw` is scrubbed of secrets and cut to RAW_LIMIT."""

    line: int  # 1-based line number in the log
    kind: str  # one of REJECT_KINDS
    reason: str
    raw: str

    def record(self) -> dict[str, Any]:
        return {"line": self.line, "kind": self.kind, "reason": self.reason, "raw": self.raw}


@dataclass(frozen=True)
class LoggedCall:
    """One usable call: its contract as the request stated it, and the seed line rebuilt from it."""

    line: int
    kind: Kind
    schema_name: str | None  # structured: response_format.json_schema.name
    schema: dict[str, Any] | None  # structured: the output JSON Schema
    tools: tuple[dict[str, Any], ...]  # tool_call: the catalog offered, OpenAI tools format
    system_prompt: str | None  # the system (or developer) messages' text, scrubbed
    model: str | None  # request.model (or response.model): the hosted LLM, for the teacher hint
    record: dict[str, Any]  # the seed line the `openai_chat` source reads
    input_chars: int  # text of the non-system messages (for the max_seq_len estimate)
    answer_chars: int  # text of the answer (for the max_tokens estimate)


@dataclass(frozen=True)
class LogScan:
    file: Path
    lines: int  # every line of the file: len(calls) + len(rejected)
    calls: list[LoggedCall]
    rejected: list[RejectedLine]


class _Reject(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def read_log(path: Path) -> LogScan:
    """Scan the whole log (one pass, one line at a time); raises only when the file cannot be opened."""
    calls: list[LoggedCall] = []
    rejected: list[RejectedLine] = []
    lines = 0
    for lineno, text, obj, problem in _lines(Path(path)):
        lines += 1
        if problem is not None:
            rejected.append(RejectedLine(lineno, problem.kind, str(problem), _raw_text(text)))
            continue
        try:
            calls.append(_call(obj, lineno))
        except _Reject as exc:
            rejected.append(RejectedLine(lineno, exc.kind, str(exc), _raw_json(obj)))
    return LogScan(Path(path), lines, calls, rejected)


def _lines(path: Path) -> Iterator[tuple[int, str, Any, _Reject | None]]:
    with open(path, "rb") as fh:
        for lineno, bline in enumerate(fh, 1):
            try:
                text = bline.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, bline.decode("utf-8", "replace"), None, _Reject(
                    "not_utf8", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                yield lineno, text, None, _Reject("blank", "blank line (no call)")
                continue
            try:
                yield lineno, text, json.loads(text.rstrip("\r\n")), None
            except ValueError as exc:
                msg = f"{exc.msg} at col {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                yield lineno, text, None, _Reject("not_json", f"not valid JSON ({msg})")
            except RecursionError:
                yield lineno, text, None, _Reject("not_json", "JSON nested too deeply to parse")


def _raw_text(text: str) -> str:
    return scrub_text(text.rstrip("\r\n"))[:RAW_LIMIT]


def _raw_json(obj: Any) -> str:
    return json.dumps(scrub(_without_personal(obj)), ensure_ascii=False)[:RAW_LIMIT]


def _without_personal(obj: Any) -> Any:
    """A rejected line as the seed would keep it: no `user` ids, no metadata but `metadata.slice`, no
    names on chat messages (what is wrong with the line stays visible)."""
    if type(obj) is not dict:
        return obj
    out = {k: v for k, v in obj.items() if k != "user"}
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: v for k, v in out["metadata"].items() if k == "slice"}
    if isinstance(out.get("messages"), list):
        out["messages"] = [_clean_message(m) if type(m) is dict else m for m in out["messages"]]
    for key in ("request", "response"):
        if type(out.get(key)) is dict:
            out[key] = _without_personal(out[key])
    return out


# --- one line -> one call --------------------------------------------------------------------------
def _call(obj: Any, lineno: int) -> LoggedCall:
    if type(obj) is not dict:
        raise _Reject("not_a_call", f"a JSON {json_type(obj)}; expected an object (one chat-completion log per line)")
    if "request" in obj:
        req, resp = obj["request"], obj.get("response")
    elif "messages" in obj:  # flat: the request at the top, the completion under 'response' or merged in
        req, resp = obj, obj.get("response")
        if resp is None and "choices" in obj:
            resp = obj
    else:
        raise _Reject("not_a_call", "no 'request' object and no 'messages' array; expected an OpenAI chat log "
                                    "{request: {messages, ...}, response: {choices, ...}}")
    if type(req) is not dict:
        raise _Reject("not_a_call", f"'request' is {json_type(req)}; expected an object with 'messages'")
    messages = _messages(req.get("messages"))
    message = _answer_message(resp)
    tools = _tools(req)
    calls = _tool_calls(message)
    schema_name, schema = _json_schema(req.get("response_format"))
    if calls:
        if not tools:
            raise _Reject("no_contract", "the answer is a tool call but the request lists no 'tools'; expected "
                                         "the tool catalog the call was made with")
        if len(calls) != 1:
            raise _Reject("bad_answer", f"{len(calls)} tool calls in the answer; a tool_call role answers with "
                                        "exactly one (parallel tool calls are not supported)")
        kind: Kind = "tool_call"
    elif schema is not None:
        kind = "structured"
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise _Reject("bad_contract", f"response_format.json_schema.schema is not a valid JSON Schema "
                                          f"({exc.message[:120]})") from None
    elif tools:
        raise _Reject("bad_answer", "the request offered tools but the answer is text, not a tool call; a "
                                    "tool_call role answers with exactly one call")
    else:
        raise _Reject("no_contract", _no_contract_reason(req.get("response_format")))
    record = _seed_record(obj, req, resp, messages, message, kind, schema_name, schema, tools)
    inputs = [m for m in messages if m.get("role") not in ("system", "developer")]
    answer_message = record["response"]["choices"][0]["message"]
    answer = json.dumps(calls[0], ensure_ascii=False) if calls else _text(answer_message.get("content"))
    return LoggedCall(
        line=lineno, kind=kind, schema_name=schema_name, schema=schema,
        tools=tuple(tools) if kind == "tool_call" else (),
        system_prompt=_system_prompt(messages), model=_model(req, resp), record=scrub(record, drop_keys=False),
        input_chars=sum(len(_text(m.get("content"))) for m in inputs), answer_chars=len(answer),
    )


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _Reject("not_a_call", "'messages' is missing or empty; expected an array of chat messages")
    for i, m in enumerate(messages):
        if type(m) is not dict or not isinstance(m.get("role"), str):
            raise _Reject("not_a_call", f"messages[{i}] is not a chat message; expected an object with a 'role'")
    if all(m["role"] in ("system", "developer") for m in messages):
        raise _Reject("not_a_call", "no user message; expected at least one message besides the system prompt")
    return messages


def _answer_message(resp: Any) -> dict[str, Any]:
    if resp is None:
        raise _Reject("no_response", "no response; expected the completion under 'response' (or 'choices')")
    if type(resp) is not dict:
        raise _Reject("no_response", f"'response' is {json_type(resp)}; expected a chat completion object")
    choices = resp.get("choices")
    if not choices:
        what = "the call failed (response.error)" if resp.get("error") is not None else "response has no choices"
        raise _Reject("no_response", f"{what}; expected response.choices[0].message with the answer")
    if not isinstance(choices, list) or type(choices[0]) is not dict or type(choices[0].get("message")) is not dict:
        raise _Reject("no_response", "response.choices[0].message is missing; expected an assistant message object")
    return choices[0]["message"]


def _tools(req: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's tool catalog in OpenAI tools format (legacy `functions` converted)."""
    tools = req.get("tools")
    if tools is None and isinstance(req.get("functions"), list):
        tools = [{"type": "function", "function": f} for f in req["functions"]]
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _Reject("bad_contract", f"'tools' is {json_type(tools)}; expected an array of tools")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if type(tool) is dict else None
        if type(fn) is not dict or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _Reject("bad_contract", f"tools[{i}] has no function name; expected "
                                          '{"type": "function", "function": {"name", "parameters"}}')
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if type(params) is not dict:
            raise _Reject("bad_contract", f"tools[{i}].function.parameters is {json_type(params)}; expected a JSON Schema")
        try:
            Draft202012Validator.check_schema(params)
        except SchemaError as exc:
            raise _Reject("bad_contract", f"tools[{i}].function.parameters is not a valid JSON Schema "
                                          f"({exc.message[:120]})") from None
        function = {"name": fn["name"]}
        if isinstance(fn.get("description"), str):
            function["description"] = fn["description"]
        function["parameters"] = params
        if isinstance(fn.get("strict"), bool):
            function["strict"] = fn["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_calls(message: dict[str, Any]) -> list[Any]:
    calls = message.get("tool_calls")
    if calls and isinstance(calls, list):
        return calls
    legacy = message.get("function_call")
    return [{"type": "function", "function": legacy}] if isinstance(legacy, dict) and legacy else []


def _json_schema(rf: Any) -> tuple[str | None, dict[str, Any] | None]:
    if type(rf) is not dict or rf.get("type") != "json_schema":
        return None, None
    spec = rf.get("json_schema")
    if type(spec) is not dict or type(spec.get("schema")) is not dict:
        raise _Reject("bad_contract", "response_format.json_schema has no 'schema' object; expected "
                                      "{type: json_schema, json_schema: {name, schema}}")
    name = spec.get("name")
    return (name if isinstance(name, str) and name else None), spec["schema"]


def _no_contract_reason(rf: Any) -> str:
    if type(rf) is dict and rf.get("type") in ("json_object", "text"):
        return (f"response_format type {rf['type']!r} states no JSON Schema; expected "
                "{type: json_schema, json_schema: {name, schema}} or 'tools'")
    if rf is not None:
        return "response_format is not {type: json_schema, json_schema: {name, schema}}; expected that or 'tools'"
    return "neither response_format (json_schema) nor tools: a free-text call, not a structured or tool call"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _system_prompt(messages: list[dict[str, Any]]) -> str | None:
    parts = [_text(m.get("content")).strip() for m in messages if m["role"] in ("system", "developer")]
    text = "\n\n".join(p for p in parts if p)
    return scrub_text(text) if text else None


def _model(req: dict[str, Any], resp: dict[str, Any]) -> str | None:
    for model in (req.get("model"), resp.get("model")):
        if isinstance(model, str) and model.strip():
            return model.strip()
    return None


# --- the seed line -----------------------------------------------------------------------------------
def _clean_message(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: m[k] for k in _MESSAGE_KEYS if k in m}
    if m.get("role") in ("tool", "function") and isinstance(m.get("name"), str):
        out["name"] = m["name"]  # a tool's name; on user messages 'name' is a person's, not copied
    return out


def _clean_answer(message: dict[str, Any]) -> dict[str, Any]:
    out = _clean_message(message)
    content = out.get("content")
    parts = isinstance(content, list) and all(isinstance(p, dict) and "type" in p for p in content)
    if isinstance(content, (dict, list)) and not parts:
        out["content"] = json.dumps(content, ensure_ascii=False)  # a logger that stored the parsed JSON
    elif content in (None, "") and isinstance(message.get("parsed"), dict) and not out.get("tool_calls"):
        out["content"] = json.dumps(message["parsed"], ensure_ascii=False)  # the SDK's .parse() helper
    if isinstance(out.get("tool_calls"), list):
        out["tool_calls"] = [
            {k: c[k] for k in ("id", "type", "function") if k in c} if isinstance(c, dict) else c for c in out["tool_calls"]
        ]
    return out


def _seed_record(obj: dict[str, Any], req: dict[str, Any], resp: dict[str, Any], messages: list[dict[str, Any]],
                 message: dict[str, Any], kind: Kind, schema_name: str | None, schema: dict[str, Any] | None,
                 tools: list[dict[str, Any]]) -> dict[str, Any]:
    request: dict[str, Any] = {}
    if isinstance(req.get("model"), str):
        request["model"] = req["model"]
    request["messages"] = [_clean_message(m) for m in messages]
    if kind == "structured":
        spec: dict[str, Any] = {"name": schema_name or "output", "schema": schema}
        rf_spec = req["response_format"]["json_schema"]
        if isinstance(rf_spec.get("strict"), bool):
            spec["strict"] = rf_spec["strict"]
        request["response_format"] = {"type": "json_schema", "json_schema": spec}
    else:
        request["tools"] = tools
        if "tool_choice" in req:
            request["tool_choice"] = req["tool_choice"]
    response: dict[str, Any] = {k: resp[k] for k in ("id", "object", "created", "model") if k in resp}
    first = resp["choices"][0]
    choice: dict[str, Any] = {"index": 0, "message": _clean_answer(message)}
    if "finish_reason" in first:
        choice["finish_reason"] = first["finish_reason"]
    response["choices"] = [choice]
    record: dict[str, Any] = {"request": request, "response": response}
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("slice"), dict):
        flat = {k: v for k, v in metadata["slice"].items() if isinstance(v, (str, int, float, bool))}
        if flat:
            record["metadata"] = {"slice": flat}  # the platform's own slicing keys; other metadata stays behind
    return record
