"""`slm run`'s second day: the improvement loop once, on the real gateway, while the first pass's
champion serves.

After the first pass released a champion, the loop day:
1. starts the gateway (`slm serve`, a child process: real HTTP, capture and shadow on) and sends
   the day's drifted traffic through it with the OpenAI client, as an application would (the
   domain's simulator with its drift knob stands in for the application's users);
2. reviewers label a share of the day's turns (`review_share`; the simulator's truth stands in for a
   review team, written as review files to the capture inbox: data/reviews.py); then it materializes
   `captured_traffic[today]` (the reviewed turns carry gold labels) and `drift_report[today]`;
3. evaluates `improvement.triggers` and the budget with the very functions the retrain sensor
   calls, and records the decision on `<domain>/retrain` as the sensor does (a deferral too);
4. when a trigger fired: a new version (dataset -> baseline -> adapter, warm-started from the
   champion's adapter -> eval report -> package), tagged with the triggers, made the challenger;
5. sends more of the day's traffic: the champion answers, the gateway shadows the challenger on
   the same requests (`serving.shadow.rate`), until `improvement.shadow.min_pairs` pairs are due
   (reviewed the same way, so the shadow report can score both against gold);
6. stops the gateway (it writes every pair and captured turn), ingests the day again, materializes
   `shadow_report[v]` and takes the shadow sensor's next step: promote (auto), reject (a failed shadow gate) or hold (approval).

Everything lands where the daemon's loop puts it (the same assets, checks and registry events), so
the UI shows the loop day as it would show a day the sensors drove.
"""

from __future__ import annotations

import getpass
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from slm_platform import settings
from slm_platform.data.openai_log import hosted_call
from slm_platform.data.reviews import Review, write_reviews
from slm_platform.domain import Domain
from slm_platform.drift.report import DriftReport
from slm_platform.records import sampled
from slm_platform.improvement import check_budget, decide_retrain, evaluate_triggers, gather_inputs, next_shadow_step
from slm_platform.improvement.decision import RetrainDecision
from slm_platform.improvement.inputs import training_runs
from slm_platform.improvement.shadow_step import ShadowStep
from slm_platform.orchestration.automation import DOMAIN_TAG, IN_PROGRESS, KIND_TAG, SHADOW_MOVES, record_decision
from slm_platform.orchestration.lifecycle import DomainAssets, PassResult, run_pass, today
from slm_platform.orchestration.partitions import next_version
from slm_platform.orchestration.registry import ReleaseRefused, registry_state
from slm_platform.layout import drift_dir
from slm_platform.orchestration.gateway_process import GatewayProcess, GatewayStartError
from slm_platform.shadow.report import ShadowReport, read_shadow_report

# requests in flight at once: what 2 CPU cores answer inside serving.latency_budget_ms with a LoRA adapter
# on vLLM (4 at once took >10 s each and opened the breaker); while shadowing, the challenger's call
# runs beside each one, so shadowed traffic goes one at a time
CONCURRENCY, SHADOW_CONCURRENCY = 2, 1
WARM_UP_TRIES = 3  # the first call of an adapter loads it into vLLM: it may fall back once or twice
GATEWAY_START_S = 900  # the managed vLLM server loads on the CPU first
CHALLENGER_LOAD_S = 120  # the gateway polls the release pointer; a LoRA load on vLLM CPU takes seconds
SHADOW_BATCH = 16  # sent between waits for the shadow queue to empty (never over serving.shadow.queue_size)


@dataclass
class LoopDayResult:
    domain: str
    day: str
    skipped: str | None = None  # why the loop day did not run (no champion, the day is taken, ...)
    routes: dict[str, int] = field(default_factory=dict)  # drifted requests by the route that answered
    reviewed: int = 0  # of the day's requests (drifted and shadowed), how many reviewers labelled
    shadow_requests: int = 0
    drift: DriftReport | None = None  # the day's published drift report, read back typed
    decision: RetrainDecision | None = None
    retrain: PassResult | None = None
    shadow: ShadowStep | None = None  # the shadow sensor's step on the published shadow report
    shadow_report: ShadowReport | None = None
    outcome: str = ""  # what became of the day, in a line
    failed: bool = False  # the gateway, a capture, a stage or a gate failed (the outcome says which)
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds
    wall_s: float = 0.0


    def phases(self) -> dict[str, float]:
        """Wall seconds by phase in order, the retrain's split into its Dagster steps."""
        out: dict[str, float] = {}
        for phase, seconds in self.seconds.items():
            if phase == "retrain" and self.retrain is not None:
                out.update({f"retrain: {stage}": s for stage, s in self.retrain.seconds.items()})
                out["retrain: other"] = max(0.0, seconds - sum(self.retrain.seconds.values()))
            else:
                out[phase] = seconds
        return out


