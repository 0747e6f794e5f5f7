"""Resources, switched by environment (`SLM_ENV`): the embedded defaults and production differ only here.

Assets ask for `artifacts` and get a store rooted at a local folder or at gs://; later stages add
the trainer launcher (subprocess vs Kubernetes pod) and inference endpoints the same way.
"""

from __future__ import annotations

import dagster as dg

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore


class ArtifactStoreResource(dg.ConfigurableResource):
    """Root of the artifact store: a folder (file://) locally, gs://bucket/prefix in production."""

    root: str

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)


def resources_for(env: str | None = None) -> dict[str, object]:
    env = env or settings.env()
    if env == "prod":
        # production roots come from the deployment's environment (Helm values), never from code
        return {"artifacts": ArtifactStoreResource(root=dg.EnvVar("SLM_ARTIFACTS"))}
    return {"artifacts": ArtifactStoreResource(root=settings.artifacts_root())}
