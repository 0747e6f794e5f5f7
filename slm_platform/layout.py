"""Every artifact path, in one place: where each stage writes and the next one reads.

Paths are relative to the artifact store's root (a folder locally, gs://bucket/prefix in
production). Per domain (ARCHITECTURE.md §4):

    <domain>/capture/date=YYYY-MM-DD/     one redacted capture day
    <domain>/shadow/YYYY-MM-DD/           shadow pairs of that day (champion vs challenger), one JSONL per batch
    <domain>/drift/YYYY-MM-DD/            the drift report of that capture day against the champion's data
    <domain>/datasets/<v>/                a dataset version (splits, quarantine, card)
    base_models/<candidate key>/          a converted base model, shared by every domain
    <domain>/adapters/<v>/                a LoRA adapter trained on datasets/<v>
    <domain>/evals/<v>/<name>/            an eval report of version <v> (baseline, candidate)
    <domain>/packages/<v>/                the servable package of version <v> (lora/ and merged/ forms)
    <domain>/releases/current.json        the release pointer (one file, replaced whole)
"""

from __future__ import annotations

BASE_MODELS = "base_models"
BASELINE_EVAL = "baseline"
CANDIDATE_EVAL = "candidate"


def capture_root(domain: str) -> str:
    return f"{domain}/capture"


def capture_dir(domain: str, day: str) -> str:
    return f"{capture_root(domain)}/date={day}"


def drift_dir(domain: str, day: str) -> str:
    return f"{domain}/drift/{day}"


def shadow_report_dir(domain: str, version: str) -> str:
    return f"{domain}/shadow_reports/{version}"


def shadow_dir(domain: str, day: str) -> str:
    """A folder of JSONL objects, one per batch the gateway wrote (not a manifest-checked artifact)."""
    return f"{domain}/shadow/{day}"


def datasets_root(domain: str) -> str:
    return f"{domain}/datasets"


def dataset_dir(domain: str, version: str) -> str:
    return f"{datasets_root(domain)}/{version}"


def base_model_dir(key: str) -> str:
    """`key` is a candidate key (`models.candidate_key`): one folder per base model for every domain."""
    return f"{BASE_MODELS}/{key}"


def adapters_root(domain: str) -> str:
    return f"{domain}/adapters"


def adapter_dir(domain: str, version: str) -> str:
    return f"{adapters_root(domain)}/{version}"


def eval_dir(domain: str, version: str, name: str) -> str:
    return f"{domain}/evals/{version}/{name}"


def baseline_eval_dir(domain: str, version: str) -> str:
    return eval_dir(domain, version, BASELINE_EVAL)


def candidate_eval_dir(domain: str, version: str) -> str:
    return eval_dir(domain, version, CANDIDATE_EVAL)


def packages_root(domain: str) -> str:
    return f"{domain}/packages"


def package_dir(domain: str, version: str) -> str:
    return f"{packages_root(domain)}/{version}"


def release_pointer_path(domain: str) -> str:
    """A single file, not an artifact folder: it is replaced whole on every alias move."""
    return f"{domain}/releases/current.json"
