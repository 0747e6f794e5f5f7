"""Exact and near-duplicate groups for a stream of turns (MinHash + LSH banding).

Turns arrive one at a time, in stream order. Each turn gets a duplicate group and a status:

- ``exact_duplicate``: its normalized text (``records.input_text(turn)`` lowercased and
  whitespace-collapsed, plus the role) is identical to an earlier turn's. Output and labels are
  not part of the key: two identical inputs with different labels are still duplicates (the
  label conflict is the label stage's business).
- ``near_duplicate``: the MinHash estimate of the Jaccard similarity of its word
  ``shingle_size``-shingles with an earlier member of some group (same role) is
  ``>= near_threshold``. A turn that matches several groups joins the earliest one; groups are
  never merged afterwards (earlier turns already carry their group), so chains A ~ B ~ C put C in
  A's group through B even when C is not similar to A.
- ``unique``: it starts a new group and is that group's representative.

The group id is ``stable_hash(<representative's id>)``, so it does not depend on the process.

Implementation (~30 us/turn at the defaults, vs ~50 us for ``datasketch.MinHash`` +
``MinHashLSH`` without the verification and exact-match steps): words are hashed once with xxh3,
word hashes are combined into shingle hashes with numpy, and the ``num_perm`` hash functions are
multiply-add-shift hashes ``(a*h + b) >> 32`` (``a`` odd, 64-bit wrapping arithmetic) evaluated
for all shingles at once; the signature is the per-function minimum (``uint32``; its estimates
are unbiased with the binomial variance, checked on 1,000 pairs). Signatures live in one growing
matrix (low 16 bits kept); LSH band keys are 64-bit hashes of each band in one dict (key -> row,
or list of rows when several members share a band). Candidates are verified by the signature
estimate before a turn joins a group.

Band layout: the largest ``rows`` (with ``bands = num_perm // rows``) whose LSH recall, relative
to verifying every stored signature, is still >= 98% for a pair exactly at the threshold
(computed exactly, see ``lsh_params``). Memory per stored turn: ``2 * num_perm`` bytes of
signature plus ``bands`` dict entries (~85 bytes each) plus one exact-key entry and a group id;
exact duplicates store only their exact key. Measured: ~1.1 KB per turn at the defaults
(~110 MB for 100k turns). Buckets are capped (``MAX_BUCKET`` rows) so a band value
shared by thousands of templated texts cannot make each lookup linear.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import xxhash

from slm_platform.config.models import DedupeBlock
from slm_platform.records import input_text, stable_hash, turn_id

STATUSES: tuple[str, ...] = ("unique", "exact_duplicate", "near_duplicate")
MAX_BUCKET = 64  # rows kept per LSH bucket; beyond this a bucket stops growing
LSH_RECALL = 0.98  # recall of the banding at the threshold, relative to verifying every signature

_h64 = xxhash.xxh3_64_intdigest
_h128 = xxhash.xxh3_128_intdigest


def normalize(text: str) -> str:
    """Lowercased, whitespace-collapsed text: the form compared for exact duplicates."""
    return " ".join(text.lower().split())


def _band_recall(num_perm: int, bands: int, rows: int, threshold: float) -> float:
    """P(some band matches entirely | the signature estimate is >= threshold), at similarity = threshold.

    Positions match independently with probability ``threshold``; given ``k`` mismatching positions
    (uniformly placed), P(no band fully matched) follows from inclusion-exclusion over bands.
    """
    n, s = num_perm, threshold
    max_mismatch = n - math.ceil(threshold * n - 1e-9)
    hit = total = 0.0
    for k in range(max_mismatch + 1):
        p_k = math.comb(n, k) * (1 - s) ** k * s ** (n - k)
        some_band = sum(
            (-1) ** (j + 1) * math.comb(bands, j) * math.comb(n - j * rows, k) for j in range(1, bands + 1)
        )
        hit += p_k * some_band / math.comb(n, k)
        total += p_k
    return hit / total if total > 0 else 1.0


def lsh_params(threshold: float, num_perm: int, recall: float = LSH_RECALL) -> tuple[int, int]:
    """(bands, rows): the most selective banding that keeps ``recall`` at the threshold."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if bands < 1:
            break
        if _band_recall(num_perm, bands, rows, threshold) >= recall:
            best = (bands, rows)
        else:
            break  # recall only falls as rows grow
    return best


