"""What the bench scripts share: the machine's description and writing a section of
docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(section: str, report: str, doc: Path = DOC) -> None:
    """Replaces the section headed `section` (up to the next `## `) with `report`, or appends it."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _m: report, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + report
    doc.write_text(text.rstrip("\n") + "\n")


def machine() -> dict[str, str]:
    """CPU model, cores, memory, Python and kernel, for a benchmark's heading."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem_kb = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
    return {"cpu": model.group(1).strip() if model else platform.machine(), "cores": str(os.cpu_count()),
            "ram": f"{mem_kb / 1024 / 1024:.0f} GiB", "python": platform.python_version(),
            "kernel": platform.release()}
