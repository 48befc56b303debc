"""Export a trained detector to ONNX, post-processing (top-k, box decoding, NMS) included.

    detforge export CONFIG CHECKPOINT --out model.onnx [--shape 320 448] [--dynamic]
                    [--batch-size 1] [--opset 17] [--simplify] [--cfg-options ...]

The graph takes ``img`` (uint8 BGR ``(B, 3, H, W)``, padded) and ``img_shape`` (float32
``(B, 2)``: each image's ``[h, w]`` inside the padding) and returns ``dets (B, N, 5)``
``[x1, y1, x2, y2, score]`` in input pixels and ``labels (B, N)`` (``-1``: padding row).
The normalisation of the config's test pipeline is inside the graph. Run it with
``detforge test/infer ... --backend onnxruntime model.onnx`` or
:func:`detforge.deployment.build_backend_model`. See docs/deployment.md.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile

from detforge.commands._analysis_common import add_cfg_options
from detforge.registry import DetforgeError

NAME = 'export'
HELP = 'export a detector to ONNX (with NMS in the graph) for onnxruntime'


def add_arguments(parser) -> None:
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True,
                        help='the file to write: .onnx, or .xml (OpenVINO IR) with --backend '
                        'openvino')
    parser.add_argument('--backend', choices=['onnxruntime', 'openvino'], default='onnxruntime',
                        help='onnxruntime (default): an ONNX file; openvino: ONNX converted '
                        'to OpenVINO IR (.xml + .bin), which loads faster in OpenVINO')
    parser.add_argument('--shape', type=int, nargs='+', metavar=('H', 'W'),
                        help='padded input height and width of the graph (one value: square); '
                             'default: the test scale of the config, landscape, rounded up '
                             'to 32')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width axes')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='batch size of a static graph (default 1)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 16, default 17)')
    parser.add_argument('--simplify', action='store_true',
                        help='run onnx-simplifier on the result (pip install onnxsim)')
    add_cfg_options(parser)


def _find_steps(pipeline, type_name: str) -> list[dict]:
    """Every step of ``type_name`` in a pipeline, looking inside wrappers' ``transforms``."""
    found = []
    for step in pipeline or []:
        if not isinstance(step, dict):
            continue
        if step.get('type') == type_name:
            found.append(step)
        found += _find_steps(step.get('transforms'), type_name)
    return found


def _test_pipeline(cfg) -> list:
    try:
        return list(cfg.data.test.pipeline)
    except (AttributeError, KeyError, TypeError):
        return []


def norm_cfg_from_config(cfg) -> dict | None:
    """The ``Normalize`` arguments of the test pipeline (None: the model's default)."""
    steps = _find_steps(_test_pipeline(cfg), 'Normalize')
    if not steps:
        return None
    step = steps[0]
    return dict(mean=list(step['mean']), std=list(step['std']), to_rgb=bool(step.get('to_rgb', True)))


def default_shape(cfg, divisor: int = 32) -> tuple[int, int]:
    """``(H, W)`` of a landscape image resized by the test pipeline and padded: the short
    side of ``img_scale`` by its long side, each rounded up to ``divisor``."""
    scale = None
    for name in ('MultiScaleFlipAug', 'Resize'):
        for step in _find_steps(_test_pipeline(cfg), name):
            scale = step.get('img_scale') or scale
    if isinstance(scale, list) and scale and isinstance(scale[0], (list, tuple)):
        scale = max(scale, key=lambda s: max(s))
    if not scale or len(scale) != 2:
        return 800, 1344
    pads = _find_steps(_test_pipeline(cfg), 'Pad')
    divisor = int(pads[0].get('size_divisor') or divisor) if pads else divisor
    short, long = min(scale), max(scale)
    return (int(math.ceil(short / divisor) * divisor), int(math.ceil(long / divisor) * divisor))


def main(args) -> int:
    from detforge.apis.inference import init_detector
    from detforge.deployment.onnx_export import export_onnx
    if args.shape is not None and len(args.shape) not in (1, 2):
        raise DetforgeError(f'--shape takes H W (or one value for a square), got {args.shape}')
    if args.batch_size < 1:
        raise DetforgeError(f'--batch-size must be at least 1, got {args.batch_size}')
    if not os.path.isfile(args.checkpoint):
        raise DetforgeError(f'checkpoint file not found: {args.checkpoint}')
    want = '.xml' if args.backend == 'openvino' else '.onnx'
    if not args.out.endswith(want):
        raise DetforgeError(f'--out for --backend {args.backend} must end in {want}, got {args.out}')
    model = init_detector(args.config, args.checkpoint, device='cpu', cfg_options=args.cfg_options)
    if args.shape is None:
        shape = default_shape(model.cfg)
    else:
        shape = tuple(args.shape) * (2 if len(args.shape) == 1 else 1)
    # OpenVINO IR is converted from an ONNX export made in a temporary folder
    tmp = tempfile.mkdtemp(prefix='detforge-export-') if args.backend == 'openvino' else None
    onnx_file = os.path.join(tmp, 'model.onnx') if tmp else args.out
    meta = export_onnx(model, onnx_file, input_shape=shape, dynamic=args.dynamic,
                       opset=args.opset, simplify=args.simplify,
                       norm_cfg=norm_cfg_from_config(model.cfg), batch_size=args.batch_size,
                       class_names=model.CLASSES)
    if args.backend == 'openvino':
        from detforge.deployment.openvino_backend import convert_to_openvino
        try:
            convert_to_openvino(onnx_file, args.out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    size = os.path.getsize(args.out) / 2 ** 20
    if args.backend == 'openvino':
        size += os.path.getsize(args.out[:-4] + '.bin') / 2 ** 20
    inputs = 'dynamic batch/height/width' if args.dynamic else \
        f'batch {args.batch_size}, input {shape[0]}x{shape[1]}'
    print(f'exported {meta["detector"]} ({inputs}, opset {args.opset}, up to '
          f'{meta["max_per_img"]} detections per image) to {args.out} ({size:.1f} MiB)')
    return 0
