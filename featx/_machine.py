"""What machine this is, in the words a reader of a figure needs (a CPU model, not 'x86_64')."""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` shows it (from /proc/cpuinfo), else the platform's description."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    found = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    return found.group(1).strip() if found else (platform.processor() or platform.machine())
