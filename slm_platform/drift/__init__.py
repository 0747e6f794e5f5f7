"""Drift of captured traffic against the serving model's training data (`drift_report[day]`)."""

from slm_platform.drift.embeddings import Embedder, default_embedder
from slm_platform.drift.inputs import DriftInputError
from slm_platform.drift.report import DriftReport, Measure, RoleDrift, SliceDrift
from slm_platform.drift.stage import DriftResult, build_drift_report

__all__ = ["DriftInputError", "DriftReport", "DriftResult", "Embedder", "Measure", "RoleDrift", "SliceDrift",
           "build_drift_report", "default_embedder"]
