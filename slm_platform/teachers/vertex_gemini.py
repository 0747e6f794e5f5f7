"""Teacher over Gemini on Vertex AI, through the Google Gen AI SDK (`google-genai`).

Why this SDK: the `vertex` extra pins `google-cloud-aiplatform==2.7.0`, whose dependency set
includes `google-genai>=1.66,<3`; its own `vertexai.generative_models` module still ships but warns
that it is deprecated (since 2025-06-24, to be removed). So the client is
`genai.Client(vertexai=True, project=cfg.project, location=cfg.region)`, authenticated with
Application Default Credentials from the environment (`gcloud auth application-default login`,
`GOOGLE_APPLICATION_CREDENTIALS`, or the workload identity of the pod). `teacher.api_key_env` is
not used. The SDK is imported lazily, when the teacher is built; without it the error says
`pip install -e '.[vertex]'`.

    teacher:
      provider: vertex_gemini
      model: gemini-2.5-flash
      project: my-gcp-project
      region: us-central1

Requests (one `models.generate_content(model=, contents=, config=)` per input; `build_request`
returns exactly those three arguments as plain dicts, which is what the cache hashes):
  - contents: `render_messages(contract, input)` (the one renderer); the system message becomes
    `config.system_instruction`, assistant turns role "model", consecutive same-role turns merged.
  - structured role: `response_mime_type="application/json"` and `response_schema=
    to_gemini_schema(contract.guided_schema())` (Gemini's OpenAPI-subset Schema); or, with
    `schema_field="response_json_schema"`, the JSON Schema itself (newer API field).
  - tool_call role: the catalog as `tools=[{"function_declarations": [...]}]` (parameters converted
    with `to_gemini_schema`) and `tool_config.function_calling_config = {"mode": "ANY",
    "allowed_function_names": [...]}`; the output is the first `functionCall` part ({name, args}),
    falling back to text holding {"name", "arguments"} JSON.
The SDK's own retries are off (`http_options.retry_options.attempts=1`); 429 RESOURCE_EXHAUSTED,
5xx, timeouts and connection errors are retried by `BaseTeacher`; 400 INVALID_ARGUMENT is not.
Token usage: `usageMetadata.promptTokenCount`, and `candidatesTokenCount + thoughtsTokenCount`
(thinking tokens are billed as output).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Callable, Literal

from slm_platform.config.models import TeacherBlock
from slm_platform.domain.contract import RoleContract
from slm_platform.domain.render import render_messages
from slm_platform.teachers.base import TeacherError
from slm_platform.teachers.client import (
    BaseTeacher,
    RequestFailure,
    Usage,
    as_tool_call,
    loads_json_object,
    parse_retry_after,
)

log = logging.getLogger("slm_platform.teachers")

INSTALL_HINT = "pip install -e '.[vertex]'"

# --- JSON Schema -> Gemini Schema -----------------------------------------------------------------
_TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
          "array": "ARRAY", "object": "OBJECT", "null": "NULL"}
_FORMATS = {"STRING": {"date-time", "enum"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}


def to_gemini_schema(schema: dict[str, Any], *, keep_additional_properties: bool = False) -> dict[str, Any]:
    """Convert a JSON Schema to the OpenAPI-subset `Schema` Gemini's `response_schema` accepts.

    What Gemini's Schema has: type (one, upper case), nullable, enum (strings only), format (a few),
    title, description, properties, required, propertyOrdering, items, min/maxItems,
    min/maxLength, pattern, minimum, maximum, min/maxProperties, anyOf. Everything else goes:
      - `$schema`, `$id`, `$comment`, `default`, `examples`, `additionalProperties` (unless asked to
        keep it), `uniqueItems`, `multipleOf`, `not`, `if/then/else`, unknown formats: dropped —
        the output is still checked with `contract.validate_output` against the original schema;
      - `const` -> `enum: [value]`; `oneOf` -> `anyOf`; `allOf` -> merged into one schema;
      - `type: [T, "null"]` and `anyOf: [..., {"type": "null"}]` -> `nullable: true`;
        several non-null types -> `anyOf` of one schema per type;
      - an `enum` (or `const`) without `type` gets its type from the values; a non-string enum is
        dropped (Gemini enums are strings) and the type kept;
      - `exclusiveMinimum`/`exclusiveMaximum` -> `minimum`/`maximum` (+/-1 for integers);
      - local `$ref` (`#/$defs/..`, `#/definitions/..`) inlined; a recursive `$ref` is a ValueError
        (Gemini cannot express recursion);
      - objects get `propertyOrdering` = their `properties` order (Gemini emits keys in that order,
        the same order `render_target` trains on); `required` keeps only declared properties.
    """
    if not isinstance(schema, dict):
        raise ValueError(f"a JSON Schema must be an object, found {type(schema).__name__}")
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _convert(schema, defs, (), keep_additional_properties)


def _convert(node: Any, defs: dict[str, Any], stack: tuple[str, ...], keep_ap: bool) -> dict[str, Any]:
    if node is True or node == {}:
        return {}
    if not isinstance(node, dict):
        raise ValueError(f"unsupported schema node {node!r}")
    if "$ref" in node:
        ref = node["$ref"]
        prefix = next((p for p in ("#/$defs/", "#/definitions/") if isinstance(ref, str) and ref.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"only local $ref ('#/$defs/<name>') can be converted for Gemini, found {ref!r}")
        name = ref[len(prefix):]
        if name in stack:
            raise ValueError(f"recursive $ref {ref!r}: Gemini's response_schema cannot express recursion")
        if name not in defs:
            raise ValueError(f"$ref {ref!r} points to no definition")
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs, (*stack, name), keep_ap)
    node = dict(node)
    for sub in node.pop("allOf", None) or []:
        node = _merge(node, _resolve(sub, defs))
    described = {k: node[k] for k in ("title", "description") if isinstance(node.get(k), str)}

    variants = node.get("anyOf", node.get("oneOf"))
    if isinstance(variants, list):
        nullable = any(isinstance(v, dict) and v.get("type") == "null" for v in variants)
        rest = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        converted = [_convert(v, defs, stack, keep_ap) for v in rest]
        out = dict(converted[0]) if len(converted) == 1 else ({"anyOf": converted} if converted else {"type": "NULL"})
        if nullable:
            out["nullable"] = True
        out.update(described)
        return out

    t = node.get("type")
    nullable = bool(node.get("nullable"))
    if isinstance(t, list):
        nullable = nullable or "null" in t
        kinds = [x for x in t if x != "null"]
        if len(kinds) > 1:
            rest = {k: v for k, v in node.items() if k not in ("type", "title", "description")}
            out = {"anyOf": [_convert({**rest, "type": k}, defs, stack, keep_ap) for k in kinds]}
            if nullable:
                out["nullable"] = True
            out.update(described)
            return out
        t = kinds[0] if kinds else "null"

    values = [node["const"]] if "const" in node else node.get("enum")
    if isinstance(values, list):
        nullable = nullable or None in values
        values = [v for v in values if v is not None]
        if t is None:
            t = _type_of_values(values)
    if t is None:
        t = "object" if "properties" in node else "array" if ("items" in node or "prefixItems" in node) else None
    if t is not None and t not in _TYPES:
        raise ValueError(f"unknown JSON Schema type {t!r}")
    gtype = _TYPES.get(t) if t else None

    out: dict[str, Any] = {}
    if gtype:
        out["type"] = gtype
    if nullable:
        out["nullable"] = True
    out.update(described)
    if isinstance(values, list) and values and gtype == "STRING" and all(isinstance(v, str) for v in values):
        out["enum"] = values
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS.get(gtype or "", set()):
        out["format"] = fmt

    if gtype == "STRING":
        _copy(node, out, "minLength", "maxLength", "pattern")
    elif gtype in ("NUMBER", "INTEGER"):
        _copy(node, out, "minimum", "maximum")
        step = 1 if gtype == "INTEGER" else 0
        low, high = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
        if _is_number(low):
            out["minimum"] = max(out.get("minimum", -math.inf), low + step)
        if _is_number(high):
            out["maximum"] = min(out.get("maximum", math.inf), high - step)
    elif gtype == "ARRAY":
        items = node.get("items")
        prefix = node.get("prefixItems") or (items if isinstance(items, list) else None)
        if isinstance(items, dict):
            out["items"] = _convert(items, defs, stack, keep_ap)
        elif prefix:
            tuple_items = [_convert(p, defs, stack, keep_ap) for p in prefix]
            out["items"] = tuple_items[0] if len(tuple_items) == 1 else {"anyOf": tuple_items}
        _copy(node, out, "minItems", "maxItems")
    elif gtype == "OBJECT":
        props = node.get("properties")
        if isinstance(props, dict):
            out["properties"] = {name: _convert(sub, defs, stack, keep_ap) for name, sub in props.items()}
            required = [r for r in node.get("required") or [] if r in props]
            if required:
                out["required"] = required
            if len(props) > 1:
                out["propertyOrdering"] = list(props)
        _copy(node, out, "minProperties", "maxProperties")
        extra = node.get("additionalProperties")
        if keep_ap and extra is not None:
            out["additionalProperties"] = _convert(extra, defs, stack, keep_ap) if isinstance(extra, dict) else extra
    return out


def _resolve(node: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, dict) and isinstance(node.get("$ref"), str):
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in defs:
            return {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node if isinstance(node, dict) else {}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        else:
            out.setdefault(key, value)
    return out


def _type_of_values(values: list[Any]) -> str | None:
    if not values:
        return None
    if all(isinstance(v, str) for v in values):
        return "string"
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "integer"
    if all(_is_number(v) for v in values):
        return "number"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _copy(src: dict[str, Any], dst: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key in src:
            dst[key] = src[key]


# --- the SDK transport ----------------------------------------------------------------------------
_TIMEOUT_NAMES = {"TimeoutException", "ReadTimeout", "ConnectTimeout", "WriteTimeout", "PoolTimeout", "Timeout",
                  "TimeoutError"}
_CONNECTION_NAMES = {"ConnectError", "TransportError", "NetworkError", "RemoteProtocolError", "ReadError",
                     "WriteError", "ConnectionError", "ServerDisconnectedError", "ClientConnectorError"}


def failure_from_exception(exc: BaseException, scrub: Callable[[Any], str] = str) -> RequestFailure:
    """Map what the Google SDK raises to a RequestFailure (duck-typed: no SDK import needed).

    `google.genai.errors.APIError` (ClientError 4xx, ServerError 5xx) carries `code` (HTTP status),
    `status` (e.g. RESOURCE_EXHAUSTED, INVALID_ARGUMENT) and `message`; transport errors come from
    httpx/httpx2 (timeouts, connection errors) or google.auth (RefreshError: credentials).
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 100 <= code < 600:
        status_name = getattr(exc, "status", None)
        message = getattr(exc, "message", None) or str(exc)
        text = f"{status_name}: {message}" if status_name else str(message)
        if code == 400:
            text += " (the request was rejected as invalid; not retried)"
        response = getattr(exc, "response", None)
        return RequestFailure(scrub(text)[:1000], status=code,
                              retry_after=parse_retry_after(getattr(response, "headers", None)))
    if "RefreshError" in names or "DefaultCredentialsError" in names:
        return RequestFailure(scrub(f"Google credentials could not be used ({type(exc).__name__}: {exc}); set up "
                                    "Application Default Credentials (gcloud auth application-default login, or "
                                    "GOOGLE_APPLICATION_CREDENTIALS)")[:1000], status=401)
    if names & _TIMEOUT_NAMES:
        return RequestFailure(f"timed out ({type(exc).__name__})", kind="timeout")
    if names & _CONNECTION_NAMES:
        return RequestFailure(scrub(f"connection error ({type(exc).__name__})"), kind="connection")
    return RequestFailure(scrub(f"the Google SDK refused the request ({type(exc).__name__}: {exc})")[:1000],
                          kind="client")


