"""One role's drift: every measure of the report for that role's captured turns vs its reference.

A role with fewer than `MIN_ROWS` turns on either side gets "insufficient data" for every
distribution measure (the gateway rates are still read, they need no reference). Otherwise each
categorical key, the embedding measures and the oracle disagreement are computed, and `reasons`
lists every threshold crossed; `drifted` is true when there is any.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from slm_platform.domain import RoleContract
from slm_platform.drift.categorical import categorical_keys, noise_quantile, row_values, slice_drift, unseen_rows
from slm_platform.drift.disagreement import oracle_disagreement, sample
from slm_platform.drift.embedding_drift import compare_embeddings
from slm_platform.drift.embeddings import embedding_text
from slm_platform.drift.gateway import gateway_rates
from slm_platform.drift.inputs import ReferenceData
from slm_platform.drift.report import MIN_ROWS, UNSEEN_THRESHOLD, Measure, RoleDrift, SliceDrift

MAX_EMBEDDED = 1000  # turns per side that are embedded (a deterministic sample of a bigger day)
Embed = Callable[[list[str]], np.ndarray]


def _reasons(slices: Sequence[SliceDrift], unseen: Measure, role: RoleDrift) -> list[str]:
    out = []
    for s in slices:
        if s.js.drifted:
            out.append(f"{s.key}: JS distance {s.js.value:.3f} > {max(s.js.threshold or 0, s.js_noise_floor or 0):.3f} "
                       f"(n={s.js.n}, reference n={s.js.n_reference})")
    if unseen.drifted:
        out.append(f"unseen share {unseen.value:.1%} > {UNSEEN_THRESHOLD:.0%} (n={unseen.n})")
    if role.embedding is not None:
        for name in ("classifier_auc", "centroid_distance"):
            m: Measure = getattr(role.embedding, name)
            if m.drifted:
                out.append(f"{name.replace('_', ' ')} {m.value:.3f} > {m.threshold:.3f}; {m.note} "
                           f"(n={m.n}, reference n={m.n_reference})")
    if role.oracle_disagreement.drifted:
        m = role.oracle_disagreement
        out.append(f"oracle disagreement {m.value:.1%} vs {role.oracle_disagreement_reference.value:.1%} in training "
                   f"(n={m.n}, reference n={m.n_reference})")
    return out


def compare_role(contract: RoleContract, reference: ReferenceData, current: Sequence[dict[str, Any]], embed: Embed,
                 rng: np.random.Generator) -> RoleDrift:
    ref_turns = reference.turns
    n_cur, n_ref = len(current), len(ref_turns)
    schema_valid, fallback = gateway_rates(current)
    disagreement, disagreement_ref = oracle_disagreement(contract, ref_turns, current)
    base = dict(role=contract.id, kind=contract.kind, reference=reference.ref, n=n_cur, schema_valid_rate=schema_valid,
                fallback_rate=fallback, oracle_disagreement=disagreement,
                oracle_disagreement_reference=disagreement_ref)
    if n_cur < MIN_ROWS or n_ref < MIN_ROWS:
        note = f"{n_cur} captured and {n_ref} training rows; needs {MIN_ROWS} on each side"
        return RoleDrift(status="insufficient_data", unseen_share=Measure.missing(
            "insufficient_data", n_cur, note, n_reference=n_ref, threshold=UNSEEN_THRESHOLD), **base)

    ref_rows = [row_values(t, served=False) for t in ref_turns]
    cur_rows = [row_values(t, served=True) for t in current]
    keys = categorical_keys(ref_rows)
    quantile = noise_quantile(len(keys) + 1)  # + the embedding cluster key
    slices = [slice_drift(k, ref_rows, cur_rows, rng, quantile) for k in keys]

    ref_sample, cur_sample = sample(ref_turns, MAX_EMBEDDED), sample(current, MAX_EMBEDDED)
    emb = compare_embeddings(embed([embedding_text(contract, t) for t in ref_sample]),
                             embed([embedding_text(contract, t) for t in cur_sample]), rng)
    slices.append(slice_drift("cluster", [{"cluster": c} for c in emb.reference_clusters],
                              [{"cluster": c} for c in emb.current_clusters], rng, quantile))

    # a row is "unseen" when it has a value training never had, or sits far from every training cluster
    new_value = unseen_rows(keys, ref_rows, [row_values(t, served=True) for t in cur_sample])
    flags = [a or b for a, b in zip(new_value, emb.novel)]
    share = sum(flags) / len(flags)
    unseen = Measure(value=share, n=len(flags), n_reference=len(ref_sample), threshold=UNSEEN_THRESHOLD,
                     drifted=share > UNSEEN_THRESHOLD,
                     note=f"{sum(new_value)} rows with a value never seen in training, "
                          f"{sum(emb.novel)} far from every training cluster")
    role = RoleDrift(status="ok", slices=slices, unseen_share=unseen, embedding=emb.drift, **base)
    reasons = _reasons(slices, unseen, role)
    return role.model_copy(update={"reasons": reasons, "drifted": bool(reasons)})
