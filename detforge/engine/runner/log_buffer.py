"""Running averages of the values a training step logs."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ['LogBuffer']


class LogBuffer:
    """Keeps the history of each logged value and the averages to print.

    ``update({'loss': 0.5}, count=2)`` appends a value with its sample count;
    ``average(n)`` writes the count-weighted mean of the last ``n`` values (all when ``n=0``)
    to ``output`` and marks the buffer ``ready`` for the logger hooks.
    """

    def __init__(self):
        self.val_history: OrderedDict[str, list] = OrderedDict()
        self.n_history: OrderedDict[str, list] = OrderedDict()
        self.output: OrderedDict[str, object] = OrderedDict()
        self.ready = False

    def clear(self) -> None:
        self.val_history.clear()
        self.n_history.clear()
        self.clear_output()

    def clear_output(self) -> None:
        self.output.clear()
        self.ready = False

    def update(self, vars: dict, count: int = 1) -> None:
        for key, value in vars.items():
            self.val_history.setdefault(key, []).append(float(value))
            self.n_history.setdefault(key, []).append(count)

    def average(self, n: int = 0) -> None:
        for key in self.val_history:
            values = np.array(self.val_history[key][-n:])
            nums = np.array(self.n_history[key][-n:])
            self.output[key] = float(np.sum(values * nums) / np.sum(nums))
        self.ready = True
