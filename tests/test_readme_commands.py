"""The README's two commands are the ones CI runs (issue #25): every install line of its first
code block is in ``.ci/run`` as written, and so is its test command; its main command is this
project's console command, whose ``run`` subcommand exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from fedticket.simulations import cli

ROOT = Path(__file__).resolve().parents[1]


def _two_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no bash block under 'The two commands'"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]


def _ci_commands() -> list[list[str]]:
    """Each command line of ``.ci/run`` as words, leading ``VAR=value`` settings left out."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = []
    for line in lines:
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def test_every_readme_install_line_is_what_ci_installs_with() -> None:
    ci = _ci_commands()
    installs = [shlex.split(line) for line in _two_commands() if line.startswith("pip install")]
    assert len(installs) == 2
    for words in installs:
        as_ci = ["python", "-m", "pip", "install", "--quiet", *words[2:]]
        assert as_ci in ci, f"{' '.join(words)} is not in .ci/run"


def test_the_readme_test_command_is_cis_and_the_main_command_is_ours(capsys) -> None:
    lines = _two_commands()
    assert "python -m pytest -q" in lines
    assert ["python", "-m", "pytest", "-q"] in _ci_commands()
    (main,) = [line for line in lines if line.startswith("fedticket ")]
    assert cli.main([*shlex.split(main)[1:], "--help"]) == 0
    assert "isolated" in capsys.readouterr().out
