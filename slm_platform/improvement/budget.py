"""`improvement.budget`: how much retraining a period allows. Over it, a retrain is deferred (and
the deferral recorded), never silently skipped and never run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from slm_platform.config.models import BudgetBlock


@dataclass(frozen=True)
class TrainingRun:
    """One adapter training of the domain, from its manifest: when, and how many wall hours."""

    version: str
    at: datetime
    hours: float


@dataclass(frozen=True)
class BudgetVerdict:
    allowed: bool
    detail: str
    runs: int
    hours: float


def check_budget(policy: BudgetBlock, runs: list[TrainingRun], now: datetime) -> BudgetVerdict:
    since = now - timedelta(days=policy.period_days)
    recent = [r for r in runs if r.at >= since]
    hours = sum(r.hours for r in recent)
    spent = f"{len(recent)} training runs, {hours:.2f} training hours in the last {policy.period_days} days"
    if policy.max_training_runs is not None and len(recent) >= policy.max_training_runs:
        return BudgetVerdict(False, f"{spent}: at the limit of {policy.max_training_runs} runs", len(recent), hours)
    if policy.training_hours is not None and hours >= policy.training_hours:
        return BudgetVerdict(False, f"{spent}: at the limit of {policy.training_hours:g} hours", len(recent), hours)
    return BudgetVerdict(True, spent, len(recent), hours)
