"""Data set wrappers: concatenate, repeat, class-balanced oversampling, multi-image mixing."""
from __future__ import annotations

import bisect
import collections
import copy
import math
from typing import Sequence

import numpy as np
from torch.utils.data.dataset import ConcatDataset as _TorchConcatDataset

from detforge.registry import DATASETS, PIPELINES, BuildError, build_from_cfg
from .errors import DatasetError
from .seeding import apply_sample_seed

__all__ = ['ConcatDataset', 'RepeatDataset', 'ClassBalancedDataset', 'MultiImageMixDataset']


@DATASETS.register_module()
class ConcatDataset(_TorchConcatDataset):
    """Several data sets as one; ``CLASSES`` of the first, ``flag`` concatenated.

    Args:
        datasets: data sets with the same classes.
        separate_eval: evaluate each part on its own (keys prefixed ``0_``, ``1_``...).
    """

    applies_sample_seeds = True

    def __init__(self, datasets: Sequence, separate_eval: bool = True):
        super().__init__(datasets)
        self.CLASSES = datasets[0].CLASSES
        for d in datasets[1:]:
            if tuple(d.CLASSES or ()) != tuple(self.CLASSES or ()):
                raise DatasetError(f'ConcatDataset: the data sets have different classes: '
                                   f'{self.CLASSES} and {d.CLASSES}')
        self.separate_eval = separate_eval
        if all(hasattr(d, 'flag') for d in datasets):
            self.flag = np.concatenate([d.flag for d in datasets])

    def __getitem__(self, idx):
        return super().__getitem__(apply_sample_seed(idx))

    def _locate(self, idx: int) -> tuple[int, int]:
        if idx < 0:
            idx += len(self)
        d = bisect.bisect_right(self.cumulative_sizes, idx)
        return d, idx - (self.cumulative_sizes[d - 1] if d else 0)

    def get_cat_ids(self, idx: int):
        d, i = self._locate(idx)
        return self.datasets[d].get_cat_ids(i)

    def get_ann_info(self, idx: int):
        d, i = self._locate(idx)
        return self.datasets[d].get_ann_info(i)

    def evaluate(self, results, logger=None, **kwargs):
        if len(results) != len(self):
            raise DatasetError(f'ConcatDataset.evaluate: {len(results)} results for {len(self)} images')
        if not self.separate_eval:
            raise DatasetError('ConcatDataset: joint evaluation of several data sets is not '
                               'supported; use separate_eval=True')
        out = collections.OrderedDict()
        start = 0
        for k, (d, end) in enumerate(zip(self.datasets, self.cumulative_sizes)):
            for key, value in d.evaluate(results[start:end], logger=logger, **kwargs).items():
                out[f'{k}_{key}'] = value
            start = end
        return out


@DATASETS.register_module()
class RepeatDataset:
    """The data set ``times`` times in a row (an "epoch" is ``times`` passes)."""

    applies_sample_seeds = True

    def __init__(self, dataset, times: int):
        self.dataset = dataset
        self.times = int(times)
        self.CLASSES = dataset.CLASSES
        if hasattr(dataset, 'flag'):
            self.flag = np.tile(dataset.flag, self.times)
        self._ori_len = len(dataset)

    def __getitem__(self, idx):
        return self.dataset[apply_sample_seed(idx) % self._ori_len]

    def get_cat_ids(self, idx: int):
        return self.dataset.get_cat_ids(idx % self._ori_len)

    def get_ann_info(self, idx: int):
        return self.dataset.get_ann_info(idx % self._ori_len)

    def __len__(self) -> int:
        return self.times * self._ori_len

    def evaluate(self, *args, **kwargs):
        return self.dataset.evaluate(*args, **kwargs)


