"""Switch the training data pipeline from an epoch on (RTMDet: no mosaic/mixup at the end)."""
from __future__ import annotations

from typing import Sequence

from detforge.registry import HOOKS, BuildError, DetforgeError

from .hook import Hook

__all__ = ['PipelineSwitchHook']


def _pipeline_holders(dataset) -> list:
    """The data sets whose ``pipeline`` makes the samples of ``dataset``.

    Goes through the loader's seeding wrapper and the repeat / class-balance / concat
    wrappers; a :class:`~detforge.data.MultiImageMixDataset` is itself the holder (its mixing
    pipeline is what gets switched; its inner data set keeps loading the images).
    """
    from detforge.data.dataset_wrappers import ConcatDataset, MultiImageMixDataset
    if isinstance(dataset, MultiImageMixDataset):
        return [dataset]
    if isinstance(dataset, ConcatDataset):
        return [h for d in dataset.datasets for h in _pipeline_holders(d)]
    inner = dataset.__dict__.get('dataset')  # SeededDataset, RepeatDataset, ClassBalanced...
    if inner is not None:
        return _pipeline_holders(inner)
    if not hasattr(dataset, 'pipeline'):
        raise DetforgeError(f'PipelineSwitchHook: the train data set ({type(dataset).__name__}) '
                            f'has no pipeline to switch')
    return [dataset]


def _set_pipeline(dataset, transforms: Sequence[dict]) -> None:
    from detforge.data.dataset_wrappers import MultiImageMixDataset
    from detforge.data.pipelines.compose import Compose
    compose = Compose(transforms)  # new transforms: fresh caches of CachedMosaic & co.
    if isinstance(dataset, MultiImageMixDataset):
        dataset.pipeline = list(compose.transforms)
        dataset.pipeline_types = [t['type'] for t in transforms]
    else:
        dataset.pipeline = compose


def _restart_persistent_workers(loader) -> None:
    """Persistent workers hold a copy of the data set made when they started: stop them, so
    that the next ``iter(loader)`` starts workers with the new pipeline. Workers that are not
    persistent are started by every ``iter(loader)`` anyway."""
    iterator = getattr(loader, '_iterator', None)  # torch's DataLoader keeps it here
    if getattr(loader, 'persistent_workers', False) and iterator is not None:
        loader._iterator = None
        iterator._shutdown_workers()


@HOOKS.register_module()
class PipelineSwitchHook(Hook):
    """From epoch ``switch_epoch`` (0-based: the epochs ``switch_epoch, ...`` use it) on,
    train with ``switch_pipeline`` (MMDetection 3.x's hook, as RTMDet uses it).

    The pipeline is replaced before the epoch's loader iterator is made, so its first batch
    already uses the new one; persistent loader workers are restarted. A resumed run at or
    after ``switch_epoch`` switches at its first epoch. Epoch-based runners only.

    Args:
        switch_epoch: the first epoch (0-based, ``runner.epoch``) with the new pipeline.
        switch_pipeline: the full pipeline (loading included for a plain data set; for a
            ``MultiImageMixDataset``, its mixing pipeline).
    """

    def __init__(self, switch_epoch: int, switch_pipeline: Sequence[dict]):
        if not isinstance(switch_epoch, int) or switch_epoch < 0:
            raise BuildError(f'PipelineSwitchHook: switch_epoch must be an int >= 0, got '
                             f'{switch_epoch!r}', key_path=['switch_epoch'])
        if not isinstance(switch_pipeline, (list, tuple)) or not all(
                isinstance(t, dict) for t in switch_pipeline):
            raise BuildError('PipelineSwitchHook: switch_pipeline must be a list of '
                             'dict(type=...)', key_path=['switch_pipeline'])
        from detforge.data.pipelines.compose import Compose
        try:  # refuse a bad transform at build time, not hours into training
            Compose(switch_pipeline)
        except BuildError as e:
            if e.key_path[:1] == ['pipeline']:  # Compose's own name for the list
                e.key_path = e.key_path[1:]
            raise e.prefix('switch_pipeline')
        self.switch_epoch = switch_epoch
        self.switch_pipeline = [dict(t) for t in switch_pipeline]
        self.switched = False

    def before_run(self, runner):
        from ..runner.iter_based_runner import IterBasedRunner
        if isinstance(runner, IterBasedRunner):
            raise DetforgeError('PipelineSwitchHook needs an epoch-based runner '
                                '(runner.type=EpochBasedRunner)')

    def before_train_epoch(self, runner):
        if self.switched or runner.epoch < self.switch_epoch:
            return
        loader = runner.data_loader
        for dataset in _pipeline_holders(loader.dataset):
            _set_pipeline(dataset, self.switch_pipeline)
        _restart_persistent_workers(loader)
        self.switched = True
        runner.logger.info(f'PipelineSwitchHook: epoch {runner.epoch + 1} on uses the switch '
                           f'pipeline ({", ".join(t["type"] for t in self.switch_pipeline)})')
