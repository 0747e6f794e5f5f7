"""`[<domain>, "release"]`: the asset whose observations are the domain's release history.

It is never materialized: each promote or rollback (`orchestration.registry`) records one
`AssetObservation` on it, so the UI shows every alias move with its actor, reason and evidence
on this asset's page, downstream of the packages it releases.
"""

from typing import Any

import dagster as dg

from slm_platform.domain import Domain
from slm_platform.layout import release_pointer_path
from slm_platform.orchestration.registry import release_key


def build_release_assets(domain: Domain, *, common: dict[str, Any]) -> list[dg.AssetSpec]:
    name = domain.name
    return [dg.AssetSpec(
        release_key(name), deps=[dg.AssetKey([name, "package"])], kinds={"registry"}, **common,
        metadata={"pointer": release_pointer_path(name)},
        description=f"Which {name} package serves, per role (champion, challenger). Every promote or rollback "
                    f"is an observation here (alias, from, to, actor, reason, gate evidence, package hash); "
                    f"replaying them gives the pointer `{release_pointer_path(name)}`. "
                    f"Use `slm registry promote|rollback|history {name}`.")]
