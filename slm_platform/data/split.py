"""Deterministic train/val/test assignment by duplicate group, stratified by slice values.

Rule (``Splitter.assign(dup_group, strata)``):

1. A group seen before gets the split it got the first time: every member of a duplicate group
   (exact or near) lands in the same split, so no near-copy of a test row is trained on.
2. A new group is placed in the split that is most under its target *within its stratum*:
   with ``n_s`` rows already in split ``s`` of the stratum and ``N = sum(n_s) + 1``, the deficit
   is ``ratio_s * N - n_s`` and the largest deficit wins. Ties (val and test with equal ratios
   once train has its share, or every split of a new stratum when all ratios are equal) are
   broken by ``stable_hash(f"{seed}\\x1f{dup_group}")``. A split with ratio 0 is never chosen.
3. Counts are rows (turns), not groups: each ``assign`` call adds one row to the stratum's count
   for the group's split, so the ratios hold for the rows training and evaluation will see even
   when groups have different sizes (``group_counts`` has the per-group tally too).

Consequences worth knowing:

- Per stratum the deviation from the target ratios stays within about one group's rows (one
  row when groups are singletons), however small the stratum. Small strata fill train first: with 0.8/0.1/0.1 the first three
  groups of a stratum all go to train (deficits 0.8 > 0.1, 0.6 > 0.2, 0.4 > 0.3), the fourth goes
  to val or test (by the hash), and so on. A stratum with fewer than ~4 rows therefore has no
  val/test rows; the slice report should say "too few rows" for such slices rather than 0.
- The assignment is deterministic given the stream order and the seed. The group -> split map
  is NOT independent of stream order: the same group can land in another split if the turns
  arrive in another order (the hash only breaks ties). Within a stratum the choice is close to
  systematic sampling of the stream, which spreads val/test evenly over time; a stream with a
  period that matches the ratio pattern (e.g. exactly every 10th row of a stratum being special)
  would alias, so stratify on such a key instead.
- A group whose members have different strata is placed by its first member's stratum; later
  members count in their own stratum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from slm_platform.config.models import SplitBlock
from slm_platform.records import canonical_json, stable_hash

SPLITS: tuple[str, ...] = ("train", "val", "test")
_EPS = 1e-9


def strata_of(turn: dict[str, Any], keys: Sequence[str]) -> tuple[Any, ...]:
    """The stratum of a turn: its ``meta.slice`` values for ``keys`` (None where missing)."""
    if not keys:
        return ()
    slice_ = (turn.get("meta") or {}).get("slice") or {}
    return tuple(_hashable(slice_.get(k)) for k in keys)


def _hashable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return canonical_json(value)


class Splitter:
    """Streams (dup_group, stratum) pairs; ``assign`` returns "train", "val" or "test"."""

    def __init__(self, cfg: SplitBlock | None = None) -> None:
        self.cfg = cfg or SplitBlock()
        self.ratios = (self.cfg.train, self.cfg.val, self.cfg.test)
        self._group_split: dict[str, int] = {}
        self._rows: dict[tuple[Any, ...], list[int]] = {}
        self._groups: dict[tuple[Any, ...], list[int]] = {}

    def assign(self, dup_group: str, strata: tuple[Any, ...] = ()) -> str:
        rows = self._rows.get(strata)
        if rows is None:
            rows = self._rows[strata] = [0, 0, 0]
            self._groups[strata] = [0, 0, 0]
        split = self._group_split.get(dup_group)
        if split is None:
            split = self._group_split[dup_group] = self._choose(dup_group, rows)
            self._groups[strata][split] += 1
        rows[split] += 1
        return SPLITS[split]

    def split_of(self, dup_group: str) -> str | None:
        """The split a group was given, or None if it has not been seen."""
        s = self._group_split.get(dup_group)
        return None if s is None else SPLITS[s]

    def _choose(self, dup_group: str, rows: list[int]) -> int:
        n = rows[0] + rows[1] + rows[2] + 1
        deficits = [r * n - c if r > 0 else float("-inf") for r, c in zip(self.ratios, rows)]
        best = max(deficits)
        tied = [i for i, d in enumerate(deficits) if d >= best - _EPS]
        if len(tied) == 1:
            return tied[0]
        h = int(stable_hash(f"{self.cfg.seed}\x1f{dup_group}"), 16)
        return tied[h % len(tied)]

    # --- stats ----------------------------------------------------------------------------------
    @property
    def counts(self) -> dict[tuple[tuple[Any, ...], str], int]:
        """Rows per (stratum, split)."""
        return {(st, SPLITS[i]): c[i] for st, c in self._rows.items() for i in range(3)}

    @property
    def group_counts(self) -> dict[tuple[tuple[Any, ...], str], int]:
        """New groups per (stratum, split), by the stratum of each group's first member."""
        return {(st, SPLITS[i]): c[i] for st, c in self._groups.items() for i in range(3)}

    @property
    def totals(self) -> dict[str, int]:
        """Rows per split over all strata."""
        out = dict.fromkeys(SPLITS, 0)
        for c in self._rows.values():
            for i, s in enumerate(SPLITS):
                out[s] += c[i]
        return out


def check_no_leakage(rows: Iterable[tuple[str, str, str]]) -> list[str]:
    """Violations in ``(id, dup_group, split)`` rows: an id or a dup_group found in two splits.

    One message per offending id or group (naming every split it was seen in), in the order the
    violations were first found. An empty list means no leakage.
    """
    id_splits: dict[str, str] = {}
    group_splits: dict[str, str] = {}
    bad: dict[tuple[str, str], set[str]] = {}  # ("id"|"dup_group", value) -> splits, insertion-ordered
    for id_, group, split in rows:
        for kind, value, seen in (("id", id_, id_splits), ("dup_group", group, group_splits)):
            first = seen.setdefault(value, split)
            if first != split:
                bad.setdefault((kind, value), {first}).add(split)
    return [
        f"{kind} {value!r} is in more than one split: {', '.join(sorted(splits, key=_split_order))}"
        for (kind, value), splits in bad.items()
    ]


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)
