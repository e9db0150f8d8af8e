"""Counts of the reliability cases that ran, reported at the end of the test session."""

from __future__ import annotations

from collections import Counter

import pytest

#: Cases run per suite ("bad input", ...), filled by the tests through the ``cases`` fixture.
CASES: Counter[str] = Counter()


@pytest.fixture
def cases() -> Counter[str]:
    return CASES


def pytest_terminal_summary(terminalreporter) -> None:
    if CASES:
        terminalreporter.section("posenc reliability cases")
        for suite, count in sorted(CASES.items()):
            terminalreporter.write_line(f"{suite}: {count} cases ran")
