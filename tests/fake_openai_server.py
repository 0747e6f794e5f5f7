"""A real HTTP server speaking the OpenAI chat-completions protocol, scriptable per test.

    with FakeOpenAIServer() as server:
        server.script(error(429, "slow down", headers={"Retry-After": "0"}), json_reply({"a": 1}))
        ... OpenAI(base_url=server.url) ...
        server.requests[0].body["response_format"], server.requests[0].headers["authorization"]

Replies come from the script queue first (FIFO), then from `server.responder(request) -> Reply`
(default: an empty JSON object as content). A scripted item may also be a callable taking the
recorded request. Every request is recorded (method, path, query, lower-cased headers, JSON body)
before it is answered. The server answers any path, so it also stands in for other JSON APIs.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str -> text as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (client timeouts)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


def completion(content: str | None = None, *, tool_calls: list[dict[str, Any]] | None = None,
               usage: tuple[int, int] = (10, 5), model: str = "fake-model", finish_reason: str = "stop",
               refusal: str | None = None) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    if refusal is not None:
        message["refusal"] = refusal
    return Reply(body={
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]},
    })


def json_reply(obj: Any, **kw: Any) -> Reply:
    return completion(json.dumps(obj), **kw)


def tool_call_reply(name: str, arguments: dict[str, Any], **kw: Any) -> Reply:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    return completion(None, tool_calls=[call], finish_reason="tool_calls", **kw)


def error(status: int, message: str, *, headers: dict[str, str] | None = None,
          type_: str = "invalid_request_error") -> Reply:
    return Reply(status=status, body={"error": {"message": message, "type": type_, "param": None, "code": None}},
                 headers=headers or {})


class FakeOpenAIServer:
    def __init__(self, responder: Callable[[Recorded], Reply] | None = None):
        self.responder: Callable[[Recorded], Reply] = responder or (lambda request: json_reply({}))
        self.requests: list[Recorded] = []
        self._script: list[Reply | Callable[[Recorded], Reply]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-openai", daemon=True)

    # --- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    # --- scripting --------------------------------------------------------------------------------
    def script(self, *replies: Reply | Callable[[Recorded], Reply]) -> None:
        with self._lock:
            self._script.extend(replies)

    def _next(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            item = self._script.pop(0) if self._script else None
        if item is None:
            return self.responder(request)
        return item(request) if callable(item) else item

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                parts = urlsplit(self.path)
                request = Recorded(self.command, parts.path, dict(parse_qsl(parts.query)),
                                   {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                reply = server._next(request)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = payload.encode("utf-8")
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json" if not isinstance(reply.body, str)
                                     else "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            do_POST = _handle
            do_GET = _handle

        return Handler
