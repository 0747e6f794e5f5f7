"""Capture: every answered request becomes a redacted Turn in the domain's capture inbox.

The request path only appends the `Exchange` to an unbounded in-memory queue (one `deque.append`,
no lock, no system call): unlike the `on_answered` hooks, nothing here is ever dropped, because an
answered request that is not captured is lost training data and a hole in the drift report. Its
size is the `slm_gateway_capture_backlog` gauge. One writer thread takes what queued every
`flush_interval_s` (or sooner when `batch_max` items wait), and per exchange:

1. builds the Turn the capture stage reads (`data.stages.ingest_capture`, format `jsonl`): `id` (the
   request id, or a hash of it when it is not a sane id), `input` (the role input, as training
   renders it), `output` (what the gateway answered), `labels.capture` and `labels.teacher` only
   when the teacher (the hosted model) answered (the champion's or the oracle's own answer is never
   a label), and `meta` with `request_id`, `model`, `route`, `version`,
   `validity` (the evals.metrics scores the drift report reads), `fallbacks` ("<route>:<reason>"),
   `latency_ms`, `upstream_ms`, `day`, `captured_at` and `champion` (the role's champion when the
   request came in, also when another route answered: what automatic demotion judges);
2. redacts it with the domain's `Redactor` (`data.redaction`, the dataset stage's policy), BEFORE
   anything is written;
3. keeps it when the stage's own sampling keeps it: `data.capture.sample_rate` on the hash of the
   (redacted) id, the very test `ingest_capture` applies, so the stage keeps every row written;
4. appends it, as one whole line, to `<inbox>/date=<UTC day>/gateway-<host>-<pid>-<start>.jsonl`:
   a file per gateway process, so replicas sharing an inbox never interleave, and a file per day.

Each batch is written with one `write` per file (whole lines only) and `fsync`ed before the backlog
gauge goes down. `close()` (the app's shutdown, after uvicorn has drained in-flight requests on
SIGTERM) writes everything still queued. A domain whose `data.capture.format` is not `jsonl` is not
captured (the stage would read these files as another format); that is logged once.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from slm_platform import settings
from slm_platform.data.redaction import Redactor
from slm_platform.records import ID_MAX, canonical_json, sampled, stable_hash
from slm_platform.serving.hooks import Exchange
from slm_platform.serving.metrics import GatewayMetrics
from slm_platform.serving.routing import RoleRoute

log = logging.getLogger("slm_platform.serving")

FLUSH_INTERVAL_S = 0.2  # how long an answered request waits in memory at most (plus the write)
BATCH_MAX = 1024  # the writer wakes early when this many wait
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def utc_day(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).strftime("%Y-%m-%d")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def turn_id_of(request_id: str) -> str:
    """The request id as a Turn id (printable, no spaces, at most ID_MAX), else a stable hash of it."""
    if request_id and len(request_id) <= ID_MAX and request_id.isprintable() and " " not in request_id:
        return request_id
    return "req-" + stable_hash(request_id)


class RedactorCache:
    """Each domain's `Redactor`, built again only when its `data.redaction` policy changes (one per
    thread that redacts: capture's writer, the traces' dispatcher)."""

    def __init__(self) -> None:
        self._by_domain: dict[str, tuple[str, Redactor]] = {}  # domain -> (policy JSON, redactor)

    def redacted_turn(self, ex: Exchange, route: RoleRoute) -> dict[str, Any]:
        """The exchange as a capture Turn, redacted with the domain's policy."""
        key = route.redaction.model_dump_json()
        cached = self._by_domain.get(ex.domain)
        if cached is None or cached[0] != key:
            cached = (key, Redactor(route.redaction))
            self._by_domain[ex.domain] = cached
        return cached[1].redact_turn(capture_turn(ex))[0]


def capture_turn(ex: Exchange) -> dict[str, Any]:
    """The Turn of an answered exchange, before redaction."""
    # A capture label is the hosted model's answer (what a log of hosted-LLM calls holds). When the teacher
    # answered, that is what it is; the champion's own answer or the oracle's is not: taken as a label it
    # would train the next version on the model's own mistakes or on the rules. Those turns keep the
    # served answer in `output` and `meta.route` (drift, shadow and demotion read it there) and need a
    # truth label (gold from review, a teacher) to become training rows.
    labels: dict[str, Any] = {"capture": ex.output, "teacher": ex.output} if ex.route == "teacher" else {}
    day = utc_day(ex.received_at)
    return {
        "id": turn_id_of(ex.request_id), "domain": ex.domain, "role": ex.role, "input": ex.input,
        "output": ex.output, "labels": labels, "label_source": None,
        "meta": {"captured_at": _iso(ex.received_at), "source": "gateway", "slice": {},
                 "request_id": ex.request_id, "model": f"{ex.domain}/{ex.role}", "route": ex.route,
                 "version": ex.version, "validity": dict(ex.validity), "fallbacks": list(ex.fallbacks),
                 "latency_ms": round(ex.latency_ms, 3), "upstream_ms": round(ex.upstream_ms, 3), "day": day,
                 "stream": ex.stream, "champion": ex.champion},
    }


