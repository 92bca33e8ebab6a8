"""The project installs as one namespace: everything under ``fedticket/`` in site-packages, nothing
named ``strategies``, ``clients`` or ``simulations`` beside a user's own modules, and the app's
packages importable from a wheel as from the source tree (fedticket/__init__.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from fedticket.simulations import app_project

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


@pytest.mark.parametrize("name", ["strategies", "clients", "simulations"])
def test_an_old_top_level_import_fails_naming_the_namespace(name: str) -> None:
    """From the repository root the folders are importable by their own names too; each
    refuses, so a leftover import cannot load a second copy of the app's modules."""
    shown = subprocess.run(
        [sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 1
    assert f"ImportError: import fedticket.{name}, not {name}" in shown.stderr


def test_the_source_tree_is_the_app_flwr_run_is_given(tmp_path: Path) -> None:
    assert app_project.app_project_dir(tmp_path) == ROOT
    assert list(tmp_path.iterdir()) == []


def test_the_generated_app_declares_what_the_project_does(tmp_path: Path, monkeypatch) -> None:
    """From a wheel (no pyproject.toml beside the code) ``flwr run`` gets a written app."""
    from flwr.cli.config_utils import load_and_validate

    monkeypatch.setattr(app_project, "SOURCE_TREE", tmp_path / "site-packages")
    directory = app_project.app_project_dir(tmp_path / "launch")
    assert directory == tmp_path / "launch" / "flower-app"
    config, warnings = load_and_validate(directory / "pyproject.toml", check_module=True)
    assert config is not None and warnings == []
    project = PYPROJECT["tool"]["flwr"]["app"]
    app = config["tool"]["flwr"]["app"]
    assert app["components"] == project["components"] and app["config"] == project["config"]
    assert app["publisher"] == project["publisher"]


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


def _python_from_wheel(
    wheel: Path, tmp_path: Path, probe: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``probe`` run with the wheel extracted into a site directory first on ``PYTHONPATH``
    (ahead of this checkout's editable install, as site-packages would be), outside the tree."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return subprocess.run(
        [sys.executable, "-c", probe, str(site), *args],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(site)),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def test_the_app_imports_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, fedticket.simulations.server_app as s, fedticket.clients as c\n"
        "print(s.__file__); print(c.__file__)\n"
        "print(importlib.util.find_spec('strategies'))\n"
    )
    shown = _python_from_wheel(wheel, tmp_path, probe)
    assert shown.returncode == 0, shown.stderr[-3000:]
    site = tmp_path / "site"
    assert shown.stdout.splitlines() == [
        str(site / "fedticket" / "simulations" / "server_app.py"),
        str(site / "fedticket" / "clients" / "__init__.py"),
        "None",
    ]


@pytest.mark.slow
def test_a_run_from_the_installed_wheel_imports_the_installed_code(
    wheel: Path, tmp_path: Path
) -> None:
    """``launch`` (what ``fedticket run`` calls) from a wheel: the bundle holds only the written
    pyproject.toml, so the ServerApp and ClientApp come from the wheel's site directory."""
    probe = (
        "import sys, fedticket\n"
        "from fedticket.simulations.launcher import launch\n"
        "assert fedticket.__file__.startswith(sys.argv[1]), fedticket.__file__\n"
        "r = launch({'num-rounds': 1, 'output-root': sys.argv[2]}, workdir=sys.argv[3])\n"
        "print(r.output[-3000:]); print('exit', r.returncode, r.run_dir)\n"
    )
    runs, launch_dir = tmp_path / "runs", tmp_path / "launch"
    shown = _python_from_wheel(wheel, tmp_path, probe, str(runs), str(launch_dir), timeout=400)
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
    assert f"exit 0 {runs / 'lotteryfl'}" in shown.stdout
    (bundle,) = (launch_dir / "flwr-home" / "apps").iterdir()
    assert sorted(p.name for p in bundle.iterdir() if not p.name.startswith(".")) == [
        "pyproject.toml"
    ]
