"""deploy/k8s validated offline: Kubernetes JSON schemas (kubernetes-validate,
strict: unknown fields are errors), our minimal schemas for the Prometheus
Operator's two resources, and the properties the runbook relies on."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from goodfellaz17.settings import Settings, load_settings
from tests.conftest import API_KEYS
from tests.deploy_manifests import (
    K8S,
    Endpoint,
    Manifest,
    crd_schema,
    deployed,
    dockerfile_instructions,
    effective_env,
    kubectl_set_env,
    kustomization,
    load_manifests,
    network_allows,
    one,
)


def _load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_prometheusrule = _load_script(K8S / "build_prometheusrule.py")

# The oldest Kubernetes still commonly run, and the newest schemas bundled.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())
CORE_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "NetworkPolicy"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
GRACE = 25.0  # GOODFELLAZ17_WORKER_GRACE_PERIOD_SECONDS in configmap.yaml
UVICORN_VARIABLES = {"FORWARDED_ALLOW_IPS"}  # read by uvicorn itself, not a setting of ours
PRESTOP_SECONDS = 5


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return deployed()


@pytest.fixture(scope="module")
def example_secret() -> dict[str, str]:
    """The example Secret with its CHANGE-ME placeholders filled in, as an
    operator must (production refuses the placeholders themselves)."""
    secret = load_manifests(K8S / "secret.example.yaml")[0].doc
    values: dict[str, str] = dict(secret["stringData"])
    assert all("CHANGE-ME" in v for v in values.values())
    values["GOODFELLAZ17_API_KEYS"] = API_KEYS
    values["GOODFELLAZ17_SESSION_SECRET"] = "0123456789abcdef" * 4
    return values


def config(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = one(manifests, "ConfigMap", "goodfellaz17-config")["data"]
    return data


def pod_spec(manifests: list[Manifest], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def container(manifests: list[Manifest], name: str) -> dict[str, Any]:
    containers = pod_spec(manifests, name)["containers"]
    assert len(containers) == 1, "one container per pod: kubectl set env targets it"
    result: dict[str, Any] = containers[0]
    return result


# ---------------------------------------------------------------- schemas


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    listed = kustomization()["resources"]
    on_disk = sorted(
        p.name
        for p in K8S.glob("*.yaml")
        if p.name not in {"kustomization.yaml", "secret.example.yaml"}
    )
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_resources_validate_against_the_kubernetes_schemas(
    manifests: list[Manifest], version: str
) -> None:
    secret_example = load_manifests(K8S / "secret.example.yaml")
    core = [m for m in manifests + secret_example if m.kind in CORE_KINDS]
    assert {m.kind for m in core} == CORE_KINDS
    for m in core:
        try:
            kubernetes_validate.validate(m.doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{m.path.name}: {m.kind}/{m.name} at {path}: {exc.message}")


def test_every_deployed_kind_is_validated(manifests: list[Manifest]) -> None:
    assert {m.kind for m in manifests} <= CORE_KINDS | CRD_KINDS


def test_the_kubernetes_validator_rejects_a_misspelt_field(manifests: list[Manifest]) -> None:
    broken = copy.deepcopy(one(manifests, "Deployment", "goodfellaz17"))
    probe = broken["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = probe
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_custom_resources_validate_against_their_schemas(
    manifests: list[Manifest], kind: str
) -> None:
    (resource,) = [m.doc for m in manifests if m.kind == kind]
    jsonschema.Draft202012Validator.check_schema(crd_schema(kind))
    jsonschema.validate(resource, crd_schema(kind), cls=jsonschema.Draft202012Validator)


def test_the_crd_schemas_reject_misspelt_fields(manifests: list[Manifest]) -> None:
    monitor = copy.deepcopy(one(manifests, "ServiceMonitor", "goodfellaz17"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, crd_schema("ServiceMonitor"))
    rule = copy.deepcopy(one(manifests, "PrometheusRule", "goodfellaz17"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, crd_schema("PrometheusRule"))


# ---------------------------------------------------------------- PrometheusRule


def test_the_prometheusrule_is_exactly_what_the_script_builds_from_alerts_yml() -> None:
    committed = (K8S / "prometheusrule.yaml").read_text()
    assert committed == build_prometheusrule.build(), (
        "deploy/k8s/prometheusrule.yaml is stale: run `make k8s-rules`"
    )
    alerts = yaml.safe_load(build_prometheusrule.ALERTS.read_text())
    assert yaml.safe_load(committed)["spec"]["groups"] == alerts["groups"]


def test_the_script_check_fails_when_alerts_yml_changes(tmp_path: Path) -> None:
    alerts = yaml.safe_load(build_prometheusrule.ALERTS.read_text())
    alerts["groups"][0]["rules"][0]["expr"] = "vector(1) > 0"
    changed = tmp_path / "alerts.yml"
    changed.write_text(yaml.safe_dump(alerts))
    script = K8S / "build_prometheusrule.py"
    run = [sys.executable, str(script), "--check", "--output", str(K8S / "prometheusrule.yaml")]
    assert subprocess.run(run, check=False).returncode == 0
    stale = subprocess.run(
        [*run, "--alerts", str(changed)], capture_output=True, text=True, check=False
    )
    assert stale.returncode == 1
    assert "stale" in stale.stderr


def test_a_rule_file_without_groups_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.yml"
    bad.write_text("rules: []\n")
    with pytest.raises(ValueError, match="groups"):
        build_prometheusrule.build(bad)


# ---------------------------------------------------------------- settings


def test_every_configured_variable_is_a_real_setting(manifests: list[Manifest]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    names = set(config(manifests))
    for deployment in ("goodfellaz17", "goodfellaz17-worker"):
        names |= {e["name"] for e in container(manifests, deployment).get("env", [])}
    names -= UVICORN_VARIABLES
    unknown = {n for n in names if n.removeprefix("GOODFELLAZ17_") not in fields}
    assert unknown == set(), "typos are silently ignored by the service: fix these names"


@pytest.mark.parametrize("deployment", ["goodfellaz17", "goodfellaz17-worker"])
def test_the_pods_environment_loads_as_production_settings(
    manifests: list[Manifest],
    example_secret: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    deployment: str,
) -> None:
    env = effective_env(container(manifests, deployment), config(manifests), example_secret)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()  # raises ConfigError on any bad value
    assert settings.is_production
    assert settings.host == "0.0.0.0"
    assert settings.worker_enabled is True
    assert settings.metrics_port == 9464
    assert settings.worker_grace_period_seconds == GRACE
    assert settings.database_url is not None


def test_kubectl_set_env_applies_the_brake(
    manifests: list[Manifest], example_secret: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = copy.deepcopy(one(manifests, "Deployment", "goodfellaz17"))
    before = copy.deepcopy(deployment["spec"]["template"])
    kubectl_set_env(deployment, "GOODFELLAZ17_WORKER_ENABLED", "false")
    # A changed pod template is what makes the Deployment roll its pods.
    assert deployment["spec"]["template"] != before
    braked = deployment["spec"]["template"]["spec"]["containers"][0]
    env = effective_env(braked, config(manifests), example_secret)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings().worker_enabled is False


# ---------------------------------------------------------------- the pods


def test_the_server_runs_serve_with_probes_on_the_health_endpoints(
    manifests: list[Manifest],
) -> None:
    c = container(manifests, "goodfellaz17")
    assert c["args"] == ["serve", "--host", "0.0.0.0"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "metrics": 9464}
    assert c["readinessProbe"]["httpGet"] == {"path": "/actuator/health/readiness", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/actuator/health/liveness", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/actuator/health/liveness"
    assert c["envFrom"] == [
        {"configMapRef": {"name": "goodfellaz17-config"}},
        {"secretRef": {"name": "goodfellaz17-secrets"}},
    ]
    assert c["env"] == [
        {"name": "GOODFELLAZ17_WORKER_ENABLED", "value": "true"},
        {"name": "FORWARDED_ALLOW_IPS", "value": "*"},  # see the network policy test
    ]


def test_the_worker_deployment_runs_workers_only_and_starts_at_zero(
    manifests: list[Manifest],
) -> None:
    deployment = one(manifests, "Deployment", "goodfellaz17-worker")
    # At 0, scaling deployment/goodfellaz17 to 0 stops all delivery (the contract's brake).
    assert deployment["spec"]["replicas"] == 0
    c = container(manifests, "goodfellaz17-worker")
    assert c["args"] == ["worker"]
    assert [p["name"] for p in c["ports"]] == ["metrics"]
    assert "GOODFELLAZ17_METRICS_PORT" in config(manifests)
    assert {"name": "GOODFELLAZ17_WORKER_ENABLED", "value": "true"} in c["env"]
    (init,) = pod_spec(manifests, "goodfellaz17-worker")["initContainers"]
    assert init["args"] == ["migrate"]
    assert init["envFrom"] == c["envFrom"]


def test_termination_grace_covers_the_whole_graceful_stop(manifests: list[Manifest]) -> None:
    assert float(config(manifests)["GOODFELLAZ17_WORKER_GRACE_PERIOD_SECONDS"]) == GRACE
    server = pod_spec(manifests, "goodfellaz17")
    assert server["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        str(PRESTOP_SECONDS),
    ]
    http_drain = GRACE + 5  # serve's uvicorn timeout_graceful_shutdown
    final_flush = max(GRACE, 5.0)  # the worker's last recording of outcomes
    assert server["terminationGracePeriodSeconds"] > PRESTOP_SECONDS + http_drain + GRACE + (
        final_flush
    )
    worker = pod_spec(manifests, "goodfellaz17-worker")
    assert worker["terminationGracePeriodSeconds"] > GRACE + final_flush


def test_every_container_is_bounded_and_unprivileged(manifests: list[Manifest]) -> None:
    uid = dockerfile_uid()
    for name in ("goodfellaz17", "goodfellaz17-worker"):
        spec = pod_spec(manifests, name)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == uid
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"] + spec.get("initContainers", []):
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, (name, c["name"])
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["image"].startswith("goodfellaz17:")
    images = {i["name"] for i in kustomization()["images"]}
    assert images == {"goodfellaz17"}


def dockerfile_uid() -> int:
    (arg,) = [
        i.value for i in dockerfile_instructions() if i.keyword == "ARG" and "APP_UID" in i.value
    ]
    return int(arg.split("=", 1)[1])


# ---------------------------------------------------------------- scraping


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_select_their_pods_by_named_ports(manifests: list[Manifest]) -> None:
    deployments = [m.doc for m in manifests if m.kind == "Deployment"]
    for service in (m.doc for m in manifests if m.kind == "Service"):
        selected = [
            d
            for d in deployments
            if matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        pod = selected[0]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in {p["name"] for p in pod["ports"]}


def test_the_servicemonitor_scrapes_server_and_worker_metrics_ports(
    manifests: list[Manifest],
) -> None:
    monitor = one(manifests, "ServiceMonitor", "goodfellaz17")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        m.doc
        for m in manifests
        if m.kind == "Service" and matches(selector, m.doc["metadata"]["labels"])
    ]
    assert {s["metadata"]["name"] for s in services} == {"goodfellaz17", "goodfellaz17-worker"}
    for endpoint in monitor["spec"]["endpoints"]:
        for service in services:
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    for name in ("goodfellaz17", "goodfellaz17-worker"):
        annotations = one(manifests, "Deployment", name)["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert annotations["prometheus.io/port"] == config(manifests)["GOODFELLAZ17_METRICS_PORT"]


# ---------------------------------------------------------------- network policies

NAMESPACE = "goodfellaz17"
INGRESS = Endpoint("10.244.2.5", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = Endpoint("10.244.3.5", "monitoring", {"app.kubernetes.io/name": "prometheus"})
NEIGHBOUR = Endpoint("10.244.4.5", "default", {"app": "anything"})
DEBUG_POD = Endpoint("10.244.1.99", NAMESPACE, {"app": "debug"})
KUBE_DNS = Endpoint("10.244.0.10", "kube-system", {"k8s-app": "kube-dns"})
POSTGRES = Endpoint("10.244.5.5", NAMESPACE, {"app.kubernetes.io/name": "postgres"})


def policies(manifests: list[Manifest]) -> list[dict[str, Any]]:
    return [m.doc for m in manifests if m.kind == "NetworkPolicy"]


def pod_of(manifests: list[Manifest], deployment: str, ip: str) -> Endpoint:
    template = one(manifests, "Deployment", deployment)["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in container(manifests, deployment)["ports"]}
    return Endpoint(ip, NAMESPACE, template["metadata"]["labels"], ports)


def test_only_the_ingress_reaches_the_api_and_only_monitoring_the_metrics(
    manifests: list[Manifest],
) -> None:
    server = pod_of(manifests, "goodfellaz17", "10.244.1.10")
    worker = pod_of(manifests, "goodfellaz17-worker", "10.244.1.11")
    expected = [
        (INGRESS, server, 8080, True),
        (PROMETHEUS, server, 9464, True),
        (PROMETHEUS, worker, 9464, True),
        (INGRESS, server, 9464, False),  # the key-less metrics port
        (PROMETHEUS, server, 8080, False),
        (INGRESS, worker, 8080, False),
        (NEIGHBOUR, server, 8080, False),
        (NEIGHBOUR, server, 9464, False),
        (NEIGHBOUR, worker, 9464, False),
        (DEBUG_POD, server, 9464, False),  # the same namespace is no exception
        (DEBUG_POD, server, 8080, False),
        (server, worker, 9464, False),
    ]
    # So the server may trust X-Forwarded-For from whoever reaches its http
    # port (FORWARDED_ALLOW_IPS="*"): only the ingress controller can.
    found = [
        (
            s.labels,
            t.labels,
            port,
            network_allows(policies(manifests), source=s, target=t, port=port),
        )
        for s, t, port, _ in expected
    ]
    assert found == [(s.labels, t.labels, port, ok) for s, t, port, ok in expected]


@pytest.mark.parametrize("deployment", ["goodfellaz17", "goodfellaz17-worker"])
def test_pods_reach_out_only_to_dns_the_database_and_public_https(
    manifests: list[Manifest], deployment: str
) -> None:
    me = pod_of(manifests, deployment, "10.244.1.12")
    outside = [
        (KUBE_DNS, 53, "UDP", True),
        (KUBE_DNS, 53, "TCP", True),
        (POSTGRES, 5432, "TCP", True),
        (Endpoint("203.0.113.10"), 443, "TCP", True),  # a webhook receiver
        (Endpoint("2a00:1450:4001:80b::200e"), 443, "TCP", True),
        (Endpoint("203.0.113.10"), 80, "TCP", False),
        (Endpoint("169.254.169.254"), 443, "TCP", False),  # cloud metadata
        (Endpoint("169.254.169.254"), 80, "TCP", False),
        (Endpoint("10.96.0.1"), 443, "TCP", False),  # the Kubernetes API service
        (Endpoint("10.0.0.1"), 6443, "TCP", False),
        (Endpoint("172.20.0.5"), 443, "TCP", False),
        (Endpoint("192.168.1.10"), 443, "TCP", False),
        (Endpoint("100.64.0.1"), 443, "TCP", False),
        (Endpoint("127.0.0.1"), 443, "TCP", False),
        (Endpoint("fd00::1"), 443, "TCP", False),
        (Endpoint("fe80::1"), 443, "TCP", False),
        (NEIGHBOUR, 443, "TCP", False),  # pods are private addresses
        (Endpoint("10.244.0.10", "kube-system", {"k8s-app": "other"}), 53, "UDP", False),
        (POSTGRES, 5433, "TCP", False),
    ]
    for target, port, protocol, ok in outside:
        allowed = network_allows(
            policies(manifests), source=me, target=target, port=port, protocol=protocol
        )
        assert allowed is ok, (target, port, protocol)


def test_every_pod_starts_from_deny_all(manifests: list[Manifest]) -> None:
    deny = one(manifests, "NetworkPolicy", "goodfellaz17-default-deny")["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    for deployment in ("goodfellaz17", "goodfellaz17-worker"):
        labels = one(manifests, "Deployment", deployment)["spec"]["template"]["metadata"]
        assert deny["podSelector"]["matchLabels"].items() <= labels["labels"].items()
    # Without any policy the same evaluation lets everything through: the
    # checks above are the policies' doing, not the evaluator's.
    server = pod_of(manifests, "goodfellaz17", "10.244.1.10")
    assert network_allows([], source=NEIGHBOUR, target=server, port=9464)
    assert network_allows([], source=server, target=Endpoint("169.254.169.254"), port=80)
