"""`package[v]`: a version whose gates passed, made servable (see `packaging.build_package`).

It runs after `eval_report[v]`, whose gates are blocking checks: a version that failed one is
never packaged by the graph, and `build_package` refuses it again on its own (every gate, every
input's hash) so no other path can package it either.
"""

from typing import Any

import dagster as dg

from slm_platform.domain import Domain
from slm_platform.orchestration.resources import ArtifactStoreResource
from slm_platform.packaging import PackageRefusedError, build_package


def build_package_assets(domain: Domain, *, versions: dg.PartitionsDefinition, common: dict[str, Any]):
    name = domain.name

    @dg.asset(key=[name, "package"], partitions_def=versions, kinds={"safetensors", "lora"}, **common,
              deps=[dg.AssetKey([name, "eval_report"])],
              description=f"A {name} version whose gates passed: lora/ (adapter + base reference) and merged/ "
                          "(verified against base + adapter) forms, serving contracts, and a model card.")
    def package(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        try:
            result = build_package(domain, artifacts.store(), context.partition_key, log=context.log.info)
        except PackageRefusedError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
        return dg.MaterializeResult(
            metadata={"dagster/uri": dg.MetadataValue.path(result.uri), "manifest_sha256": result.manifest_hash,
                      "forms": ", ".join(result.forms), "license": result.license,
                      "max_logit_diff": dg.MetadataValue.float(result.max_logit_diff),
                      "logit_tolerance": dg.MetadataValue.float(result.logit_tolerance),
                      "model_card": dg.MetadataValue.md(result.card)},
            data_version=dg.DataVersion(result.manifest_hash))

    return [package]
