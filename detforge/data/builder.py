"""``build_dataset``: a data set (or a wrapper of data sets) from its config."""
from __future__ import annotations

import copy

from detforge.registry import DATASETS, BuildError, build_from_cfg
from .dataset_wrappers import (ClassBalancedDataset, ConcatDataset, MultiImageMixDataset,
                               RepeatDataset)

__all__ = ['build_dataset']


def _concat_dataset(cfg: dict, default_args: dict | None):
    """A config whose ``ann_file`` is a list: one data set per file (``img_prefix`` and
    ``proposal_file`` may be lists of the same length), concatenated."""
    ann_files = cfg['ann_file']
    n = len(ann_files)
    per_file = {}
    for key in ('img_prefix', 'seg_prefix', 'proposal_file'):
        value = cfg.get(key)
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise BuildError(f'{key} has {len(value)} entries for {n} ann_files', cfg)
            per_file[key] = value
    separate_eval = cfg.get('separate_eval', True)
    datasets = []
    for i, ann_file in enumerate(ann_files):
        c = copy.deepcopy(dict(cfg))
        c.pop('separate_eval', None)
        c['ann_file'] = ann_file
        for key, values in per_file.items():
            c[key] = values[i]
        datasets.append(build_dataset(c, default_args))
    return ConcatDataset(datasets, separate_eval)


def build_dataset(cfg, default_args: dict | None = None):
    """Build a data set from ``cfg``.

    Handles a list of configs (concatenated), ``ConcatDataset``/``RepeatDataset``/
    ``ClassBalancedDataset``/``MultiImageMixDataset`` wrappers with nested ``dataset``(s)
    configs, and a list of ``ann_file``s (one data set per file, concatenated).
    Errors name the config key path (``data.train.dataset.ann_file``...).
    """
    if isinstance(cfg, (list, tuple)):
        parts = []
        for i, c in enumerate(cfg):
            try:
                parts.append(build_dataset(c, default_args))
            except BuildError as e:
                raise e.prefix(str(i))
        return ConcatDataset(parts)
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise BuildError(f'a data set config must be a dict with a "type" key, got {cfg!r}', cfg)
    kind = cfg['type']
    try:
        if kind == 'ConcatDataset':
            return ConcatDataset([build_dataset(c, default_args) for c in cfg['datasets']],
                                 cfg.get('separate_eval', True))
        if kind == 'RepeatDataset':
            return RepeatDataset(_nested(cfg, default_args), cfg['times'])
        if kind == 'ClassBalancedDataset':
            return ClassBalancedDataset(_nested(cfg, default_args), cfg['oversample_thr'],
                                        cfg.get('filter_empty_gt', True))
        if kind == 'MultiImageMixDataset':
            c = {k: v for k, v in cfg.items() if k not in ('type', 'dataset')}
            return MultiImageMixDataset(_nested(cfg, default_args), **c)
    except KeyError as e:
        raise BuildError(f'{kind} needs the key {e.args[0]!r}', cfg) from None
    if isinstance(cfg.get('ann_file'), (list, tuple)):
        return _concat_dataset(cfg, default_args)
    return build_from_cfg(cfg, DATASETS, default_args)


def _nested(cfg: dict, default_args):
    try:
        return build_dataset(cfg['dataset'], default_args)
    except BuildError as e:
        raise e.prefix('dataset')
