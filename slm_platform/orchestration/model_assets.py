"""Model assets of one domain: `base_model[candidate]` and `baseline_eval[v]` (see `evals.stages`)."""

from typing import Any

import dagster as dg

from slm_platform.domain import Domain
from slm_platform.evals.stages import run_baseline_eval
from slm_platform.models import candidate_key, resolve_base_model
from slm_platform.orchestration.metadata import eval_metadata
from slm_platform.orchestration.resources import ArtifactStoreResource


def candidates_partitions(domain: Domain) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([candidate_key(c) for c in domain.config.model.candidates])


def candidate_for_key(domain: Domain, key: str) -> str:
    return next(c for c in domain.config.model.candidates if candidate_key(c) == key)


def build_model_assets(domain: Domain, *, versions: dg.PartitionsDefinition, common: dict[str, Any]):
    name = domain.name
    base_key = dg.AssetKey([name, "base_model"])
    dataset_key = dg.AssetKey([name, "dataset"])
    baseline_key = dg.AssetKey([name, "baseline_eval"])
    candidates = candidates_partitions(domain)

    @dg.asset(key=base_key, partitions_def=candidates, kinds={"safetensors"}, **common,
              description=f"A base-model candidate of {name}, converted once into a verified HF folder.")
    def base_model(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        model = resolve_base_model(candidate_for_key(domain, context.partition_key), artifacts.store(),
                                   log=context.log.info)
        return dg.MaterializeResult(
            metadata={"dagster/uri": dg.MetadataValue.path(model.uri), "candidate": model.candidate,
                      "parameters": dg.MetadataValue.int(model.params), "chat_template": model.chat_template,
                      "weights_sha256": model.weights_sha256},
            data_version=dg.DataVersion(model.weights_sha256))

    @dg.asset(key=baseline_key, partitions_def=versions, kinds={"eval"}, **common,
              deps=[dg.AssetDep(dataset_key), dg.AssetDep(base_key, partition_mapping=dg.AllPartitionMapping())],
              description=f"Floor, ceiling and zero-shot base candidates on the {name} test split; "
                          "picks the base model and records the fine-tune decision.")
    def baseline_eval(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        result = run_baseline_eval(domain, artifacts.store(), context.partition_key, log=context.log.info)
        decision = result.report.decision
        assert decision is not None  # run_baseline_eval always decides
        context.log.info(decision.summary)
        md = {**eval_metadata(result, "baseline"), "chosen_base": decision.chosen_base,
              "fine_tune": dg.MetadataValue.bool(decision.fine_tune), "decision": decision.summary}
        return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(result.manifest_hash))

    return [base_model, baseline_eval]
