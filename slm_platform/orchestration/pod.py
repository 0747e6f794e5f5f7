"""The trainer pod: a domain's `TrainerBlock` turned into the pod spec and metadata PipesK8sClient takes.

`build_trainer_pod_spec` returns the `base_pod_spec` dict (camelCase, as in a manifest);
`dagster_k8s.pipes.build_pod_body` later names the pod, merges Dagster's common labels into the
metadata, and appends the Pipes bootstrap variables (`DAGSTER_PIPES_CONTEXT`,
`DAGSTER_PIPES_MESSAGES`) to the first container's env. Pure functions: no cluster, no I/O.

Scheduling on GPU nodes (GKE):
- `nvidia.com/gpu: <gpu_count>` in the container limits (and requests; Kubernetes requires the two
  to be equal for extended resources), so the device plugin hands the pod whole GPUs.
- `gpu_type` becomes the node selector `cloud.google.com/gke-accelerator: <gpu_type>`: GKE puts
  that label on every GPU node (values such as `nvidia-l4`, `nvidia-tesla-t4`, `nvidia-a100-80gb`,
  `nvidia-h100-80gb`). On another provider set `node_selector` instead; an explicit
  `node_selector` entry wins over the one derived from `gpu_type`.
- GKE (and most GPU node pools) taint GPU nodes `nvidia.com/gpu=present:NoSchedule`, so a pod
  asking for GPUs gets the standard toleration `{key: nvidia.com/gpu, operator: Exists, effect:
  NoSchedule}` in addition to the configured ones.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from slm_platform.config.models import TrainerBlock

GPU_RESOURCE = "nvidia.com/gpu"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
APP_LABEL = ("app.kubernetes.io/name", "slm-trainer")
DOMAIN_LABEL = "slm/domain"
VERSION_LABEL = "slm/version"
CONTAINER_NAME = "trainer"
SHM_VOLUME = "dshm"
DEFAULT_SHM_SIZE = "8Gi"

_LABEL_MAX = 63


def sanitize_label_value(value: str) -> str:
    """Make `value` a valid Kubernetes label value.

    The rules: at most 63 characters, `[A-Za-z0-9._-]`, starting and ending with an alphanumeric
    (or empty). Other characters become `-`; a value that has to be cut keeps a short hash of the
    original so two long versions never collapse onto the same label. The raw value is kept in an
    annotation of the same name (annotations have no such rules).
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-_.")
    if len(cleaned) > _LABEL_MAX:
        digest = hashlib.sha1(value.encode()).hexdigest()[:8]
        cleaned = cleaned[: _LABEL_MAX - 9].rstrip("-_.") + "-" + digest
    return cleaned


def trainer_labels(domain: str | None, version: str | None) -> dict[str, str]:
    labels = {APP_LABEL[0]: APP_LABEL[1]}
    for key, value in ((DOMAIN_LABEL, domain), (VERSION_LABEL, version)):
        if value and (clean := sanitize_label_value(value)):
            labels[key] = clean
    return labels


def build_trainer_pod_meta(*, domain: str | None, version: str | None) -> dict[str, Any]:
    """`base_pod_meta`: sanitized labels (selectable) plus the raw values as annotations."""
    annotations = {key: value for key, value in ((DOMAIN_LABEL, domain), (VERSION_LABEL, version)) if value}
    meta: dict[str, Any] = {"labels": trainer_labels(domain, version)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _toleration(tol: Any) -> dict[str, str]:
    out = {"key": tol.key, "operator": tol.operator}
    if tol.value is not None and tol.operator == "Equal":  # the API rejects a value with Exists
        out["value"] = tol.value
    if tol.effect is not None:
        out["effect"] = tol.effect
    return out


def build_trainer_pod_spec(
    trainer_cfg: TrainerBlock,
    *,
    image: str,
    command: Sequence[str],
    env: Mapping[str, str],
    shm_size: str | None = DEFAULT_SHM_SIZE,
) -> dict[str, Any]:
    """The `base_pod_spec` for one training run (a PodSpec in manifest form, camelCase keys)."""
    gpus = trainer_cfg.gpu_count
    resources: dict[str, dict[str, str]] = {
        # requests == limits: Guaranteed QoS, the last class the kubelet evicts under pressure
        "requests": {"cpu": trainer_cfg.cpu, "memory": trainer_cfg.memory},
        "limits": {"cpu": trainer_cfg.cpu, "memory": trainer_cfg.memory},
    }
    if gpus > 0:
        resources["requests"][GPU_RESOURCE] = str(gpus)
        resources["limits"][GPU_RESOURCE] = str(gpus)

    node_selector: dict[str, str] = {}
    if gpus > 0 and trainer_cfg.gpu_type:
        node_selector[GKE_ACCELERATOR_LABEL] = trainer_cfg.gpu_type
    node_selector.update(trainer_cfg.node_selector)

    tolerations = [_toleration(t) for t in trainer_cfg.tolerations]
    if gpus > 0 and not any(t["key"] == GPU_RESOURCE for t in tolerations):
        tolerations.append(dict(GPU_TOLERATION))

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(command),
        "env": [{"name": k, "value": str(v)} for k, v in sorted(env.items())],
        "resources": resources,
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # a failed run is retried by Dagster, never by the kubelet
        "activeDeadlineSeconds": trainer_cfg.deadline_s,
        # the trainer never talks to the Kubernetes API; GCS access goes through Workload Identity
        "automountServiceAccountToken": False,
        "containers": [container],
    }
    if shm_size:
        # DataLoader workers share batches through /dev/shm; the container default is 64 MiB
        spec["volumes"] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}]
        container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    if trainer_cfg.service_account:
        spec["serviceAccountName"] = trainer_cfg.service_account
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return spec
