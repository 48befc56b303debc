"""Helpers shared by the analysis commands (infer, confusion-matrix, analyze-results, ...)."""
from __future__ import annotations

import copy
import os

import numpy as np

from detforge.registry import DetforgeError, build_context

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')


def add_cfg_options(parser) -> None:
    try:
        from detforge.config import DictAction
    except ImportError:  # pragma: no cover - config is part of the package
        return
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override config keys, e.g. data.test.ann_file=...')


def add_backend_arguments(parser) -> None:
    """``--backend``, ``--fuse``, ``--compile`` and ``--threads``: how ``test``, ``infer`` and
    ``benchmark`` run the model."""
    parser.add_argument('--backend', choices=['pytorch', 'onnxruntime', 'openvino'],
                        default='pytorch',
                        help='run the PyTorch checkpoint (default), or a file exported by '
                        '`detforge export` with onnxruntime or OpenVINO (CPU)')
    parser.add_argument('--fuse', action='store_true',
                        help='PyTorch backend: fold batch norm into the convolutions before it '
                        '(same detections, faster)')
    parser.add_argument('--compile', action='store_true',
                        help='PyTorch backend: compile backbone, neck and dense head with torch.compile '
                        '(TorchInductor, frozen weights; the first image of each padded size '
                        'compiles, which takes seconds to minutes)')
    parser.add_argument('--threads', type=int, default=0,
                        help='onnxruntime/openvino: inference threads (default: the backend\'s)')
    parser.add_argument('--precision', choices=['f32', 'bf16'], default='f32',
                        help='openvino: f32 (default) or bf16 (convolutions in bfloat16, about '
                        '2x faster on CPUs with AVX-512 BF16/AMX; check the AP)')


def add_slice_arguments(parser) -> None:
    """``--slice`` and its settings: sliced inference for ``infer`` and ``test``
    (:mod:`detforge.apis.sliced_inference`)."""
    parser.add_argument('--slice', type=int, default=None, metavar='PIXELS',
                        help='detect in overlapping PIXELS x PIXELS tiles and merge them '
                        '(small objects on large images); default: the whole image at once')
    parser.add_argument('--overlap', type=float, default=0.2,
                        help='--slice: fraction of a tile its neighbour shares (default 0.2)')
    parser.add_argument('--slice-merge', choices=['nms', 'merge'], default='nms',
                        help="--slice: join the tiles' boxes by class-wise NMS (default) or by "
                        'merging overlapping boxes into their enclosing box')
    parser.add_argument('--slice-iou-thr', type=float, default=0.5,
                        help='--slice: IoU (nms) or intersection over the smaller box (merge) '
                        'at which two boxes are one object (default 0.5)')
    parser.add_argument('--slice-full-image', action='store_true',
                        help='--slice: also detect on the whole image and merge those boxes in')
    parser.add_argument('--slice-batch', type=int, default=4,
                        help='--slice: tiles per forward pass (default 4)')


def build_detect_fn(model, args):
    """``None`` (plain inference) without ``--slice``, else a
    :class:`~detforge.apis.sliced_inference.SlicedDetector` with the arguments' settings."""
    slice_size = getattr(args, 'slice', None)
    if slice_size is None:
        return None
    if not 0 < args.slice_iou_thr <= 1:
        raise DetforgeError(f'--slice-iou-thr must be in (0, 1], got {args.slice_iou_thr}')
    from detforge.apis.sliced_inference import SlicedDetector
    try:
        return SlicedDetector(model, slice_size, args.overlap, args.slice_batch,
                              args.slice_merge, args.slice_iou_thr, args.slice_full_image)
    except DetforgeError as e:
        raise DetforgeError(f'--slice {slice_size} --overlap {args.overlap} '
                            f'--slice-batch {args.slice_batch}: {e}') from None


def check_precision_argument(args) -> None:
    """``--precision bf16`` is OpenVINO's: any other backend would run float32 and ignore it."""
    args.precision = getattr(args, 'precision', 'f32')
    if args.precision != 'f32' and args.backend != 'openvino':
        raise DetforgeError(f'--precision {args.precision} is for --backend openvino, not '
                            f'--backend {args.backend}')


def check_backend_arguments(args) -> None:
    """The exported backends' arguments (``args`` may come from code that predates
    ``--fuse``/``--threads``: missing ones are their defaults)."""
    for flag in ('fuse', 'compile'):
        if getattr(args, flag, False):
            raise DetforgeError(f'--{flag} is for the pytorch backend; {args.checkpoint} run '
                                f'by {args.backend} is already optimised by it')
    args.threads = getattr(args, 'threads', 0)
    check_precision_argument(args)
    if args.threads < 0:
        raise DetforgeError(f'--threads must be >= 0, got {args.threads}')
    if not os.path.isfile(args.checkpoint):
        kind = 'ONNX' if str(args.checkpoint).endswith('.onnx') else 'exported'
        raise DetforgeError(f'{kind} model file not found: {args.checkpoint}')


def load_config(path: str, cfg_options=None):
    """See :func:`detforge.compat.load_config` (every entry point loads configs with it)."""
    from detforge.compat import load_config as load
    return load(path, cfg_options)


def build_test_dataset(cfg):
    """The config's ``data.test`` data set, in test mode (every image, dataset order)."""
    test_cfg = cfg.get('data', {}).get('test')
    if test_cfg is None:
        raise DetforgeError(f'{cfg.filename}: the config has no data.test to evaluate on')
    test_cfg = copy.deepcopy(test_cfg)
    if isinstance(test_cfg, dict):
        test_cfg['test_mode'] = True
    try:
        from detforge.data import build_dataset
    except ImportError:
        from detforge.registry import DATASETS
        build_dataset = DATASETS.build
    with build_context('data', 'test', filename=cfg.filename):
        return build_dataset(test_cfg)


def image_path(dataset, index: int) -> str:
    info = dataset.data_infos[index]
    prefix = getattr(dataset, 'img_prefix', None) or ''
    return os.path.join(prefix, info['filename']) if prefix else info['filename']


def load_checked_results(path: str, dataset):
    from detforge.evaluation.results_io import check_results_match, load_results
    results = load_results(path)
    check_results_match(dataset, results, source=f'the results in {path}')
    return results


def flatten_result(result):
    """Per-class ``(n, 5)`` arrays -> ``(dets (n, 5), labels (n,))``."""
    per_class = [np.asarray(r, dtype=np.float32).reshape(-1, 5) for r in result]
    dets = np.concatenate(per_class) if per_class else np.zeros((0, 5), np.float32)
    labels = np.repeat(np.arange(len(per_class)), [len(r) for r in per_class])
    return dets, labels
