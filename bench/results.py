"""Writing a benchmark's section of docs/benchmarks.md (shared by the bench scripts)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(section: str, report: str, doc: Path = DOC) -> None:
    """Replaces the section headed `section` (up to the next `## `) with `report`, or appends it."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _m: report, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + report
    doc.write_text(text.rstrip("\n") + "\n")