class _Clock:
    def __init__(self, out: LoopDayResult):
        self.out, self.last = out, time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.out.seconds[phase] = self.out.seconds.get(phase, 0.0) + now - self.last
        self.last = now


def loop_day_blocker(domain: Domain, instance: dg.DagsterInstance, day: str, first_day: str) -> str | None:
    """Why the loop day cannot run now, or None."""
    if day <= first_day:
        return (f"the gateway captures into today ({day}), and the first pass read {first_day}: "
                "run the first pass on an earlier --day")
    state = registry_state(instance, domain.name)
    if not any(state.version(role) for role in domain.roles):
        waiting = ", ".join(f"{r}: {v}" for r, v in state.awaiting_approval().items())
        return "no champion serves" + (f" ({waiting} awaits approval)" if waiting else "")
    return None


def wait_slm_ready(gateway: GatewayProcess, domain: str, timeout_s: float) -> None:
    """Until every route of `domain` that the SLM answers has its champion ready on vLLM. The gateway
    is ready before that (a fallback answers meanwhile), but a loop day whose traffic the oracle
    answered would measure nothing of the champion and shadow nothing."""
    deadline = time.monotonic() + timeout_s
    waiting: dict[str, str] = {}
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise GatewayStartError(f"gateway exited {gateway.proc.returncode}:\n{gateway.tail()}")
        routes = gateway.readyz()["routes"]
        waiting = {m: str(r["slm"]) for m, r in routes.items()
                   if m.startswith(f"{domain}/") and r["route"] == "slm" and r["slm"] != "ready"}
        if not waiting:
            return
        time.sleep(1.0)
    raise GatewayStartError(f"the SLM route is not ready after {timeout_s:.0f} s ({waiting}):\n{gateway.tail()}")


@dataclass(frozen=True)
class SimulatedRequest:
    """One user's request as the application sends it, with what the simulator knows is right."""

    turn_id: str  # sent as x-request-id: the captured turn's id, which a review names
    role: str
    request: dict[str, Any]  # chat-completion keyword arguments (model = "<domain>/<role>")
    truth: dict[str, Any]


def drifted_requests(domain: Domain, n: int, *, seed: int, drift: float) -> list[SimulatedRequest]:
    """`n` simulated turns as the chat-completion requests an application sends for them."""
    out = []
    for turn in domain.simulator().simulate(n, seed=seed, drift=drift):
        request = hosted_call(turn, domain.roles[turn["role"]], created=0)["request"]
        out.append(SimulatedRequest(turn["id"], turn["role"], {**request, "model": f"{domain.name}/{turn['role']}"},
                                    turn["output"]))
    return out


def send(gateway: GatewayProcess, requests: list[SimulatedRequest], api_key: str | None,
         concurrency: int = CONCURRENCY, id_suffix: str = "") -> list[str]:
    """Each request through the OpenAI client, `concurrency` at a time; the route that answered each."""
    import openai

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key or "no-key-on-loopback",
                           max_retries=0, timeout=600)

    def ask(r: SimulatedRequest) -> str:
        raw = client.chat.completions.with_raw_response.create(
            **r.request, extra_headers={"x-request-id": r.turn_id + id_suffix})
        raw.parse()
        return raw.headers.get("x-slm-route", "?")

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(ask, requests))


def warm_up(gateway: GatewayProcess, requests: list[SimulatedRequest], api_key: str | None) -> list[str]:
    """One request per role until the champion answers it (its adapter loaded), WARM_UP_TRIES at most;
    the routes that answered (a real request each: captured like the rest of the day, under its own id)."""
    routes: list[str] = []
    for r in {r.role: r for r in requests}.values():
        for attempt in range(WARM_UP_TRIES):
            routes += send(gateway, [r], api_key, 1, id_suffix=f"-warm{attempt}")
            if routes[-1] == "slm":
                break
    return routes


