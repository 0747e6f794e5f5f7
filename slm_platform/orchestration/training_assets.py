"""Training assets of one domain: `adapter[v]` (a Pipes child in the `gpu` pool) and
`eval_report[v]` with its blocking, version-partitioned promotion gates.

A failed gate leaves the version visible with its reasons; the release logic reads the gates'
per-version results, never "the latest materialization", so a failed version is never eligible.
"""

from typing import Any

import dagster as dg

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals.gates import GATES, gate_names
from slm_platform.evals.stages import read_baseline_decision, run_candidate_eval
from slm_platform.orchestration.launchers import required_check_specs, trainer_for
from slm_platform.orchestration.metadata import eval_metadata
from slm_platform.training.recipe import trainer_extras
from slm_platform.training.warm_start import plan_training_start


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
        decision = read_baseline_decision(store, name, context.partition_key)
        if not decision.fine_tune:
            raise dg.Failure(f"baseline decided not to fine-tune: {decision.summary}", allow_retries=False)
        start = plan_training_start(domain, store, decision.chosen_base)
        extras = trainer_extras(name, context.partition_key, base_candidate=decision.chosen_base,
                                recipe=start.recipe, artifacts_root=store.root, init_adapter=start.init_adapter)
        context.log.info(f"training {name} {context.partition_key} on {decision.chosen_base}, {start.reason}; "
                         f"recipe {extras['recipe']}")
        result = getattr(context.resources, trainer_key).launch(context, extras=extras)
        yield from result.get_results(implicit_materializations=False)

    gate_specs = [dg.AssetCheckSpec(gate, asset=report_key, blocking=True, partitions_def=versions,
                                    description=GATES[gate]) for gate in gate_names(domain)]

    @dg.asset(key=report_key, partitions_def=versions, kinds={"eval"}, check_specs=gate_specs,
              required_resource_keys={"artifacts"},
              deps=[adapter_key, dg.AssetKey([name, "baseline_eval"])], **common,
              description=f"The {name} adapter[v] on the test split against the floor and the reference "
                          "(current release, else the chosen base model), with the promotion gates.")
    def eval_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        result = run_candidate_eval(domain, context.resources.artifacts.store(), context.partition_key,
                                    log=context.log.info)
        gates = result.report.gates or {}
        checks = [dg.AssetCheckResult(check_name=g.name, passed=g.passed, metadata={"detail": g.detail})
                  for g in gates.values()]
        md = {**eval_metadata(result, "eval"), "reference": result.report.reference or ""}
        return dg.MaterializeResult(metadata=md, check_results=checks, data_version=dg.DataVersion(result.manifest_hash))

    resources = {trainer_key: trainer_for(domain.config.model.trainer, settings.env(), domain=name,
                                         domains_dir=domain.root.parent)}
    return [adapter, eval_report], resources