class MinHasher:
    """Vectorized MinHash of word shingles: words -> ``uint32[num_perm]`` signature."""

    def __init__(self, num_perm: int = 64, shingle_size: int = 3, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        # odd multipliers that make the word -> shingle combination order-sensitive
        self._k = rng.integers(1, 2**63, size=shingle_size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)

    def shingle_hashes(self, words: list[bytes]) -> np.ndarray:
        n = len(words)
        if n == 0:
            return np.zeros(1, dtype=np.uint64)
        wh = np.fromiter(map(_h64, words), dtype=np.uint64, count=n)
        k = min(self.shingle_size, n)  # a text shorter than a shingle is one shingle
        m = n - k + 1
        h = wh[:m] * self._k[0]
        for j in range(1, k):
            h += wh[j : j + m] * self._k[j]
        h ^= h >> np.uint64(31)
        return h

    def signature(self, words: list[bytes]) -> np.ndarray:
        """Signature of a list of (utf-8 encoded) words."""
        h = self.shingle_hashes(words)
        v = np.multiply.outer(h, self._a)
        v += self._b
        # (a*h + b) >> 32 is monotone in (a*h + b): take the minimum first, shift once
        return (v.min(axis=0) >> np.uint64(32)).astype(np.uint32)


class Deduplicator:
    """Streams turns; ``assign(turn) -> (dup_group, status)``. See the module docstring."""

    def __init__(self, cfg: DedupeBlock | None = None, *, seed: int = 1, capacity: int = 4096) -> None:
        self.cfg = cfg or DedupeBlock()
        self.num_perm = self.cfg.num_perm
        self.threshold = self.cfg.near_threshold
        self.hasher = MinHasher(self.num_perm, self.cfg.shingle_size, seed)
        self.bands, self.rows = lsh_params(self.threshold, self.num_perm)
        # integer form of the verification rule: estimate = matches / num_perm >= threshold
        self._need = math.ceil(self.threshold * self.num_perm - 1e-9)
        rng = np.random.default_rng(seed + 7919)
        mult = rng.integers(1, 2**63, size=(self.bands, self.rows), dtype=np.uint64)
        self._band_mult = mult * np.uint64(2) + np.uint64(1)  # odd, one per (band, row)
        self._role_hash: dict[str, int] = {}
        self._exact: dict[int, int] = {}  # 128-bit hash of role + normalized text -> group index
        self._buckets: dict[int, Any] = {}  # band key -> row index, or list of row indices
        # stored signatures keep the low 16 bits of each minimum: two different minima agree by
        # chance with p = 2^-16, which moves an estimate by < 0.0001 and halves the memory
        self._sigs = np.empty((capacity, self.num_perm), dtype=np.uint16)
        self._row_group = np.empty(capacity, dtype=np.int64)
        self._nrows = 0
        self._group_ids: list[str] = []
        self._group_size: list[int] = []
        self._status_counts = dict.fromkeys(STATUSES, 0)

    # --- the stream -----------------------------------------------------------------------------
    def assign(self, turn: dict[str, Any]) -> tuple[str, str]:
        if not self.cfg.enabled:
            return self._new_group(turn), "unique"
        role = str(turn.get("role") or "")
        role_hash = self._role_hash.get(role)
        if role_hash is None:
            role_hash = self._role_hash[role] = _h64(role.encode("utf-8"))
        norm = normalize(input_text(turn)).encode("utf-8")
        exact_key = _h128(norm, seed=role_hash)

        group = self._exact.get(exact_key)
        if group is not None:
            return self._join(group, "exact_duplicate")

        sig = self.hasher.signature(norm.split(b" ") if norm else [])
        keys = self._band_keys(sig, role_hash)
        sig16 = sig.astype(np.uint16)
        hits = list(map(self._buckets.get, keys))
        group = self._near_group(sig16, hits)
        if group is None:
            gid = self._new_group(turn)
            group = len(self._group_ids) - 1
            status = "unique"
        else:
            gid = self._group_ids[group]
            self._group_size[group] += 1
            status = "near_duplicate"
        self._status_counts[status] += 1
        self._exact[exact_key] = group
        self._store(sig16, keys, hits, group)
        return gid, status

    def drops(self, status: str) -> bool:
        """Whether the config drops a turn with this status (``drop: exact | exact_and_near``)."""
        if status == "exact_duplicate":
            return True
        return status == "near_duplicate" and self.cfg.drop == "exact_and_near"

    # --- stats ----------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        if self.cfg.enabled:
            hist = Counter(self._group_size)
        else:  # every turn is its own group; nothing is stored
            hist = Counter({1: self._status_counts["unique"]} if self._status_counts["unique"] else {})
        return {
            "turns": sum(self._status_counts.values()),
            **self._status_counts,
            "groups": sum(hist.values()),
            "group_size_histogram": {int(k): hist[k] for k in sorted(hist)},
            "largest_group": max(hist, default=0),
            "signatures": self._nrows,  # stored rows: unique + near duplicates (exact ones store none)
            "lsh": {"bands": self.bands, "rows": self.rows, "num_perm": self.num_perm},
        }

    # --- internals ------------------------------------------------------------------------------
    def _new_group(self, turn: dict[str, Any]) -> str:
        tid = turn.get("id")
        if tid is None:
            tid = turn_id(str(turn.get("domain") or ""), str(turn.get("role") or ""), turn.get("input") or {})
        gid = stable_hash(str(tid))
        if self.cfg.enabled:
            self._group_ids.append(gid)
            self._group_size.append(1)
        else:
            self._status_counts["unique"] += 1
        return gid

    def _join(self, group: int, status: str) -> tuple[str, str]:
        self._group_size[group] += 1
        self._status_counts[status] += 1
        return self._group_ids[group], status

    def _band_keys(self, sig: np.ndarray, role_hash: int) -> list[int]:
        bands = sig[: self.bands * self.rows].reshape(self.bands, self.rows).astype(np.uint64)
        bands *= self._band_mult
        keys = bands.sum(axis=1, dtype=np.uint64)
        keys ^= np.uint64(role_hash)  # near duplicates only within a role
        return keys.tolist()

    def _near_group(self, sig16: np.ndarray, hits: list[Any]) -> int | None:
        cands: set[int] = set()
        for hit in hits:
            if hit is None:
                continue
            if type(hit) is int:
                cands.add(hit)
            else:
                cands.update(hit)
        if not cands:
            return None
        rows = np.fromiter(cands, dtype=np.int64, count=len(cands))
        matches = np.count_nonzero(self._sigs[rows] == sig16, axis=1)
        ok = rows[matches >= self._need]
        if ok.size == 0:
            return None
        return int(self._row_group[ok].min())  # groups are numbered in stream order: earliest

    def _store(self, sig16: np.ndarray, keys: list[int], hits: list[Any], group: int) -> None:
        """Append the signature and index its bands (``hits``: each key's bucket before this turn)."""
        row = self._nrows
        if row == self._sigs.shape[0]:
            cap = 2 * row
            sigs = np.empty((cap, self.num_perm), dtype=np.uint16)
            sigs[:row] = self._sigs
            rg = np.empty(cap, dtype=np.int64)
            rg[:row] = self._row_group
            self._sigs, self._row_group = sigs, rg
        self._sigs[row] = sig16
        self._row_group[row] = group
        self._nrows = row + 1
        buckets = self._buckets
        for key, hit in zip(keys, hits):
            if hit is None:
                buckets[key] = row
            elif type(hit) is int:
                buckets[key] = [hit, row]
            elif len(hit) < MAX_BUCKET and hit[-1] != row:  # (a key twice in one turn: append once)
                hit.append(row)
