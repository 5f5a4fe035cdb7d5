"""What the opt-in suites (tests/docker, tests/browser) share: selection by their marker, and a
section of their own in the run's summary (importable as ``suites``)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest


def run_only_when_selected(config: pytest.Config, items: list[pytest.Item], marker: str) -> None:
    """Deselect ``marker``'s tests unless the ``-m`` expression names it (``-m docker``, ``-m browser``):
    the default ``-m "not slow"`` run must not build images or need a browser."""
    if marker in (config.getoption("markexpr") or ""):
        return
    chosen = [item for item in items if item.get_closest_marker(marker) is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker(marker)])
        items[:] = chosen


def summary_section(terminalreporter, title: str, lines: Iterable[object] | None) -> None:  # noqa: ANN001
    """``lines`` under their own heading at the end of the run (nothing when there are none)."""
    lines = list(lines or ())
    if lines:
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(str(line))
