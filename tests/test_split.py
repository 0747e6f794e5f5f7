"""Split by duplicate group: ratios, stratification, small strata, determinism, leakage check."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from slm_platform.config.models import SplitBlock
from slm_platform.data.split import SPLITS, Splitter, check_no_leakage, strata_of


def stream_of_groups(n_groups: int, seed: int = 0, max_size: int = 1) -> list[str]:
    """Members of n_groups duplicate groups (1..max_size members each), interleaved at random."""
    rng = random.Random(seed)
    members = [f"g{g}" for g in range(n_groups) for _ in range(rng.randint(1, max_size))]
    rng.shuffle(members)
    return members


def assert_ratios(counts: Counter | dict, cfg: SplitBlock, tol: float) -> None:
    total = sum(counts.get(s, 0) for s in SPLITS)
    for s, target in zip(SPLITS, (cfg.train, cfg.val, cfg.test)):
        assert abs(counts.get(s, 0) / total - target) <= tol, (s, counts)


def test_ratios_on_ten_thousand_groups() -> None:
    cfg = SplitBlock()
    sp = Splitter(cfg)
    splits = Counter(sp.assign(g) for g in stream_of_groups(10_000))
    assert_ratios(splits, cfg, 0.02)
    assert sp.totals == dict(splits)


def test_ratios_hold_for_rows_with_groups_of_several_sizes() -> None:
    cfg = SplitBlock(train=0.7, val=0.15, test=0.15)
    sp = Splitter(cfg)
    splits = Counter(sp.assign(g) for g in stream_of_groups(10_000, max_size=5))
    assert_ratios(splits, cfg, 0.02)


def test_every_group_in_exactly_one_split() -> None:
    sp = Splitter(SplitBlock())
    rows = [(f"id{i}", g, sp.assign(g)) for i, g in enumerate(stream_of_groups(3000, max_size=6, seed=2))]
    by_group: dict[str, set[str]] = {}
    for _, g, s in rows:
        by_group.setdefault(g, set()).add(s)
    assert len(by_group) == 3000
    assert all(len(v) == 1 for v in by_group.values())
    assert check_no_leakage(rows) == []
    assert sp.split_of("g0") in SPLITS and sp.split_of("never-seen") is None


def test_stratified_counts_close_to_ratios_per_stratum() -> None:
    cfg = SplitBlock(stratify=["category", "channel"])
    sp = Splitter(cfg)
    rng = random.Random(4)
    sizes = {("billing", "email"): 6000, ("shipping", "chat"): 3000, ("login", "web"): 1000, ("rare", "web"): 40}
    stream = [st for st, n in sizes.items() for _ in range(n)]
    rng.shuffle(stream)
    for i, (cat, ch) in enumerate(stream):
        t = {"id": f"t{i}", "meta": {"slice": {"category": cat, "channel": ch}}}
        sp.assign(f"g{i}", strata_of(t, cfg.stratify))
    for st, n in sizes.items():
        per = {s: sp.counts[(st, s)] for s in SPLITS}
        assert sum(per.values()) == n
        # within one row of the exact target, whatever the stratum's size
        for s, target in zip(SPLITS, (cfg.train, cfg.val, cfg.test)):
            assert abs(per[s] - target * n) <= 1.0, (st, per)


def test_small_stratum_goes_to_train_first() -> None:
    sp = Splitter(SplitBlock(train=0.8, val=0.1, test=0.1))
    assert [sp.assign(f"g{i}", ("tiny",)) for i in range(3)] == ["train", "train", "train"]
    assert sp.assign("g3", ("tiny",)) in ("val", "test")  # the 4th group: tie broken by the hash
    assert sp.assign("g4", ("tiny",)) == "train"
    # a repeat of an earlier group keeps its split and counts as a row of it
    assert sp.assign("g0", ("tiny",)) == "train"
    assert sp.counts[(("tiny",), "train")] == 5
    assert sp.group_counts[(("tiny",), "train")] == 4


def test_deterministic_across_runs() -> None:
    stream = stream_of_groups(2000, seed=5, max_size=3)
    runs = []
    for _ in range(2):
        sp = Splitter(SplitBlock(seed=7))
        runs.append([sp.assign(g, (g[-1],)) for g in stream])
    assert runs[0] == runs[1]


def test_ties_are_broken_by_the_seeded_hash() -> None:
    third = 1 / 3
    firsts = {Splitter(SplitBlock(train=third, val=third, test=1 - 2 * third, seed=s)).assign("g") for s in range(30)}
    assert len(firsts) == 3  # the first group's split depends on the hash (all deficits tie)


def test_zero_ratio_split_is_never_used() -> None:
    sp = Splitter(SplitBlock(train=0.9, val=0.1, test=0.0))
    assert "test" not in {sp.assign(g) for g in stream_of_groups(500)}


def test_strata_of() -> None:
    turn = {"meta": {"slice": {"category": "billing", "tags": ["a", "b"], "n": 3}}}
    assert strata_of(turn, ["category", "missing", "tags", "n"]) == ("billing", None, '["a","b"]', 3)
    assert strata_of(turn, []) == ()
    assert strata_of({}, ["category"]) == (None,)


def test_check_no_leakage_detects_planted_leaks() -> None:
    rows = [
        ("a", "g1", "train"),
        ("b", "g1", "train"),
        ("c", "g2", "val"),
        ("d", "g2", "test"),  # group g2 in two splits
        ("a", "g9", "test"),  # id a in two splits (and a fresh group)
        ("e", "g3", "test"),
        ("f", "g2", "train"),  # g2 in a third split: still one message for g2
    ]
    problems = check_no_leakage(rows)
    assert len(problems) == 2
    assert "dup_group 'g2'" in problems[0] and "train, val, test" in problems[0]
    assert "id 'a'" in problems[1] and "train, test" in problems[1]
    assert check_no_leakage(iter(rows[:3])) == []


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (1.0, 0.0, 0.0)])
def test_first_turns_never_exceed_targets_by_more_than_one_row(ratios: tuple[float, float, float]) -> None:
    cfg = SplitBlock(train=ratios[0], val=ratios[1], test=ratios[2])
    sp = Splitter(cfg)
    counts = Counter()
    for n, g in enumerate(stream_of_groups(200, seed=1), start=1):
        counts[sp.assign(g)] += 1
        for s, r in zip(SPLITS, ratios):
            assert counts[s] <= r * n + 1.0
