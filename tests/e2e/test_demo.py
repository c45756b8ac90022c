"""`goodfellaz17 demo` end to end on its own embedded PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_delivers_and_prints_a_passing_invariant_report(private_dir: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GOODFELLAZ17_") and k != "DATABASE_URL"
    }
    env["GOODFELLAZ17_DATA_DIR"] = str(private_dir / "data")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "goodfellaz17",
            "demo",
            "--quantity",
            "4000",
            "--rate",
            "4000",
            "--failure-rate",
            "0.2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "delivering" in out
    assert "4000/4000" in out
    assert "ALL INVARIANTS HOLD" in out
    assert "delivered 4,000 of 4,000" in out
