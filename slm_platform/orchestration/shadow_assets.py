"""`shadow_report[v]`: challenger v judged on the gateway's shadow pairs, with the shadow gates as
blocking, version-partitioned checks (see `slm_platform/shadow/report.py`)."""

from typing import Any

import dagster as dg

from slm_platform.domain import Domain
from slm_platform.orchestration.resources import ArtifactStoreResource
from slm_platform.shadow.report import SHADOW_GATES
from slm_platform.shadow.stage import build_shadow_report

GATE_DESCRIPTIONS = {
    "shadow_pairs": "at least improvement.shadow.min_pairs judged pairs in every shadowed role",
    "shadow_validity": "every judged challenger answer valid (no invalid output, timeout or error)",
    "shadow_quality": "right as often as the champion on truth-labelled pairs (less eval.regression_tolerance), "
                      "else agreement with the champion ≥ improvement.shadow.min_agreement (lower 95% bound)",
    "shadow_latency": "challenger p95 ≤ champion p95 × (1 + improvement.shadow.latency_tolerance)",
    "shadow_cost": "challenger tokens per request ≤ champion's × (1 + improvement.shadow.cost_tolerance); priced "
                   "with serving.cost_per_1m_tokens, ≤ improvement.shadow.max_cost_per_request USD",
}


def shadow_metadata(result: Any) -> dict[str, Any]:
    report = result.report
    md: dict[str, Any] = {"dagster/uri": dg.MetadataValue.path(result.uri),
                          "decided": dg.MetadataValue.bool(report.decided),
                          "champions": ", ".join(report.champions) or "-",
                          "days": ", ".join(report.days) or "-",
                          "unreadable_lines": dg.MetadataValue.int(report.rejected),
                          "by_slice": dg.MetadataValue.md(result.markdown)}
    for role, r in report.roles.items():
        md[f"{role}/pairs"] = dg.MetadataValue.int(r.pairs)
        for name, rate in (("agreement", r.agreement), ("challenger_valid", r.challenger_valid),
                           ("challenger_right", r.challenger_correct), ("champion_right", r.champion_correct)):
            if rate.value is not None:
                md[f"{role}/{name}"] = dg.MetadataValue.float(rate.value)
        for side, lat in (("champion", r.champion_latency_ms), ("challenger", r.challenger_latency_ms)):
            if lat.p95 is not None:
                md[f"{role}/{side}_p95_ms"] = dg.MetadataValue.float(lat.p95)
        for side, cost in (("champion", r.champion_cost), ("challenger", r.challenger_cost)):
            if cost is not None and cost.tokens is not None:
                md[f"{role}/{side}_tokens_per_request"] = dg.MetadataValue.float(cost.tokens)
            if cost is not None and cost.usd is not None:
                md[f"{role}/{side}_usd_per_request"] = dg.MetadataValue.float(cost.usd)
    return md


def build_shadow_assets(domain: Domain, *, versions: dg.PartitionsDefinition, common: dict[str, Any]):
    name = domain.name
    key = dg.AssetKey([name, "shadow_report"])
    checks = [dg.AssetCheckSpec(gate, asset=key, blocking=True, partitions_def=versions,
                                description=GATE_DESCRIPTIONS[gate]) for gate in SHADOW_GATES]

    @dg.asset(key=key, partitions_def=versions, kinds={"json"}, check_specs=checks, **common,
              deps=[dg.AssetKey([name, "package"])],
              description=f"Challenger v of {name} against the champion on the gateway's shadow pairs: validity, "
                          "agreement, right vs truth labels, p50/p95 latency, by slice, with 95% intervals.")
    def shadow_report(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        result = build_shadow_report(domain, artifacts.store(), context.partition_key, log=context.log.info)
        return dg.MaterializeResult(
            metadata=shadow_metadata(result), data_version=dg.DataVersion(result.manifest_hash),
            check_results=[dg.AssetCheckResult(check_name=g.name, passed=g.passed, metadata={"detail": g.detail})
                           for g in result.report.gates.values()])

    return [shadow_report]
