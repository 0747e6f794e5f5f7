"""Data assets of one domain: `captured_traffic[day]` and `dataset[v]` with its blocking gates."""


from typing import Any

import dagster as dg

from slm_platform.data.checks import CAPTURE_CHECKS, DATASET_CHECKS
from slm_platform.data.stages import CaptureResult, DatasetResult, build_dataset, ingest_capture
from slm_platform.domain import Domain
from slm_platform.orchestration.resources import ArtifactStoreResource
from slm_platform.teachers import teacher_from_config

def capture_metadata(result: CaptureResult) -> dict[str, Any]:
    s = result.stats
    return {
        "dagster/uri": dg.MetadataValue.path(result.uri),
        "rows_in": dg.MetadataValue.int(s["rows_in"]),
        "kept": dg.MetadataValue.int(s["kept"]),
        "quarantined": dg.MetadataValue.int(s["quarantined"]),
        "not_sampled": dg.MetadataValue.int(s["not_sampled"]),
        "reviewed": dg.MetadataValue.int(s["reviews"]["applied"]),  # turns given a reviewer's gold label
        "reviews": dg.MetadataValue.json(s["reviews"]),
        "redaction": dg.MetadataValue.json(s["redaction"]),
    }


def dataset_metadata(result: DatasetResult) -> dict[str, Any]:
    """Key numbers as typed metadata (plotted over versions in the UI) plus the card."""
    s = result.stats
    md: dict[str, Any] = {
        "dagster/uri": dg.MetadataValue.path(result.uri),
        "manifest_sha256": result.manifest_hash,
        "rows_in": dg.MetadataValue.int(s["rows_in"]),
        "train": dg.MetadataValue.int(s["split"]["train"]),
        "val": dg.MetadataValue.int(s["split"]["val"]),
        "test": dg.MetadataValue.int(s["split"]["test"]),
        "duplicates_removed": dg.MetadataValue.int(s["duplicates_removed"]),
        "quarantined": dg.MetadataValue.int(s["quarantined_total"]),
        "dup_groups": dg.MetadataValue.int(s["dup_groups"]),
        "redaction_hits": dg.MetadataValue.int(sum(s["redaction"].values())),
        "card": dg.MetadataValue.md(result.card),
    }
    for source, rate in s["labels"]["agreement"].items():
        md[f"agreement/{source}"] = dg.MetadataValue.float(float(rate))
    return md


def check_results(checks: dict[str, dict[str, Any]]) -> list[dg.AssetCheckResult]:
    return [dg.AssetCheckResult(check_name=name, passed=bool(c["passed"]),
                                metadata={"detail": dg.MetadataValue.text(str(c["detail"]))})
            for name, c in checks.items()]


def build_data_assets(domain: Domain, *, versions: dg.PartitionsDefinition, days: dg.PartitionsDefinition,
                      common: dict[str, Any]):
    name = domain.name
    capture_key = dg.AssetKey([name, "captured_traffic"])
    dataset_key = dg.AssetKey([name, "dataset"])

    capture_checks = [dg.AssetCheckSpec(check, asset=capture_key, blocking=True, partitions_def=days, description=text)
                      for check, text in CAPTURE_CHECKS.items()]

    @dg.asset(key=capture_key, partitions_def=days, kinds={"jsonl"}, check_specs=capture_checks, **common,
              description=f"One day of {name} traffic, parsed from the inbox and redacted before it is stored.")
    def captured_traffic(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        result = ingest_capture(domain, context.partition_key, artifacts.store(), log=context.log.info)
        return dg.MaterializeResult(metadata=capture_metadata(result), check_results=check_results(result.checks),
                                    data_version=dg.DataVersion(result.manifest_hash))

    check_specs = [
        dg.AssetCheckSpec(check, asset=dataset_key, blocking=True, partitions_def=versions, description=text)
        for check, text in DATASET_CHECKS.items()
    ]

    @dg.asset(key=dataset_key, partitions_def=versions, kinds={"jsonl", "dataset"}, check_specs=check_specs,
              deps=[dg.AssetDep(capture_key, partition_mapping=dg.AllPartitionMapping())], **common,
              description=f"A {name} dataset version: redacted, deduplicated, clustered, labeled, validated splits.")
    def dataset(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        teacher = teacher_from_config(domain.config.teacher)
        result = build_dataset(domain, artifacts.store(), context.partition_key, teacher=teacher,
                               log=context.log.info, progress=False)
        return dg.MaterializeResult(metadata=dataset_metadata(result), check_results=check_results(result.checks),
                                    data_version=dg.DataVersion(result.manifest_hash))

    jobs = [
        dg.define_asset_job(f"{name}_capture", selection=[capture_key], partitions_def=days),
        dg.define_asset_job(f"{name}_dataset", selection=[dataset_key], partitions_def=versions),
    ]
    return [captured_traffic, dataset], [], jobs
