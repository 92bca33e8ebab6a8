"""Flower 1.39 leaves ``**/test_*.py`` and ``**/*_test.py`` out of the app bundle (FAB) that
``flwr run`` ships to the SuperLink: an app module named that way imports fine here and is
missing in every simulation and deployment. No app module may be named so."""

from __future__ import annotations

from pathlib import Path

from flwr.common.constant import FAB_EXCLUDE_PATTERNS

ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("fedticket", "strategies", "clients", "simulations", "benchmarks")


def test_flower_still_excludes_the_test_file_patterns() -> None:
    assert {"**/test_*.py", "**/*_test.py"} <= set(FAB_EXCLUDE_PATTERNS)


def test_no_app_module_is_named_like_a_test() -> None:
    named = [
        str(path.relative_to(ROOT))
        for package in APP_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name.startswith("test_") or path.stem.endswith("_test")
    ]
    assert named == [], f"Flower's bundle would leave these out: {named}"