def review(domain: Domain, day: str, requests: list[SimulatedRequest], share: float, batch: str) -> int:
    """Reviewers label `share` of the requests (a stable sample by turn id): one review file per
    batch in the capture inbox's review folder, read at the day's next ingest. Returns how many."""
    chosen = [Review(r.turn_id, r.truth, "simulated") for r in requests if sampled(r.turn_id, share)]
    if chosen:
        write_reviews(domain, chosen, f"loop-day-{day}-{batch}")
    return len(chosen)


def _wait(what: str, check, timeout_s: float, gateway: GatewayProcess, every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}; gateway log:\n{gateway.tail()}")


def run_loop_day(domain: Domain, instance: dg.DagsterInstance, *, first_day: str, requests: int = 80,
                 drift: float = 1.0, review_share: float = 1.0, log=print) -> LoopDayResult:
    """The loop once on today's traffic (see the module docstring). A decision not to retrain, or a
    challenger that fails, is an outcome; only what breaks the machinery raises."""
    started = time.perf_counter()
    out = LoopDayResult(domain.name, today())
    out.skipped = loop_day_blocker(domain, instance, out.day, first_day)
    if out.skipped:
        log(f"[{domain.name}] loop day skipped: {out.skipped}")
        return out
    try:
        _run_day(domain, instance, out, requests=requests, drift=drift, review_share=review_share, log=log)
    finally:
        out.wall_s = time.perf_counter() - started
    return out


def _run_day(domain: Domain, instance: dg.DagsterInstance, out: LoopDayResult, *, requests: int, drift: float,
             review_share: float, log) -> None:
    name, day = domain.name, out.day
    clock = _Clock(out)
    assets = DomainAssets(domain, instance, {"slm/trigger": "slm-run loop day"})
    store = assets.store
    keys = settings.gateway_api_keys()
    api_key = keys[0] if keys else None
    log(f"[{name}] loop day {day}: starting the gateway (slm serve) on the champion")
    gateway = GatewayProcess({}, settings.home() / f"loop-day-gateway-{name}.log", domains=[name])
    try:
        try:
            gateway.wait_ready(GATEWAY_START_S)
            wait_slm_ready(gateway, name, GATEWAY_START_S)
        except GatewayStartError as exc:
            out.failed, out.outcome = True, f"the gateway did not start: {exc}"
            return
        clock.lap("gateway start")
        seed = int(day.replace("-", ""))
        log(f"[{name}] {requests} requests of drifted traffic (drift {drift}) through the gateway")
        day_requests = drifted_requests(domain, requests, seed=seed, drift=drift)
        for route in warm_up(gateway, day_requests, api_key) + send(gateway, day_requests, api_key):
            out.routes[route] = out.routes.get(route, 0) + 1
        _wait("the gateway's capture to be written", lambda: gateway.gauge("slm_gateway_capture_backlog") == 0,
              60, gateway)
        out.reviewed = review(domain, day, day_requests, review_share, "traffic")
        log(f"[{name}] reviewers labelled {out.reviewed} of the {len(day_requests)} turns (review share {review_share:g})")
        clock.lap("drifted traffic")

        log(f"[{name}] captured_traffic[{day}] and drift_report[{day}]")
        daily = assets.materialize(["captured_traffic", "drift_report"], day)
        clock.lap("capture + drift")
        if daily.success:
            out.drift = DriftReport.read(store.open_verified(drift_dir(name, day)))
        else:
            out.failed, out.outcome = True, "the capture or drift run failed (see the run in the UI)"
            return

        out.decision = decide(domain, instance, store)
        version = next_version(instance, name) if out.decision.action == "retrain" else None
        record_decision(instance, name, out.decision, version)
        log(f"[{name}] retrain decision: {out.decision.action}: {out.decision.reason}"
            + (f" ({out.decision.evidence})" if out.decision.evidence else ""))
        if version is None:
            out.outcome = f"no retrain: {out.decision.reason}"
            return

        assets.tags = {"slm/trigger": ",".join(t.name for t in out.decision.fired),
                       "slm/evidence": out.decision.evidence[:1000], DOMAIN_TAG: name}
        out.retrain = run_pass(domain, instance, day=day, capture=False, assets=assets, log=log, release_as="challenger",
                               release_reason=f"slm run loop day: retrained on {out.decision.reason} "
                                              f"({out.decision.evidence}); shadow it before promotion")
        clock.lap("retrain")
        if not (out.retrain.success and (out.retrain.release or "").startswith("challenger")):
            out.failed = not out.retrain.success
            out.outcome = f"{out.retrain.version} not made challenger: {out.retrain.release or 'a stage or gate failed'}"
            return

        shadowed = shadow_traffic(domain, gateway, out.retrain.version, seed=seed + 1, drift=drift,
                                  api_key=api_key, log=log)
        out.shadow_requests = len(shadowed)
        out.reviewed += review(domain, day, shadowed, review_share, "shadow")
        clock.lap("shadow traffic")
    finally:
        gateway.stop()  # drains: every answered exchange captured, every shadow pair written
    if out.retrain is not None:  # the early returns above left no challenger to judge
        # the shadowed requests' captured turns, so the report joins its pairs to their slices and labels
        # (the daemon's `capture_day: current` schedule re-ingests the day the same way)
        assets.materialize(["captured_traffic"], day)
        out.shadow, out.outcome = judge_challenger(domain, instance, assets, out.retrain.version, log=log)
        out.shadow_report = read_shadow_report(store, name, out.retrain.version)
    clock.lap("shadow report + release")


