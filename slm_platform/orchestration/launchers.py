"""Trainer launchers: run the training child (a Dagster Pipes process) as a subprocess or a GPU pod.

The asset that trains calls one method and forwards what the child reported:

    result = trainer.launch(context, extras={...})
    yield from result.get_results(implicit_materializations=False)

(`implicit_materializations=False`: a child that reports no materialization records none, and
the step fails for the missing output; with the default Pipes invents an empty one.)

- `LocalTrainer`   — `PipesSubprocessClient`-based: `[python, -m, entrypoint]` in the project
  root, with a minimal environment (no teacher keys, no database URLs) and the child's stderr tail
  in the error when it exits non-zero. The embedded default (`SLM_ENV=local`).
- `K8sTrainer`     — `dagster_k8s.PipesK8sClient`: a bare Pod on a GPU node, spec built from the
  domain's `TrainerBlock` (see `pod.py`). Pipes messages travel in the pod log (the client's
  default reader), or through GCS when `SLM_PIPES_GCS_BUCKET` is set.
- `trainer_for(cfg, env)` picks one.
- `required_check_specs(asset_key, partitions_def)` — the checks every training child must
  report. Pipes is content with a child that reports nothing (the asset "materializes" with empty
  metadata); declaring these checks on the training asset makes such a run fail instead.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError, DagsterPipesExecutionError
from dagster._core.pipes.client import PipesClientCompletedInvocation
from dagster._core.pipes.utils import open_pipes_session
from dagster_k8s import PipesK8sClient
from dagster_k8s.client import WaitForPodState
from pydantic import Field

from slm_platform import settings, tracing
from slm_platform.config.models import Toleration, TrainerBlock
from slm_platform.envs import BASE_PASSTHROUGH_ENV, passthrough
from slm_platform.orchestration.pod import DEFAULT_SHM_SIZE, build_trainer_pod_meta, build_trainer_pod_spec

DEFAULT_ENTRYPOINT = "slm_platform.training.train_lora"

# Checks the training child must report for the adapter it produced (see train_lora).
TRAINING_COMPLETED = "training_completed"  # the loop ran to its end (loss finite, steps done)
ADAPTER_PUBLISHED = "adapter_published"  # the adapter and its manifest are at the output URI
REQUIRED_CHECKS = (TRAINING_COMPLETED, ADAPTER_PUBLISHED)

# Environment names read here (settings.py owns the rest):
GCS_BUCKET_ENV = "SLM_PIPES_GCS_BUCKET"  # Pipes messages through GCS instead of the pod log
TRAINER_IMAGE_ENV = "SLM_TRAINER_IMAGE"  # trainer image when the domain config names none
TRAINER_BACKEND_ENV = "SLM_TRAINER_BACKEND"  # local | k8s: overrides trainer_for's choice

# Variables a local child inherits from this process; everything else (teacher API keys,
# SLM_DAGSTER_STORAGE_URL, DAGSTER_*) stays out. Add names per launcher with `passthrough_env`.
LOCAL_PASSTHROUGH_ENV = (
    *BASE_PASSTHROUGH_ENV, "VIRTUAL_ENV", "SLM_ENV", "SLM_DOMAINS",
    "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",  # the artifact store on gs://
    *tracing.ENV_NAMES,  # the train run's Langfuse trace (slm_platform.tracing), when configured
)  # fmt: skip


def required_check_specs(
    asset_key: dg.AssetKey | Sequence[str] | str,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetCheckSpec]:
    """Blocking checks the training child MUST report; a missing one fails the step.

    Put them in the training asset's `check_specs` with the asset's own `partitions_def`, so a
    result is judged per version.
    """
    key = dg.AssetKey.from_coercible(asset_key)
    descriptions = {
        TRAINING_COMPLETED: "Reported by the training child: the training loop ran to its end.",
        ADAPTER_PUBLISHED: "Reported by the training child: the adapter was published with its manifest.",
    }
    return [
        dg.AssetCheckSpec(name, asset=key, blocking=True, partitions_def=partitions_def, description=descriptions[name])
        for name in REQUIRED_CHECKS
    ]


class TrainerLauncher(dg.ConfigurableResource):
    """Runs the training child under Dagster Pipes and returns what it reported."""

    def launch(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        *,
        extras: Mapping[str, Any],
        entrypoint: str = DEFAULT_ENTRYPOINT,
        command: Sequence[str] | None = None,
    ) -> PipesClientCompletedInvocation:
        """Run `python -m <entrypoint>` (or `command`, verbatim) with `extras` as Pipes extras."""
        raise NotImplementedError


# --- local --------------------------------------------------------------------------------------
class _ScopedSubprocessClient(dg.PipesSubprocessClient):
    """`PipesSubprocessClient` with an exact environment and the stderr tail in the failure.

    The stock client merges all of `os.environ` into the child and reports only the exit code.
    Here the child gets exactly `self.env` plus the Pipes bootstrap variables, its stderr is
    forwarded line by line and the last `tail_lines` lines are kept for the error message.
    """

    def __init__(self, *, env: Mapping[str, str], cwd: str, tail_lines: int, termination_timeout_seconds: float):
        super().__init__(env=env, cwd=cwd, termination_timeout_seconds=termination_timeout_seconds)
        self.tail_lines = tail_lines

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        command: Sequence[str],
        extras: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> PipesClientCompletedInvocation:
        with open_pipes_session(
            context=context,
            context_injector=self.context_injector,
            message_reader=self.message_reader,
            extras=extras,
        ) as session:
            process = subprocess.Popen(
                list(command),
                cwd=cwd or self.cwd,
                env={**self.env, **(env or {}), **session.get_bootstrap_env_vars()},
                stdout=None,  # inherited: goes to the step's compute log
                stderr=subprocess.PIPE,
            )
            tail: collections.deque[str] = collections.deque(maxlen=self.tail_lines)
            pump = threading.Thread(target=_pump_stderr, args=(process.stderr, tail), daemon=True)
            pump.start()
            try:
                process.wait()
                pump.join(timeout=10)
            except DagsterExecutionInterruptedError:
                context.log.info("[pipes] execution interrupted, sending SIGINT to the trainer subprocess.")
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=self.termination_timeout_seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
            if process.returncode != 0:
                shown = "".join(tail).rstrip() or "(nothing on stderr)"
                raise DagsterPipesExecutionError(
                    f"Trainer process {' '.join(command)!r} failed with exit code {process.returncode}. "
                    f"Last {len(tail)} stderr line(s):\n{shown}"
                )
        return PipesClientCompletedInvocation(session)


def _pump_stderr(stream: Any, tail: collections.deque[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        tail.append(line)
        sys.stderr.write(line)
    stream.close()


class LocalTrainer(TrainerLauncher):
    """Runs the trainer as a local subprocess (CPU on the embedded default)."""

    python: str | None = Field(default=None, description="Interpreter; default: the one running Dagster.")
    cwd: str | None = Field(default=None, description="Working directory; default: the project root.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra variables for the child.")
    passthrough_env: list[str] = Field(
        default_factory=list, description="Names inherited from this process on top of LOCAL_PASSTHROUGH_ENV."
    )
    stderr_tail_lines: int = 40
    termination_timeout_s: float = 20.0

    def child_env(self) -> dict[str, str]:
        inherited = passthrough((*LOCAL_PASSTHROUGH_ENV, *self.passthrough_env))
        return {
            **inherited,
            "SLM_HOME": str(settings.home()),
            "SLM_ARTIFACTS": settings.artifacts_root(),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }

    def launch(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        *,
        extras: Mapping[str, Any],
        entrypoint: str = DEFAULT_ENTRYPOINT,
        command: Sequence[str] | None = None,
    ) -> PipesClientCompletedInvocation:
        client = _ScopedSubprocessClient(
            env=self.child_env(),
            cwd=self.cwd or str(settings.PROJECT_ROOT),
            tail_lines=self.stderr_tail_lines,
            termination_timeout_seconds=self.termination_timeout_s,
        )
        cmd = list(command) if command else [self.python or sys.executable, "-m", entrypoint]
        return client.run(context=context, command=cmd, extras=dict(extras))


# --- kubernetes ---------------------------------------------------------------------------------
class _StartupBoundedPipesK8sClient(PipesK8sClient):
    """PipesK8sClient that gives up when the pod is not running within `startup_timeout_s`.

    The stock client waits for readiness with a 24 h launch timeout, so a pod that no GPU node can
    take (or whose image never arrives) holds the step for a day. Here the pod must be running
    (or already finished) within `startup_timeout_s`; the pod is then deleted by the client's
    `delete_pod_on_completion` cleanup.
    """

    def __init__(self, *, startup_timeout_s: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.startup_timeout_s = startup_timeout_s

    @contextmanager
    def consume_pod_logs(  # type: ignore[override]
        self, context, client, namespace, pod_name, enable_multi_container_logs=False, ignore_containers=None
    ) -> Iterator[None]:
        client.wait_for_pod(
            pod_name,
            namespace,
            wait_for_state=WaitForPodState.Ready,
            pod_launch_timeout=self.startup_timeout_s,
            wait_timeout=self.startup_timeout_s,
            wait_time_between_attempts=self.poll_interval,
            ignore_containers=ignore_containers,
        )
        with super().consume_pod_logs(
            context=context,
            client=client,
            namespace=namespace,
            pod_name=pod_name,
            enable_multi_container_logs=enable_multi_container_logs,
            ignore_containers=ignore_containers,
        ):
            yield


class K8sToleration(dg.Config):
    key: str
    operator: str = "Equal"  # Equal | Exists
    value: str | None = None
    effect: str | None = None  # NoSchedule | PreferNoSchedule | NoExecute


class K8sTrainer(TrainerLauncher):
    """Runs the trainer as a bare Pod on a GPU node through `dagster_k8s.PipesK8sClient`.

    The fields mirror the domain's `TrainerBlock` (`trainer_for` fills them); the rest are
    operational knobs. Timeouts: `startup_timeout_s` bounds scheduling + image pull (GPU node
    scale-up and a multi-GB CUDA image take minutes); `deadline_s` becomes the pod's
    `activeDeadlineSeconds` (the kubelet kills a run that overstays); `pod_wait_timeout_s`
    (default: deadline + startup + 10 min) is the client-side bound on waiting for termination.
    """

    image: str
    namespace: str = "slm"
    gpu_count: int = 1
    gpu_type: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[K8sToleration] = Field(default_factory=list)
    service_account: str | None = None
    deadline_s: int = 4 * 3600
    cpu: str = "4"
    memory: str = "32Gi"
    shm_size: str | None = DEFAULT_SHM_SIZE

    domain: str | None = Field(default=None, description="For the slm/domain label; default: the asset key's first part.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra variables for the trainer container.")
    artifacts_root: str | None = Field(default=None, description="SLM_ARTIFACTS in the pod; default: this process's.")
    gcs_messages_bucket: str | None = Field(
        default=None, description=f"Pipes messages through this GCS bucket; default: ${GCS_BUCKET_ENV}, else the pod log."
    )

    startup_timeout_s: float = 30 * 60
    pod_wait_timeout_s: float | None = None
    delete_pod_on_completion: bool = Field(
        default=True, description="False keeps the finished pod (and its log) for debugging."
    )
    poll_interval_s: float = 10.0
    load_incluster_config: bool | None = None
    kubeconfig_file: str | None = None
    kube_context: str | None = None

    # --- pieces, public so tests and `slm` commands can show them without a cluster ---
    def trainer_block(self) -> TrainerBlock:
        return TrainerBlock(
            backend="k8s",
            image=self.image,
            namespace=self.namespace,
            gpu_count=self.gpu_count,
            gpu_type=self.gpu_type,
            node_selector=dict(self.node_selector),
            tolerations=[Toleration.model_validate(t.model_dump()) for t in self.tolerations],
            service_account=self.service_account,
            deadline_s=self.deadline_s,
            cpu=self.cpu,
            memory=self.memory,
        )

    def messages_bucket(self) -> str | None:
        return self.gcs_messages_bucket or os.environ.get(GCS_BUCKET_ENV) or None

    def container_env(self) -> dict[str, str]:
        env = {
            "SLM_ENV": settings.env(),
            "SLM_ARTIFACTS": self.artifacts_root or settings.artifacts_root(),
            "PYTHONUNBUFFERED": "1",  # Pipes messages and logs reach the pod log as they happen
        }
        if bucket := self.messages_bucket():
            env[GCS_BUCKET_ENV] = bucket  # tells the child to write messages with PipesGCSMessageWriter
        return {**env, **self.env}

    def pod_spec(self, command: Sequence[str]) -> dict[str, Any]:
        return build_trainer_pod_spec(
            self.trainer_block(), image=self.image, command=command, env=self.container_env(), shm_size=self.shm_size
        )

    def pod_meta(self, context: Any, extras: Mapping[str, Any]) -> dict[str, Any]:
        return build_trainer_pod_meta(domain=self._domain(context, extras), version=_version(context, extras))

    def wait_timeout_s(self) -> float:
        if self.pod_wait_timeout_s is not None:
            return self.pod_wait_timeout_s
        return self.deadline_s + self.startup_timeout_s + 600

    def pipes_client(self) -> PipesK8sClient:
        return _StartupBoundedPipesK8sClient(
            startup_timeout_s=self.startup_timeout_s,
            message_reader=self._message_reader(),
            load_incluster_config=self.load_incluster_config,
            kubeconfig_file=self.kubeconfig_file,
            kube_context=self.kube_context,
            poll_interval=self.poll_interval_s,
        )

    def launch(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        *,
        extras: Mapping[str, Any],
        entrypoint: str = DEFAULT_ENTRYPOINT,
        command: Sequence[str] | None = None,
    ) -> PipesClientCompletedInvocation:
        size = len(json.dumps(extras, default=str))
        if size > 64 * 1024:  # extras ride in an env var; Linux caps one at 128 KiB
            raise ValueError(f"Pipes extras are {size} bytes; pass URIs, not contents (limit 64 KiB)")
        cmd = list(command) if command else ["python", "-m", entrypoint]
        return self.pipes_client().run(
            context=context,
            extras=dict(extras),
            namespace=self.namespace,
            base_pod_meta=self.pod_meta(context, extras),
            base_pod_spec=self.pod_spec(cmd),
            pod_wait_timeout=self.wait_timeout_s(),
            delete_pod_on_completion=self.delete_pod_on_completion,
        )

    def _message_reader(self) -> dg.PipesMessageReader | None:
        """None: PipesK8sClient's default, which reads the messages out of the pod log."""
        bucket = self.messages_bucket()
        if not bucket:
            return None
        try:
            from dagster_gcp.pipes.message_readers import PipesGCSMessageReader
        except ImportError as exc:  # dagster_gcp.pipes/__init__ also imports the Dataproc client
            raise RuntimeError(
                f"{GCS_BUCKET_ENV}={bucket} asks for Pipes messages through GCS, but "
                f"dagster_gcp.pipes cannot be imported ({exc}); install google-cloud-dataproc in the "
                f"code-location image or unset {GCS_BUCKET_ENV} to read messages from the pod log"
            ) from exc
        from google.cloud import storage

        return PipesGCSMessageReader(bucket=bucket, client=storage.Client())

    def _domain(self, context: Any, extras: Mapping[str, Any]) -> str | None:
        if self.domain:
            return self.domain
        if extras.get("domain"):
            return str(extras["domain"])
        try:
            return context.asset_key.path[0]
        except Exception:  # an op, or a multi-asset with several keys
            return None


