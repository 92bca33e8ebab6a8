"""The Flower app directory that ``flwr run`` is given: the source tree, or one written for it.

``flwr run`` bundles a directory with a ``pyproject.toml`` naming the app's components and its
run-config defaults. A clone or an editable install has that file beside the code. An installed
wheel has none, so a directory holding only a generated ``pyproject.toml`` is written: the same
components and the run config's own defaults (``RunConfig``, which the project's pyproject
declares key for key, tests/test_config.py). Its bundle carries no code, so the simulation and
every SuperNode import ``fedticket`` from where it is installed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedticket import __version__

#: the source tree when this module runs from a clone or an editable install
SOURCE_TREE = Path(__file__).resolve().parent.parent
COMPONENTS = {
    "serverapp": "fedticket.simulations.server_app:app",
    "clientapp": "fedticket.simulations.client_app:app",
}


def has_flower_app(directory: Path) -> bool:
    """Whether ``directory`` holds a pyproject.toml that declares a Flower app."""
    try:
        declared = tomllib.loads((directory / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return "components" in declared.get("tool", {}).get("flwr", {}).get("app", {})


def generated_pyproject() -> str:
    """A Flower app's pyproject.toml for the installed package: its components and defaults."""
    from fedticket.config import RunConfig
    from fedticket.simulations.launcher import toml_value

    lines = [
        "# Written by fedticket for `flwr run` from an installed package; the code is the",
        "# installed fedticket, so the bundle carries none and installs nothing.",
        "[project]",
        'name = "fedticket"',
        f'version = "{__version__}"',
        'description = "fedticket, run from its installed package"',
        'license = { text = "Apache-2.0" }',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "fedticket"',
        "",
        "[tool.flwr.app.components]",
        *(f'{name} = "{ref}"' for name, ref in COMPONENTS.items()),
        "",
        "[tool.flwr.app.config]",
        *(f"{key} = {toml_value(value)}" for key, value in RunConfig().to_dict().items()),
    ]
    return "\n".join(lines) + "\n"


def app_project_dir(workdir: Path) -> Path:
    """The source tree if it declares the app, else a generated app directory in ``workdir``."""
    if has_flower_app(SOURCE_TREE):
        return SOURCE_TREE
    target = workdir / "flower-app"
    target.mkdir(parents=True, exist_ok=True)
    (target / "pyproject.toml").write_text(generated_pyproject())
    return target
