"""Drift in embedding space: can a classifier tell today from training, how far apart are the
centres, and which turns are far from anything trained on.

- Domain classifier (Evidently's and NannyML's text-drift test): a logistic regression told to
  separate reference from current embeddings, out-of-fold scores over `FOLDS` folds, ROC AUC.
  0.5 means indistinguishable. Drifted above 0.55 and above the AUC that chance reaches at these
  sizes (0.5 + 2.33 standard errors, Hanley-McNeil under the null), so a small day is not flagged
  on noise.
- Centroid distance (Arize): cosine distance between the two mean embeddings. Drifted above
  `CENTROID_THRESHOLD` (an effect size: with many rows any real difference, a month name in the
  text, is "significant") and above the 99th percentile of the same distance between two bootstrap
  samples of the reference of the same sizes (farther apart than sampling explains).
- Clusters and novelty: k-means on the reference embeddings gives the `cluster` key (compared like
  any categorical key). A turn is novel when its cosine distance to the nearest centroid exceeds
  the reference's own 99th percentile, measured out of fold (centroids fitted without the turn;
  in-sample distances would be optimistic), so about 1% of undrifted traffic is novel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from slm_platform.drift.report import AUC_THRESHOLD, CENTROID_THRESHOLD, NOVELTY_PERCENTILE, EmbeddingDrift, Measure

FOLDS = 5
NULL_DRAWS = 200
MAX_CLUSTERS = 16
ROWS_PER_CLUSTER = 40
SEED = 0


@dataclass(frozen=True)
class EmbeddingComparison:
    drift: EmbeddingDrift
    reference_clusters: list[str]
    current_clusters: list[str]
    novel: list[bool]  # per current row


def auc_chance_bound(n_ref: int, n_cur: int) -> float:
    """The AUC that chance exceeds 1% of the time at these sizes (normal approximation)."""
    se = math.sqrt((n_ref + n_cur + 1) / (12.0 * n_ref * n_cur))
    return 0.5 + 2.33 * se


def classifier_auc(ref: np.ndarray, cur: np.ndarray) -> float:
    X = np.vstack([ref, cur])
    y = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    from sklearn.linear_model import LogisticRegression  # here, not at import: every Dagster process
    from sklearn.metrics import roc_auc_score  # (code server, step worker) loads this module, and
    from sklearn.model_selection import StratifiedKFold, cross_val_predict  # sklearn is ~3 s of it

    clf = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    scores = cross_val_predict(clf, X, y, cv=folds, method="decision_function")
    return float(roc_auc_score(y, scores))


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0
    return float(1.0 - np.dot(a, b) / (na * nb))


def centroid_distance(ref: np.ndarray, cur: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """(distance, its p99 under the null: two bootstrap samples of the reference of these sizes)."""
    value = _cosine_distance(ref.mean(axis=0), cur.mean(axis=0))
    null = [_cosine_distance(ref[rng.integers(0, len(ref), len(ref))].mean(axis=0),
                             ref[rng.integers(0, len(ref), len(cur))].mean(axis=0)) for _ in range(NULL_DRAWS)]
    return value, float(np.percentile(null, 99))


def _fit_centroids(X: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=3, random_state=SEED).fit(X)
    c = km.cluster_centers_
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def _nearest(X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster index, cosine distance) of each unit row to the nearest unit centroid."""
    sims = X @ centroids.T
    idx = sims.argmax(axis=1)
    return idx, 1.0 - sims[np.arange(len(X)), idx]


def compare_embeddings(ref: np.ndarray, cur: np.ndarray, rng: np.random.Generator) -> EmbeddingComparison:
    """Every embedding measure of one role; both sides must hold at least MIN_ROWS rows (checked by the caller)."""
    from sklearn.model_selection import KFold

    n_ref, n_cur = len(ref), len(cur)
    # one thread: as fast on 2 busy cores and reproducible (as data.clustering does)
    with threadpool_limits(limits=1):
        auc = classifier_auc(ref, cur)
        k = int(np.clip(n_ref // ROWS_PER_CLUSTER, 2, MAX_CLUSTERS))
        centroids = _fit_centroids(ref, k)
        oof = np.empty(n_ref)
        for fit_idx, held in KFold(n_splits=FOLDS, shuffle=True, random_state=SEED).split(ref):
            oof[held] = _nearest(ref[held], _fit_centroids(ref[fit_idx], k))[1]
    limit = float(np.percentile(oof, NOVELTY_PERCENTILE))
    ref_idx, _ = _nearest(ref, centroids)
    cur_idx, cur_dist = _nearest(cur, centroids)
    novel = cur_dist > limit
    distance, null_p99 = centroid_distance(ref, cur, rng)
    bound = max(AUC_THRESHOLD, auc_chance_bound(n_ref, n_cur))
    drift = EmbeddingDrift(
        classifier_auc=Measure(value=auc, n=n_cur, n_reference=n_ref, threshold=AUC_THRESHOLD, drifted=auc > bound,
                               note=f"logistic regression, {FOLDS}-fold; chance reaches {bound:.3f} at these sizes"),
        centroid_distance=Measure(value=distance, n=n_cur, n_reference=n_ref, threshold=CENTROID_THRESHOLD,
                                  drifted=distance > max(CENTROID_THRESHOLD, null_p99),
                                  note=f"cosine; reference bootstrap pairs reach {null_p99:.3f} (p99)"),
        novel_share=Measure(value=float(novel.mean()), n=n_cur, n_reference=n_ref,
                            note=f"nearest of {k} reference centroids farther than {limit:.3f} "
                                 f"(reference p{NOVELTY_PERCENTILE:g}, out of fold)"),
        clusters=k)
    return EmbeddingComparison(drift, [str(i) for i in ref_idx], [str(i) for i in cur_idx], novel.tolist())
