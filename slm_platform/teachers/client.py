"""The machinery every teacher client shares: retries, rate limit, budget, cache, accounting, threads.

A concrete teacher (openai_compatible, vertex_gemini) only says how to build one request from a
role's input, how to send it, and how to read an output and its token usage from the response.
`BaseTeacher.label()` does the rest, per input:

    build request -> cache hit? (free, counted) -> reserve the budget (estimate: request chars / 4
    prompt tokens + max_tokens completion tokens) -> rate limit -> send -> retry 429 / 5xx /
    timeouts / connection errors with exponential backoff + jitter, honouring Retry-After -> cache
    the raw response -> parse -> `contract.validate_output` -> output, or None (counted)

Cost = usage.prompt_tokens x pricing.input_per_1m / 1e6 + usage.completion_tokens x
pricing.output_per_1m / 1e6; a response without usage is charged chars / 4 of request and response
(counted in `usage_estimated`), so a server that reports nothing cannot spend past the budget.

Inputs are labeled on a small thread pool (`concurrency`, default 4); one token bucket per teacher
spaces requests at `rate_limit_rps` across all threads. The budget spans the teacher object (one
labeling run: `teacher_from_config` is called once per dataset build) and is never exceeded
silently: `TeacherBudgetExceeded` says what was spent, the budget and how many inputs were left
unlabeled, and carries the outputs obtained so far (which are also cached, so a rerun with a larger
budget does not pay for them again).

Errors: 401/403/404 (bad key, no access, unknown model or deployment) stop the run with
`TeacherError` — every further request would fail the same way; other 4xx fail only that input
(None, counted in `failures`), without retry. API keys never appear in logs, exceptions, cache
files or stats: every message built from a provider error goes through `Scrubber`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from slm_platform.config.models import TeacherBlock
from slm_platform.domain.contract import RoleContract
from slm_platform.teachers.base import TeacherBudgetExceeded, TeacherError
from slm_platform.teachers.cache import ResponseCache, cache_key

log = logging.getLogger("slm_platform.teachers")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})


# --- errors ---------------------------------------------------------------------------------------
class RequestFailure(Exception):
    """One provider call that failed, described without secrets (providers build it scrubbed)."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "http",
                 retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind  # http | timeout | connection | client (refused before sending) | other
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in ("timeout", "connection") or self.status in RETRYABLE_STATUS or (
            self.status is not None and self.status >= 500)

    @property
    def fatal(self) -> bool:
        """Every further request would fail the same way: stop the run instead of failing each input."""
        return self.status in FATAL_STATUS or self.kind == "client"

    def describe(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else self.kind
        return f"{where}: {self.message}"


class Scrubber:
    """Replaces every configured secret (and its URL-quoted form) in a text with '***'."""

    def __init__(self, *secrets: str | None):
        from urllib.parse import quote

        forms = set()
        for secret in secrets:
            if secret and len(secret) >= 4 and secret != "EMPTY":
                forms.update({secret, quote(secret, safe="")})
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: Any) -> str:
        text = str(text)
        for form in self._forms:
            text = text.replace(form, "***")
        return text


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), if any."""
    if headers is None:
        return None
    get = getattr(headers, "get", None)
    if get is None:
        return None
    raw_ms = get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# --- retries, rate limit, budget ------------------------------------------------------------------
@dataclass
class RetryPolicy:
    max_retries: int = 5
    base_s: float = 0.5  # first backoff; doubles per attempt
    max_s: float = 30.0  # cap of the exponential backoff
    max_retry_after_s: float = 120.0  # cap of a server's Retry-After
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Wait before retry number `attempt + 1`: equal-jitter exponential backoff, never shorter
        than the server's Retry-After (capped at `max_retry_after_s`)."""
        backoff = min(self.max_s, self.base_s * (2 ** attempt))
        backoff = backoff / 2 + self.rng.uniform(0, backoff / 2)
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after_s), backoff)
        return backoff


