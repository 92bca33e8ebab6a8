"""The project installs as one namespace: everything under ``fedticket/`` in site-packages, nothing
named ``strategies``, ``clients`` or ``simulations`` beside a user's own modules, and the app's
packages importable from a wheel as from the source tree (fedticket/__init__.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _package_folders() -> dict[str, Path]:
    """Every package the source tree has, by the name it installs under."""
    folders = {}
    for init in sorted(ROOT.glob("fedticket/**/__init__.py")):
        folders[".".join(init.parent.relative_to(ROOT).parts)] = init.parent
    for name, folder in SETUPTOOLS["package-dir"].items():
        for init in sorted((ROOT / folder).glob("**/__init__.py")):
            rest = init.parent.relative_to(ROOT / folder).parts
            folders[".".join([name, *rest])] = init.parent
    return folders


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    assert sorted(SETUPTOOLS["packages"]) == sorted(_package_folders())


def test_the_app_folders_map_into_the_namespace() -> None:
    assert SETUPTOOLS["package-dir"] == {
        f"fedticket.{name}": name for name in ("strategies", "clients", "simulations")
    }
    components = PYPROJECT["tool"]["flwr"]["app"]["components"]
    assert all(ref.startswith("fedticket.simulations.") for ref in components.values())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the tracked files (the build writes beside its sources)."""
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False
    ).stdout
    if not tracked:
        pytest.skip("not a git checkout")
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    build = "from setuptools import build_meta as b; import sys; b.build_wheel(sys.argv[1])"
    subprocess.run([sys.executable, "-c", build, str(out)], cwd=source, check=True, timeout=300)
    (built,) = out.glob("fedticket-*.whl")
    return built


def test_the_wheel_installs_one_namespace_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert tops == {"fedticket", "fedticket-0.1.0.dist-info"}
    assert {
        "fedticket/strategies/base.py",
        "fedticket/clients/handlers.py",
        "fedticket/simulations/server_app.py",
        "fedticket/simulations/presets/lotteryfl-mnist.toml",
    } <= names


def test_the_app_imports_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = (
        "import importlib.util, fedticket.simulations.server_app as s, fedticket.clients as c\n"
        "print(s.__file__); print(c.__file__)\n"
        "print(importlib.util.find_spec('strategies'))\n"
    )
    # PYTHONPATH comes before the editable install of this checkout, as site-packages would
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    assert shown[0] == str(site / "fedticket" / "simulations" / "server_app.py")
    assert shown[1] == str(site / "fedticket" / "clients" / "__init__.py")
    assert shown[2] == "None"
