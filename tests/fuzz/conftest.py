"""The fuzz tests' figures, printed after the run."""

from __future__ import annotations

import pytest

from tests.fuzz.tally import NOTES, TALLIES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tallies = [tally for tally in TALLIES if tally.total]
    if not tallies and not NOTES:
        return
    terminalreporter.section("fuzz figures")
    for tally in tallies:
        for line in tally.lines():
            terminalreporter.write_line(line)
    for line in NOTES:
        terminalreporter.write_line(line)