class TokenBucket:
    """Thread-safe token bucket: `rate` tokens per second, at most `capacity` saved up.

    `acquire()` reserves a token (the balance may go negative: later callers queue behind it), then
    sleeps outside the lock for the computed wait and returns that wait, so N calls at rate R from
    a full bucket of capacity 1 wait 0, 1/R, 2/R, ... in total (N-1)/R.
    """

    def __init__(self, rate: float, capacity: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


class _OverBudget(Exception):
    def __init__(self, estimate: float):
        self.estimate = estimate


class Budget:
    """Spend cap: a request runs only if spent + in flight + its estimate stays within the limit."""

    def __init__(self, limit: float):
        self.limit = limit
        self.spent = 0.0
        self.reserved = 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate: float) -> float:
        with self._lock:
            if self.spent + self.reserved + estimate > self.limit + 1e-12:
                raise _OverBudget(estimate)
            self.reserved += estimate
            return estimate

    def settle(self, reservation: float, actual: float) -> None:
        with self._lock:
            self.reserved = max(0.0, self.reserved - reservation)
            self.spent += actual


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class TeacherStats:
    """What labeling cost and how it went; safe to put in asset metadata (no secrets, no data)."""

    requests: int = 0  # HTTP requests sent (every attempt, retries included)
    cache_hits: int = 0  # inputs answered from the cache, at no cost
    retries: int = 0  # re-sends after 429 / 5xx / timeout / connection errors
    failures: int = 0  # inputs with no response (non-retryable error, or retries exhausted)
    invalid_outputs: int = 0  # responses that did not parse or broke the contract
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # currency units of the pricing block
    labeled: int = 0  # inputs with a valid output
    unlabeled: int = 0  # inputs never asked because the budget ran out or the run stopped
    usage_estimated: int = 0  # responses without token usage (tokens estimated as chars / 4)
    retry_wait_s: float = 0.0
    rate_limit_wait_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        out["cost"] = round(out["cost"], 8)
        out["retry_wait_s"] = round(out["retry_wait_s"], 4)
        out["rate_limit_wait_s"] = round(out["rate_limit_wait_s"], 4)
        return out

    def __deepcopy__(self, memo: dict) -> "TeacherStats":  # locks do not copy
        return TeacherStats(**{k: v for k, v in self.to_dict().items()})


# --- the shared label loop ------------------------------------------------------------------------
@dataclass
class _Outcome:
    output: dict[str, Any] | None = None
    status: str = "unlabeled"  # labeled | invalid | failed | unlabeled


