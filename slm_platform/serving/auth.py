"""Bearer API keys and a per-key rate limit.

Keys come from `settings.gateway_api_keys()` (SLM_GATEWAY_API_KEYS or the file named by
SLM_GATEWAY_API_KEYS_FILE). A presented key is compared with every configured key in constant time
(`hmac.compare_digest` on SHA-256 digests, so neither the position of a mismatch nor the key lengths
show in the timing). A key is known afterwards only by a short fingerprint (`key:<8 hex>`), which is
what logs and the rate limiter see: a key never appears in a log. Each key gets a token bucket of
`rps` requests per second with bursts up to `burst`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Callable

from slm_platform.serving.protocol import APIError


def fingerprint(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


class KeyRing:
    def __init__(self, keys: list[str]):
        self._digests = [(hashlib.sha256(k.encode("utf-8")).digest(), fingerprint(k)) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> str:
        """The caller's key fingerprint from an `Authorization: Bearer <key>` header, or a 401."""
        if not self._digests:
            return "anonymous"
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        digest = hashlib.sha256(presented.strip().encode("utf-8")).digest()
        found = None
        for known, name in self._digests:  # every key, always: the loop takes the same time for any input
            if hmac.compare_digest(digest, known):
                found = name
        if found is None:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        return found


class RateLimiter:
    def __init__(self, rps: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rps = rps
        self.burst = max(1.0, burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def check(self, key: str) -> None:
        """Take one token for `key`, or raise 429 with Retry-After."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rps)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rps
            raise APIError(429, f"rate limit of {self.rps:g} requests/s per key exceeded; retry in {wait:.2f} s",
                           code="rate_limit_exceeded", headers={"retry-after": f"{max(1, round(wait + 0.5))}"})
        self._buckets[key] = (tokens - 1.0, now)
