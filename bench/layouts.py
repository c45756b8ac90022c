"""Storage-layout probes (being written)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.config import BenchConfig
from bench.pg import BenchServer, PostgresCpu


def run_layouts(
    cfg: BenchConfig, server: BenchServer, cpu: PostgresCpu, say: Callable[[str], None]
) -> dict[str, Any]:
    raise NotImplementedError
