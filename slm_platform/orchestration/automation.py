"""The improvement loop's automation for one domain: what the daemon runs without anyone asking.

- `<domain>_daily` (schedule `improvement.capture_schedule`, UTC): yesterday's capture day and its
  drift report (or, with `improvement.capture_day: current`, the day so far at every tick).
- `<domain>_retrain` (sensor, every `improvement.retrain_interval_s`): evaluates the triggers
  (`slm_platform.improvement`) and, when one fires, adds a version partition and launches
  `<domain>_version` (dataset -> baseline_eval -> adapter -> eval_report -> package) tagged with the
  triggers and their numbers. Over budget it defers; the deferral is an observation on
  `<domain>/retrain`, as is every retrain it starts. It waits while a challenger is shadowed or
  awaits approval (its verdict comes first). At most one version run per domain at a time,
  and the cursor keeps the evidence of the last decision, so the same evidence never starts a
  second run and turning the sensor back on after a pause starts at most one.
- `<domain>_challenger` (sensor): a version packaged by a retrain run becomes the challenger, which
  the gateway shadows.
- `<domain>_shadow` (sensor, every `improvement.shadow.interval_s`): judges the challenger again
  (`<domain>_shadow` job: `shadow_report[v]`) until the report is decided; then promotes it when
  the shadow gates passed and `improvement.promotion` is auto, rejects it when one failed (a
  `reject` event with the failed gates: it leaves the challenger alias and is shadowed no more), or
  holds it waiting for a human's approval.
- `<domain>_demotion` (sensor, every `improvement.demotion.interval_s`): rolls a role's champion
  back when too many of its last calls at the gateway fell back (`improvement.demotion`), recording
  the verdict as the rollback's reason.
- `<domain>_reviews` (sensor, every REVIEWS_INTERVAL_S): when the review folder changed, finds the
  published capture days with turns whose review their last ingest did not apply and re-ingests
  each (`<domain>_capture`), so reviewers' labels reach the retrain trigger, the next dataset and
  the shadow report without anyone re-materializing a day.
The sensors and the schedule start stopped: an operator turns the loop on in the UI.
"""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from slm_platform import settings
from slm_platform.data.reviews import days_with_new_reviews, folder_signature, read_reviews, review_folder
from slm_platform.data.stages import captured_turns
from slm_platform.domain import Domain
from slm_platform.improvement import check_budget, decide_retrain, evaluate_triggers, gather_inputs, next_shadow_step
from slm_platform.improvement.decision import RetrainDecision
from slm_platform.improvement.demotion import gateway_rows, judge_champion
from slm_platform.improvement.inputs import training_runs
from slm_platform.orchestration.partitions import next_version
from slm_platform.orchestration.registry import (
    ReleaseRefused, approve, promote, registry_state, reject, rollback,
)
from slm_platform.orchestration.resources import ArtifactStoreResource

VERSION_KEYS = ("dataset", "baseline_eval", "adapter", "eval_report", "package")
SHADOW_MOVES = {"promote": (approve, "not promoted", "promoted to champion"),  # step -> move, refused, done
                "reject": (reject, "not rejected", "rejected")}
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]
KIND_TAG, DOMAIN_TAG = "slm/kind", "slm/domain"
REVIEWS_INTERVAL_S = 60  # how often the reviews sensor looks at the review folder (a cheap stat when unchanged)


def retrain_key(domain: str) -> dg.AssetKey:
    return dg.AssetKey([domain, "retrain"])


def record_decision(instance: dg.DagsterInstance, domain: str, decision: RetrainDecision, version: str | None) -> None:
    """A retrain started or deferred, as an observation on `<domain>/retrain` with every trigger."""
    table = "\n".join(["| trigger | state | found | threshold |", "|---|---|---|---|"] + [
        f"| {t.name} | {'FIRED' if t.fired else ('ok' if t.measured else 'not measured')} | {t.value} | {t.threshold} |"
        for t in decision.triggers])
    instance.report_runless_asset_event(dg.AssetObservation(
        asset_key=retrain_key(domain),
        description=f"{decision.action}{' ' + version if version else ''}: {decision.reason}",
        metadata={"action": decision.action, "version": version or "-", "reason": decision.reason,
                  "evidence": decision.evidence, "budget": decision.budget.detail,
                  "triggers": dg.MetadataValue.md(table)}))


