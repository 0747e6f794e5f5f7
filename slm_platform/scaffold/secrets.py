"""Secrets never leave a log file: what `slm init` writes is scrubbed of credentials first.

Request logs often carry the HTTP headers or the client's settings next to the call (an
`Authorization: Bearer sk-...` header, an `api_key` field). The seed lines are rebuilt from a
whitelist of fields, so those keys are not copied; this module is the second net for everything
else that is written (message texts, rejected lines): keys that name a credential are dropped and
strings that look like one are masked.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[REDACTED_SECRET]"

# keys whose value is a credential (compared lowercased, '-' read as '_')
SECRET_KEYS = frozenset({
    "authorization", "proxy_authorization", "api_key", "apikey", "x_api_key", "openai_api_key", "api_token",
    "access_token", "refresh_token", "id_token", "secret", "client_secret", "secret_key", "password", "cookie",
    "set_cookie", "x_goog_api_key", "bearer_token", "auth_token",
})

_TEXT_PATTERNS = [
    re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI-style keys (sk-..., sk-proj-...)
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),  # Google API keys
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    # key = value / "key": "value" where the key names a credential (also inside text that is not JSON)
    re.compile(r"""(?ix)(["']?(?:authorization|api[_-]?key|x-api-key|access[_-]?token|client[_-]?secret|
                 secret[_-]?key|password)["']?\s*[:=]\s*)("[^"]*"?|'[^']*'?|[^\s,}'"]+)"""),
]


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.strip().lower().replace("-", "_") in SECRET_KEYS


def scrub_text(text: str) -> str:
    """`text` with every credential-looking substring replaced by MASK."""
    for i, pattern in enumerate(_TEXT_PATTERNS):
        if i == len(_TEXT_PATTERNS) - 1:
            text = pattern.sub(lambda m: m.group(1) + (f'"{MASK}"' if m.group(2).startswith('"') else MASK), text)
        else:
            text = pattern.sub(MASK, text)
    return text


def scrub(value: Any, *, drop_keys: bool = True) -> Any:
    """A copy of a parsed JSON value, every string passed through scrub_text and (drop_keys) without
    credential keys. A value rebuilt from a whitelist passes drop_keys=False: its keys are known, and a
    JSON Schema may well have a property named `password` that the contract needs."""
    if isinstance(value, dict):
        return {k: scrub(v, drop_keys=drop_keys) for k, v in value.items() if not (drop_keys and is_secret_key(k))}
    if isinstance(value, list):
        return [scrub(v, drop_keys=drop_keys) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
