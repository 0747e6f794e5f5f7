"""The drift report as typed values: what `report.json` holds and what every reader gets back.

Every number travels with its `n` (rows it was computed on, and the reference's), its threshold and
whether it crossed it, so a reader never sees a bare number. A measure that could not be computed
says why instead of holding a made-up value: `insufficient_data` (too few rows for the number to
mean anything) or `not_measured` (the rows do not carry what it needs, e.g. gateway fields that
an older capture lacks). Never 0 or 100% in their place.

Thresholds are constants here, not config: the retrain sensor that will act on them reads its own
`improvement.triggers`; these only say what the report calls drift.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

REPORT_FILE = "report.json"
MIN_ROWS = 50  # below this on either side a distribution number is noise: "insufficient data"
JS_THRESHOLD = 0.1  # Evidently's default for categorical columns (here base 2, so a little stricter)
PSI_THRESHOLD = 0.25  # the usual "large shift" band; reported, the JS flag decides
UNSEEN_THRESHOLD = 0.05  # issue 11: "> 5% new intents/tools" is a drift trigger
AUC_THRESHOLD = 0.55  # Evidently's domain-classifier default
# cosine distance between mean MiniLM embeddings (Arize sets none): support_triage days measured
# 0.011-0.015 undrifted and 0.14 at the simulator's drift 1.0 (250-300 turns against ~550)
CENTROID_THRESHOLD = 0.05
NOVELTY_PERCENTILE = 99.0  # a turn is novel past the reference's own 99th nearest-centroid distance
DISAGREEMENT_MARGIN = 0.05  # champion-vs-oracle disagreement this much above the reference's

Status = Literal["ok", "insufficient_data", "not_measured"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Measure(_Strict):
    """One number with its support. `value` is None unless `status` is "ok"."""

    value: float | None = None
    n: int  # current (capture day) rows behind the number
    n_reference: int | None = None  # reference (training) rows behind it, when it compares with them
    status: Status = "ok"
    threshold: float | None = None
    drifted: bool | None = None  # None when not judged (no threshold, or no value)
    note: str = ""

    @classmethod
    def missing(cls, status: Status, n: int, note: str, *, n_reference: int | None = None,
                threshold: float | None = None) -> "Measure":
        return cls(n=n, n_reference=n_reference, status=status, note=note, threshold=threshold)

    def text(self, digits: int = 3) -> str:
        """How a table shows it: the value, or why there is none."""
        if self.status == "insufficient_data":
            return "insufficient data"
        if self.status == "not_measured":
            return "not measured"
        return f"{self.value:.{digits}f}" if self.value is not None else "–"


class SliceDrift(_Strict):
    """One categorical key: a `meta.slice` key, an output field (`output.<path>`) or the embedding cluster."""

    key: str
    js: Measure  # Jensen-Shannon distance, base 2, smoothed
    psi: Measure
    js_noise_floor: float | None = None  # JS that two same-size samples of the reference itself reach (see categorical)
    unseen_share: Measure  # share of current rows whose value never occurs in the reference
    unseen_values: list[str] = Field(default_factory=list)  # the most frequent of them
    reference: dict[str, int] = Field(default_factory=dict)  # value -> rows (top values)
    current: dict[str, int] = Field(default_factory=dict)


class EmbeddingDrift(_Strict):
    """MiniLM embeddings of the rendered inputs, current vs reference."""

    classifier_auc: Measure  # cross-validated ROC AUC of a reference-vs-current logistic regression
    centroid_distance: Measure  # cosine distance between the two mean embeddings
    novel_share: Measure  # current turns farther from every reference centroid than the reference's p99
    clusters: int = 0


class Reference(_Strict):
    """The training data a role's traffic is compared with."""

    version: str
    source: Literal["champion", "latest_dataset"]  # the champion's dataset, or the latest when none serves
    rel: str  # the dataset artifact, relative to the store root
    manifest_hash: str
    rows: int  # train rows of this role


class RoleDrift(_Strict):
    role: str
    kind: str
    reference: Reference
    n: int  # captured turns of this role on the day
    status: Status  # "insufficient_data" when either side has fewer than MIN_ROWS turns
    slices: list[SliceDrift] = Field(default_factory=list)
    unseen_share: Measure  # rows with an unseen categorical value OR a novel embedding
    embedding: EmbeddingDrift | None = None
    oracle_disagreement: Measure  # served answer vs the role's oracle on sampled rows
    oracle_disagreement_reference: Measure  # the training label vs the oracle, same sampling
    schema_valid_rate: Measure  # at the gateway, from capture meta
    fallback_rate: Measure
    drifted: bool = False
    reasons: list[str] = Field(default_factory=list)  # one line per crossed threshold

    def js_max(self) -> SliceDrift | None:
        """The key with the largest measured JS distance."""
        measured = [s for s in self.slices if s.js.value is not None]
        return max(measured, key=lambda s: s.js.value or 0.0) if measured else None


class CaptureRef(_Strict):
    rel: str
    manifest_hash: str
    rows: int


class DriftReport(_Strict):
    domain: str
    day: str
    capture: CaptureRef
    roles: dict[str, RoleDrift]
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    thresholds: dict[str, float] = Field(default_factory=lambda: {
        "min_rows": MIN_ROWS, "js_distance": JS_THRESHOLD, "psi": PSI_THRESHOLD, "unseen_share": UNSEEN_THRESHOLD,
        "classifier_auc": AUC_THRESHOLD, "centroid_distance": CENTROID_THRESHOLD, "novelty_percentile": NOVELTY_PERCENTILE,
        "oracle_disagreement_margin": DISAGREEMENT_MARGIN})

    @property
    def drifted(self) -> bool:
        return any(r.drifted for r in self.roles.values())

    @classmethod
    def read(cls, folder: Path) -> "DriftReport":
        return cls.model_validate_json((folder / REPORT_FILE).read_text(encoding="utf-8"))