def decide(domain: Domain, instance: dg.DagsterInstance, store) -> RetrainDecision:
    """The retrain sensor's decision on the evidence so far (same inputs, triggers, budget, waits)."""
    name, cfg = domain.name, domain.config.improvement
    now = datetime.now(timezone.utc)
    budget = check_budget(cfg.budget, training_runs(store, name), now)
    running = [r.run_id[:8] for r in instance.get_runs(
        dg.RunsFilter(tags={DOMAIN_TAG: name, KIND_TAG: "retrain"}, statuses=IN_PROGRESS))]
    challengers = list(registry_state(instance, name).awaiting_approval().values())
    return decide_retrain(evaluate_triggers(cfg.triggers, gather_inputs(domain, store, now)), budget,
                          running=running, challengers=challengers)


def shadow_traffic(domain: Domain, gateway: GatewayProcess, version: str, *, seed: int, drift: float,
                   api_key: str | None, log=print) -> list[SimulatedRequest]:
    """Send the day's traffic until every role's shadow pairs reach `improvement.shadow.min_pairs` (by
    the shadow sampling rate), in batches that never overflow the shadow queue; returns what it sent."""
    name = domain.name
    _wait(f"the gateway to load challenger {version}",
          lambda: all(r.get("challenger") == version for m, r in gateway.readyz()["routes"].items()
                      if m.startswith(f"{name}/")), CHALLENGER_LOAD_S, gateway)
    shadow = domain.config.serving.shadow
    if shadow.rate <= 0:
        log(f"[{name}] serving.shadow.rate is 0: the challenger is not shadowed")
        return []
    # every role must reach min_pairs; the simulator's role mix decides how many requests that takes
    need = math.ceil(domain.config.improvement.shadow.min_pairs / shadow.rate * 1.1 * max(1, len(domain.roles)))
    batch = max(1, min(SHADOW_BATCH, shadow.queue_size))
    log(f"[{name}] {need} requests with {version} shadowed (serving.shadow.rate {shadow.rate})")
    requests = drifted_requests(domain, need, seed=seed, drift=drift)
    for i in range(0, need, batch):
        send(gateway, requests[i:i + batch], api_key, SHADOW_CONCURRENCY)
        _wait("the shadow queue to empty", lambda: gateway.gauge("slm_gateway_shadow_queue_depth") == 0,
              shadow.timeout_ms / 1000 * batch + 60, gateway)
    return requests


def judge_challenger(domain: Domain, instance: dg.DagsterInstance, assets: DomainAssets, version: str,
                     log=print) -> tuple[ShadowStep | None, str]:
    """`shadow_report[version]`, then the shadow sensor's step: promote, reject or hold."""
    name = domain.name
    log(f"[{name}] shadow_report[{version}]")
    assets.materialize(["shadow_report"], version)
    store = assets.store
    step = next_shadow_step(store, name, registry_state(instance, name).awaiting_approval(),
                            domain.config.improvement.promotion, judging=[])
    if step.step not in SHADOW_MOVES:
        return step, f"{version} stays the challenger: {step.reason}"
    move, refused, done = SHADOW_MOVES[step.step]
    try:
        move(instance, store, name, step.version, actor=getpass.getuser(), reason=f"slm run loop day: {step.reason}")
    except ReleaseRefused as exc:
        return step, f"{step.version} {refused}: {'; '.join(exc.reasons)}"
    log(f"[{name}] {step.version} {done}")
    return step, f"{step.version} {done}: {step.reason}"
