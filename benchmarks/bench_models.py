"""Model speed: detforge against torchvision on the same CPU, same images, same sizes.

    python benchmarks/bench_models.py --model retinanet --iters 5
    python benchmarks/bench_models.py --model retinanet --iters 3 --memory
    python benchmarks/bench_models.py --model faster_rcnn --iters 5 --profile
    python benchmarks/bench_models.py --model fcos --iters 5
    python benchmarks/bench_models.py --model mask_rcnn --iters 5

RetinaNet-R50-FPN, BCCD images at their own 640x480 (torchvision's transform is set to
min_size=480, max_size=640 so it does not resize), 3 classes, no pretrained weights, batch 2
for the training step (forward, backward, SGD step) and 1 image for inference. Both models
have the same layout and the same trainable parts: ResNet-50 with batch norm in train mode
(torchvision builds it so without pretrained weights), FPN P3-P7 with P6/P7 from P5, 4-conv
towers, 9 anchors; inference keeps up to 1000 candidates per level above 0.05, NMS 0.5, 300
detections. The two are timed alternately in one process (who goes first alternates too), so
that machine load hits both.

``--memory``: peak memory of each phase, as the peak resident set size (``VmHWM``) of a
fresh subprocess that builds one model and runs only that phase (one iteration). It includes the Python interpreter, torch and the model weights
(the same for both), so compare the differences, not the ratio alone.

Faster R-CNN-R50-FPN (``--model faster_rcnn``): ours from ``configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py``
(torchvision's conventions: RoIAlign sampling_ratio=2, smooth L1, proposal counts) against
``fasterrcnn_resnet50_fpn`` with 3 classes plus background, same sizes, batch norm trainable in
both; training samples 512 RoIs per image from up to 2000 proposals, inference keeps 1000
proposals and 100 detections. Faster and Mask R-CNN: ours holds torchvision's seeded random
weights (converted), so that both propose the same RoIs and train on as many positive ones
(with independent weights the mask branch of one saw twice the other's positive RoIs).

FCOS-R50-FPN (``--model fcos``): ours from ``configs/fcos/fcos_r50_fpn_tv.py`` (torchvision's
layout, see docs/models.md) against ``fcos_resnet50_fpn`` with 3 classes, same sizes, batch norm
trainable in both; inference keeps up to 1000 candidates per level above 0.2 on
``sqrt(class * centerness)``, NMS 0.6, 100 detections. Not yet measured.

RTMDet-tiny against RetinaNet-R18 (``--model rtmdet_tiny``, the issue-21 speed goal: RTMDet-tiny
at least 3x faster in single-image inference): both are detforge models from their BCCD-320
configs (``configs/rtmdet/rtmdet_tiny_bccd320.py`` and
``configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py``, random weights, train_cfg
and test_cfg as configured), on the BCCD images resized to 320x427 and zero-padded to 320x448 as
the BCCD-320 test pipeline makes them; "torchvision" in the output is RetinaNet-R18 here.
With random weights the number of boxes reaching NMS is not a trained model's: for the goal,
also time trained checkpoints with ``detforge benchmark CONFIG CKPT``. Not yet measured.

Mask R-CNN-R50-FPN (``--model mask_rcnn``): ours from ``configs/mask_rcnn/mask_rcnn_r50_fpn_tv.py``
against ``maskrcnn_resnet50_fpn`` with 3 classes plus background, as Faster R-CNN above plus the
mask branch (14x14 RoIAlign, 4 convs, deconv, 28x28 targets, masks pasted at 640x480 in
inference). BCCD has boxes only: each box gets the filled ellipse inscribed in it as its mask,
the same masks for both models.

``--profile``: one training step of each model under ``torch.profiler``; prints the share of the
step's self CPU time spent outside convolutions (forward and backward) and outside
convolutions + matrix multiplies, and the top non-convolution operators.

``--channels-last``: the memory layouts side by side in one process. Our model and
torchvision's are each built once, copied, and one copy converted to NHWC
(``channels_last = True``: ours through its config switch, torchvision by hand); the four
(model, layout) pairs are timed alternately, the order rotating each iteration, so that
machine load hits every pair alike. Prints each model's NHWC/NCHW ratio of the median
training step and inference.

``--targets`` (alone, no timing of the models): the target computation of our dense head
(RetinaNet's head, or Faster R-CNN's RPN) on the batch of the train step: anchors' validity,
assignment, sampling and box encoding. Prints its median wall time and how many of its ops
would make a GPU wait for the host (``nonzero``, ``item``, ``unique``: their output size or
value must reach the CPU).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CLASSES = ('RBC', 'WBC', 'Platelets')
NORM = dict(mean=np.array([123.675, 116.28, 103.53], np.float32),
            std=np.array([58.395, 57.12, 57.375], np.float32), to_rgb=True)


def bccd_root() -> Path:
    for root in (REPO / 'data' / 'bccd', REPO.parent / 'shared' / 'data' / 'bccd' / 'BCCD'):
        if (root / 'JPEGImages').is_dir():
            return root
    sys.exit('BCCD not found: expected data/bccd or ../shared/data/bccd/BCCD')


def load_images(n: int):
    """``n`` BCCD images (uint8 BGR, 480x640) with boxes (xyxy) and 0-based labels."""
    root = bccd_root()
    names = sorted(p.stem for p in (root / 'JPEGImages').glob('*.jpg'))[:n]
    out = []
    for name in names:
        img = cv2.imread(str(root / 'JPEGImages' / f'{name}.jpg'))
        boxes, labels = [], []
        for obj in ET.parse(root / 'Annotations' / f'{name}.xml').findall('object'):
            bb = obj.find('bndbox')
            boxes.append([float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax')])
            labels.append(CLASSES.index(obj.find('name').text.strip()))
        out.append((name, img, torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels)))
    return out


# ---------------------------------------------------------------------------- detforge
def build_ours_retinanet():
    from detforge.config import Config
    from detforge.models.builder import build_detector
    cfg = Config.fromfile(str(REPO / 'configs/retinanet/retinanet_r50_fpn_tv.py'))
    cfg.model.backbone.update(norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, frozen_stages=-1)
    cfg.model.bbox_head.num_classes = len(CLASSES)
    return build_detector(cfg.model)


def ours_batch(samples):
    h, w = samples[0][1].shape[:2]
    img = torch.stack([torch.from_numpy(s[1].transpose(2, 0, 1).copy()) for s in samples])
    metas = [dict(filename=s[0], ori_shape=(h, w, 3), img_shape=(h, w, 3), pad_shape=(h, w, 3),
                  scale_factor=np.ones(4, np.float32), flip=False, img_norm_cfg=NORM,
                  batch_input_shape=(h, w)) for s in samples]
    return dict(img=img, img_metas=metas, gt_bboxes=[s[2] for s in samples], gt_labels=[s[3] for s in samples])


def ours_train_step(model, optimizer, samples):
    out = model.train_step(ours_batch(samples), optimizer)
    optimizer.zero_grad(set_to_none=True)
    out['loss'].backward()
    optimizer.step()


def ours_infer(model, samples):
    batch = ours_batch(samples)
    with torch.no_grad():
        return model.simple_test(batch['img'], batch['img_metas'], rescale=True)


# ---------------------------------------------------------------------------- torchvision
def build_tv_retinanet():
    from torchvision.models.detection import retinanet_resnet50_fpn
    return retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(CLASSES),
                                  min_size=480, max_size=640, detections_per_img=300)


def tv_inputs(samples):
    imgs = [torch.from_numpy(np.ascontiguousarray(s[1][:, :, ::-1]).transpose(2, 0, 1).copy()).float() / 255
            for s in samples]
    # RetinaNet has no background class (sigmoid scores): labels 0..2 as ours
    targets = [dict(boxes=s[2], labels=s[3]) for s in samples]
    return imgs, targets


def tv_train_step(model, optimizer, samples, inputs=tv_inputs):
    imgs, targets = inputs(samples)
    losses = model(imgs, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def tv_infer(model, samples):
    imgs, _ = tv_inputs(samples)
    with torch.no_grad():
        return model(imgs)


def build_ours_faster_rcnn():
    from detforge.config import Config
    from detforge.models.builder import build_detector
    cfg = Config.fromfile(str(REPO / 'configs/faster_rcnn/faster_rcnn_r50_fpn_tv.py'))
    cfg.model.backbone.update(norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, frozen_stages=-1)
    cfg.model.roi_head.bbox_head.num_classes = len(CLASSES)
    return with_torchvision_weights(build_detector(cfg.model), build_tv_faster_rcnn,
                                    'torchvision_fasterrcnn')


def with_torchvision_weights(model, build_tv, converter: str):
    """``model`` holding the weights of the torchvision baseline that ``build_tv`` builds.

    A two-stage model's work depends on its weights: the RPN's proposals decide how many RoIs
    are positive, and the mask branch runs on the positive ones only. With independent random
    weights the two models trained on different numbers of RoIs (e.g. 91 against 44 positive
    RoIs for 2 images), so both start from the same weights, converted."""
    import importlib
    convert = importlib.import_module(f'detforge.converters.{converter}').convert_state_dict
    missing, unexpected = model.load_state_dict(convert(build_tv().state_dict()), strict=False)
    if missing or unexpected:
        raise RuntimeError(f'{converter}: missing {missing}, unexpected {unexpected}')
    return model


def build_tv_faster_rcnn():
    from torchvision.models.detection import fasterrcnn_resnet50_fpn
    torch.manual_seed(0)  # the same weights each call (ours converts them)
    # class 0 is torchvision's background: our label k is its label k + 1
    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(CLASSES) + 1,
                                   min_size=480, max_size=640)


def tv_inputs_with_background(samples):
    imgs, targets = tv_inputs(samples)
    return imgs, [dict(boxes=t['boxes'], labels=t['labels'] + 1) for t in targets]


def tv_rcnn_train_step(model, optimizer, samples):
    tv_train_step(model, optimizer, samples, inputs=tv_inputs_with_background)


def build_ours_fcos():
    from detforge.config import Config
    from detforge.models.builder import build_detector
    cfg = Config.fromfile(str(REPO / 'configs/fcos/fcos_r50_fpn_tv.py'))
    cfg.model.backbone.update(norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, frozen_stages=-1)
    cfg.model.bbox_head.num_classes = len(CLASSES)
    return build_detector(cfg.model)


def build_tv_fcos():
    from torchvision.models.detection import fcos_resnet50_fpn
    # sigmoid scores, no background class: labels 0..2 as ours
    return fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(CLASSES),
                             min_size=480, max_size=640)


def ellipse_masks(img_shape, boxes: torch.Tensor) -> np.ndarray:
    """uint8 ``(n, H, W)``: the filled ellipse inscribed in each box (BCCD has no masks)."""
    masks = np.zeros((len(boxes), *img_shape[:2]), np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.tolist()):
        centre = (int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2)))
        axes = (max(int(round((x2 - x1) / 2)), 1), max(int(round((y2 - y1) / 2)), 1))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, thickness=-1)
    return masks


def build_ours_mask_rcnn():
    from detforge.config import Config
    from detforge.models.builder import build_detector
    cfg = Config.fromfile(str(REPO / 'configs/mask_rcnn/mask_rcnn_r50_fpn_tv.py'))
    cfg.model.backbone.update(norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, frozen_stages=-1)
    cfg.model.roi_head.bbox_head.num_classes = len(CLASSES)
    cfg.model.roi_head.mask_head.num_classes = len(CLASSES)
    return with_torchvision_weights(build_detector(cfg.model), build_tv_mask_rcnn,
                                    'torchvision_maskrcnn')


def ours_mask_train_step(model, optimizer, samples):
    from detforge.structures.masks import BitmapMasks
    batch = ours_batch(samples)
    h, w = samples[0][1].shape[:2]
    batch['gt_masks'] = [BitmapMasks(ellipse_masks((h, w), s[2]), h, w) for s in samples]
    out = model.train_step(batch, optimizer)
    optimizer.zero_grad(set_to_none=True)
    out['loss'].backward()
    optimizer.step()


def build_tv_mask_rcnn():
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    torch.manual_seed(0)  # the same weights each call (ours converts them)
    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(CLASSES) + 1,
                                 min_size=480, max_size=640)


def tv_mask_train_step(model, optimizer, samples):
    def inputs(samples):
        imgs, targets = tv_inputs_with_background(samples)
        for t, s in zip(targets, samples):
            t['masks'] = torch.from_numpy(ellipse_masks(s[1].shape, s[2]))
        return imgs, targets
    tv_train_step(model, optimizer, samples, inputs=inputs)


def _bccd320_config_model(path: str):
    from detforge.config import Config
    from detforge.models.builder import build_detector
    return build_detector(Config.fromfile(str(REPO / path)).model)


def build_rtmdet_tiny():
    return _bccd320_config_model('configs/rtmdet/rtmdet_tiny_bccd320.py')


def build_retinanet_r18_bccd320():
    return _bccd320_config_model('configs/retinanet/retinanet_r18_fpn_gn-head_giou_ms_9e_bccd320.py')


def batch_320(samples):
    """The samples as the BCCD-320 test pipeline sizes them: short side 320 (keep ratio),
    padded with zeros to a multiple of 32."""
    h, w = samples[0][1].shape[:2]
    factor = min(427 / max(h, w), 320 / min(h, w))
    nh, nw = int(h * factor + 0.5), int(w * factor + 0.5)
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    img = torch.zeros(len(samples), 3, ph, pw, dtype=torch.uint8)
    for i, s in enumerate(samples):
        img[i, :, :nh, :nw] = torch.from_numpy(cv2.resize(s[1], (nw, nh)).transpose(2, 0, 1).copy())
    sf = np.array([nw / w, nh / h] * 2, np.float32)
    metas = [dict(filename=s[0], ori_shape=(h, w, 3), img_shape=(nh, nw, 3), pad_shape=(ph, pw, 3),
                  scale_factor=sf, flip=False, img_norm_cfg=NORM, batch_input_shape=(ph, pw))
             for s in samples]
    return dict(img=img, img_metas=metas, gt_bboxes=[s[2] * torch.from_numpy(sf) for s in samples],
                gt_labels=[s[3] for s in samples])


def _train_320(model, optimizer, samples):
    out = model.train_step(batch_320(samples), optimizer)
    optimizer.zero_grad(set_to_none=True)
    out['loss'].backward()
    optimizer.step()


def _infer_320(model, samples):
    batch = batch_320(samples)
    with torch.no_grad():
        return model.simple_test(batch['img'], batch['img_metas'], rescale=True)


# distinct names: the process CPU times are kept per function name
def rtmdet_train(model, optimizer, samples):
    _train_320(model, optimizer, samples)


def rtmdet_infer(model, samples):
    return _infer_320(model, samples)


def retinanet320_train(model, optimizer, samples):
    _train_320(model, optimizer, samples)


def retinanet320_infer(model, samples):
    return _infer_320(model, samples)


BUILDERS = {
    # name: (ours builder, ours train, ours infer, baseline builder, baseline train, baseline infer)
    'retinanet': (build_ours_retinanet, ours_train_step, ours_infer,
                  build_tv_retinanet, tv_train_step, tv_infer),
    'faster_rcnn': (build_ours_faster_rcnn, ours_train_step, ours_infer,
                    build_tv_faster_rcnn, tv_rcnn_train_step, tv_infer),
    'fcos': (build_ours_fcos, ours_train_step, ours_infer, build_tv_fcos, tv_train_step, tv_infer),
    'mask_rcnn': (build_ours_mask_rcnn, ours_mask_train_step, ours_infer,
                  build_tv_mask_rcnn, tv_mask_train_step, tv_infer),
    'rtmdet_tiny': (build_rtmdet_tiny, rtmdet_train, rtmdet_infer,
                    build_retinanet_r18_bccd320, retinanet320_train, retinanet320_infer),
}


# ---------------------------------------------------------------------------- runner
def make_optimizer(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)


CPU_TIMES: dict[str, list[float]] = {}


def timed(fn, *args) -> float:
    """Wall time of ``fn(*args)``; its process CPU time (all threads) goes to ``CPU_TIMES``,
    which is less disturbed than wall time when other jobs share the cores."""
    cpu, start = time.process_time(), time.perf_counter()
    fn(*args)
    wall = time.perf_counter() - start
    CPU_TIMES.setdefault(fn.__name__, []).append(time.process_time() - cpu)
    return wall


def run_timing(args):
    build_o, train_o, infer_o, build_b, train_b, infer_b = BUILDERS[args.model]
    samples = load_images(2)
    torch.manual_seed(0)
    ours, base = build_o(), build_b()
    opt_o, opt_b = make_optimizer(ours), make_optimizer(base)
    times = {k: [] for k in ('ours_train', 'base_train', 'ours_infer', 'base_infer')}
    for i in range(args.warmup + args.iters):
        # alternate who goes first, so that neither always follows the other's memory churn
        order = ('ours', 'base') if i % 2 == 0 else ('base', 'ours')
        run = {'ours': (ours, opt_o, train_o, infer_o), 'base': (base, opt_b, train_b, infer_b)}
        t = {}
        for who in order:
            model, opt, train_fn, _ = run[who]
            model.train()
            t[f'{who}_train'] = timed(train_fn, model, opt, samples)
        for who in order:
            model, _, _, infer_fn = run[who]
            model.eval()
            t[f'{who}_infer'] = timed(infer_fn, model, samples[:1])
        if i >= args.warmup:
            for k, v in t.items():
                times[k].append(v)
        print(f'iter {i}{" (warm-up)" if i < args.warmup else ""}: ' +
              ', '.join(f'{k} {v:.2f}s' for k, v in t.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v[args.warmup:]) for k, v in CPU_TIMES.items()}
    print('median process CPU time: ' + ', '.join(f'{k} {v:.2f}s' for k, v in cpu.items()))
    return med, times, cpu


def run_layouts(args) -> dict:
    """NCHW against NHWC (channels_last) for ours and torchvision, alternating in one process.

    Returns ``{'median_s': {'ours_nchw_train': s, ...}, 'nhwc_over_nchw': {'ours_train':
    ratio, ...}, 'times': {...}}``."""
    import copy

    from detforge.utils.setup_env import model_to_device
    build_o, train_o, infer_o, build_b, train_b, infer_b = BUILDERS[args.model]
    samples = load_images(2)
    torch.manual_seed(0)
    ours, base = build_o(), build_b()
    # same weights in both layouts: the NHWC copy is converted from the NCHW model
    models = {'ours_nchw': (ours, train_o, infer_o),
              'ours_nhwc': (model_to_device(copy.deepcopy(ours), 'cpu', dict(channels_last=True)),
                            train_o, infer_o),
              'base_nchw': (base, train_b, infer_b),
              'base_nhwc': (copy.deepcopy(base).to(memory_format=torch.channels_last),
                            train_b, infer_b)}
    runs = {name: (model, make_optimizer(model), train_fn, infer_fn)
            for name, (model, train_fn, infer_fn) in models.items()}
    names = list(runs)
    times = {f'{n}_{phase}': [] for n in names for phase in ('train', 'infer')}
    for i in range(args.warmup + args.iters):
        order = names[i % len(names):] + names[:i % len(names)]  # rotate who goes first
        t = {}
        for name in order:
            model, opt, train_fn, _ = runs[name]
            model.train()
            t[f'{name}_train'] = timed(train_fn, model, opt, samples)
        for name in order:
            model, _, _, infer_fn = runs[name]
            model.eval()
            t[f'{name}_infer'] = timed(infer_fn, model, samples[:1])
        if i >= args.warmup:
            for k, v in t.items():
                times[k].append(v)
        print(f'iter {i}{" (warm-up)" if i < args.warmup else ""}: ' +
              ', '.join(f'{k} {v:.2f}s' for k, v in t.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {f'{who}_{phase}': med[f'{who}_nhwc_{phase}'] / med[f'{who}_nchw_{phase}']
              for who in ('ours', 'base') for phase in ('train', 'infer')}
    for phase, label in (('train', 'train step (batch 2)'), ('infer', 'inference (1 image)')):
        print(f'{label}: ours NCHW {med[f"ours_nchw_{phase}"]:.2f}s, NHWC '
              f'{med[f"ours_nhwc_{phase}"]:.2f}s (x{ratios[f"ours_{phase}"]:.3f}); torchvision '
              f'NCHW {med[f"base_nchw_{phase}"]:.2f}s, NHWC {med[f"base_nhwc_{phase}"]:.2f}s '
              f'(x{ratios[f"base_{phase}"]:.3f})')
    return dict(median_s=med, nhwc_over_nchw=ratios, times=times)


def peak_rss_mib() -> float:
    """Peak resident memory of this process: ``VmHWM`` of /proc/self/status (reset by exec,
    unlike ``ru_maxrss``, which Linux carries over from the forking parent)."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_phase(args):
    """One phase in this process (for --memory): print peak RSS in MiB as JSON."""
    build_o, train_o, infer_o, build_b, train_b, infer_b = BUILDERS[args.model]
    samples = load_images(2)
    torch.manual_seed(0)
    who, what = args.phase.split('-')
    model = build_o() if who == 'ours' else build_b()
    if what == 'train':
        model.train()
        opt = make_optimizer(model)
        fn = train_o if who == 'ours' else train_b
        for _ in range(args.iters):
            fn(model, opt, samples)
    else:
        model.eval()
        fn = infer_o if who == 'ours' else infer_b
        for _ in range(args.iters):
            fn(model, samples[:1])
    print(json.dumps(dict(phase=args.phase, max_rss_mib=peak_rss_mib())))