class GenaiTransport:
    """Sends a request dict through `google.genai.Client(vertexai=True, ...)`; returns the response
    as the REST-shaped dict (camelCase keys) the parser reads."""

    def __init__(self, project: str, location: str, timeout_s: float, *, credentials: Any = None,
                 http_options: dict[str, Any] | None = None):
        try:
            from google import genai
        except ImportError:
            raise TeacherError(
                "provider vertex_gemini needs the Google Gen AI SDK, which is not installed: "
                f"run `{INSTALL_HINT}` (google-cloud-aiplatform, which brings google-genai)") from None
        options: dict[str, Any] = {"timeout": max(1, int(timeout_s * 1000)), "retry_options": {"attempts": 1}}
        options.update(http_options or {})
        error: str | None = None
        try:
            self.client = genai.Client(vertexai=True, project=project, location=location, credentials=credentials,
                                       http_options=options)
        except Exception as exc:  # DefaultCredentialsError and friends: say what to do, once
            error = (f"could not create the Vertex AI client for project {project!r}, region {location!r}: "
                     f"{type(exc).__name__}: {exc}. Credentials come from Application Default Credentials "
                     "(gcloud auth application-default login, GOOGLE_APPLICATION_CREDENTIALS, workload identity).")
        if error is not None:
            raise TeacherError(error)

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        response = self.client.models.generate_content(
            model=request["model"], contents=copy.deepcopy(request["contents"]), config=copy.deepcopy(request["config"]))
        out = response.model_dump(mode="json", by_alias=True, exclude_none=True)
        for noise in ("sdkHttpResponse", "automaticFunctionCallingHistory", "parsed"):
            out.pop(noise, None)
        return out