def _version(context: Any, extras: Mapping[str, Any]) -> str | None:
    if extras.get("version"):
        return str(extras["version"])
    try:
        return context.partition_key if context.has_partition_key else None
    except Exception:
        return None


# --- choice -------------------------------------------------------------------------------------
def trainer_for(
    cfg: TrainerBlock,
    env: str | None = None,
    *,
    domain: str | None = None,
    domains_dir: Path | None = None,
    backend: str | None = None,
) -> TrainerLauncher:
    """The launcher for a domain's trainer block in environment `env` (`SLM_ENV`).

    The child finds the domain by name: a local child under `domains_dir` (the folder the code
    location loaded it from), a pod under the `SLM_DOMAINS` its image sets.

    An explicit choice (`backend=` here, else `SLM_TRAINER_BACKEND`) wins. Otherwise Kubernetes
    only in `prod` and only for a domain that asks for it (`backend: k8s`): the embedded default
    never needs a cluster, and `backend: local` in prod trains inside the run pod.
    """
    env = env or settings.env()
    chosen = backend or os.environ.get(TRAINER_BACKEND_ENV) or ("k8s" if env == "prod" else "local")
    if chosen not in ("local", "k8s"):
        raise ValueError(f"trainer backend must be 'local' or 'k8s', found {chosen!r}")
    explicit = backend is not None or TRAINER_BACKEND_ENV in os.environ
    if chosen == "local" or (cfg.backend != "k8s" and not explicit):
        return LocalTrainer(env={"SLM_DOMAINS": str(domains_dir)} if domains_dir is not None else {})
    image = cfg.image or os.environ.get(TRAINER_IMAGE_ENV)
    if not image:
        raise ValueError(
            "model.trainer.image is required for the k8s trainer backend "
            f"(or set {TRAINER_IMAGE_ENV} in the code location's environment)"
        )
    return K8sTrainer(
        image=image,
        namespace=cfg.namespace,
        gpu_count=cfg.gpu_count,
        gpu_type=cfg.gpu_type,
        node_selector=dict(cfg.node_selector),
        tolerations=[K8sToleration(**t.model_dump()) for t in cfg.tolerations],
        service_account=cfg.service_account,
        deadline_s=cfg.deadline_s,
        cpu=cfg.cpu,
        memory=cfg.memory,
        domain=domain,
    )