CONV_OPS = ('aten::mkldnn_convolution', 'aten::convolution_backward', 'aten::_convolution',
            'aten::thnn_conv2d', 'aten::_slow_conv2d_forward', 'aten::_slow_conv2d_backward')
MATMUL_OPS = ('aten::mm', 'aten::addmm', 'aten::bmm')
# ops whose output size or value must reach the host: on a GPU each one waits for the device
SYNC_OPS = ('aten::nonzero', 'aten::_local_scalar_dense', 'aten::_unique2', 'aten::unique_dim',
            'aten::masked_select')


def run_profile(args):
    """Self CPU time of one training step per model, split into convolutions, matrix
    multiplies and the rest."""
    from torch.profiler import ProfilerActivity, profile
    build_o, train_o, _, build_b, train_b, _ = BUILDERS[args.model]
    samples = load_images(2)
    shares = {}
    for who, build, train_fn in (('ours', build_o, train_o), ('base', build_b, train_b)):
        torch.manual_seed(0)
        model = build().train()
        opt = make_optimizer(model)
        train_fn(model, opt, samples)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_fn(model, opt, samples)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
        mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
        syncs = sum(e.count for e in events if e.key in SYNC_OPS)
        shares[who] = dict(total_s=total / 1e6, non_conv_share=1 - conv / total,
                           non_conv_matmul_share=1 - (conv + mm) / total, sync_ops=syncs)
        print(f'{who}: profiled train step {total / 1e6:.2f}s self CPU, not convolution '
              f'{100 * shares[who]["non_conv_share"]:.1f}%, not convolution/matmul '
              f'{100 * shares[who]["non_conv_matmul_share"]:.1f}%, {syncs} ops that would '
              f'synchronise a GPU', flush=True)
        rest = sorted((e for e in events if e.key not in CONV_OPS + MATMUL_OPS),
                      key=lambda e: -e.self_cpu_time_total)[:8]
        print('    top others: ' + ', '.join(f'{e.key} {e.self_cpu_time_total / 1e3:.0f}ms' for e in rest))
    return shares


