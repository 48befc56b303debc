"""Hook priorities: a lower value runs first (mmcv's names and values)."""
from __future__ import annotations

from enum import Enum

from detforge.registry import DetforgeError

__all__ = ['Priority', 'get_priority']


class Priority(Enum):
    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100


def get_priority(priority: int | str | Priority) -> int:
    """``'NORMAL'``, ``Priority.NORMAL`` or ``50`` -> 50."""
    if isinstance(priority, Priority):
        return priority.value
    if isinstance(priority, int) and not isinstance(priority, bool):
        if not 0 <= priority <= 100:
            raise DetforgeError(f'a hook priority must be between 0 and 100, got {priority}')
        return priority
    if isinstance(priority, str) and priority.upper() in Priority.__members__:
        return Priority[priority.upper()].value
    raise DetforgeError(f'unknown hook priority {priority!r}; use a number 0-100 or one of '
                        f'{", ".join(Priority.__members__)}')
