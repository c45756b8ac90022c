"""Where the worker's time goes: py-spy samples, summarised.

py-spy samples the worker's stack `rate` times a second, idle included
(`--idle`). A sample whose innermost frame is the event loop's selector is
the worker waiting for a socket (PostgreSQL replies, NOTIFY) with nothing
else to do; any other sample is Python running. The raw (collapsed-stack)
file gives:

- the share of the measured window outside the event loop's wait (Python
  running, or runnable but not scheduled: on a busy machine compare with
  the worker's on-CPU share from psutil, `cpu_share`),
- self time by innermost function and by library (psycopg, asyncio, ...),
- inclusive time of the engine's own functions (goodfellaz17.*).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")
IDLE_LEAVES = ("EpollSelector.select", "select", "poll", "epoll")
# Frames that contain everything the worker does: no information.
WRAPPERS = {"main", "worker", "run_worker_process", "run_until_stopped", "_run", "_supervise"}


def parse_raw(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _split(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def _library(file: str) -> str:
    head = file.split("/", 1)[0]
    return head.removesuffix(".py") if head else "?"


def summarise(
    path: Path, window_seconds: float, rate: int, top: int = 12, cpu_share: float | None = None
) -> dict[str, Any]:
    stacks = parse_raw(path)
    total = sum(n for _, n in stacks)
    leaf_self: Counter[str] = Counter()
    by_library: Counter[str] = Counter()
    engine_inclusive: Counter[str] = Counter()
    active = 0
    for frames, n in stacks:
        func, file = _split(frames[-1])
        if func in IDLE_LEAVES or func.endswith(".select"):
            continue
        active += n
        leaf_self[f"{func} ({file})"] += n
        by_library[_library(file)] += n
        seen = set()
        for frame in frames:
            f, fl = _split(frame)
            name = f.rsplit(".", 1)[-1]
            if fl.startswith("goodfellaz17/") and name not in WRAPPERS and f not in seen:
                seen.add(f)
                engine_inclusive[f] += n
    window = max(window_seconds * rate, float(active), 1.0)

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"name": k, "samples": v, "share_of_active": v / active if active else 0.0}
            for k, v in counter.most_common(top)
        ]

    return {
        "samples": total,
        "window_seconds": window_seconds,
        "rate_hz": rate,
        "active_samples": active,
        "python_share": active / window,
        "waiting_share": 1.0 - active / window,
        "cpu_share": cpu_share,
        "top_self": share(leaf_self),
        "by_library": share(by_library),
        "engine_inclusive": share(engine_inclusive),
    }


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"worker profile (py-spy, {summary['rate_hz']} Hz, "
        f"{summary['window_seconds']:.1f} s window): "
        f"{summary['python_share']:.0%} in Python, "
        f"{summary['waiting_share']:.0%} waiting on sockets (PostgreSQL, NOTIFY)"
        + (
            f"; on CPU (psutil) {summary['cpu_share']:.0%}"
            if summary.get("cpu_share") is not None
            else ""
        ),
        "  Python time by library: "
        + ", ".join(f"{e['name']} {e['share_of_active']:.0%}" for e in summary["by_library"][:6]),
        "  engine functions (inclusive): "
        + ", ".join(
            f"{e['name']} {e['share_of_active']:.0%}" for e in summary["engine_inclusive"][:6]
        ),
        "  hottest (self): "
        + ", ".join(f"{e['name']} {e['share_of_active']:.0%}" for e in summary["top_self"][:5]),
    ]
    return "\n".join(lines)
