"""Opt-in markers: tests that run only when ``-m`` names their marker (importable as ``markers``)."""

from __future__ import annotations

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