class _Run:
    """State of one `label()` call shared by its worker threads."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.over_budget: float | None = None  # the estimate that did not fit
        self.fatal: str | None = None
        self.rejected_in_a_row = 0  # non-retryable failures since the last response


class BaseTeacher:
    """Subclasses set `provider` and implement build_request / send / parse / cache_scope."""

    provider = "base"
    fatal_hints = {401: "the credentials were rejected", 403: "the credentials have no access to this model",
                   404: "the model, deployment or endpoint does not exist"}

    def __init__(self, cfg: TeacherBlock, *, secret: str | None = None, concurrency: int = 4,
                 max_tokens: int = 1024, cache: ResponseCache | bool | None = True,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0, max_retry_after_s: float = 120.0,
                 limiter: TokenBucket | None = None, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, max_rejections_in_a_row: int = 10):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.cfg = cfg
        self.name = f"{self.provider}:{cfg.model}"
        self.model = cfg.model or ""
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.max_rejections_in_a_row = max_rejections_in_a_row
        self.scrub = Scrubber(secret)
        self.retry = RetryPolicy(cfg.max_retries, backoff_base_s, backoff_max_s, max_retry_after_s,
                                 rng or random.Random())
        self.limiter = limiter or TokenBucket(cfg.rate_limit_rps, sleep=sleep)
        self.budget = Budget(cfg.budget)
        self.stats = TeacherStats()
        self._sleep = sleep
        if cache is True or cache is None:
            self.cache: ResponseCache | None = ResponseCache()
        elif cache is False:
            self.cache = None
        else:
            self.cache = cache

    def __repr__(self) -> str:  # never the client object (it holds the key)
        return f"{type(self).__name__}(model={self.model!r})"

    # --- provider hooks ---------------------------------------------------------------------------
    def build_request(self, contract: RoleContract, input_: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request; return the raw response as JSON-able dict or raise RequestFailure."""
        raise NotImplementedError

    def parse(self, contract: RoleContract, response: dict[str, Any]) -> tuple[Any, Usage]:
        """The candidate output (None when there is none) and the token usage of a response."""
        raise NotImplementedError

    def cache_scope(self) -> dict[str, Any]:
        raise NotImplementedError

    def on_rejected(self, contract: RoleContract, input_: dict[str, Any], request: dict[str, Any],
                    failure: RequestFailure) -> dict[str, Any] | None:
        """A non-retryable failure of `request`: return another request to send instead, or None."""
        return None

    # --- accounting -------------------------------------------------------------------------------
    def cost_of(self, usage: Usage) -> float:
        p = self.cfg.pricing
        return usage.prompt_tokens * p.input_per_1m / 1e6 + usage.completion_tokens * p.output_per_1m / 1e6

    def estimate_cost(self, request: dict[str, Any]) -> float:
        """Upper-bound guess before sending: request chars / 4 prompt tokens, max_tokens completion."""
        chars = len(json.dumps(request, ensure_ascii=False))
        return self.cost_of(Usage(math.ceil(chars / 4), self.max_tokens))

    # --- the loop ---------------------------------------------------------------------------------
    def label(self, contract: RoleContract, inputs: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        run = _Run()
        n = len(inputs)
        if n == 0:
            return []
        workers = min(self.concurrency, n)
        if workers == 1:
            outcomes = [self._label_one(contract, x, run) for x in inputs]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="teacher") as pool:
                outcomes = list(pool.map(lambda x: self._label_one(contract, x, run), inputs))
        outputs = [o.output for o in outcomes]
        counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("labeled", "invalid", "failed", "unlabeled")}
        self.stats.add(labeled=counts["labeled"], unlabeled=counts["unlabeled"])
        log.info("teacher %s role %s: %d inputs, %d labeled, %d invalid, %d failed, %d unlabeled; "
                 "cost so far %.6f of budget %.6f", self.model, contract.id, n, counts["labeled"],
                 counts["invalid"], counts["failed"], counts["unlabeled"], self.budget.spent, self.budget.limit)
        if run.fatal is not None:
            exc = TeacherError(run.fatal)
            exc.outputs = outputs  # type: ignore[attr-defined]
            raise exc
        if run.over_budget is not None:
            exc = TeacherBudgetExceeded(
                f"teacher budget exceeded for {self.name} (role {contract.id!r}): spent {self.budget.spent:.6f} of "
                f"budget {self.budget.limit:.6f}, and the next request was estimated at {run.over_budget:.6f}. "
                f"Of {n} inputs in this call {counts['labeled']} were labeled, {counts['invalid']} invalid, "
                f"{counts['failed']} failed and {counts['unlabeled']} left unlabeled. Raise teacher.budget in "
                f"slm.config.yaml (responses already paid for are cached and will not be paid again).")
            exc.outputs = outputs  # type: ignore[attr-defined]
            exc.spent, exc.budget = self.budget.spent, self.budget.limit  # type: ignore[attr-defined]
            exc.counts = counts  # type: ignore[attr-defined]
            exc.unlabeled = counts["unlabeled"]  # type: ignore[attr-defined]
            raise exc
        return outputs

    def _label_one(self, contract: RoleContract, input_: dict[str, Any], run: _Run) -> _Outcome:
        if run.stop.is_set() and self.cache is None:
            return _Outcome()
        request = self.build_request(contract, input_)
        while True:
            key = cache_key(self.cache_scope(), request) if self.cache is not None else None
            response = self.cache.get(key) if key is not None else None
            if response is not None:
                self.stats.add(cache_hits=1)
                return self._finish(contract, response, charge=False)
            if run.stop.is_set():
                return _Outcome()
            try:
                reservation = self.budget.reserve(self.estimate_cost(request))
            except _OverBudget as over:
                with run.lock:
                    if run.over_budget is None:
                        run.over_budget = over.estimate
                run.stop.set()
                return _Outcome()
            failure = None
            try:
                response = self._send_with_retries(request)
            except RequestFailure as exc:
                failure = exc
                self.budget.settle(reservation, 0.0)
            if failure is None:
                with run.lock:
                    run.rejected_in_a_row = 0
                if key is not None:
                    self.cache.put(key, self.cache_scope(), request, response, scrub=self.scrub)
                return self._finish(contract, response, charge=True, reservation=reservation, request=request)
            if failure.fatal:
                with run.lock:
                    if run.fatal is None:
                        run.fatal = self._fatal_message(failure)
                run.stop.set()
                self.stats.add(failures=1)
                return _Outcome(status="failed")
            if not failure.retryable:
                replacement = self.on_rejected(contract, input_, request, failure)
                if replacement is not None and replacement != request:
                    request = replacement
                    continue
            self.stats.add(failures=1)
            log.warning("teacher %s role %s: request failed, input left without a teacher label (%s)",
                        self.model, contract.id, self.scrub(failure.describe())[:500])
            if not failure.retryable:
                with run.lock:
                    run.rejected_in_a_row += 1
                    if run.rejected_in_a_row >= self.max_rejections_in_a_row and run.fatal is None:
                        run.fatal = self.scrub(
                            f"teacher {self.name} stopped: the last {run.rejected_in_a_row} requests were all rejected "
                            f"and none answered; last error: {failure.describe()[:500]}")
                        run.stop.set()
            return _Outcome(status="failed")

    def _send_with_retries(self, request: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            waited = self.limiter.acquire()
            self.stats.add(requests=1, rate_limit_wait_s=waited)
            try:
                return self.send(request)
            except RequestFailure as failure:
                if not failure.retryable or attempt >= self.retry.max_retries:
                    if failure.retryable:
                        failure.message = f"{failure.message} (gave up after {attempt} retries)"
                    raise
                delay = self.retry.delay(attempt, failure.retry_after)
                log.info("teacher %s: %s; retry %d/%d in %.2fs", self.model, self.scrub(failure.describe())[:300],
                         attempt + 1, self.retry.max_retries, delay)
                self.stats.add(retries=1, retry_wait_s=delay)
                self._sleep(delay)
                attempt += 1

    def _finish(self, contract: RoleContract, response: dict[str, Any], *, charge: bool,
                reservation: float = 0.0, request: dict[str, Any] | None = None) -> _Outcome:
        try:
            candidate, usage = self.parse(contract, response)
        except Exception as exc:  # a malformed response is an invalid output, not a crash
            log.debug("teacher %s: unreadable response (%s)", self.model, type(exc).__name__)
            candidate, usage = None, Usage()
        if charge:
            if usage.prompt_tokens == 0 and usage.completion_tokens == 0 and request is not None:
                # a server that reports no usage still costs something: count chars / 4 both ways
                usage = Usage(math.ceil(len(json.dumps(request, ensure_ascii=False)) / 4),
                              math.ceil(len(json.dumps(response, ensure_ascii=False)) / 4))
                self.stats.add(usage_estimated=1)
            cost = self.cost_of(usage)
            self.budget.settle(reservation, cost)
            self.stats.add(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cost=cost)
        if candidate is None:
            self.stats.add(invalid_outputs=1)
            log.debug("teacher %s role %s: no usable output in the response", self.model, contract.id)
            return _Outcome(status="invalid")
        errors = contract.validate_output(candidate)
        if errors:
            self.stats.add(invalid_outputs=1)
            log.debug("teacher %s role %s: output breaks the contract: %s", self.model, contract.id,
                      self.scrub("; ".join(errors[:3]))[:500])
            return _Outcome(status="invalid")
        return _Outcome(candidate, "labeled")

    def _fatal_message(self, failure: RequestFailure) -> str:
        hint = self.fatal_hints.get(failure.status or 0, "the request cannot be sent")
        return self.scrub(f"teacher {self.name} cannot label: {hint} ({failure.describe()[:500]}). "
                          f"{self.credentials_hint()}")

    def credentials_hint(self) -> str:
        return ""


# --- helpers for parsers --------------------------------------------------------------------------
def loads_json_object(text: Any) -> dict[str, Any] | None:
    """A JSON object from model text (tolerating a ```json fence), or None."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def as_tool_call(value: Any) -> dict[str, Any] | None:
    """Normalize {"name", "arguments"|"parameters"} (arguments possibly a JSON string) to our shape."""
    obj = loads_json_object(value)
    if obj is None or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args = loads_json_object(args) if args.strip() else {}
    if args is None:
        return None
    return {"name": obj["name"], "arguments": args}
