"""``Compose``: run transforms one after another on a results dict."""
from __future__ import annotations

from typing import Callable, Sequence

from detforge.registry import PIPELINES, BuildError, build_from_cfg

__all__ = ['Compose']


@PIPELINES.register_module()
class Compose:
    """Apply ``transforms`` in order; a transform returning ``None`` stops the chain (the
    sample is dropped and the dataset draws another, as in MMDetection).

    Args:
        transforms: transform configs ``dict(type=...)`` or callables.
    """

    def __init__(self, transforms: Sequence[dict | Callable] = ()):
        if isinstance(transforms, dict) or callable(transforms):
            transforms = [transforms]
        self.transforms = []
        for i, t in enumerate(transforms or ()):
            if isinstance(t, dict):
                try:
                    t = build_from_cfg(t, PIPELINES)
                except BuildError as e:
                    raise e.prefix('pipeline', str(i))
            elif not callable(t):
                raise BuildError(f'a pipeline step must be a dict(type=...) or a callable, got '
                                 f'{type(t).__name__}', t, ['pipeline', str(i)])
            self.transforms.append(t)

    def __call__(self, results: dict):
        for t in self.transforms:
            results = t(results)
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        body = ''.join(f'\n    {t!r}' for t in self.transforms)
        return f'{type(self).__name__}({body}\n)'
