"""infra/ must agree with the code: entry point, configs, environment, ports, image, versions."""

import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from pipelines.cli import STAGES, _parser
from pipelines.config import load_config

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
IMAGE = "ghcr.io/growth-pipelines/growth-pipelines:0.1.0"
MLFLOW_URI = "http://mlflow.growth.svc.cluster.local:5000"


def yaml_docs(name):
    return [d for d in yaml.safe_load_all((INFRA / name).read_text()) if d]


def pins():
    return dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    )


def containers(doc):
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_entrypoint(command: str):
    """``python -m pipelines <stage> --config <file> [--set k=v]`` must parse and name a real
    config (resolved in the repo, as it is inside the image)."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "pipelines"]
    args = _parser().parse_args(argv[3:])
    assert args.command in STAGES
    load_config(ROOT / args.config, args.overrides)


def test_dockerfile_entrypoint_runs_the_cli_on_a_shipped_config():
    text = (INFRA / "Dockerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M).group(1)
    check_entrypoint(" ".join(yaml.safe_load(entry) + yaml.safe_load(cmd)))
    assert f"ENV MLFLOW_TRACKING_URI={MLFLOW_URI}" in text
    ray_base = re.search(r"^FROM rayproject/ray:([\d.]+)-py311", text, re.M).group(1)
    assert ray_base == pins()["ray"]
    assert f"torch=={pins()['torch']}" in text


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_kuberay_manifests_use_the_image_tracking_uri_and_ray_version(name):
    (doc,) = yaml_docs(name)
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    assert spec["rayVersion"] == pins()["ray"]
    for c in containers(doc):
        assert c["image"].partition("@")[0] == IMAGE  # by tag, or by tag and digest once pinned
        assert env_of(c)["MLFLOW_TRACKING_URI"] == MLFLOW_URI
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}


def test_rayjob_entrypoint_is_the_pipeline_cli():
    (doc,) = yaml_docs("kuberay/rayjob.yaml")
    check_entrypoint(doc["spec"]["entrypoint"])
    env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == MLFLOW_URI
    assert env["GROWTH_STORAGE"].startswith("s3://")


def secret_env(container) -> dict[str, tuple[str, str]]:
    """Environment variables a container takes from Secrets: name -> (secret, key)."""
    out = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            out[e["name"]] = (ref["name"], ref["key"])
    return out


def hardened(container) -> bool:
    ctx = container.get("securityContext", {})
    return (
        ctx.get("runAsNonRoot") is True
        and ctx.get("runAsUser", 0) > 0
        and ctx.get("allowPrivilegeEscalation") is False
        and ctx.get("capabilities", {}).get("drop") == ["ALL"]
    )


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_kuberay_clusters_authenticate_and_run_as_non_root(name):
    (doc,) = yaml_docs(name)
    for c in containers(doc):
        assert env_of(c)["RAY_AUTH_MODE"] == "token", c["name"]
        # Ray's storage where every pod reaches it (the head has no CPUs: trials run elsewhere)
        assert env_of(c)["GROWTH_STORAGE"].startswith("s3://"), c["name"]
        secrets = secret_env(c)
        assert secrets["RAY_AUTH_TOKEN"] == ("ray-auth", "auth_token")
        assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(secrets)
        assert hardened(c), c["name"]
        ports = {p["containerPort"] for p in c.get("ports", [])}
        assert 10001 not in ports  # the Ray Client port (unauthenticated before 2.52) is closed


def test_the_launcher_cluster_authenticates_and_keeps_the_dashboard_local():
    (doc,) = yaml_docs("ray-cluster.yaml")
    options = " ".join(doc["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in options and "RAY_AUTH_TOKEN_PATH=" in options
    token_path = options.split("RAY_AUTH_TOKEN_PATH=")[1].split()[0]
    assert token_path in doc["file_mounts"]
    head = " ".join(doc["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_mlflow_server_authenticates_names_its_hosts_and_keeps_secrets_out_of_argv():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml_docs("mlflow/tracking-server.yaml")}
    pod = docs[("Deployment", "mlflow")]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    args = dict(a.removeprefix("--").partition("=")[::2] for a in server["args"])
    assert args["app-name"] == "basic-auth"
    uri = urlparse(MLFLOW_URI)
    allowed = args["allowed-hosts"].split(",")
    assert uri.netloc in allowed and f"{uri.hostname.split('.')[0]}:{uri.port}" in allowed
    # no secret in a process's arguments: no $(VAR) expansion, no URI with a password
    assert not any("$(" in a or re.search(r"://[^/@\s]+:[^/@\s]+@", a) for a in server["args"])
    assert secret_env(server)["MLFLOW_BACKEND_STORE_URI"] == (
        "mlflow-postgres",
        "BACKEND_STORE_URI",
    )
    assert hardened(server)
    (postgres,) = docs[("StatefulSet", "mlflow-postgres")]["spec"]["template"]["spec"]["containers"]
    assert hardened(postgres)


def test_mlflow_server_serves_the_uri_the_pipeline_uses():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml_docs("mlflow/tracking-server.yaml")}
    uri = urlparse(MLFLOW_URI)
    service = docs[("Service", "mlflow")]
    assert uri.hostname.startswith(
        f"{service['metadata']['name']}.{service['metadata']['namespace']}."
    )
    assert service["spec"]["ports"][0]["port"] == uri.port
    (server,) = docs[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"]
    args = dict(a.removeprefix("--").partition("=")[::2] for a in server["args"])
    assert int(args["port"]) == uri.port
    assert "backend-store-uri" not in args  # from a Secret, as MLFLOW_BACKEND_STORE_URI
    assert args["artifacts-destination"].startswith("s3://")
    assert ("StatefulSet", "mlflow-postgres") in docs


def test_cluster_launcher_has_cpu_head_and_gpu_workers_on_the_image():
    (doc,) = yaml_docs("ray-cluster.yaml")
    assert doc["provider"]["type"] in {"aws", "gcp", "azure"}
    assert doc["docker"]["image"].partition("@")[0] == IMAGE
    types = doc["available_node_types"]
    assert types[doc["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
