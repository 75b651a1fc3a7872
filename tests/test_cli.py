"""The installed ``mtedge`` console script, run as a real subprocess (what a user types).

In-process CliRunner tests would miss the entry point, the exit codes `main()` maps, and anything
an import prints to stderr; these run the script that ``pip install`` put next to the interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mtedge
from mtedge.cli import SUBCOMMANDS

SCRIPT = Path(sys.executable).parent / "mtedge"


def run_mtedge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert SCRIPT.is_file(), f"no console script at {SCRIPT}: is mtedge installed in this environment?"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_version():
    result = run_mtedge("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mtedge, version {mtedge.__version__}"


def _landed(name: str) -> bool:
    # A subcommand is listed once its module exists; until then the CLI must not pretend it does.
    return importlib.util.find_spec(f"mtedge.commands.{name.replace('-', '_')}") is not None


def _listed_commands(help_text: str) -> list[str]:
    lines = help_text.split("Commands:", 1)[1].splitlines()
    return [line.split()[0] for line in lines if line.startswith("  ") and line.split()]


def test_help_lists_the_subcommands_that_exist():
    result = run_mtedge("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    listed = _listed_commands(result.stdout)
    assert listed == [name for name in SUBCOMMANDS if _landed(name)]
    assert "info" in listed  # the one subcommand the foundation itself ships


@pytest.mark.parametrize("args, expected", [
    (("info", "/nonexistent/model"), "not found: /nonexistent/model"),
    (("info", "{tmp}"), "neither an mtedge bundle"),  # a directory that is no model
])
def test_user_mistake_is_one_line_on_stderr_without_traceback(args, expected, tmp_path):
    result = run_mtedge(*(arg.format(tmp=tmp_path) for arg in args))
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]


def test_unknown_subcommand_is_a_usage_error():
    result = run_mtedge("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "No such command 'no-such-command'" in result.stderr
