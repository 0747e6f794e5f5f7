"""Training assets of one domain: `adapter[v]` (a Pipes child in the `gpu` pool) and
`eval_report[v]` with its blocking, version-partitioned promotion gates.

A failed gate leaves the version visible with its reasons; the release logic reads the gates'
per-version results, never "the latest materialization", so a failed version is never eligible.
"""

from typing import Any

import dagster as dg

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore
from slm_platform.assets.model_assets import chart_markdown, evals_dir, publish_eval
from slm_platform.data.stages import dataset_dir
from slm_platform.domain import Domain
from slm_platform.evals.gates import GATES, evaluate_gates
from slm_platform.evals.session import EvalSession
from slm_platform.models import candidate_key
from slm_platform.registry.releases import current_release
from slm_platform.training.launchers import required_check_specs, trainer_for


def adapter_dir(domain: str, version: str) -> str:
    return f"{domain}/adapters/{version}"


def baseline_decision_of(store: ArtifactStore, domain: str, version: str) -> dict[str, Any]:
    return store.read_json(evals_dir(domain, version, "baseline"), "report.json")["decision"]


def trainer_resource_key(domain: str) -> str:
    return f"{domain}_trainer"


def build_training_assets(domain: Domain, *, versions: dg.PartitionsDefinition, common: dict[str, Any]):
    name = domain.name
    adapter_key = dg.AssetKey([name, "adapter"])
    report_key = dg.AssetKey([name, "eval_report"])
    trainer_key = trainer_resource_key(name)

    @dg.multi_asset(
        specs=[dg.AssetSpec(adapter_key, partitions_def=versions, kinds={"lora", "pytorch"},
                            deps=[dg.AssetKey([name, "dataset"]), dg.AssetKey([name, "baseline_eval"])],
                            description=f"A LoRA adapter of {name} trained on dataset[v] from the chosen base "
                                        "model, by the trainer child through Dagster Pipes.", **common)],
        check_specs=required_check_specs(adapter_key, versions),
        name=f"{name}__adapter", pool="gpu", required_resource_keys={"artifacts", trainer_key},
    )
    def adapter(context: dg.AssetExecutionContext):
        store: ArtifactStore = context.resources.artifacts.store()
        version = context.partition_key
        decision = baseline_decision_of(store, name, version)
        if not decision["fine_tune"]:
            raise dg.Failure(f"baseline decided not to fine-tune: {decision['summary']}", allow_retries=False)
        base = decision["chosen_base"]
        extras = {
            "domain_dir": str(domain.root),
            "artifacts_root": store.root,
            "dataset": dataset_dir(name, version),
            "base_model": f"base_models/{candidate_key(base)}",
            "base_candidate": base,
            "recipe": domain.config.model.recipe.model_dump(),
            "output": adapter_dir(name, version),
            "version": version,
        }
        context.log.info(f"training {name} {version} on {base} with {extras['recipe']}")
        result = getattr(context.resources, trainer_key).launch(context, extras=extras)
        yield from result.get_results(implicit_materializations=False)

    gate_specs = [
        dg.AssetCheckSpec(gate, asset=report_key, blocking=True, partitions_def=versions, description=text)
        for gate, text in GATES.items()
        if gate != "beats_floor" or (domain.config.eval.floor == "oracle" and
                                     all(r.oracle for r in domain.roles.values()))
    ]

    @dg.asset(key=report_key, partitions_def=versions, kinds={"eval"}, check_specs=gate_specs,
              required_resource_keys={"artifacts"},
              deps=[adapter_key, dg.AssetKey([name, "baseline_eval"])], **common,
              description=f"The {name} adapter[v] on the test split against the floor and the reference "
                          "(current release, else the chosen base model), with the promotion gates.")
    def eval_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store: ArtifactStore = context.resources.artifacts.store()
        version = context.partition_key
        adapter_rel = adapter_dir(name, version)
        specs = [f"adapter:{adapter_rel}"]
        if any(s.name == "beats_floor" for s in gate_specs):
            specs.insert(0, "oracle")
        release = current_release(store, name)
        if release is not None:
            specs.append(f"adapter:{release['adapter']}")
        session = EvalSession.for_domain_split(domain, store, version, "test", specs,
                                               engine=domain.config.serving.engine,
                                               guided=domain.config.serving.guided_decoding)
        results = session.run(log=context.log.info)
        candidate = results[f"adapter:{adapter_rel}"].report
        floor = results["oracle"].report if "oracle" in results else None
        if release is not None:
            reference, ref_name = results[f"adapter:{release['adapter']}"].report, f"release {release['version']}"
        else:
            baseline = store.read_json(evals_dir(name, version, "baseline"), "report.json")
            chosen = f"base:{baseline['decision']['chosen_base']}"
            reference, ref_name = baseline["entries"].get(chosen), f"base model {chosen.removeprefix('base:')}"
        gates = evaluate_gates(domain.config.eval, candidate, floor=floor, reference=reference,
                               reference_name=ref_name)
        gate_lines = [f"- {'PASS' if g.passed else 'FAIL'} `{g.name}`: {g.detail}" for g in gates.values()]
        rel = evals_dir(name, version, "candidate")
        markdown, manifest_hash, png = publish_eval(
            store, rel, session, results, parents=[adapter_rel, evals_dir(name, version, "baseline")],
            extra={"gates": {k: {"passed": g.passed, "detail": g.detail} for k, g in gates.items()},
                   "reference": ref_name}, notes=["## Gates", "", *gate_lines])
        primary = domain.config.eval.primary_metric
        md: dict[str, Any] = {
            "dagster/uri": dg.MetadataValue.path(store.uri(rel)),
            "report": dg.MetadataValue.md(chart_markdown(png, "eval") + markdown),
            primary: dg.MetadataValue.float(float(candidate["metrics"].get(primary) or 0.0)),
            "schema_valid_rate": dg.MetadataValue.float(float(candidate["metrics"].get("schema_valid_rate") or 0.0)),
            "reference": ref_name,
        }
        if floor is not None:
            md[f"{primary}/floor"] = dg.MetadataValue.float(float(floor["metrics"].get(primary) or 0.0))
        checks = [dg.AssetCheckResult(check_name=s.name, passed=gates[s.name].passed,
                                      metadata={"detail": gates[s.name].detail}) for s in gate_specs]
        return dg.MaterializeResult(metadata=md, check_results=checks, data_version=dg.DataVersion(manifest_hash))

    resources = {trainer_key: trainer_for(domain.config.model.trainer, settings.env(), domain=name)}
    return [adapter, eval_report], resources
