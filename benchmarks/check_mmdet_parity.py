"""Side-by-side check against MMDetection 2.28.2 itself (not against detforge's own code).

For each model family, with MMDetection's own config file (unchanged, from its ``configs/``
tree):

1. MMDetection side (its interpreter, ``/tmp/mmdet2/venv``; see
   ``../shared/reference/README.md``): build the model from the config, perturb every weight
   with seeded noise (so scores are not all equal, BN statistics not trivial), save the
   checkpoint as its zoo does (``{'meta', 'state_dict'}`` with ``mmcv.runner.save_checkpoint``),
   run ``mmdet.apis.inference_detector`` on a batch of 2 BCCD images (its test pipeline,
   1333x800), recording the raw outputs of every head (forward hooks) and the detections.
2. detforge side (this interpreter): ``init_detector(the same config file, that checkpoint)``
   and ``inference_detector`` on the same batch with the same hooks; compare.

FCOS, ATSS and GFL (the ``DIRECT`` families) are checked on the same input tensor rather than
through each framework's pipeline: the MMDetection side makes it (2 BCCD images resized to the
odd sizes 405x541 and 389x517, normalised as the config says, zero-padded to one 416x544 batch)
and saves it with the images' ground-truth boxes; both sides run ``simple_test(rescale=False)``
on it (raw head outputs recorded, detections compared) and ``forward_train`` on it (the
training losses, summed over levels where MMDetection returns a list, compared relatively).

Mask R-CNN and Cascade Mask R-CNN (``mask_rcnn``, ``cascade_mask_rcnn``): detforge loads the
checkpoint through its own config (``DETFORGE_CONFIGS``), and the masks are compared too: the
mask head's RoIs (the detections rescaled to the network input) and logits of the same
detections in order, and the binary masks pasted into the original image (per detection:
pixels that differ, IoU; PASS needs every IoU >= ``MASK_IOU_TOL``, mask RoIs within 1e-2 px
and the logits within 1e-3). Seen when detforge's mask RoIAlign was given ``sampling_ratio=2``
(MMDetection: 0): logits 4.3e-3 off, 72 of 200 masks with 1-3 other pixels, min IoU 0.971.

``--roi-same-input`` (RoI-head families) also records, on the MMDetection side, the inputs of
every call of its RoI head's ``_bbox_forward`` / ``_mask_forward`` (the FPN feature maps and
the RoIs, ``{family}_roi_inputs.pt``, ~200 MB at 1333x800) and their outputs, feeds those very
tensors to detforge's RoI head and compares the outputs in order: no row matching, so a
difference there is the RoI head's own (RoIAlign, heads), not a proposal of equal score in
another place. PASS then also needs every such output within 1e-3.

``--odd-batch``: the second image cut to 389x517 (BCCD's are all 640x480), so that the batch
holds two sizes (1333x800 resize: 1067x800 and 1063x800) with different scale factors.

Usage (from the repository root):

    PYTHONPATH=. python benchmarks/check_mmdet_parity.py            # every family
    PYTHONPATH=. python benchmarks/check_mmdet_parity.py retinanet  # some of them
    PYTHONPATH=. python benchmarks/check_mmdet_parity.py mask_rcnn --roi-same-input --odd-batch
    MMDET2_OUT=DIR ... --side detforge   # detforge side only, on a saved MMDetection run

It prints, per family: missing / unexpected / mis-shaped keys, the largest difference of the
raw head outputs, of detection boxes (px) and scores, and PASS when boxes < 1e-2 px and
scores < 1e-4 with the same number of detections per class, at least one detection, dense-head
raw outputs within 1e-3 and each RoI-head output row within 1e-2 (largest element difference)
of its nearest row on the other side (the order of equal-score proposals is arbitrary in both
frameworks). Exit status 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys

MMDET_PY = os.environ.get('MMDET2_PYTHON', '/tmp/mmdet2/venv/bin/python')
MMDET_CONFIGS = os.environ.get('MMDET2_CONFIGS', '/tmp/mmdet2/configs')
PATCHES = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..', 'shared', 'reference', 'mmdet2')
OUT = os.environ.get('MMDET2_OUT', '/tmp/mmdet2/out/parity')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
IMAGES = ['data/bccd/JPEGImages/BloodImage_00000.jpg', 'data/bccd/JPEGImages/BloodImage_00001.jpg']
# --odd-batch: the second image cut to its top-left 389x517 (BCCD images are all 640x480), so
# the two images of the batch differ in size and scale factor (1333x800 resize: 1067x800 and
# 1063x800, different padding and rescale of boxes and masks)
ODD_CROP = (389, 517)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forward_recorder import record_forwards  # noqa: E402 - benchmarks/ is not a package

# family -> (config under MMDetection's configs/, heads whose raw outputs are compared)
FAMILIES = {
    'retinanet': ('retinanet/retinanet_r50_fpn_1x_coco.py', ['bbox_head']),
    'faster_rcnn': ('faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py',
                    ['rpn_head', 'roi_head.bbox_head']),
    'cascade_rcnn': ('cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py',
                     ['rpn_head', 'roi_head.bbox_head.0', 'roi_head.bbox_head.1',
                      'roi_head.bbox_head.2']),
    'faster_rcnn_x101': ('faster_rcnn/faster_rcnn_x101_32x4d_fpn_1x_coco.py',
                         ['rpn_head', 'roi_head.bbox_head']),
    'retinanet_x101': ('retinanet/retinanet_x101_32x4d_fpn_1x_coco.py', ['bbox_head']),
    'fcos': ('fcos/fcos_r50_caffe_fpn_gn-head_1x_coco.py', ['bbox_head']),
    'fcos_giou': ('fcos/fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco.py',
                  ['bbox_head']),
    'atss': ('atss/atss_r50_fpn_1x_coco.py', ['bbox_head']),
    'gfl': ('gfl/gfl_r50_fpn_1x_coco.py', ['bbox_head']),
    # C4: backbone to conv4, RPN on it, conv5 as the ResLayer shared head on 14x14 RoIs
    'faster_rcnn_c4': ('faster_rcnn/faster_rcnn_r50_caffe_c4_1x_coco.py',
                       ['rpn_head', 'roi_head.bbox_head']),
    # OHEM changes training only: its inference must be Faster R-CNN's
    'faster_rcnn_ohem': ('faster_rcnn/faster_rcnn_r50_fpn_ohem_1x_coco.py',
                         ['rpn_head', 'roi_head.bbox_head']),
    # masks: the mask head's logits (one row per detection) and the pasted binary masks
    'mask_rcnn': ('mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py',
                  ['rpn_head', 'roi_head.bbox_head', 'roi_head.mask_head']),
    'cascade_mask_rcnn': ('cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.py',
                          ['rpn_head'] + [f'roi_head.{head}.{i}' for head in
                                          ('bbox_head', 'mask_head') for i in range(3)]),
}
# detforge loads these families through its own config file (the same model, written with
# detforge's configs/_base_); the others through MMDetection's file
DETFORGE_CONFIGS = {
    'mask_rcnn': 'configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py',
    'cascade_mask_rcnn': 'configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.py',
}
# families run on one saved input tensor (odd image sizes), with training losses compared
DIRECT = ('fcos', 'fcos_giou', 'atss', 'gfl')
DIRECT_SHAPES, DIRECT_PAD = [(405, 541), (389, 517)], (416, 544)
LOSS_TOL = 1e-4  # relative
# The dense classifiers start at the focal-loss prior (bias -4.6, weights std 0.01): their
# scores are ~0.01, under the 0.05 threshold. Larger weights (not bias) spread them.
DENSE_CLASSIFIERS, DENSE_CLASSIFIER_GAIN = ('conv_cls.weight', 'atss_cls.weight',
                                            'gfl_cls.weight'), 10.0
BOX_TOL, SCORE_TOL, HEAD_TOL, ROI_TOL = 1e-2, 1e-4, 1e-3, 1e-2
# pasted masks: the smallest IoU of one detection's binary mask with the other side's
MASK_IOU_TOL = 0.99
# Two-stage models with random weights give near-equal RPN scores (ties whose order is
# arbitrary) and no box above the 0.05 score threshold after the 81-way softmax: larger
# classifier weights spread them. (RetinaNet's focal-loss prior needs no help; a gain there
# saturates its sigmoid scores at 1.0, i.e. ties.)
CLASSIFIERS, CLASSIFIER_GAIN = ('rpn_cls', 'fc_cls'), 10.0
# ... except where the gain saturates the sigmoid: the C4 RPN (1024 input channels) with gain
# 10 gave top-1000 proposal scores of only ~100 distinct float32 values (0.99998...), so which
# of the tied proposals survive differs between the frameworks (measured 2026-12-04)
GAIN_OVERRIDES = {'faster_rcnn_c4': {'rpn_cls': 1.0}}


def _record_rois(model, extractor_name='roi_head.bbox_roi_extractor'):
    """The RoIs (n, 5) each call of a RoI extractor gets (the box extractor: the proposals,
    with their image index; the mask extractor: the detections), when the model has one
    (the first stage's, in a cascade)."""
    store = []
    try:
        extractor = model.get_submodule(extractor_name)
    except AttributeError:
        return store
    if isinstance(extractor, __import__('torch').nn.ModuleList):
        extractor = extractor[0]

    def wrapped(feats, rois, *args, _forward=extractor.forward, **kwargs):
        store.append(rois.detach().clone())
        return _forward(feats, rois, *args, **kwargs)
    extractor.forward = wrapped
    return store


def _images(odd_batch: bool) -> list:
    """The batch given to both frameworks' ``inference_detector``: the two files, or (odd
    batch) the images as BGR arrays, as both read files, the second cut to ``ODD_CROP``."""
    if not odd_batch:
        return IMAGES
    import cv2
    first, second = (cv2.imread(path) for path in IMAGES)
    return [first, second[:ODD_CROP[0], :ODD_CROP[1]].copy()]


def _results(results):
    """``inference_detector``'s results -> ``(boxes, masks)``: per image, per class, a float
    ``(k, 5)`` tensor and (mask models; else ``masks`` is None) a bool ``(k, H, W)`` tensor
    (None for a class without detections), in the detections' order."""
    import numpy as np
    import torch
    boxes, masks = [], []
    for result in results:
        if isinstance(result, tuple):  # (bbox_result, segm_result)
            result, segms = result
            masks.append([torch.from_numpy(np.stack(m)) if len(m) else None for m in segms])
        boxes.append([torch.from_numpy(a) for a in result])
    return boxes, (masks or None)


def _compare_masks(ref_masks, masks) -> dict:
    """Pasted binary masks of the same detections (same class, same place in the class's
    list): per detection the pixels that differ and the IoU (1 when both are empty)."""
    import torch
    differing, ious, same_counts = [], [], True
    for per_ref, per_ours in zip(ref_masks, masks):
        for a, b in zip(per_ref, per_ours):
            if a is None or b is None or a.shape != b.shape:
                same_counts &= a is None and b is None
                continue
            a, b = a.flatten(1), b.flatten(1)
            union = (a | b).sum(1)
            iou = torch.where(union > 0, (a & b).sum(1) / union.clamp(min=1), 1.0)
            differing += (a ^ b).sum(1).tolist()
            ious += iou.tolist()
    return dict(mask_detections=len(ious), masks_same_counts=same_counts,
                masks_with_differing_pixels=sum(d > 0 for d in differing),
                max_mask_pixels_differing=max(differing, default=0),
                total_mask_pixels_differing=sum(differing), min_mask_iou=min(ious, default=0.0))


def _record_roi_head_inputs(model):
    """``--roi-same-input``: every call of the RoI head's ``_bbox_forward`` / ``_mask_forward``
    (``(x, rois)``, or ``(stage, x, rois)`` in a cascade) with its outputs. The feature maps
    ``x`` are kept once: every call of one test gets the same ones (checked)."""
    import torch
    store = dict(x=None, calls=[])
    roi_head = model.roi_head

    def record(fn, args, out):
        *stage, x, rois = args
        if store['x'] is None:
            store['x'] = [t.detach().clone() for t in x]
        elif not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(store['x'], x)):
            raise AssertionError(f'{fn}: the RoI head was called with other feature maps')
        store['calls'].append(dict(fn=fn, stage=stage, rois=rois.detach().clone(),
                                   out=_roi_head_outputs(out)))

    for fn in ('_bbox_forward', '_mask_forward'):
        if hasattr(roi_head, fn):
            def wrapped(*args, _forward=getattr(roi_head, fn), _fn=fn):
                out = _forward(*args)
                record(_fn, args, out)
                return out
            setattr(roi_head, fn, wrapped)
    return store


