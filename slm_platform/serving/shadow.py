"""Shadow traffic: the challenger answers a sampled share of the champion's requests, off the request path.

Which requests: those the SLM champion answered (`x-slm-route: slm`) for a role whose release
pointer names a challenger, sampled at `serving.shadow.rate` by a hash of the request id (so a
retried id is shadowed or not, consistently). The response has already been sent when the request
is offered here: the request path only hashes the id and puts the exchange on the domain's
bounded queue (`serving.shadow.queue_size`); a full queue drops it, counted in
`slm_gateway_shadow_dropped_total` (the queue's depth is `slm_gateway_shadow_queue_depth`).

Who asks: one thread with its own event loop and its own HTTP connection pool to vLLM, at most
`WORKERS` challenger calls at a time. So a challenger that hangs holds shadow connections and
shadow slots only: the queue fills and drops, and no request of the gateway waits on it. Each call
asks the challenger's LoRA adapter exactly as the champion was asked (the challenger package's own
tokenizer and renderer, the same guided schema, offered tools, max_tokens and temperature), with a
deadline of `serving.shadow.timeout_ms`.

What is kept: one pair per shadowed request, `{request_id, model, day, champion: {version, output,
latency_ms, validity}, challenger: {version, output, latency_ms, validity, error, detail},
agreement, exact_match}`: validity is the evals.metrics scores (`fallback.score`, the gateway's own
contract check), `agreement` is `evals.metrics.agreement_rate` of the two outputs (1.0 / 0.0; None
when the challenger gave no output), `exact_match` the challenger scored against the champion's
output as gold. A challenger that fails is a pair too: `error` is `timeout`, `error` (HTTP error,
unreachable, an unreadable body) or `invalid` (an answer that breaks the contract), and `detail`
says which (never a value from the request). Outputs are redacted with the domain's `Redactor`;
the request input is not stored (the request id joins the pair to the captured Turn).

Where: appended to the artifact store under `<domain>/shadow/<day>/` as JSONL, one new object per
batch (`<process>-<seq>.jsonl`), written atomically (a temporary file renamed in place locally, one
object upload on gs://), every `FLUSH_S` seconds and at shutdown. At shutdown, calls still running
after `CLOSE_GRACE_S` are cancelled and recorded with error `shutdown`, and queued requests that
were never sent with `not_sent`, so the file accounts for every shadowed request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from slm_platform.artifacts import ArtifactStore
from slm_platform.data.redaction import Redactor
from slm_platform.evals.metrics import agreement_rate, score_example
from slm_platform.layout import shadow_dir
from slm_platform.records import stable_hash
from slm_platform.serving.capture import process_name, utc_day
from slm_platform.serving.fallback import score
from slm_platform.serving.gateway import Served
from slm_platform.serving.hooks import Exchange
from slm_platform.serving.metrics import GatewayMetrics
from slm_platform.serving.upstreams import UpstreamFailure, VLLMUpstream
from slm_platform.shadow.pairs import ShadowPair, ShadowSide

log = logging.getLogger("slm_platform.serving")

WORKERS = 4  # challenger calls in flight at once (they share the champion's vLLM)
FLUSH_S = 1.0  # pairs are written at least this often
BATCH_MAX = 500  # or as soon as this many wait
CLOSE_GRACE_S = 2.0  # at shutdown, how long running challenger calls may still finish


def shadow_sampled(request_id: str, rate: float) -> bool:
    """Deterministic by request id; salted so it is independent of the capture sample."""
    return rate > 0 and int(stable_hash("shadow\x1f" + request_id, 8), 16) <= int(rate * 0xFFFFFFFF)


@dataclass(frozen=True)
class _Item:
    exchange: Exchange
    served: Served


class ShadowSampler:
    def __init__(self, vllm_url: str, store: ArtifactStore, metrics: GatewayMetrics, *, workers: int = WORKERS,
                 flush_s: float = FLUSH_S):
        self.vllm_url = vllm_url
        self.store = store
        self.metrics = metrics
        self.workers = workers
        self.flush_s = flush_s
        self.name = process_name()
        self._queues: dict[str, queue.Queue[_Item]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._closing = False
        self._pending: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (domain, day) -> pairs to write
        self._pending_lock = threading.Lock()
        self._seq = 0
        self._redactors: dict[str, tuple[str, Redactor]] = {}
        self.pairs_written = 0

    # -- the request path (after the response was sent) ------------------------------------------
    def offer(self, exchange: Exchange, served: Served) -> None:
        route = served.route
        if (route.shadow.rate <= 0 or exchange.route != "slm" or route.challenger is None or self._closing
                or not shadow_sampled(exchange.request_id, route.shadow.rate)):
            return
        q = self._queues.get(route.domain)
        if q is None or q.maxsize != route.shadow.queue_size:  # first use, or serving.shadow.queue_size changed
            q = self._queues[route.domain] = self._resized(q, route.shadow.queue_size)
        try:
            q.put_nowait(_Item(exchange, served))
        except queue.Full:
            self.metrics.shadow_dropped.inc()
            return
        self.metrics.shadow_queue_depth.inc()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def _resized(self, old: queue.Queue | None, size: int) -> queue.Queue:
        new: queue.Queue = queue.Queue(maxsize=size)
        while old is not None:
            try:
                item = old.get_nowait()
            except queue.Empty:
                break
            try:
                new.put_nowait(item)
            except queue.Full:  # the queue shrank: what no longer fits is dropped, and counted
                self.metrics.shadow_dropped.inc()
                self.metrics.shadow_queue_depth.dec()
        return new

    # -- the shadow thread -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._thread_main, name="slm-gateway-shadow", daemon=True)
            self._thread.start()
            self._ready.wait(10)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        upstreams: dict[str, VLLMUpstream] = {}  # vLLM root -> this loop's client (merged challengers: their own)
        slots = asyncio.Semaphore(self.workers)
        running: set[asyncio.Task] = set()
        last_flush = time.monotonic()
        self._ready.set()
        try:
            while not self._closing:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=min(0.1, self.flush_s))
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                while not self._closing and not slots.locked():
                    item = self._next()
                    if item is None:
                        break
                    await slots.acquire()
                    challenger = item.served.route.challenger
                    root = challenger.upstream.root if challenger is not None and challenger.upstream else self.vllm_url
                    if root not in upstreams:
                        upstreams[root] = VLLMUpstream(root, max_connections=self.workers * 2)
                    task = asyncio.create_task(self._ask(upstreams[root], item))
                    running.add(task)
                    task.add_done_callback(lambda t: (running.discard(t), slots.release()))
                if time.monotonic() - last_flush >= self.flush_s or self._pending_count() >= BATCH_MAX:
                    await asyncio.to_thread(self.flush)
                    last_flush = time.monotonic()
            # closing: let running calls finish briefly, then cancel them (recorded as 'shutdown')
            if running:
                await asyncio.wait(set(running), timeout=CLOSE_GRACE_S)
                for task in list(running):
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
            while (item := self._next()) is not None:
                self._record(item, None, 0.0, "not_sent", "the gateway stopped before the challenger was asked", None)
        finally:
            for upstream in upstreams.values():
                await upstream.aclose()

    def _next(self) -> _Item | None:
        for q in list(self._queues.values()):
            try:
                item = q.get_nowait()
            except queue.Empty:
                continue
            self.metrics.shadow_queue_depth.dec()
            return item
        return None

    async def _ask(self, upstream: VLLMUpstream, item: _Item) -> None:
        served = item.served
        route, challenger = served.route, served.route.challenger
        assert challenger is not None
        t0 = time.perf_counter()
        try:
            try:
                ids = challenger.renderer.prompt_ids(served.messages)
                attempt = await upstream.complete(
                    challenger.adapter, ids, served.schema or route.contract.guided_schema(),
                    max_tokens=served.max_tokens, temperature=served.temperature,
                    timeout_s=route.shadow.timeout_ms / 1000)
            except UpstreamFailure as exc:
                self._record(item, None, exc.upstream_ms, exc.reason, exc.detail, None)
                return
            except asyncio.CancelledError:
                self._record(item, None, (time.perf_counter() - t0) * 1000, "shutdown",
                             "the gateway stopped while the challenger was answering", None)
                raise
            except Exception as exc:  # noqa: BLE001 - a broken challenger must never take the gateway down
                self._record(item, None, (time.perf_counter() - t0) * 1000, "error",
                             f"challenger call failed ({type(exc).__name__})", None)
                return
            self._record(item, attempt.output, attempt.upstream_ms, None, None,
                         (attempt.prompt_tokens + attempt.completion_tokens) or None)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("shadow: recording the pair of request %s failed", item.exchange.request_id)

    # -- pairs -------------------------------------------------------------------------------------
    def _record(self, item: _Item, output: dict[str, Any] | None, latency_ms: float, error: str | None,
                detail: str | None, tokens: int | None) -> None:
        ex, served = item.exchange, item.served
        route = served.route
        allowed = set(served.allowed_tools) if served.allowed_tools is not None else None
        validity = score(route, output, allowed) if error not in ("not_sent", "shutdown") else {}
        if error is None and not all(validity.values()):
            bad = sorted(k for k, v in validity.items() if not v)
            error, detail = "invalid", f"output breaks the contract ({', '.join(bad)})"
        exact = (score_example(route.contract.kind, route.contract, output, ex.output).get("exact_match_rate")
                 if output is not None else None)
        pair = ShadowPair(
            request_id=ex.request_id, model=f"{ex.domain}/{ex.role}", day=utc_day(ex.received_at),
            received_at=ex.received_at,
            champion=ShadowSide(version=ex.version, output=ex.output, latency_ms=round(ex.upstream_ms, 3),
                                validity=dict(ex.validity), tokens=(ex.prompt_tokens + ex.completion_tokens) or None),
            challenger=ShadowSide(version=route.challenger.version if route.challenger else ex.challenger,
                                  output=output, latency_ms=round(latency_ms, 3), validity=validity, error=error,
                                  detail=detail, tokens=tokens),
            agreement=agreement_rate([(ex.output, output)]) if output is not None else None,
            exact_match=exact,
        ).model_dump(mode="json")
        pair, _ = self._redactor(route).redact_value(pair)
        with self._pending_lock:
            self._pending.setdefault((ex.domain, pair["day"]), []).append(pair)

    def _redactor(self, route: Any) -> Redactor:
        key = route.redaction.model_dump_json()
        cached = self._redactors.get(route.domain)
        if cached is None or cached[0] != key:
            cached = self._redactors[route.domain] = (key, Redactor(route.redaction))
        return cached[1]

    def _pending_count(self) -> int:
        with self._pending_lock:
            return sum(len(v) for v in self._pending.values())

    def flush(self) -> int:
        """Write every pending pair: one new JSONL object per (domain, day)."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        n = 0
        for (domain, day), pairs in pending.items():
            self._seq += 1
            rel = f"{shadow_dir(domain, day)}/{self.name}-{self._seq:06d}.jsonl"
            data = "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in pairs).encode("utf-8")
            try:
                write_object(self.store, rel, data)
            except OSError as exc:
                log.error("shadow: %d pair(s) of %s/%s not written (%s)", len(pairs), domain, day, exc)
                continue
            n += len(pairs)
        self.pairs_written += n
        return n

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests, settle running calls (CLOSE_GRACE_S), record the rest, write everything."""
        self._closing = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.flush()
        log.info("shadow: %d pair(s) written by %s", self.pairs_written, self.name)


def write_object(store: ArtifactStore, rel: str, data: bytes) -> str:
    """Create one object atomically (a reader sees all of it or nothing); returns its URI."""
    if store.local_root is not None:
        target = store.local_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    else:
        import fsspec

        fs, path = fsspec.core.url_to_fs(store.uri(rel), **store.storage_options)
        fs.pipe_file(path, data)  # one object upload
    return store.uri(rel)
