"""Exact and near-duplicate groups (MinHash LSH): statuses, group ids, chains, false positives."""

from __future__ import annotations

import random

import pytest

from slm_platform.config.models import DedupeBlock
from slm_platform.data.dedupe import Deduplicator, MinHasher, lsh_params, normalize
from slm_platform.records import stable_hash

FILLER = (
    "the a my i we it is was has have not and but so please can you help me with this that on for since "
    "yesterday today last week again still already order number customer support team thanks hello urgent"
).split()
TOPICS = [
    "invoice charge refund payment card billed twice subscription plan price receipt credit".split(),
    "package delivery courier tracking shipped arrived late address warehouse parcel lost damaged".split(),
    "password login account locked reset email verification code session expired username browser".split(),
]


def turn(i: int | str, text: str, role: str = "triage", **extra) -> dict:
    return {"id": f"t{i}", "domain": "support", "role": role, "input": {"messages": [
        {"role": "system", "content": "You triage support tickets."}, {"role": "user", "content": text}]}, **extra}


def ticket(rng: random.Random, n_words: int = 45) -> str:
    vocab = rng.choice(TOPICS)
    words = [rng.choice(vocab) if rng.random() < 0.4 else rng.choice(FILLER) for _ in range(n_words)]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), str(rng.randint(1000, 99999)))
    return "Hello support team, " + " ".join(words) + ". Thanks in advance."


def words(prefix: str, lo: int, hi: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(lo, hi))


def test_exact_duplicates_ignore_case_whitespace_and_labels_but_not_role() -> None:
    d = Deduplicator(DedupeBlock())
    g1, s1 = d.assign(turn(1, "My order never arrived, please help!", labels={"gold": {"category": "shipping"}}))
    g2, s2 = d.assign(turn(2, "  my ORDER never\n arrived,   please help!", labels={"gold": {"category": "billing"}}))
    g3, s3 = d.assign(turn(3, "My order never arrived, please help!", role="other_role"))
    assert (s1, s2, s3) == ("unique", "exact_duplicate", "unique")
    assert g1 == g2 == stable_hash("t1")
    assert g3 == stable_hash("t3")
    assert d.stats["exact_duplicate"] == 1 and d.stats["groups"] == 2


def test_normalize() -> None:
    assert normalize("  Hello\tWORLD \n again ") == "hello world again"


def test_near_duplicate_one_word_changed_in_forty() -> None:
    rng = random.Random(3)
    d = Deduplicator(DedupeBlock(near_threshold=0.8, num_perm=128))
    base = [rng.choice(FILLER + TOPICS[0]) for _ in range(40)]
    edited = list(base)
    edited[20] = "zebra"
    g1, s1 = d.assign(turn(1, " ".join(base)))
    g2, s2 = d.assign(turn(2, " ".join(edited)))
    assert (s1, s2) == ("unique", "near_duplicate")
    assert g1 == g2 == stable_hash("t1")


def test_near_duplicate_recall_over_many_texts() -> None:
    """One word changed in 40 (true Jaccard of 3-shingles ~0.85): the MinHash estimate is noisy, so
    a few pairs fall under 0.8; nearly all must be grouped."""
    rng = random.Random(11)
    d = Deduplicator(DedupeBlock(near_threshold=0.8, num_perm=128))
    grouped = 0
    for i in range(60):
        base = [f"w{rng.randrange(5000)}" for _ in range(40)]
        edited = list(base)
        edited[rng.randrange(40)] = "changed"
        g1, _ = d.assign(turn(f"a{i}", " ".join(base)))
        g2, status = d.assign(turn(f"b{i}", " ".join(edited)))
        grouped += status == "near_duplicate" and g1 == g2
    assert grouped >= 54


@pytest.mark.parametrize("threshold", [0.8, 0.85])
def test_no_false_positives_on_distinct_tickets(threshold: float) -> None:
    rng = random.Random(7)
    texts = list(dict.fromkeys(ticket(rng) for _ in range(2000)))
    d = Deduplicator(DedupeBlock(near_threshold=threshold))
    statuses = [d.assign(turn(i, t))[1] for i, t in enumerate(texts)]
    assert statuses.count("near_duplicate") == 0
    assert statuses.count("exact_duplicate") == 0
    assert d.stats["groups"] == len(texts)


def test_deterministic() -> None:
    rng = random.Random(5)
    texts = [ticket(rng) for _ in range(300)]
    texts += texts[:20]  # exact
    texts += [t.replace("Hello", "Hi", 1) for t in texts[20:40]]  # near (first shingle changed)
    stream = [turn(i, t) for i, t in enumerate(texts)]
    runs = []
    for _ in range(2):
        d = Deduplicator(DedupeBlock())
        runs.append([d.assign(x) for x in stream])
    assert runs[0] == runs[1]
    statuses = [s for _, s in runs[0]]
    assert statuses.count("exact_duplicate") == 20
    assert statuses.count("near_duplicate") == 20


