"""End-to-end fixtures shared by modules: where the console's browser tests
leave their screenshots, and the line that tells the test run where they are."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SCREENSHOTS = ROOT / "test-artifacts" / "console"
SCREENSHOTS_TAKEN = pytest.StashKey[int]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    taken = config.stash.get(SCREENSHOTS_TAKEN, 0)
    if taken:
        terminalreporter.write_sep("-", "ops console screenshots")
        terminalreporter.write_line(f"{taken} screenshots (1280x800 and 390x844) in:")
        terminalreporter.write_line(f"  {CONSOLE_SCREENSHOTS}")
