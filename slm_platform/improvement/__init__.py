"""When a domain retrains: its triggers over live evidence, the budget, and the decision the
retrain sensor (orchestration/automation.py) records. Dagster-free: the sensor, the CLI and tests
call the same functions."""

from slm_platform.improvement.budget import BudgetVerdict, TrainingRun, check_budget
from slm_platform.improvement.decision import RetrainDecision, decide_retrain
from slm_platform.improvement.inputs import gather_inputs
from slm_platform.improvement.shadow_step import ShadowStep, next_shadow_step
from slm_platform.improvement.triggers import TriggerInputs, TriggerResult, evaluate_triggers

__all__ = ["BudgetVerdict", "RetrainDecision", "ShadowStep", "TrainingRun", "TriggerInputs", "TriggerResult",
           "check_budget", "decide_retrain", "evaluate_triggers", "gather_inputs", "next_shadow_step"]
