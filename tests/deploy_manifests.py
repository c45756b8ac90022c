"""Reading deploy/: the Kubernetes manifests and the Dockerfile, for tests."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = K8S / "schemas"
DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])


def load_manifests(*paths: Path) -> list[Manifest]:
    found: list[Manifest] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append(Manifest(path, doc))
    return found


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def deployed() -> list[Manifest]:
    """Everything `kubectl apply -k deploy/k8s` creates."""
    return load_manifests(*(K8S / name for name in kustomization()["resources"]))


def one(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    matches = [m.doc for m in manifests if m.kind == kind and m.name == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def crd_schema(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / f"{kind.lower()}-monitoring-v1.json").read_text())
    return data


def effective_env(
    container: dict[str, Any], config: dict[str, str], secret: dict[str, str]
) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom sources in
    order, then `env` entries, which win over envFrom."""
    env: dict[str, str] = {}
    sources = {"configMapRef": config, "secretRef": secret}
    for source in container.get("envFrom", []):
        for ref, values in sources.items():
            if ref in source:
                env.update(values)
    for entry in container.get("env", []):
        env[entry["name"]] = entry["value"]
    return env


def kubectl_set_env(deployment: dict[str, Any], name: str, value: str) -> None:
    """What `kubectl set env deployment/X NAME=VALUE` does to the object:
    update (or append) the entry in every container's `env`."""
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        entries = container.setdefault("env", [])
        for entry in entries:
            if entry["name"] == name:
                entry["value"] = value
                break
        else:
            entries.append({"name": name, "value": value})


# ---------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int

    def exec_form(self) -> list[str]:
        """JSON exec form (["a", "b"]) as a list; shell form split like a shell."""
        text = self.value.strip()
        if text.startswith("["):
            parsed: list[str] = json.loads(text)
            return parsed
        return shlex.split(text)


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped;
    `stage` counts FROM lines (0 = before the first FROM)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions: list[Instruction] = []
    stage = 0
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, re.sub(r"\s+", " ", value).strip(), stage))
    return instructions


# ---------------------------------------------------------------- NetworkPolicy semantics


@dataclass(frozen=True)
class Endpoint:
    """A party to a connection: a pod (namespace, labels, named ports) or an
    address outside the cluster (namespace None). Pods have addresses too, so
    an ipBlock can match them."""

    ip: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    ports: dict[str, int] | None = None  # named container ports


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist);
    an empty selector selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and present and labels[key] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        import ipaddress

        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        networks = [ipaddress.ip_network(block["cidr"])]
        excepts = [ipaddress.ip_network(c) for c in block.get("except", [])]
        return any(address.version == n.version and address in n for n in networks) and not any(
            address.version == n.version and address in n for n in excepts
        )
    if other.namespace is None:  # selectors match pods only
        return False
    namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector"), other.labels or {})


def _port_matches(
    rule_port: dict[str, Any], port: int, protocol: str, named: dict[str, int]
) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    number = named.get(wanted) if isinstance(wanted, str) else wanted
    end = rule_port.get("endPort", number)
    return number is not None and number <= port <= end


def network_allows(
    policies: list[dict[str, Any]],
    *,
    source: Endpoint,
    target: Endpoint,
    port: int,
    protocol: str = "TCP",
    namespace: str = "goodfellaz17",
) -> bool:
    """Whether `policies` (all in `namespace`) let `source` open a connection
    to `target`: allowed on the way out of the source if it is one of the
    namespace's pods, and on the way in to the target likewise (Kubernetes'
    rules: a pod selected by no policy of a direction is open in it; one
    selected by any is open only to what some rule allows)."""

    def side(direction: str, pod: Endpoint, other: Endpoint, named: dict[str, int]) -> bool:
        if pod.namespace != namespace:
            return True  # not ours to restrict
        key = "ingress" if direction == "Ingress" else "egress"
        selecting = [
            p["spec"]
            for p in policies
            if _selects(p["spec"].get("podSelector"), pod.labels or {})
            and direction in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not selecting:
            return True
        peers_key = "from" if key == "ingress" else "to"
        return any(
            (
                not rule.get(peers_key)
                or any(_peer_matches(peer, namespace, other) for peer in rule[peers_key])
            )
            and (
                not rule.get("ports")
                or any(_port_matches(p, port, protocol, named) for p in rule["ports"])
            )
            for spec in selecting
            for rule in spec.get(key, [])
        )

    named = target.ports or {}
    return side("Egress", source, target, named) and side("Ingress", target, source, named)
