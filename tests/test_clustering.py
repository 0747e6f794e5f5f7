"""Clustering: determinism, obvious topics separate, degenerate inputs, the fast transform."""

from __future__ import annotations

import random

import numpy as np
import pytest

from slm_platform.config.models import ClusteringBlock
from slm_platform.data.clustering import Clusterer

FILLER = "hi hello please help my the with since yesterday today again still thanks urgent team".split()
TOPICS = {
    "billing": "invoice charged twice refund payment credit card subscription receipt overcharged billing".split(),
    "shipping": "package delivery courier tracking shipped parcel warehouse carrier arrived late".split(),
    "login": "password login account locked reset verification code username session expired".split(),
}


def corpus(n_per_topic: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, topics = [], []
    for i in range(n_per_topic):
        for topic, vocab in TOPICS.items():
            words = [rng.choice(vocab) if rng.random() < 0.5 else rng.choice(FILLER) for _ in range(30)]
            texts.append(" ".join(words))
            topics.append(topic)
    return texts, topics


def test_three_obvious_topics_land_in_three_clusters() -> None:
    texts, topics = corpus()
    c = Clusterer(ClusteringBlock(k=3, seed=0)).fit(texts)
    assert c.k == 3
    labels = c.predict(texts)
    by_topic = {t: {lab for lab, tt in zip(labels, topics) if tt == t} for t in TOPICS}
    assert all(len(v) == 1 for v in by_topic.values()), by_topic
    assert len(set().union(*by_topic.values())) == 3
    # readable labels: each cluster's top terms come from its topic's vocabulary
    terms = c.top_terms(3)
    for topic, (cluster,) in by_topic.items():
        assert set(" ".join(terms[cluster]).split()) <= set(TOPICS[topic]) | set(FILLER), terms
    # new texts of a topic go to that topic's cluster
    new, new_topics = corpus(5, seed=99)
    assert [by_topic[t] == {lab} for lab, t in zip(c.predict(new), new_topics)] == [True] * len(new)


def test_deterministic_for_a_seed() -> None:
    texts, _ = corpus(40)
    a = Clusterer(ClusteringBlock(k=5, seed=3)).fit(texts)
    b = Clusterer(ClusteringBlock(k=5, seed=3)).fit(texts)
    assert a.predict(texts) == b.predict(texts)
    assert a.top_terms() == b.top_terms()
    assert a.fit_sizes == b.fit_sizes


def test_clusters_numbered_by_size() -> None:
    texts, _ = corpus(40)
    c = Clusterer(ClusteringBlock(k=6)).fit(texts)
    sizes = [c.fit_sizes[i] for i in range(c.k)]
    assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes) == len(texts)


def test_fewer_texts_than_k() -> None:
    texts = ["refund my invoice please", "my parcel is late", "cannot reset my password", "refund my invoice please"]
    c = Clusterer(ClusteringBlock(k=12)).fit(texts)
    assert c.k == 3  # distinct texts
    labels = c.predict(texts)
    assert all(0 <= lab < c.k for lab in labels)
    assert labels[0] == labels[3]
    assert len(set(labels[:3])) == 3


@pytest.mark.parametrize("texts", [[], ["same text"] * 5, ["!!", "?", ""]])
def test_degenerate_fit_gives_one_cluster(texts: list[str]) -> None:
    c = Clusterer(ClusteringBlock(k=4)).fit(texts)
    assert c.k == 1
    assert c.predict(["anything at all", ""]) == [0, 0]
    assert c.top_terms().keys() == {0}


def test_predict_before_fit_raises() -> None:
    with pytest.raises(RuntimeError):
        Clusterer().predict(["x"])


def test_disabled_labels_everything_zero() -> None:
    texts, _ = corpus(10)
    c = Clusterer(ClusteringBlock(enabled=False)).fit(texts)
    assert c.predict(texts[:4]) == [0, 0, 0, 0]


def test_fit_sample_is_subsampled_deterministically() -> None:
    texts, _ = corpus(100)  # 300 texts
    cfg = ClusteringBlock(k=3, fit_sample=50, seed=1)
    a, b = Clusterer(cfg).fit(texts), Clusterer(cfg).fit(texts)
    assert sum(a.fit_sizes.values()) == 50
    assert a.predict(texts) == b.predict(texts)


def test_fast_transform_matches_the_vectorizer() -> None:
    texts, _ = corpus(30)
    c = Clusterer(ClusteringBlock(k=3)).fit(texts)
    odd = ["", "unseen words only", "Ünïcode wörds_and_under a b 12 3 élan REFUND refund", "the and of", texts[0] * 3]
    probe = texts[:20] + odd
    fast, ref = c.transform(probe), c.vectorizer.transform(probe)
    assert fast.shape == ref.shape
    assert np.abs((fast - ref).toarray()).max() < 1e-5


def test_sizes_accumulate_over_batches() -> None:
    texts, _ = corpus(30)
    c = Clusterer(ClusteringBlock(k=3)).fit(texts)
    labels = c.predict(texts[:50]) + c.predict(texts[50:])
    assert sum(c.sizes.values()) == len(texts)
    assert c.sizes == {i: labels.count(i) for i in range(c.k)}
    card = c.describe()
    assert set(card) == {"k", "sizes", "fit_sizes", "top_terms"}
