"""Small helpers shared by the CLI-level tests: data files and the one-line user-error contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtedge.cli import main


def write_tsv(path: Path, pairs) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``mtedge ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    """A user mistake: exit 2 and exactly one ``error:`` line on stderr, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
