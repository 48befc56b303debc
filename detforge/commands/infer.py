"""Run a detector on an image, a folder of images or a video, and draw what it finds.

    detforge infer CONFIG CHECKPOINT INPUT [--out DIR] [--score-thr 0.3] [--device cpu]
                   [--slice 512 [--overlap 0.2] [--slice-merge nms|merge] [--slice-full-image]]

Writes into DIR (default ``infer_out``): each image drawn with boxes, class names and
scores (same file name), or for a video ``NAME.mp4`` with every frame drawn; and
``detections.json``: ``{"classes": [...], "detections": {file or frame: [{"bbox": [x1, y1,
x2, y2], "score": s, "label": i, "class": name}, ...]}}`` (boxes above --score-thr, pixels).
A mask detector (Mask R-CNN) also draws its masks and adds ``"segmentation"`` to each
detection: COCO compressed RLE ``{"size": [h, w], "counts": "..."}`` (``pycocotools.mask.decode``
reads it).

``--slice N`` detects small objects on large images: each image is cut into overlapping
N x N tiles, each tile is detected, and the boxes of all tiles are merged
(:mod:`detforge.apis.sliced_inference`); the JSON is the same.
"""
from __future__ import annotations

import json
import sys
import os

import cv2

from detforge.commands._analysis_common import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS,
                                                add_backend_arguments, add_cfg_options,
                                                add_slice_arguments, build_detect_fn,
                                                check_backend_arguments,
                                                check_precision_argument)
from detforge.registry import DetforgeError

NAME = 'infer'
HELP = 'detect objects in an image, a folder or a video; write drawings and a JSON'


def add_arguments(parser):
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (.pth), or the exported model '
                        'with --backend onnxruntime|openvino (.onnx, .xml)')
    parser.add_argument('input', help='an image, a folder of images, or a video file')
    parser.add_argument('--out', default='infer_out', help='output folder (default: infer_out)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw and report boxes scoring at least this (default 0.3)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda:0'")
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    add_backend_arguments(parser)
    add_slice_arguments(parser)
    add_cfg_options(parser)


def _list_images(folder: str) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DetforgeError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in the folder {folder}')
    return [os.path.join(folder, n) for n in names]


def run_images(model, paths, out_dir, score_thr, batch_size=1, failed_drawings=None,
               detect=None) -> dict:
    """Detections per image name; each drawing goes to ``out_dir``. A drawing that cannot be
    written is reported (and listed in ``failed_drawings``), never the end of the run: the
    detections are what the user asked for. ``detect(list of images) -> results`` defaults
    to ``inference_detector`` on ``model`` (``--slice`` passes a sliced detector)."""
    from detforge.apis.inference import inference_detector, result_to_structured
    from detforge.visualization.draw import display_path, draw_det_result, read_image
    names = model.CLASSES or ()
    detections = {}
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        imgs = [read_image(p) for p in chunk]  # a file that does not decode fails here, by name
        results = detect(imgs) if detect is not None else inference_detector(model, imgs)
        for path, img, result in zip(chunk, imgs, results):
            name = os.path.basename(path)
            detections[name] = result_to_structured(result, names).to_list(score_thr)
            out_file = os.path.join(out_dir, name)
            try:
                draw_det_result(img, result, class_names=names, score_thr=score_thr,
                                out_file=out_file)
            except (OSError, DetforgeError, cv2.error) as e:
                print(f'detforge infer: warning: could not draw {display_path(out_file)}: '
                      f'{display_path(str(e))}', file=sys.stderr)
                if failed_drawings is not None:
                    failed_drawings.append(out_file)
    return detections


def run_video(model, path, out_dir, score_thr, detect=None) -> dict:
    from detforge.apis.inference import inference_detector, result_to_structured
    from detforge.visualization.draw import draw_det_result
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise DetforgeError(f'{path}: could not open the video (unsupported codec or not a video)')
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out_file = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + '.mp4')
    writer = cv2.VideoWriter(out_file, cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    if not writer.isOpened():
        capture.release()
        raise DetforgeError(f'could not write the video {out_file}')
    names = model.CLASSES or ()
    detections = {}
    frame_index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            result = detect([frame])[0] if detect is not None else \
                inference_detector(model, frame)
            writer.write(draw_det_result(frame, result, class_names=names, score_thr=score_thr))
            detections[f'frame_{frame_index:06d}'] = \
                result_to_structured(result, names).to_list(score_thr)
            frame_index += 1
    finally:
        capture.release()
        writer.release()
    if frame_index == 0:
        raise DetforgeError(f'{path}: the video has no readable frames')
    return detections


def main(args):
    from detforge.apis.inference import init_detector
    if not os.path.exists(args.input):
        kind = 'video' if args.input.lower().endswith(VIDEO_EXTENSIONS) else 'input'
        raise DetforgeError(f'{kind} not found: {args.input}')
    if args.batch_size < 1:
        raise DetforgeError(f'--batch-size must be at least 1, got {args.batch_size}')
    check_precision_argument(args)
    if args.backend == 'pytorch':
        model = init_detector(args.config, args.checkpoint, device=args.device,
                              cfg_options=args.cfg_options, fuse=getattr(args, 'fuse', False),
                              compile=getattr(args, 'compile', False))
    else:
        from detforge.deployment import build_backend_model
        check_backend_arguments(args)
        model = build_backend_model(args.config, args.checkpoint, device=args.device,
                                    cfg_options=args.cfg_options, backend=args.backend,
                                    num_threads=args.threads, precision=args.precision)
    detect = build_detect_fn(model, args)
    os.makedirs(args.out, exist_ok=True)
    failed_drawings: list[str] = []
    if os.path.isdir(args.input):
        detections = run_images(model, _list_images(args.input), args.out, args.score_thr,
                                args.batch_size, failed_drawings, detect)
    elif args.input.lower().endswith(VIDEO_EXTENSIONS):
        detections = run_video(model, args.input, args.out, args.score_thr, detect)
    else:
        detections = run_images(model, [args.input], args.out, args.score_thr,
                                failed_drawings=failed_drawings, detect=detect)
    json_file = os.path.join(args.out, 'detections.json')
    with open(json_file, 'w') as f:
        json.dump(dict(classes=list(model.CLASSES or ()), score_thr=args.score_thr,
                       detections=detections), f, indent=1)
    total = sum(len(v) for v in detections.values())
    unit = 'frames' if args.input.lower().endswith(VIDEO_EXTENSIONS) else 'images'
    from detforge.visualization.draw import display_path
    failed = f' ({len(failed_drawings)} drawings could not be written)' if failed_drawings else ''
    print(f'{len(detections)} {unit}'
          f', {total} boxes with score >= {args.score_thr}; wrote {display_path(args.out)}/'
          f'{failed} and {display_path(json_file)}')
    return 0