def run_targets(args):
    """Median wall time of the dense head's ``get_targets`` on the train step's own inputs, and
    the number of its ops that would synchronise a GPU with the host."""
    from torch.profiler import ProfilerActivity, profile
    build_o, train_o = BUILDERS[args.model][:2]
    samples = load_images(2)
    torch.manual_seed(0)
    model = build_o().train()
    head = model.bbox_head if hasattr(model, 'bbox_head') else model.rpn_head
    calls = []
    get_targets = head.get_targets

    def recording(*a, **k):
        calls.append((a, k))
        return get_targets(*a, **k)

    head.get_targets = recording
    train_o(model, make_optimizer(model), samples)
    del head.get_targets
    a, k = calls[0]
    times = []
    for _ in range(args.iters + args.warmup):
        start = time.perf_counter()
        head.get_targets(*a, **k)
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        head.get_targets(*a, **k)
    events = prof.key_averages()
    syncs = {e.key: e.count for e in events if e.key in SYNC_OPS}
    result = dict(median_ms=1e3 * statistics.median(times[args.warmup:]), sync_ops=sum(syncs.values()),
                  sync_ops_by_name=syncs, ops=sum(e.count for e in events))
    print(f'{type(head).__name__}.get_targets (batch 2, {a[0].shape[0]} anchors): '
          f'{result["median_ms"]:.1f} ms, {result["ops"]} ops, {result["sync_ops"]} that would '
          f'synchronise a GPU {syncs}', flush=True)
    return result


