"""Where a suite's result goes: ``report.json`` (everything) and ``report.md`` (the tables) in its ``--out``."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out: Path, report: dict, markdown: str) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown, encoding="utf-8")
