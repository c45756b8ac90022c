"""The Dockerfile's builder stage, without Docker: build the wheel from exactly
what the Dockerfile copies, and check that the package it ships can migrate a
database and start (the SQL files must be inside the wheel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest

from tests.deploy_manifests import ROOT, dockerfile_instructions

pytestmark = pytest.mark.e2e


def build_context(tmp_path: Path) -> Path:
    """A copy of what the builder stage COPYs, and nothing else."""
    context = tmp_path / "context"
    context.mkdir()
    for copy in (i for i in dockerfile_instructions() if i.stage == 1 and i.keyword == "COPY"):
        *sources, _ = copy.value.split()
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(
                    origin, context / source, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, context / source)
    return context


def test_the_wheel_built_like_the_image_migrates_and_starts(
    tmp_path: Path, db_url: str, sql: psycopg.Connection[object]
) -> None:
    sql.execute("DROP SCHEMA public CASCADE")
    sql.execute("CREATE SCHEMA public")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            # As the image does: by the locked hatchling (dev.lock pins the
            # same version as build.lock), no build environment downloaded.
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--disable-pip-version-check", "--wheel-dir", str(wheels)),
            str(build_context(tmp_path)),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("goodfellaz17-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "goodfellaz17/db/queries.sql" in names
    assert "goodfellaz17/db/migrations/0001_initial.sql" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOODFELLAZ17_")}
    env.update({"PYTHONPATH": str(site), "DATABASE_URL": db_url, "PYTHONSAFEPATH": "1"})
    where = subprocess.run(
        [sys.executable, "-c", "import goodfellaz17; print(goodfellaz17.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site)), "the package must come from the wheel"
    migrate = subprocess.run(
        [sys.executable, "-m", "goodfellaz17", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "0001_initial" in migrate.stdout
    tables = {
        r[0] for r in sql.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {"orders", "order_tasks", "invariant_check_log"} <= tables
