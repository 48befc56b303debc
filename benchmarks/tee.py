"""Run a benchmark's subprocess and watch it: its output is echoed as it comes and kept."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tee(cmd: list[str], title: str, indent: str = '') -> tuple[int, str, float]:
    """Run ``cmd`` from the repository root, print ``=== title: cmd`` and then its stdout and
    stderr line by line (each after ``indent``); return its exit status, the whole output and
    the wall time in seconds."""
    print(f'\n=== {title}: {" ".join(cmd)}', flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        print(indent + line, end='', flush=True)
        lines.append(line)
    proc.wait()
    return proc.returncode, ''.join(lines), time.perf_counter() - start
