"""`on_answered`: what the gateway tells capture and shadow traffic after every answered request.

An `Exchange` is one answered request, typed: who asked what (the role input and the rendered
messages, the prompt ids on the SLM route), what answered (route, version, output), how fast and
how valid. The request path only puts it on a bounded queue (`put_nowait`; a full queue drops it
and counts the drop); one dispatcher thread calls the callbacks, so a slow or failing callback
never delays or changes a response. `close()` drains what is queued: SIGTERM loses nothing that was
answered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("slm_platform.serving")

QUEUE_SIZE = 10_000


@dataclass(frozen=True)
class Exchange:
    request_id: str
    domain: str
    role: str
    route: str  # slm | oracle | teacher
    version: str  # e.g. v0003, oracle, teacher:<model>
    input: dict[str, Any]  # the role input, as a Turn's `input`
    messages: tuple[dict[str, Any], ...]  # rendered by the one renderer (system prompt first)
    prompt_token_ids: tuple[int, ...] | None  # the SLM route's prompt, as sent to vLLM
    output: dict[str, Any]
    latency_ms: float  # the whole request, as the client saw it up to the answer
    upstream_ms: float
    validity: dict[str, bool]  # evals.metrics scores of the output
    fallbacks: tuple[str, ...]  # "<route>:<reason>" for every route passed over
    received_at: float  # epoch seconds
    stream: bool
    champion: str | None  # the champion version of the role when the request came in
    challenger: str | None  # its challenger (what shadow traffic would ask), if any
    prompt_tokens: int = 0  # the answer's usage as its upstream reported it (0: not reported, e.g. the oracle)
    completion_tokens: int = 0
    max_tokens: int | None = None  # the generation settings the request was answered with (None: not bounded)
    temperature: float | None = None


Callback = Callable[[Exchange], None]


class Hooks:
    def __init__(self, on_drop: Callable[[], None] | None = None, on_error: Callable[[], None] | None = None,
                 maxsize: int = QUEUE_SIZE):
        self._callbacks: list[Callback] = []
        self._queue: queue.Queue[Exchange | None] = queue.Queue(maxsize=maxsize)
        self._on_drop = on_drop
        self._on_error = on_error
        self._thread: threading.Thread | None = None

    def register(self, callback: Callback) -> None:
        self._callbacks.append(callback)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="slm-gateway-hooks", daemon=True)
            self._thread.start()

    def emit(self, exchange: Exchange) -> None:
        """Called on the request path: never blocks."""
        if not self._callbacks:
            return
        try:
            self._queue.put_nowait(exchange)
        except queue.Full:
            if self._on_drop is not None:
                self._on_drop()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            for cb in list(self._callbacks):
                try:
                    cb(item)
                except Exception:  # noqa: BLE001 - a hook must never take the gateway down
                    log.exception("on_answered callback %r failed", cb)
                    if self._on_error is not None:
                        self._on_error()

    def close(self, timeout_s: float = 30.0) -> None:
        """Hand every queued exchange to the callbacks, then stop the dispatcher."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None
