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
