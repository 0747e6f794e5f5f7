"""A domain's two partitions: candidate versions (dynamic) and capture days (daily)."""

import dagster as dg

from slm_platform.domain import Domain


def versions_partitions(domain: str) -> dg.DynamicPartitionsDefinition:
    """Candidate versions `v0001, v0002, ...`: one key per dataset/adapter/eval generation."""
    return dg.DynamicPartitionsDefinition(name=f"{domain}_versions")


def days_partitions(domain: Domain) -> dg.DailyPartitionsDefinition:
    # end_offset=1 so that today's traffic is already a partition (capture writes into the current day)
    return dg.DailyPartitionsDefinition(start_date=domain.config.data.capture.start_date, end_offset=1)


def next_version(instance: dg.DagsterInstance, domain: str) -> str:
    """The next free version key (`v0007` after `v0006`), for `slm run` and the retrain sensor."""
    existing = instance.get_dynamic_partitions(versions_partitions(domain).name)
    numbers = [int(k[1:]) for k in existing if k[:1] == "v" and k[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1:04d}"