def test_chained_near_duplicates_join_the_earliest_group() -> None:
    cfg = DedupeBlock(near_threshold=0.75, num_perm=256, shingle_size=1)
    a, b, c = words("w", 0, 100), words("w", 10, 110), words("w", 20, 120)  # J(a,b)=J(b,c)=.82, J(a,c)=.67
    # a and c alone are not near duplicates ...
    alone = Deduplicator(cfg)
    alone.assign(turn("a", a))
    assert alone.assign(turn("c", c))[1] == "unique"
    # ... but through b they end up in a's group
    d = Deduplicator(cfg)
    ga, _ = d.assign(turn("a", a))
    gb, sb = d.assign(turn("b", b))
    gc, sc = d.assign(turn("c", c))
    assert (sb, sc) == ("near_duplicate", "near_duplicate")
    assert ga == gb == gc == stable_hash("ta")
    assert d.stats["group_size_histogram"] == {3: 1}


def test_turn_matching_two_groups_joins_the_earliest() -> None:
    cfg = DedupeBlock(near_threshold=0.5, num_perm=256, shingle_size=1)
    d = Deduplicator(cfg)
    g1, _ = d.assign(turn("first", words("w", 0, 60)))
    g2, s2 = d.assign(turn("second", words("w", 30, 90)))  # J = 0.33: its own group
    g3, s3 = d.assign(turn("both", words("w", 15, 75)))  # J = 0.6 with each
    assert s2 == "unique" and g2 != g1
    assert s3 == "near_duplicate" and g3 == g1


def test_exact_copy_of_a_near_duplicate_joins_its_group() -> None:
    d = Deduplicator(DedupeBlock(near_threshold=0.8, num_perm=128))
    base = words("x", 0, 40)
    g1, _ = d.assign(turn(1, base))
    g2, s2 = d.assign(turn(2, base + " extra"))
    g3, s3 = d.assign(turn(3, base + " extra"))
    assert (s2, s3) == ("near_duplicate", "exact_duplicate")
    assert g1 == g2 == g3


def test_near_duplicates_only_within_a_role() -> None:
    d = Deduplicator(DedupeBlock(near_threshold=0.8, num_perm=128))
    base = words("x", 0, 40)
    d.assign(turn(1, base, role="a"))
    assert d.assign(turn(2, base + " extra", role="b"))[1] == "unique"


def test_short_empty_and_field_inputs() -> None:
    d = Deduplicator(DedupeBlock())
    assert d.assign(turn(1, ""))[1] == "unique"
    assert d.assign(turn(2, "   "))[1] == "exact_duplicate"
    assert d.assign(turn(3, "hi"))[1] == "unique"
    assert d.assign(turn(4, "hi there"))[1] == "unique"
    fields = {"id": "f1", "domain": "d", "role": "extract", "input": {"subject": "Refund", "body": "Card charged twice"}}
    assert d.assign(fields)[1] == "unique"
    assert d.assign({**fields, "id": "f2"})[1] == "exact_duplicate"


def test_stats_and_memory_accounting() -> None:
    rng = random.Random(9)
    texts = [ticket(rng) for _ in range(200)]
    d = Deduplicator(DedupeBlock())
    for i, t in enumerate(texts + texts[:50] + texts[:10]):
        d.assign(turn(i, t))
    s = d.stats
    assert s["turns"] == 260
    assert s["unique"] == s["groups"] == 200
    assert s["exact_duplicate"] == 60
    assert s["group_size_histogram"] == {1: 150, 2: 40, 3: 10}
    assert s["signatures"] == s["unique"] + s["near_duplicate"]  # exact duplicates store no signature


def test_many_near_copies_stay_bounded() -> None:
    """A thousand near-copies of one template: one group, buckets capped, no blow-up."""
    d = Deduplicator(DedupeBlock(near_threshold=0.8))
    base = words("t", 0, 60)
    for i in range(1000):
        d.assign(turn(i, f"{base} ticket {i}"))
    assert d.stats["groups"] <= 5
    assert all(len(v) <= 64 for v in d._buckets.values() if isinstance(v, list))


def test_disabled_gives_every_turn_its_own_group() -> None:
    d = Deduplicator(DedupeBlock(enabled=False))
    assert d.assign(turn(1, "same")) == (stable_hash("t1"), "unique")
    assert d.assign(turn(2, "same")) == (stable_hash("t2"), "unique")


def test_drops_follows_config() -> None:
    exact = Deduplicator(DedupeBlock(drop="exact"))
    both = Deduplicator(DedupeBlock(drop="exact_and_near"))
    assert exact.drops("exact_duplicate") and not exact.drops("near_duplicate") and not exact.drops("unique")
    assert both.drops("exact_duplicate") and both.drops("near_duplicate") and not both.drops("unique")


@pytest.mark.parametrize(("threshold", "num_perm"), [(0.85, 64), (0.8, 128), (0.5, 64), (0.95, 256), (1.0, 16)])
def test_lsh_params_fit_the_signature(threshold: float, num_perm: int) -> None:
    bands, rows = lsh_params(threshold, num_perm)
    assert bands >= 1 and rows >= 1 and bands * rows <= num_perm


def test_minhash_estimates_jaccard() -> None:
    h = MinHasher(num_perm=256, shingle_size=1, seed=1)
    a = h.signature(words("w", 0, 100).encode().split(b" "))
    b = h.signature(words("w", 50, 150).encode().split(b" "))  # J = 50/150
    assert abs((a == b).mean() - 1 / 3) < 0.1
