"""Quantize a detector to INT8 (post-training, static, calibrated on training images).

    detforge quantize CONFIG CHECKPOINT --out model_int8.onnx [--calib 32] [--keep-float NAME ...]
                      [--shape H W] [--backend onnxruntime|openvino] [--cfg-options ...]

Exports the checkpoint to a static ONNX graph (as ``detforge export``), runs the config's test
pipeline on the first ``--calib`` images of ``data.train`` to calibrate the activations, and
writes a QDQ INT8 ``.onnx``: run it with ``detforge test/infer/benchmark --backend
onnxruntime`` (or ``openvino``, which reads the same file; ``--backend openvino --out
model_int8.xml`` writes it as OpenVINO IR instead). The detection head's last
convolutions stay float32 by default (``--keep-float``): they output the scores and box offsets
themselves. Measure the AP drop with ``detforge test --eval bbox``.
"""
from __future__ import annotations

import os
import tempfile

from detforge.commands._analysis_common import add_cfg_options, image_path
from detforge.registry import DetforgeError, build_context

NAME = 'quantize'
HELP = 'post-training INT8 quantization (ONNX, QDQ) calibrated on training images'

#: kept float32 by default: the predictor convolutions of every head detforge has (RetinaNet,
#: RPN, FCOS, ATSS, GFL, RTMDet), whose outputs are the scores and box offsets; and the CSP
#: blocks of RTMDet's PAFPN neck (``top_down_blocks``, ``bottom_up_blocks``: they take the
#: concatenation of an upsampled and a lateral map). Measured 2026-12-04 on the BCCD-320
#: RTMDet-tiny (test AP 0.588 in float32): with those blocks in int8 OpenVINO gave AP 0.538
#: (onnxruntime 0.584); kept float, 0.583 in OpenVINO
DEFAULT_KEEP_FLOAT = ('retina_cls', 'retina_reg', 'rpn_cls', 'rpn_reg', 'conv_cls', 'conv_reg',
                      'conv_centerness', 'atss_cls', 'atss_reg', 'atss_centerness', 'gfl_cls',
                      'gfl_reg', 'rtm_cls', 'rtm_reg', 'top_down_blocks', 'bottom_up_blocks')


def add_arguments(parser) -> None:
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True,
                        help='the INT8 file to write: .onnx, or .xml (OpenVINO IR) with '
                        '--backend openvino')
    parser.add_argument('--backend', choices=['onnxruntime', 'openvino'], default='onnxruntime',
                        help='onnxruntime (default): a QDQ .onnx, which onnxruntime and OpenVINO '
                        'both run; openvino: that graph converted to OpenVINO IR (.xml + .bin), '
                        'which loads faster in OpenVINO')
    parser.add_argument('--calib', type=int, default=32,
                        help='calibration images, the first N of data.train (default 32)')
    parser.add_argument('--keep-float', nargs='*', default=list(DEFAULT_KEEP_FLOAT),
                        metavar='NAME', help='layers whose node names contain one of these stay '
                        f'float32 (default: {" ".join(DEFAULT_KEEP_FLOAT)}; give none to '
                        'quantize every convolution)')
    parser.add_argument('--shape', type=int, nargs='+', metavar=('H', 'W'),
                        help='padded input height and width (default: as detforge export)')
    add_cfg_options(parser)


def _calibration_images(cfg, n: int) -> list[str]:
    import copy

    from detforge.data import build_dataset
    train = cfg.get('data', {}).get('train')
    if train is None:
        raise DetforgeError(f'{cfg.filename}: the config has no data.train to calibrate on')
    train = copy.deepcopy(train)
    while isinstance(train, dict) and 'dataset' in train:  # RepeatDataset & co: the inner set
        train = train['dataset']
    with build_context('data', 'train', filename=cfg.filename):
        dataset = build_dataset(dict(train, test_mode=True))
    if len(dataset) == 0:
        raise DetforgeError(f'{cfg.filename}: data.train has no images to calibrate on')
    return [image_path(dataset, i) for i in range(min(n, len(dataset)))]


def main(args) -> int:
    from detforge.apis.inference import init_detector
    from detforge.commands.export import default_shape, norm_cfg_from_config
    from detforge.deployment.onnx_export import export_onnx
    from detforge.deployment.quantize import calibration_batches, quantize_onnx
    if args.calib < 1:
        raise DetforgeError(f'--calib must be at least 1, got {args.calib}')
    backend = getattr(args, 'backend', 'onnxruntime')
    want = '.xml' if backend == 'openvino' else '.onnx'
    if not args.out.endswith(want):
        raise DetforgeError(f'--out for --backend {backend} must end in {want}, got {args.out}')
    if args.shape is not None and len(args.shape) not in (1, 2):
        raise DetforgeError(f'--shape takes H W (or one value for a square), got {args.shape}')
    if not os.path.isfile(args.checkpoint):
        raise DetforgeError(f'checkpoint file not found: {args.checkpoint}')
    model = init_detector(args.config, args.checkpoint, device='cpu', cfg_options=args.cfg_options)
    shape = default_shape(model.cfg) if args.shape is None else \
        tuple(args.shape) * (2 if len(args.shape) == 1 else 1)
    images = _calibration_images(model.cfg, args.calib)
    feeds = calibration_batches(model.cfg, images, shape)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = os.path.join(tmp, 'fp32.onnx')
        export_onnx(model, fp32, input_shape=shape, norm_cfg=norm_cfg_from_config(model.cfg),
                    class_names=model.CLASSES)
        int8 = os.path.join(tmp, 'int8.onnx') if backend == 'openvino' else args.out
        meta = quantize_onnx(fp32, int8, feeds, keep_float=args.keep_float)
        if backend == 'openvino':
            from detforge.deployment.openvino_backend import convert_to_openvino
            convert_to_openvino(int8, args.out)
    size = os.path.getsize(args.out) / 2 ** 20
    if backend == 'openvino':
        size += os.path.getsize(args.out[:-4] + '.bin') / 2 ** 20
    print(f'quantized {meta["detector"]} to INT8 ({len(feeds)} calibration images, input '
          f'{shape[0]}x{shape[1]}, {len(meta["kept_float"])} layers kept float32) -> '
          f'{args.out} ({size:.1f} MiB)')
    return 0
