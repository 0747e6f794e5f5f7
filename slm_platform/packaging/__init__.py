"""Packaging: a version whose gates passed, made servable (lora/ and merged/ forms) with its model card.

Above the evals in the layers: it reads eval reports, datasets, adapters and base models and
publishes `<domain>/packages/<v>/`. Readers open a package with
`slm_platform.registry.packages.verify_package`, which lives below so that every reader can import it.
"""

from slm_platform.packaging.builder import PackageResult, build_package
from slm_platform.packaging.inputs import PackageRefusedError
from slm_platform.packaging.parity import MAX_LOGIT_DIFF, MergeParity, MergeParityError
from slm_platform.registry.packages import verify_package

__all__ = ["PackageResult", "build_package", "PackageRefusedError", "MergeParity", "MergeParityError",
           "MAX_LOGIT_DIFF", "verify_package"]
