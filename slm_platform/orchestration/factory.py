"""The per-domain asset factory: one domain folder in, one asset group's Definitions out.

Pure over the loaded config (no I/O beyond what `Domain.load` already read), so definitions load
fast and the same function is unit-testable. Keys are `[<domain>, <stage>]`, the group is the
domain, candidate versions are a per-domain dynamic partition and capture days a daily partition.
"""

from __future__ import annotations

import warnings

import dagster as dg

from slm_platform.orchestration.automation import build_automation
from slm_platform.orchestration.data_assets import build_data_assets
from slm_platform.orchestration.drift_assets import build_drift_assets
from slm_platform.orchestration.model_assets import build_model_assets
from slm_platform.orchestration.partitions import days_partitions, versions_partitions
from slm_platform.orchestration.package_assets import build_package_assets
from slm_platform.orchestration.registry_assets import build_release_assets, build_release_jobs
from slm_platform.orchestration.shadow_assets import build_shadow_assets
from slm_platform.orchestration.training_assets import build_training_assets
from slm_platform.domain import Domain


# Version-partitioned blocking checks are the gate design (a check judged per version, not by its
# latest result); Dagster marks partitioned check specs as preview in 1.13.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)


def common_spec_args(domain: Domain) -> dict:
    """What every asset of a domain carries: its group, owners and a domain tag."""
    return {
        "group_name": domain.name,
        "owners": list(domain.config.domain.owners),
        "tags": {"domain": domain.name},
    }


def build_domain_defs(domain: Domain) -> dg.Definitions:
    versions = versions_partitions(domain.name)
    days = days_partitions(domain)
    common = common_spec_args(domain)
    assets, checks, jobs = build_data_assets(domain, versions=versions, days=days, common=common)
    assets += build_drift_assets(domain, days=days, common=common)
    assets += build_model_assets(domain, versions=versions, common=common)
    training, resources = build_training_assets(domain, versions=versions, common=common)
    assets += training + build_package_assets(domain, versions=versions, common=common)
    assets += build_shadow_assets(domain, versions=versions, common=common)
    assets += build_release_assets(domain, common=common)
    jobs = [*jobs, *build_release_jobs(domain)]
    return dg.Definitions.merge(dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, resources=resources),
                                build_automation(domain, versions=versions, days=days))