# --- the teacher ----------------------------------------------------------------------------------
class VertexGeminiTeacher(BaseTeacher):
    provider = "vertex_gemini"

    def __init__(self, cfg: TeacherBlock, *, transport: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 schema_field: Literal["response_schema", "response_json_schema"] = "response_schema",
                 temperature: float | None = 0.0, credentials: Any = None,
                 http_options: dict[str, Any] | None = None, **options: Any):
        if not (cfg.model and cfg.project and cfg.region):
            raise TeacherError("provider vertex_gemini needs teacher.model, teacher.project and teacher.region")
        if schema_field not in ("response_schema", "response_json_schema"):
            raise ValueError(f"schema_field must be 'response_schema' or 'response_json_schema', found {schema_field!r}")
        super().__init__(cfg, secret=None, **options)
        if cfg.api_key_env:
            log.warning("teacher.api_key_env (%s) is not used by vertex_gemini: Vertex AI authenticates with "
                        "Application Default Credentials", cfg.api_key_env)
        self.schema_field = schema_field
        self.temperature = temperature
        self._transport = transport or GenaiTransport(cfg.project, cfg.region, cfg.timeout_s,
                                                      credentials=credentials, http_options=http_options)
        self._schemas: dict[str, Any] = {}

    def credentials_hint(self) -> str:
        return (f"Check Application Default Credentials and that project {self.cfg.project!r} can use model "
                f"{self.model!r} in region {self.cfg.region!r}.")

    def cache_scope(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "project": self.cfg.project, "region": self.cfg.region}

    # --- request ----------------------------------------------------------------------------------
    def build_request(self, contract: RoleContract, input_: dict[str, Any]) -> dict[str, Any]:
        messages = render_messages(contract, input_)
        system = "\n\n".join(m.get("content") or "" for m in messages if m.get("role") == "system")
        contents: list[dict[str, Any]] = []
        for m in messages:
            if m.get("role") == "system":
                continue
            role = "model" if m.get("role") == "assistant" else "user"
            text = m.get("content") or ""
            if contents and contents[-1]["role"] == role:
                contents[-1]["parts"].append({"text": text})
            else:
                contents.append({"role": role, "parts": [{"text": text}]})
        config: dict[str, Any] = {"system_instruction": system}
        if self.temperature is not None:
            config["temperature"] = self.temperature
        config["max_output_tokens"] = self.max_tokens
        if contract.kind == "tool_call":
            config["tools"] = [{"function_declarations": self._declarations(contract)}]
            config["tool_config"] = {"function_calling_config": {
                "mode": "ANY", "allowed_function_names": list(contract.tool_parameters())}}
        else:
            config["response_mime_type"] = "application/json"
            config[self.schema_field] = self._response_schema(contract)
        return {"model": self.model, "contents": contents, "config": config}

    def _response_schema(self, contract: RoleContract) -> dict[str, Any]:
        key = f"schema:{contract.id}"
        if key not in self._schemas:
            schema = contract.guided_schema()
            self._schemas[key] = schema if self.schema_field == "response_json_schema" else to_gemini_schema(schema)
        return copy.deepcopy(self._schemas[key])

    def _declarations(self, contract: RoleContract) -> list[dict[str, Any]]:
        key = f"tools:{contract.id}"
        if key not in self._schemas:
            declarations = []
            for tool in contract.tools or []:
                fn = tool.get("function", tool)
                decl: dict[str, Any] = {"name": fn["name"]}
                if fn.get("description"):
                    decl["description"] = fn["description"]
                params = to_gemini_schema(fn.get("parameters") or {"type": "object"})
                if params.get("properties"):
                    decl["parameters"] = params
                declarations.append(decl)
            self._schemas[key] = declarations
        return copy.deepcopy(self._schemas[key])

    # --- transport --------------------------------------------------------------------------------
    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        failure: RequestFailure | None = None
        try:
            return self._transport(request)
        except RequestFailure as exc:
            failure = exc
        except Exception as exc:
            failure = failure_from_exception(exc, self.scrub)
        raise failure

    # --- response ---------------------------------------------------------------------------------
    def parse(self, contract: RoleContract, response: dict[str, Any]) -> tuple[Any, Usage]:
        meta = _get(response, "usageMetadata", "usage_metadata") or {}
        used = Usage(int(_get(meta, "promptTokenCount", "prompt_token_count") or 0),
                     int(_get(meta, "candidatesTokenCount", "candidates_token_count") or 0)
                     + int(_get(meta, "thoughtsTokenCount", "thoughts_token_count") or 0))
        candidates = response.get("candidates") or []
        if not candidates:  # blocked prompt (promptFeedback.blockReason) or empty answer
            return None, used
        parts = [p for p in ((candidates[0].get("content") or {}).get("parts") or []) if not p.get("thought")]
        text = "".join(p.get("text") or "" for p in parts)
        if contract.kind == "tool_call":
            for part in parts:
                call = _get(part, "functionCall", "function_call")
                if call:
                    return {"name": call.get("name"), "arguments": call.get("args") or {}}, used
            return as_tool_call(text), used
        return loads_json_object(text), used


def _get(obj: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None
