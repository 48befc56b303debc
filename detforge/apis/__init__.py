"""The high-level entry points, by MMDetection 2.x's names.

- ``train.py``: ``train_detector`` (loaders, optimizer, runner, hooks, resume, run),
  ``set_random_seed``, and the translation of ``optimizer_config``/``fp16``/``amp``.
- ``test.py``: ``single_gpu_test``, ``multi_gpu_test`` (inference over a data loader).
- ``inference.py``: ``init_detector``, ``inference_detector`` (one image or a few).
"""
from .inference import (DetResult, LoadImageFromArray, build_test_pipeline, inference_detector,
                        init_detector, result_to_structured)
from .test import collect_results_cpu, collect_results_gpu, multi_gpu_test, single_gpu_test
from .train import (auto_scale_lr, build_train_hooks_cfg, init_random_seed, resolve_runner_cfg,
                    set_random_seed, train_detector)

__all__ = [
    'init_detector', 'inference_detector', 'DetResult', 'result_to_structured',
    'LoadImageFromArray', 'build_test_pipeline',
    'single_gpu_test', 'multi_gpu_test', 'collect_results_cpu', 'collect_results_gpu',
    'train_detector', 'set_random_seed', 'init_random_seed', 'auto_scale_lr',
    'resolve_runner_cfg', 'build_train_hooks_cfg',
]
