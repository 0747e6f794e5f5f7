"""Content-addressed cache of teacher responses: the same request never costs twice.

Key = sha256 of the canonical JSON of {scope, request}, where scope names the provider, the model
and where it is served (the base URL's host, or the Vertex project and region) and request is the
full request body the provider receives, minus authentication (keys travel in headers or
credentials, never in the body, so nothing secret is hashed or stored). A file is
`<root>/<key[:2]>/<key>.json` holding the scope, the request and the raw response; writes are
atomic (temporary file in the same folder, then rename), so a crash never leaves half a file and
two processes writing the same key both leave a complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from slm_platform import settings
from slm_platform.records import canonical_json

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def default_root() -> Path:
    return settings.home() / "teacher_cache"


def cache_key(scope: dict[str, Any], request: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"scope": scope, "request": request}).encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_root()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response for `key`, or None (missing or unreadable: a miss, never an error)."""
        file = self.path(key)
        try:
            entry = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable teacher cache entry %s (%s)", file, type(exc).__name__)
            return None
        response = entry.get("response") if isinstance(entry, dict) else None
        return response if isinstance(response, dict) else None

    def put(self, key: str, scope: dict[str, Any], request: dict[str, Any], response: dict[str, Any], *,
            scrub: Callable[[str], str] | None = None) -> Path:
        """Store atomically. `scrub` masks secrets in the written text (a response echoing a key)."""
        file = self.path(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        entry = {"format": CACHE_FORMAT, "key": key, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "scope": scope, "request": request, "response": response}
        text = json.dumps(entry, ensure_ascii=False, sort_keys=True)
        if scrub is not None:
            text = scrub(text)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=file.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return file