def run_memory(args):
    peaks = {}
    for phase in ('ours-train', 'base-train', 'ours-infer', 'base-infer'):
        cmd = [sys.executable, __file__, '--model', args.model, '--phase', phase, '--iters', '1',
               '--threads', str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        peaks[phase] = json.loads(out.strip().splitlines()[-1])['max_rss_mib']
        print(f'{phase}: peak RSS {peaks[phase]:.0f} MiB', flush=True)
    return peaks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', choices=sorted(BUILDERS), default='retinanet')
    parser.add_argument('--iters', type=int, default=5, help='timed iterations (after warm-up)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--memory', action='store_true', help='also measure peak RSS per phase')
    parser.add_argument('--profile', action='store_true',
                        help='also profile one train step of each model (non-convolution share)')
    parser.add_argument('--targets', action='store_true',
                        help="only time our dense head's target computation and count its GPU syncs")
    parser.add_argument('--channels-last', action='store_true',
                        help='time NCHW and NHWC (config channels_last=True) side by side, '
                             'alternating in one process, for both models')
    parser.add_argument('--phase', help=argparse.SUPPRESS)
    parser.add_argument('--json', help='write the results to this file')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    if args.phase:
        return run_phase(args)
    if args.targets:
        return run_targets(args)

    print(f'torch {torch.__version__}, {args.threads} threads, model {args.model}'
          f'{", channels_last" if args.channels_last else ""}; machine load '
          f'{" ".join(f"{x:.1f}" for x in __import__("os").getloadavg())}', flush=True)
    if args.channels_last:
        result = dict(model=args.model, threads=args.threads, iters=args.iters,
                      channels_last='side by side', **run_layouts(args))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return result
    med, times, cpu = run_timing(args)
    result = dict(model=args.model, threads=args.threads, iters=args.iters, median_s=med,
                  channels_last=False,
                  train_ratio=med['ours_train'] / med['base_train'],
                  infer_ratio=med['ours_infer'] / med['base_infer'], times=times,
                  median_cpu_s=cpu)
    print(f"train step (batch 2): ours {med['ours_train']:.2f}s, torchvision {med['base_train']:.2f}s, "
          f"ratio {result['train_ratio']:.2f}")
    print(f"inference (1 image):  ours {med['ours_infer']:.2f}s, torchvision {med['base_infer']:.2f}s, "
          f"ratio {result['infer_ratio']:.2f}")
    _, train_o, infer_o, _, train_b, infer_b = BUILDERS[args.model]
    result['train_cpu_ratio'] = cpu[train_o.__name__] / cpu[train_b.__name__]
    result['infer_cpu_ratio'] = cpu[infer_o.__name__] / cpu[infer_b.__name__]
    print(f"process CPU time ratio: train {result['train_cpu_ratio']:.2f}, "
          f"inference {result['infer_cpu_ratio']:.2f}")
    if args.memory:
        result['peak_rss_mib'] = run_memory(args)
    if args.profile:
        result['profile'] = run_profile(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
