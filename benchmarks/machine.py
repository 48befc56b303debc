"""What every benchmark report states about the run: the CPU, its instruction-set flags, and
the commit measured.

    from machine import cpu_name, cpu_flags, git_commit   # benchmarks/ is on sys.path
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

__all__ = ['cpu_name', 'cpu_flags', 'git_commit', 'loadavg']


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` of /proc/cpuinfo, or None where there is no /proc (not
    Linux) or no such field."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(name):
                    return line.split(':', 1)[1].strip()
    except OSError:
        return None
    return None


def cpu_name() -> str:
    """The CPU's model name (``platform``'s answer where /proc/cpuinfo has none)."""
    return _cpuinfo_field('model name') or platform.processor() or platform.machine() or \
        'unknown CPU'


def cpu_flags(wanted: tuple[str, ...] = ('avx512_vnni', 'avx_vnni', 'avx512_bf16',
                                         'amx_int8')) -> list[str]:
    """Which of the ``wanted`` instruction-set flags the CPU has (the int8 and bfloat16 units
    the deployment paths depend on, by default); empty where /proc/cpuinfo is unreadable."""
    have = set((_cpuinfo_field('flags') or '').split())
    return [flag for flag in wanted if flag in have]


def git_commit(repo: Path = REPO, dirty_note: str = ' (uncommitted changes)') -> str:
    """The short commit of ``repo``'s HEAD, with ``dirty_note`` when tracked files differ from
    it; ``'unknown'`` outside a git checkout."""
    try:
        sha = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=repo, text=True,
                             capture_output=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=repo, text=True, capture_output=True).stdout.strip()
    except OSError:
        return 'unknown'
    return (sha or 'unknown') + (dirty_note if sha and dirty else '')


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    try:
        return ' '.join(f'{x:.2f}' for x in os.getloadavg())
    except OSError:
        return 'unknown'