def process_name(started_at: float | None = None) -> str:
    """`gateway-<host>-<pid>-<start>`: unique per gateway process, across replicas sharing an inbox."""
    start = datetime.fromtimestamp(started_at or time.time(), tz=timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    host = _SAFE_NAME.sub("_", socket.gethostname())[:63] or "host"
    return f"gateway-{host}-{os.getpid()}-{start}"


class CaptureWriter:
    def __init__(self, metrics: GatewayMetrics, *, flush_interval_s: float = FLUSH_INTERVAL_S,
                 batch_max: int = BATCH_MAX, inbox: Callable[[str, str | None], Path] = settings.inbox_dir):
        self.metrics = metrics
        self.flush_interval_s = flush_interval_s
        self.batch_max = batch_max
        self.inbox = inbox
        self.name = process_name()
        self._items: collections.deque[tuple[Exchange, RoleRoute]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._fds: dict[Path, int] = {}
        self._redactors = RedactorCache()
        self._warned: set[str] = set()
        self.written = 0  # rows appended (for tests and the log line at close)
        self.not_sampled = 0

    # -- the request path ---------------------------------------------------------------------------
    def submit(self, exchange: Exchange, route: RoleRoute) -> None:
        """Never blocks, never drops: one append (thread-safe) and a gauge increment."""
        self._items.append((exchange, route))
        self.metrics.capture_backlog.inc()
        if len(self._items) >= self.batch_max:
            self._wake.set()

    # -- the writer ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="slm-gateway-capture", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write everything queued now; returns the number of exchanges taken off the queue."""
        taken: list[tuple[Exchange, RoleRoute]] = []
        while True:
            try:
                taken.append(self._items.popleft())
            except IndexError:
                break
        if not taken:
            return 0
        lines: dict[Path, list[tuple[str, tuple[Exchange, RoleRoute]]]] = {}
        done = 0
        for item in taken:
            try:
                path, line = self._line(*item)
            except Exception:  # noqa: BLE001 - one bad exchange must not stop capture (no values logged)
                log.exception("capture: request %s could not be turned into a Turn", turn_id_of(item[0].request_id))
                done += 1
                continue
            if path is None:
                done += 1
            else:
                lines.setdefault(path, []).append((line, item))
        for path, batch in lines.items():
            try:
                self._append(path, "".join(line for line, _ in batch).encode("utf-8"))
            except OSError as exc:  # disk full, inbox unmounted: keep them queued and retry (never dropped)
                log.error("capture: cannot write %s (%s); %d answered request(s) stay queued", path, exc.strerror,
                          len(batch))
                self._items.extendleft(item for _, item in reversed(batch))
                fd = self._fds.pop(path, None)
                if fd is not None:
                    os.close(fd)
                continue
            self.written += len(batch)
            done += len(batch)
        self.metrics.capture_backlog.dec(done)
        return done

    def _line(self, ex: Exchange, route: RoleRoute) -> tuple[Path | None, str]:
        cfg = route.capture
        if cfg.format != "jsonl":
            if ex.domain not in self._warned:
                self._warned.add(ex.domain)
                log.warning("capture: %s reads its inbox as %r; the gateway writes Turns (jsonl), so its traffic is "
                            "not captured", ex.domain, cfg.format)
            return None, ""
        turn = self._redactors.redacted_turn(ex, route)
        if not sampled(turn["id"], cfg.sample_rate):
            self.not_sampled += 1
            return None, ""
        folder = self.inbox(ex.domain, cfg.inbox) / f"date={turn['meta']['day']}"
        return folder / f"{self.name}.jsonl", canonical_json(turn) + "\n"

    def _append(self, path: Path, data: bytes) -> None:
        fd = self._fds.get(path)
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            for old in [p for p in self._fds if p.parent != path.parent and p.name == path.name]:
                os.close(self._fds.pop(old))  # yesterday's file of the same domain: done
            self._fds[path] = fd
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued (the app's shutdown, after the in-flight requests are answered)."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.flush()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        log.info("capture: %d answered request(s) written to the inbox by %s (%d not sampled)", self.written,
                 self.name, self.not_sampled)
