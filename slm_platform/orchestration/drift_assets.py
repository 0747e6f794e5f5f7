"""`drift_report[day]`: one capture day against the serving model's training data (see `drift`)."""

from typing import Any

import dagster as dg

from slm_platform.domain import Domain
from slm_platform.drift import DriftInputError, DriftResult, build_drift_report
from slm_platform.orchestration.metadata import chart_markdown
from slm_platform.orchestration.resources import ArtifactStoreResource


def drift_metadata(result: DriftResult) -> dict[str, Any]:
    """Per role the headline numbers as floats (plotted over days in the UI), the table and the chart."""
    report = result.report
    md: dict[str, Any] = {
        "dagster/uri": dg.MetadataValue.path(result.uri),
        "drifted": dg.MetadataValue.bool(report.drifted),
        "report": dg.MetadataValue.md(chart_markdown(result.chart_png, f"drift {report.day}") + result.markdown),
    }
    for role, r in report.roles.items():
        md[f"{role}/n"] = dg.MetadataValue.int(r.n)
        md[f"{role}/reference"] = f"{r.reference.version} ({r.reference.source})"
        top = r.js_max()
        headline = {"js_max": top.js if top else None, "unseen_share": r.unseen_share,
                    "classifier_auc": r.embedding.classifier_auc if r.embedding else None,
                    "centroid_distance": r.embedding.centroid_distance if r.embedding else None,
                    "oracle_disagreement": r.oracle_disagreement, "schema_valid_rate": r.schema_valid_rate,
                    "fallback_rate": r.fallback_rate}
        for name, measure in headline.items():
            if measure is not None and measure.value is not None:  # never a NaN: a missing number is left out
                md[f"{role}/{name}"] = dg.MetadataValue.float(float(measure.value))
        if r.status != "ok":
            md[f"{role}/status"] = r.status
    return md


def build_drift_assets(domain: Domain, *, days: dg.PartitionsDefinition, common: dict[str, Any]):
    name = domain.name

    @dg.asset(key=[name, "drift_report"], partitions_def=days, kinds={"json"}, **common,
              deps=[dg.AssetKey([name, "captured_traffic"])],
              description=f"One day of {name} traffic against the champion's training data: JS/PSI per slice, "
                          "unseen values, MiniLM domain classifier and centroid distance, oracle disagreement.")
    def drift_report(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        try:
            result = build_drift_report(domain, context.partition_key, artifacts.store(), log=context.log.info)
        except DriftInputError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
        return dg.MaterializeResult(metadata=drift_metadata(result), data_version=dg.DataVersion(result.manifest_hash))

    return [drift_report]