def _roi_head_outputs(out) -> dict:
    """A RoI head forward's result (MMDetection: a dict; detforge's mask forward: the logits
    tensor) -> ``{'cls_score' | 'bbox_pred' | 'mask_pred': tensor}``."""
    if not isinstance(out, dict):
        out = dict(mask_pred=out)
    return {key: value.detach().clone() for key, value in out.items()
            if key in ('cls_score', 'bbox_pred', 'mask_pred')}


def _roi_head_on_mmdet_inputs(model, recorded) -> dict:
    """Feeds detforge's RoI head MMDetection's recorded feature maps and RoIs, call by call;
    -> the largest difference of each output, in order (no row matching: same RoIs)."""
    import torch
    diffs = {}
    with torch.no_grad():
        for call in recorded['calls']:
            out = _roi_head_outputs(getattr(model.roi_head, call['fn'])(
                *call['stage'], recorded['x'], call['rois']))
            for key, ref in call['out'].items():
                name = f"{call['fn'].strip('_')}{''.join(f'.{s}' for s in call['stage'])}.{key}"
                diff = (out[key] - ref).abs().max().item() if ref.numel() else 0.0
                diffs[name] = max(diffs.get(name, 0.0), diff)
    return diffs


def _perturb(model, seed: int = 0, gains: dict | None = None) -> None:
    """Seeded noise relative to each tensor's own scale (weights x (1 + 0.1 noise), biases
    + 0.01 noise), and BN statistics that are neither 0 nor 1, so that scores spread out
    (no saturated ties) and every weight matters."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith('running_var'):
                t.copy_(1.0 + 0.2 * noise.abs())
            elif name.endswith('running_mean'):
                t.copy_(0.05 * noise)
            elif t.dim() > 1:
                t.mul_(1.0 + 0.1 * noise)
            else:
                t.add_(0.01 * noise)
            part = next((part for part in CLASSIFIERS if part in name), None)
            if part is not None:
                t.mul_((gains or {}).get(part, CLASSIFIER_GAIN))
            if any(name.endswith(part) for part in DENSE_CLASSIFIERS):
                t.mul_(DENSE_CLASSIFIER_GAIN)
        # Cascade R-CNN scores are the mean of its stages' softmaxes: with independent random
        # classifiers no class wins; the same classifier in every stage keeps scores peaked
        stages = getattr(getattr(model, 'roi_head', None), 'bbox_head', None)
        if isinstance(stages, torch.nn.ModuleList):
            for stage in stages[1:]:
                stage.fc_cls.load_state_dict(stages[0].fc_cls.state_dict())


def _direct_inputs(cfg) -> dict:
    """The saved input of the DIRECT families: ``img (2, 3, 416, 544)`` normalised with
    ``cfg.img_norm_cfg`` (zero padding), metas, and gt boxes/labels scaled to the odd sizes."""
    import cv2
    import numpy as np
    import torch
    norm = cfg.img_norm_cfg
    mean, std = np.array(norm['mean'], np.float32), np.array(norm['std'], np.float32)
    img = torch.zeros(2, 3, *DIRECT_PAD)
    metas, gt_bboxes, gt_labels = [], [], []
    boxes = json.load(open('data/bccd/annotations/trainval.json'))
    for i, (path, (h, w)) in enumerate(zip(IMAGES, DIRECT_SHAPES)):
        picture = cv2.imread(path)
        oh, ow = picture.shape[:2]
        picture = cv2.resize(picture, (w, h)).astype(np.float32)
        if norm.get('to_rgb'):
            picture = picture[..., ::-1]
        img[i, :, :h, :w] = torch.from_numpy(((picture - mean) / std).transpose(2, 0, 1).copy())
        metas.append(dict(img_shape=(h, w, 3), ori_shape=(h, w, 3), pad_shape=DIRECT_PAD + (3,),
                          batch_input_shape=DIRECT_PAD, flip=False, flip_direction=None,
                          scale_factor=np.ones(4, np.float32), img_norm_cfg=dict(norm)))
        image_id = next(im['id'] for im in boxes['images'] if path.endswith(im['file_name']))
        anns = [a for a in boxes['annotations'] if a['image_id'] == image_id]
        scale = np.array([w / ow, h / oh] * 2, np.float32)
        xyxy = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                          a['bbox'][1] + a['bbox'][3]] for a in anns], np.float32) * scale
        gt_bboxes.append(torch.from_numpy(xyxy))
        gt_labels.append(torch.tensor([a['category_id'] - 1 for a in anns]))
    return dict(img=img, metas=metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels)


def _losses(model, inputs) -> dict:
    """``forward_train`` on the saved batch (train mode), each loss summed to a float."""
    import torch
    model.train()
    losses = model.forward_train(inputs['img'], [dict(m) for m in inputs['metas']],
                                 inputs['gt_bboxes'], inputs['gt_labels'])
    model.eval()
    out = {}
    for key, value in losses.items():
        if 'loss' in key:
            values = value if isinstance(value, (list, tuple)) else [value]
            out[key] = float(sum(torch.as_tensor(v).detach().sum() for v in values))
    return out


def mmdet_side(family: str, same_input: bool = False, odd_batch: bool = False) -> None:
    """Runs under MMDetection's interpreter."""
    import torch
    sys.path.insert(0, PATCHES)
    import mmcv  # noqa: F401
    import mm_patches  # noqa: F401  - torchvision's nms / roi_align in mmcv._ext
    from mmcv.runner import save_checkpoint
    from mmdet.apis import inference_detector, init_detector
    config, heads = FAMILIES[family]
    cfg = mmcv.Config.fromfile(osp.join(MMDET_CONFIGS, config))
    cfg.model.pretrained = None
    if cfg.model.get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None
    if cfg.model.get('roi_head', {}).get('shared_head', {}).get('init_cfg'):
        cfg.model.roi_head.shared_head.init_cfg = None
    torch.manual_seed(0)
    if family in DIRECT:  # with its train_cfg (init_detector drops it), for the losses
        from mmdet.models import build_detector
        model = build_detector(cfg.model)
        model.init_weights()  # MMDetection's own initialisation (focal-loss prior bias)
        model.cfg = cfg
        model.eval()
    else:
        model = init_detector(cfg, None, device='cpu')
    _perturb(model, gains=GAIN_OVERRIDES.get(family))
    model.CLASSES = tuple(f'class{i}' for i in range(80))
    os.makedirs(OUT, exist_ok=True)
    ckpt = osp.join(OUT, f'{family}.pth')
    save_checkpoint(model, ckpt, meta=dict(CLASSES=model.CLASSES))
    extra = {}
    if family in DIRECT:
        inputs = _direct_inputs(cfg)
        torch.save(inputs, osp.join(OUT, f'{family}_inputs.pt'))
        store = record_forwards(model, heads)
        with torch.no_grad():
            dets = model.simple_test(inputs['img'], [dict(m) for m in inputs['metas']],
                                     rescale=False)
        extra['losses'] = _losses(model, inputs)
    else:
        store = record_forwards(model, heads)
        extra['rois'] = _record_rois(model)
        extra['mask_rois'] = _record_rois(model, 'roi_head.mask_roi_extractor')
        # (a model without RoI head, e.g. RetinaNet, has nothing to record)
        recorded = _record_roi_head_inputs(model) \
            if same_input and hasattr(model, 'roi_head') else None
        with torch.no_grad():
            dets = inference_detector(model, _images(odd_batch))
        if recorded is not None:
            torch.save(recorded, osp.join(OUT, f'{family}_roi_inputs.pt'))
    if family not in DIRECT:
        dets, extra['masks'] = _results(dets)
    else:
        dets = [[torch.from_numpy(a) for a in r] for r in dets]
    torch.save(dict({'heads': store, 'dets': dets}, **extra), osp.join(OUT, f'{family}_mmdet.pt'))