@DATASETS.register_module()
class ClassBalancedDataset:
    """Repeat images of rare classes (LVIS' repeat factor sampling, as MMDetection 2.x).

    For a class c seen in a fraction ``f(c)`` of the images, ``r(c) = max(1, sqrt(t / f(c)))``
    with ``t = oversample_thr``; an image is repeated ``ceil(max r(c) over its classes)`` times.

    Args:
        dataset: the data set (must have ``get_cat_ids``).
        oversample_thr: the frequency ``t`` below which classes are oversampled.
        filter_empty_gt: images without boxes get repeat factor 1 (else they count as a
            class of their own).
    """

    applies_sample_seeds = True

    def __init__(self, dataset, oversample_thr: float, filter_empty_gt: bool = True):
        self.dataset = dataset
        self.oversample_thr = oversample_thr
        self.filter_empty_gt = filter_empty_gt
        self.CLASSES = dataset.CLASSES
        factors = self._get_repeat_factors(dataset, oversample_thr)
        # an int64 array, not a list of ints: shared by forked loader workers without copies
        self.repeat_indices = np.repeat(np.arange(len(factors), dtype=np.int64),
                                        [math.ceil(f) for f in factors])
        if hasattr(dataset, 'flag'):
            self.flag = np.asarray(dataset.flag)[self.repeat_indices].astype(np.uint8)

    def _get_repeat_factors(self, dataset, thr: float) -> list[float]:
        num_images = len(dataset)
        category_freq: dict = collections.defaultdict(int)
        cats_of = []
        for i in range(num_images):
            cats = set(dataset.get_cat_ids(i))
            if not cats and not self.filter_empty_gt:
                cats = {'<no boxes>'}  # images without boxes count as a class of their own
            cats_of.append(cats)
            for c in cats:
                category_freq[c] += 1
        repeat = {c: max(1.0, math.sqrt(thr / (n / num_images))) for c, n in category_freq.items()}
        return [max((repeat[c] for c in cats), default=1.0) for cats in cats_of]

    def __getitem__(self, idx):
        return self.dataset[int(self.repeat_indices[apply_sample_seed(idx)])]

    def get_cat_ids(self, idx: int):
        return self.dataset.get_cat_ids(int(self.repeat_indices[idx]))

    def get_ann_info(self, idx: int):
        return self.dataset.get_ann_info(int(self.repeat_indices[idx]))

    def __len__(self) -> int:
        return len(self.repeat_indices)


@DATASETS.register_module()
class MultiImageMixDataset:
    """Run a pipeline of mixing transforms (Mosaic, MixUp) on top of a data set.

    The inner data set's pipeline should load and annotate the image only. For each
    transform with a ``get_indexes(dataset)`` method, the images it asks for are loaded
    and passed in ``results['mix_results']``.

    Args:
        dataset: the data set (its own pipeline: LoadImageFromFile, LoadAnnotations).
        pipeline: the transforms, mixing ones included.
        dynamic_scale: kept for config compatibility (MMDet 2.x; deprecated there).
        skip_type_keys: names of transforms to skip (e.g. switched off in the last epochs).
    """

    applies_sample_seeds = True

    def __init__(self, dataset, pipeline: Sequence, dynamic_scale=None,
                 skip_type_keys: Sequence[str] | None = None, max_refetch: int = 15):
        self.dataset = dataset
        self.CLASSES = dataset.CLASSES
        self.pipeline, self.pipeline_types = [], []
        for i, t in enumerate(pipeline):
            if isinstance(t, dict):
                try:
                    self.pipeline_types.append(t['type'])
                    t = build_from_cfg(t, PIPELINES)
                except BuildError as e:
                    raise e.prefix('pipeline', str(i))
            else:
                self.pipeline_types.append(type(t).__name__)
            self.pipeline.append(t)
        self._skip_type_keys = list(skip_type_keys) if skip_type_keys else None
        self.max_refetch = max_refetch
        if hasattr(dataset, 'flag'):
            self.flag = dataset.flag
        self.num_samples = len(dataset)

    def __len__(self) -> int:
        return self.num_samples

    def update_skip_type_keys(self, skip_type_keys: Sequence[str]) -> None:
        self._skip_type_keys = list(skip_type_keys)

    def get_cat_ids(self, idx: int):
        return self.dataset.get_cat_ids(idx)

    def get_ann_info(self, idx: int):
        return self.dataset.get_ann_info(idx)

    def __getitem__(self, idx):
        results = copy.deepcopy(self.dataset[apply_sample_seed(idx)])
        for transform, type_name in zip(self.pipeline, self.pipeline_types):
            if self._skip_type_keys and type_name in self._skip_type_keys:
                continue
            if hasattr(transform, 'get_indexes'):
                for _ in range(self.max_refetch):
                    indexes = transform.get_indexes(self.dataset)
                    if not isinstance(indexes, Sequence):
                        indexes = [indexes]
                    mix = [copy.deepcopy(self.dataset[int(i)]) for i in indexes]
                    if all(m is not None for m in mix):
                        results['mix_results'] = mix
                        break
                else:
                    raise DatasetError('MultiImageMixDataset: could not load images to mix '
                                       f'after {self.max_refetch} tries')
            for _ in range(self.max_refetch):
                updated = transform(copy.deepcopy(results))
                if updated is not None:
                    results = updated
                    break
            else:
                raise DatasetError(f'MultiImageMixDataset: {type_name} returned None '
                                   f'{self.max_refetch} times')
            results.pop('mix_results', None)
        return results
