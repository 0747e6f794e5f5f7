"""Data assets of one domain: `captured_traffic[day]` and `dataset[v]` with its blocking gates."""


from typing import Any

import dagster as dg

from slm_platform.data.stages import build_dataset, ingest_capture
from slm_platform.domain import Domain
from slm_platform.resources import ArtifactStoreResource
from slm_platform.teachers.base import teacher_from_config

DATASET_CHECKS = {
    "no_split_leakage": "No id and no duplicate group appears in two splits.",
    "labels_valid": "Every label in train/val/test validates against its role's schema or tool catalog.",
    "min_rows": "Each split has at least data.min_rows rows.",
    "rows_conserved": "rows in = train + val + test + duplicates removed + quarantined.",
}


def dataset_metadata(result: Any) -> dict[str, Any]:
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


def build_data_assets(domain: Domain, *, versions: dg.PartitionsDefinition, days: dg.PartitionsDefinition,
                      common: dict[str, Any]):
    name = domain.name
    capture_key = dg.AssetKey([name, "captured_traffic"])
    dataset_key = dg.AssetKey([name, "dataset"])

    @dg.asset(key=capture_key, partitions_def=days, kinds={"jsonl"}, **common,
              description=f"One day of {name} traffic, parsed from the inbox and redacted before it is stored.")
    def captured_traffic(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        result = ingest_capture(domain, context.partition_key, artifacts.store(), log=context.log.info)
        s = result.stats
        return dg.MaterializeResult(
            metadata={
                "dagster/uri": dg.MetadataValue.path(result.uri),
                "rows_in": dg.MetadataValue.int(s["rows_in"]),
                "kept": dg.MetadataValue.int(s["kept"]),
                "quarantined": dg.MetadataValue.int(s["quarantined"]),
                "not_sampled": dg.MetadataValue.int(s["not_sampled"]),
                "redaction": dg.MetadataValue.json(s["redaction"]),
            },
            data_version=dg.DataVersion(result.manifest_hash),
        )

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
        checks = [
            dg.AssetCheckResult(check_name=check, passed=bool(result.checks[check]["passed"]),
                                metadata={"detail": dg.MetadataValue.text(str(result.checks[check]["detail"]))})
            for check in DATASET_CHECKS
        ]
        return dg.MaterializeResult(metadata=dataset_metadata(result), check_results=checks,
                                    data_version=dg.DataVersion(result.manifest_hash))

    jobs = [
        dg.define_asset_job(f"{name}_capture", selection=[capture_key], partitions_def=days),
        dg.define_asset_job(f"{name}_dataset", selection=[dataset_key], partitions_def=versions),
    ]
    return [captured_traffic, dataset], [], jobs