def detforge_side(family: str, same_input: bool = False, odd_batch: bool = False) -> dict:
    import torch
    from detforge.apis import inference_detector, init_detector
    from detforge.engine.checkpoint import load_checkpoint
    config, heads = FAMILIES[family]
    ckpt = osp.join(OUT, f'{family}.pth')
    ref = torch.load(osp.join(OUT, f'{family}_mmdet.pt'), weights_only=False)
    loss_diff = None
    if family in DIRECT:  # built with its train_cfg, for the losses
        from detforge.config import Config
        from detforge.models import build_detector
        cfg = Config.fromfile(osp.join(MMDET_CONFIGS, config))
        cfg.model.pretrained = None
        if cfg.model.get('backbone', {}).get('init_cfg'):
            cfg.model.backbone.init_cfg = None
        model = build_detector(cfg.model).eval()
        report = load_checkpoint(model, ckpt, log_report=False)['load_report']
        inputs = torch.load(osp.join(OUT, f'{family}_inputs.pt'), weights_only=False)
        store = record_forwards(model, heads)
        with torch.no_grad():
            dets = model.simple_test(inputs['img'], [dict(m) for m in inputs['metas']],
                                     rescale=False)
        losses = _losses(model, inputs)
        if sorted(losses) != sorted(ref['losses']):
            raise AssertionError(f'loss keys differ: {sorted(ref["losses"])} vs {sorted(losses)}')
        loss_diff = {k: abs(losses[k] - v) / max(abs(v), 1e-12) for k, v in ref['losses'].items()}
        loss_values = {k: (v, losses[k]) for k, v in ref['losses'].items()}
    else:
        own = DETFORGE_CONFIGS.get(family)
        model = init_detector(osp.join(REPO, own) if own else osp.join(MMDET_CONFIGS, config),
                              None, device='cpu')
        report = load_checkpoint(model, ckpt, log_report=False)['load_report']
        store = record_forwards(model, heads)
        rois = _record_rois(model)
        mask_rois = _record_rois(model, 'roi_head.mask_roi_extractor')
        with torch.no_grad():
            dets, masks = _results(inference_detector(model, _images(odd_batch)))
    # dense heads: every output element in order. RoI heads: each row (one proposal) against
    # the nearest row of the other side, since proposals of equal score may come in either
    # order (both sort with an unstable sort); rows out of place are counted.
    head_diff = roi_diff = mask_logit_diff = 0.0
    out_of_order = 0
    for name in heads:
        a, b = ref['heads'][name], store[name]
        assert len(a) == len(b), f'{name}: {len(a)} calls in mmdet, {len(b)} in detforge'
        for xs, ys in zip(a, b):
            assert len(xs) == len(ys), f'{name}: {len(xs)} outputs vs {len(ys)}'
            for x, y in zip(xs, ys):
                assert x.shape == y.shape, f'{name}: shape {tuple(x.shape)} vs {tuple(y.shape)}'
                if not x.numel():
                    continue
                if 'mask_head' in name:
                    # one row per detection, in the detections' order (compared below)
                    mask_logit_diff = max(mask_logit_diff, (x - y).abs().max().item())
                if name.startswith('roi_head'):
                    # max-abs distance, computed directly: the default (p=2) cdist of rows
                    # this size takes the ||x||^2 + ||y||^2 - 2xy shortcut, whose float32
                    # cancellation alone gave 1.2e-2 (x101) and 3.3e-2 (C4) between rows that
                    # were bit-identical (measured 2026-12-04, notes of issue 25)
                    nearest = torch.cdist(x.flatten(1), y.flatten(1), p=float('inf')).min(1).values
                    roi_diff = max(roi_diff, nearest.max().item())
                    out_of_order += int(((x - y).flatten(1).abs().max(1).values > 1e-3).sum())
                else:
                    head_diff = max(head_diff, (x - y).abs().max().item())
    # proposals: each RoI of one side against the nearest of the other (same image index)
    roi_input_diff = 0.0
    for a, b in zip(ref.get('rois', []), rois if family not in DIRECT else []):
        if len(a) and len(b):
            d = (a[:, None, :] - b[None, :, :]).abs().amax(-1)
            d = d + 1e6 * (a[:, None, 0] != b[None, :, 0])
            roi_input_diff = max(roi_input_diff, d.min(1).values.max().item(),
                                 d.min(0).values.max().item())
    box_diff = score_diff = 0.0
    count_ok, n = True, 0
    for r_ref, r_ours in zip(ref['dets'], dets):
        for a, b in zip(r_ref, r_ours):
            if isinstance(b, __import__('numpy').ndarray):
                b = torch.from_numpy(b)
            if a.shape != b.shape:
                count_ok = False
                continue
            n += len(a)
            if len(a):
                box_diff = max(box_diff, (a[:, :4] - b[:, :4]).abs().max().item())
                score_diff = max(score_diff, (a[:, 4] - b[:, 4]).abs().max().item())
    ok = (report.ok and count_ok and n > 0 and head_diff < HEAD_TOL and roi_diff < ROI_TOL
          and box_diff < BOX_TOL and score_diff < SCORE_TOL)
    result = dict(family=family, config=config, missing=len(report.missing),
                  unexpected=len(report.unexpected), mismatched=len(report.mismatched),
                  detections=n, same_counts=count_ok, max_dense_head_diff=head_diff,
                  max_roi_head_row_diff=roi_diff, roi_rows_out_of_order=out_of_order,
                  max_proposal_diff_px=roi_input_diff,
                  max_box_diff_px=box_diff, max_score_diff=score_diff)
    if same_input and hasattr(model, 'roi_head'):
        path = osp.join(OUT, f'{family}_roi_inputs.pt')
        if not osp.isfile(path):
            raise SystemExit(f'{path}: not there; run the MMDetection side with '
                             '--roi-same-input first (--side both or --side mmdet)')
        recorded = torch.load(path, weights_only=False)
        diffs = _roi_head_on_mmdet_inputs(model, recorded)
        ok = ok and max(diffs.values(), default=float('inf')) < HEAD_TOL
        result.update(same_input_calls=len(recorded['calls']), same_input_max_diff=diffs)
    if ref.get('masks') is not None:
        # the mask head's RoIs are the detections (rescaled to the network input): in order
        mask_roi_diff = max(((a - b).abs().max().item() for a, b in
                             zip(ref['mask_rois'], mask_rois) if a.shape == b.shape and len(a)),
                            default=float('inf'))
        stats = _compare_masks(ref['masks'], masks)
        ok = (ok and stats['masks_same_counts'] and stats['min_mask_iou'] >= MASK_IOU_TOL
              and mask_roi_diff < BOX_TOL and mask_logit_diff < HEAD_TOL)
        result.update(max_mask_roi_diff_px=mask_roi_diff, max_mask_logit_diff=mask_logit_diff,
                      **stats)
    if loss_diff is not None:
        ok = ok and max(loss_diff.values()) < LOSS_TOL
        result.update(losses_mmdet_detforge=loss_values, max_loss_rel_diff=max(loss_diff.values()))
    result['ok'] = ok
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('families', nargs='*', default=list(FAMILIES))
    parser.add_argument('--side', choices=['both', 'mmdet', 'detforge'], default='both')
    parser.add_argument('--roi-same-input', action='store_true',
                        help="RoI-head families: also record MMDetection's RoI-head inputs (FPN "
                             'features and RoIs of every box / mask forward) and feed them to '
                             "detforge's RoI head; outputs compared in order (no row matching)")
    parser.add_argument('--odd-batch', action='store_true',
                        help='RoI / RetinaNet families: the second image cut to 389x517, so the '
                             'batch has two sizes (files under $MMDET2_OUT/odd_batch)')
    args = parser.parse_args()
    if args.odd_batch:
        global OUT
        OUT = osp.join(OUT, 'odd_batch')
    failed = False
    for family in args.families:
        if args.side == 'mmdet':
            mmdet_side(family, args.roi_same_input, args.odd_batch)
            continue
        if args.side == 'both':
            env = dict(os.environ, PYTHONPATH=PATCHES)
            subprocess.run([MMDET_PY, __file__, family, '--side', 'mmdet']
                           + ['--roi-same-input'] * args.roi_same_input
                           + ['--odd-batch'] * args.odd_batch, check=True, env=env)
        result = detforge_side(family, args.roi_same_input, args.odd_batch)
        result['odd_batch'] = args.odd_batch
        failed |= not result['ok']
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