def build_automation(domain: Domain, *, versions: dg.DynamicPartitionsDefinition,
                     days: dg.PartitionsDefinition) -> dg.Definitions:
    name, cfg = domain.name, domain.config.improvement
    daily_job = dg.define_asset_job(f"{name}_daily", selection=[dg.AssetKey([name, "captured_traffic"]),
                                                              dg.AssetKey([name, "drift_report"])],
                                    partitions_def=days, tags={DOMAIN_TAG: name, KIND_TAG: "daily"})
    version_job = dg.define_asset_job(f"{name}_version", selection=[dg.AssetKey([name, k]) for k in VERSION_KEYS],
                                      partitions_def=versions, tags={DOMAIN_TAG: name, KIND_TAG: "retrain"},
                                      description=f"One new {name} version: dataset -> baseline -> adapter -> "
                                                  "eval report -> package (what the retrain sensor launches).")

    @dg.schedule(name=f"{name}_daily_capture", cron_schedule=cfg.capture_schedule, job=daily_job,
                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)
    def daily_capture(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = context.scheduled_execution_time
        if cfg.capture_day == "current":  # the day so far, again at every tick
            return dg.RunRequest(run_key=f"{tick.date().isoformat()}@{tick.isoformat()}",
                                 partition_key=tick.date().isoformat())
        day = (tick - timedelta(days=1)).date().isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    @dg.sensor(name=f"{name}_retrain", job=version_job, minimum_interval_seconds=cfg.retrain_interval_s,
               default_status=dg.DefaultSensorStatus.STOPPED)
    def retrain(context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource):
        store, now = artifacts.store(), datetime.now(timezone.utc)
        inputs = gather_inputs(domain, store, now)
        budget = check_budget(cfg.budget, training_runs(store, name), now)
        running = [r.run_id[:8] for r in context.instance.get_runs(
            dg.RunsFilter(tags={DOMAIN_TAG: name, KIND_TAG: "retrain"}, statuses=IN_PROGRESS))]
        challengers = list(registry_state(context.instance, name).awaiting_approval().values())
        decision = decide_retrain(evaluate_triggers(cfg.triggers, inputs), budget, running=running,
                                  challengers=challengers)
        signature = json.dumps([inputs.champion, inputs.drift_day, [t.name for t in decision.fired],
                                decision.action])
        if decision.action == "wait" or signature == context.cursor:
            return dg.SkipReason(decision.reason if signature != context.cursor
                                 else f"{decision.reason} (already decided on this evidence)")
        if decision.action == "defer":
            record_decision(context.instance, name, decision, None)
            return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason), cursor=signature)
        version = next_version(context.instance, name)
        record_decision(context.instance, name, decision, version)
        tags = {"slm/trigger": ",".join(t.name for t in decision.fired), "slm/evidence": decision.evidence[:1000]}
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=version, partition_key=version, tags=tags)],
                               dynamic_partitions_requests=[versions.build_add_request([version])], cursor=signature)

    @dg.asset_sensor(name=f"{name}_challenger", asset_key=dg.AssetKey([name, "package"]),
                     default_status=dg.DefaultSensorStatus.STOPPED)
    def challenger(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry,
                   artifacts: ArtifactStoreResource):
        version = asset_event.dagster_event.partition if asset_event.dagster_event else None
        run = context.instance.get_run_by_id(asset_event.run_id)
        if version is None or run is None or run.tags.get(KIND_TAG) != "retrain":
            return dg.SkipReason(f"package {version} was not built by a retrain run")
        try:
            promote(context.instance, artifacts.store(), name, version, alias="challenger",
                    actor=f"sensor {name}_challenger", reason=f"packaged by retrain run {run.run_id[:8]} "
                    f"({run.tags.get('slm/trigger', '?')}): shadow it before promotion")
        except ReleaseRefused as exc:
            return dg.SkipReason(f"{version} not made challenger: {'; '.join(exc.reasons)}")
        return dg.SkipReason(f"{version} is the challenger")

    shadow_job = dg.define_asset_job(f"{name}_shadow", selection=[dg.AssetKey([name, "shadow_report"])],
                                     partitions_def=versions, tags={DOMAIN_TAG: name, KIND_TAG: "shadow"},
                                     description=f"Judge the {name} challenger on the gateway's shadow pairs so far.")

    @dg.sensor(name=f"{name}_shadow", job=shadow_job, minimum_interval_seconds=cfg.shadow.interval_s,
               default_status=dg.DefaultSensorStatus.STOPPED)
    def shadow(context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource):
        store = artifacts.store()
        judging = [r.run_id[:8] for r in context.instance.get_runs(
            dg.RunsFilter(tags={DOMAIN_TAG: name, KIND_TAG: "shadow"}, statuses=IN_PROGRESS))]
        waiting = registry_state(context.instance, name).awaiting_approval()
        step = next_shadow_step(store, name, waiting, cfg.promotion, judging=judging)
        if step.step == "judge":
            return dg.RunRequest(partition_key=step.version, tags={"slm/shadow": step.reason[:200]})
        if step.step in SHADOW_MOVES:  # approve: the challenger becomes champion; reject: it leaves the alias
            move, refused, done = SHADOW_MOVES[step.step]
            try:
                move(context.instance, store, name, step.version, actor=f"sensor {name}_shadow", reason=step.reason)
            except ReleaseRefused as exc:
                return dg.SkipReason(f"{step.version} {refused}: {'; '.join(exc.reasons)}")
            return dg.SkipReason(f"{step.version} {done}: {step.reason}")
        return dg.SkipReason(step.reason)

    @dg.sensor(name=f"{name}_demotion", minimum_interval_seconds=cfg.demotion.interval_s,
               default_status=dg.DefaultSensorStatus.STOPPED)
    def demotion(context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource):
        state = registry_state(context.instance, name)
        inbox = settings.inbox_dir(name, domain.config.data.capture.inbox)
        said = []
        for role in domain.roles:
            champion, since = state.version(role), state.since(role)
            if champion is None or since is None:
                said.append(f"{role}: no champion")
                continue
            verdict = judge_champion(gateway_rows(inbox, since), model=f"{name}/{role}", role=role,
                                     champion=champion, window=cfg.demotion.window,
                                     max_error_rate=cfg.demotion.max_error_rate)
            if verdict.demote:
                try:
                    [moved] = rollback(context.instance, artifacts.store(), name, role=role,
                                       actor=f"sensor {name}_demotion", reason=f"demoted: {verdict.reason}")
                    said.append(f"{role}: rolled back to {moved.event.to_version}: {verdict.reason}")
                except ReleaseRefused as exc:
                    said.append(f"{role}: should be demoted ({verdict.reason}) but: {'; '.join(exc.reasons)}")
            else:
                said.append(f"{role}: {verdict.reason}")
        return dg.SkipReason(" | ".join(said))

    @dg.sensor(name=f"{name}_reviews", job_name=f"{name}_capture", minimum_interval_seconds=REVIEWS_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Re-ingests the capture days that reviewers labelled since their last ingest.")
    def reviews(context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource):
        folder = review_folder(domain)
        signature = folder_signature(folder)
        if signature == context.cursor:
            return dg.SkipReason("no new review file since the last look")
        book = read_reviews(folder)
        days = days_with_new_reviews(domain, book, captured_turns(artifacts.store(), name)) if book.reviews else {}
        requests = [dg.RunRequest(run_key=f"{day}@reviews-{signature}", partition_key=day,
                                  tags={"slm/reviews": f"{n} turns with a new review"}) for day, n in days.items()]
        said = (", ".join(f"{day}: {n} turns" for day, n in days.items()) if days
                else f"{len(book.reviews)} reviews, every one applied or for a day not captured yet")
        return dg.SensorResult(run_requests=requests, cursor=signature, skip_reason=None if requests else said)

    return dg.Definitions(
        assets=[dg.AssetSpec(retrain_key(name), group_name=name, kinds={"sensor"}, tags={"domain": name},
                             description=f"Every retrain the {name}_retrain sensor started or deferred, with each "
                                         "trigger's evidence and the budget (observations).")],
        jobs=[daily_job, version_job, shadow_job], schedules=[daily_capture], sensors=[retrain, challenger, shadow, demotion, reviews])
