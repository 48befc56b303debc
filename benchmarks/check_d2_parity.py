"""Side-by-side check against Detectron2 itself (not against detforge's own code).

For RetinaNet, Faster R-CNN, Mask R-CNN and Cascade Mask R-CNN R50-FPN and Faster R-CNN
R50-C4, with Detectron2's own YAML configs (unchanged, from its ``configs/`` tree; the
family names are the keys of ``FAMILIES``):

1. Detectron2 side (its interpreter, ``D2_PYTHON``; Detectron2's source on ``D2_SRC``, see
   "Setting up" below): build the model from the YAML (``get_cfg().merge_from_file``;
   ``MODEL.WEIGHTS`` empty, ``NORM`` left at its default ``FrozenBN``), perturb every weight
   and frozen-BN statistic with seeded noise (so scores are not all equal), save the
   checkpoint as its zoo does (RetinaNet as a ``.pkl`` of numpy arrays, Faster R-CNN as a
   ``.pth`` of ``{'model': state_dict}``), and run the model on a batch of 2 BCCD images of
   different sizes (640x480 and a 517x389 crop, stored as PNG so that both sides decode the
   same pixels), resized by Detectron2's ``ResizeShortestEdge(800, 1333)``; the raw outputs of
   every head (and the proposals the box head pools) and the detections are recorded.
2. detforge side (this interpreter): ``detforge convert detectron2 SRC DST --config YAML
   --out-config OUT.py`` (the CLI), then ``init_detector`` + ``inference_detector`` on the same
   two files as one batch, once with the shipped config (``configs/*/*_d2.py``) and once with
   the config translated from the YAML; compare.

Setting up Detectron2 without building it (its C++ ops are not needed by these models:
RetinaNet and Faster R-CNN R-FPN run on torchvision's ``nms`` / ``roi_align``, and
``detectron2._C`` is imported inside a ``try``)::

    python3 -m venv /tmp/d2/venv
    /tmp/d2/venv/bin/pip install torch==2.14.1 torchvision==0.29.1 fvcore iopath omegaconf \
        hydra-core pycocotools yacs termcolor tabulate cloudpickle matplotlib Pillow
    # Detectron2's source tree (github.com/facebookresearch/detectron2), not installed:
    git clone https://github.com/facebookresearch/detectron2 /tmp/d2/src

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/check_d2_parity.py              # every family
    PYTHONPATH=. python benchmarks/check_d2_parity.py retinanet    # one

Environment: ``D2_PYTHON`` (default ``/tmp/d2/venv/bin/python``), ``D2_SRC`` (``/tmp/d2/src``),
``D2_OUT`` (``/tmp/d2/out``). Prints one JSON line per family and config with: missing /
unexpected keys, the largest difference of the dense heads' raw outputs, of each RoI-head
output row against its nearest row on the other side (relative, and the largest element), of the proposals, of detection boxes (px)
and scores, and ``ok`` when boxes < 1e-2 px and scores < 1e-4 with the same number of
detections per class and image (leaving out, and counting, the detections within 1e-4 of the
score at which an image's 100 are cut: a near-tie there is float noise's choice; each
detection compared with the nearest box of its class, the reordered ones counted), at least one detection, dense outputs within 1e-3 and each RoI
output row within 1e-2 of its nearest row on the other side, relative to the row's norm. Exit status 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

D2_PYTHON = os.environ.get('D2_PYTHON', '/tmp/d2/venv/bin/python')
D2_SRC = os.environ.get('D2_SRC', '/tmp/d2/src')
OUT = os.environ.get('D2_OUT', '/tmp/d2/out')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BCCD = osp.join(REPO, 'data', 'bccd', 'JPEGImages')  # the repository's BCCD sample
# (source image, crop (x0, y0, w, h) or None): two sizes in one batch, odd after resizing
IMAGES = [('BloodImage_00000.jpg', None), ('BloodImage_00001.jpg', (41, 27, 517, 389))]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forward_recorder import record_forwards  # noqa: E402 - benchmarks/ is not a package

# family -> (Detectron2 YAML under configs/, detforge config, checkpoint suffix,
#            d2 head modules, detforge head modules (same outputs in the same order))
FAMILIES = {
    'retinanet': ('COCO-Detection/retinanet_R_50_FPN_1x.yaml',
                  'configs/retinanet/retinanet_r50_fpn_d2.py', '.pkl',
                  ['head'], ['bbox_head']),
    'faster_rcnn': ('COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml',
                    'configs/faster_rcnn/faster_rcnn_r50_fpn_d2.py', '.pth',
                    ['proposal_generator.rpn_head', 'roi_heads.box_predictor'],
                    ['rpn_head', 'roi_head.bbox_head']),
    'mask_rcnn': ('COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml',
                  'configs/mask_rcnn/mask_rcnn_r50_fpn_d2.py', '.pkl',
                  ['proposal_generator.rpn_head', 'roi_heads.box_predictor'],
                  ['rpn_head', 'roi_head.bbox_head']),
    'faster_rcnn_c4': ('COCO-Detection/faster_rcnn_R_50_C4_1x.yaml',
                       'configs/faster_rcnn/faster_rcnn_r50_c4_d2.py', '.pth',
                       ['proposal_generator.rpn_head', 'roi_heads.box_predictor'],
                       ['rpn_head', 'roi_head.bbox_head']),
    'cascade_mask_rcnn': ('Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml',
                          'configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_d2.py', '.pkl',
                          ['proposal_generator.rpn_head'] + [f'roi_heads.box_predictor.{s}'
                                                             for s in range(3)],
                          ['rpn_head'] + [f'roi_head.bbox_head.{s}' for s in range(3)]),
}
MASKED = ('mask_rcnn', 'cascade_mask_rcnn')
# the module that makes the mask logits (Detectron2, detforge)
MASK_LOGITS = ('roi_heads.mask_head.predictor', 'roi_head.mask_head.conv_logits')
MASK_LOGITS_CASCADE = ('roi_heads.mask_head.predictor', 'roi_head.mask_head.0.conv_logits')
# Random models give near-equal RPN scores and no box above 0.05 (after the 81-way softmax;
# RetinaNet's classifier starts at the focal-loss prior, ~0.01): larger classifier weights
# spread them. Detectron2 starts the mask predictor at std 0.001, so every mask probability
# would sit at 0.5, the binarisation threshold: a gain brings its logits to a trained
# model's scale (|logit| ~ 1-10).
GAINS = {'objectness_logits': 10.0, 'box_predictor.cls_score': 10.0,
         'head.cls_score.weight': 10.0, 'mask_head.predictor.weight': 50.0,
         # a cascade's 3 classifiers: x10 saturates (logit std ~10), and the stages' averaged
         # probabilities then tie at 1/3, so that the 100 kept per image are a tie's choice
         **{f'box_predictor.{stage}.cls_score': 2.0 for stage in range(3)}}
# C4: res4's 1024 channels and the 2048-d pooled res5 feature already give logits of std ~2
# and ~1.8; x10 saturates sigmoids / softmaxes (ties at 1.0: see docs/detectron2.md's ranking
# divergence)
FAMILY_GAINS = {'faster_rcnn_c4': {'objectness_logits': 1.0, 'box_predictor.cls_score': 1.0}}
BOX_TOL, SCORE_TOL, HEAD_TOL, ROI_TOL = 1e-2, 1e-4, 1e-3, 1e-2
# masks: logits of the same detection within MASK_TOL relative to the largest |logit|; of all
# pasted mask pixels (union of both sides' masks, summed over detections) at most
# MASK_PIXEL_TOL may differ: the RoIs differ by the box tolerance, so a pixel whose
# probability is that close to 0.5 may flip (the worst detection's share is reported too)
MASK_TOL, MASK_PIXEL_TOL = 1e-3, 1e-3


def _images() -> list[str]:
    """The two test images as PNG files (lossless: both frameworks read the same pixels)."""
    import cv2
    os.makedirs(OUT, exist_ok=True)
    paths = []
    for name, crop in IMAGES:
        img = cv2.imread(osp.join(BCCD, name))
        if crop is not None:
            x, y, w, h = crop
            img = img[y:y + h, x:x + w]
        path = osp.join(OUT, name.replace('.jpg', '.png'))
        cv2.imwrite(path, img)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- Detectron2's side
def _perturb(model, inputs, gains: dict, seed: int = 0) -> None:
    """Seeded noise relative to each tensor's scale (weights x (1 + 0.1 noise), biases + 0.01
    noise), then frozen-BN statistics measured on ``inputs`` (each layer's input mean and
    variance per channel, x (1 + 0.1 noise)): with Detectron2's random initialisation and
    identity statistics the ResNet's activations grow to ~1e2 logits, every RPN score
    saturates and the proposals are whole-image boxes; measured statistics keep the features
    at unit scale, as a trained model's are."""
    import torch
    from detectron2.layers import FrozenBatchNorm2d
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if not t.is_floating_point() or name in ('pixel_mean', 'pixel_std') \
                    or name.endswith(('running_var', 'running_mean')):
                continue
            noise = torch.randn(t.shape, generator=g)
            if t.dim() > 1:
                t.mul_(1.0 + 0.1 * noise)
            else:
                t.add_(0.01 * noise)
            for part, gain in gains.items():
                if part in name:
                    t.mul_(gain)

        def measure(module, args):  # runs before the layer: its statistics from its input
            x = args[0]
            module.running_mean.copy_(x.mean((0, 2, 3)) * (1 + 0.1 * torch.randn(
                x.size(1), generator=g)))
            module.running_var.copy_(x.var((0, 2, 3)) * (1 + 0.1 * torch.rand(
                x.size(1), generator=g)) + 1e-3)
        hooks = [m.register_forward_pre_hook(measure) for m in model.modules()
                 if isinstance(m, FrozenBatchNorm2d)]
        images = model.preprocess_image(inputs)
        model.backbone(images.tensor)
        for hook in hooks:
            hook.remove()


def _d2_boxes_in_float64() -> None:
    """Lift Detectron2's three casts of boxes to float32 (for ``--float64``), each a dtype
    change only: ``Boxes`` keeps a float64 tensor, ``Box2BoxTransform.apply_deltas`` is its
    own source without the ``deltas.float()`` line, and every module's ``batched_nms`` (RPN,
    box head, RetinaNet) is torchvision's, which Detectron2's wraps only to cast the boxes."""
    import inspect
    import textwrap
    import torch
    from torchvision.ops import boxes as box_ops
    from detectron2.modeling import box_regression
    from detectron2.structures import Boxes
    boxes_init = Boxes.__init__

    def init(self, tensor):
        boxes_init(self, tensor)
        if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64:
            self.tensor = tensor.reshape(-1, 4)
    Boxes.__init__ = init
    cls = box_regression.Box2BoxTransform
    source = textwrap.dedent(inspect.getsource(cls.apply_deltas))
    cast = 'deltas = deltas.float()  # ensure fp32 for decoding precision'
    assert cast in source, 'Detectron2 changed apply_deltas: update --float64'
    namespace = dict(vars(box_regression))
    exec(source.replace(cast, 'pass'), namespace)  # noqa: S102 - Detectron2's own source
    cls.apply_deltas = namespace['apply_deltas']
    import detectron2.modeling.meta_arch.retinanet  # noqa: F401 - imports batched_nms too
    from detectron2.layers import batched_nms as wrapper
    for module in list(sys.modules.values()):  # every module that imported Detectron2's wrapper
        if getattr(module, '__name__', '').startswith('detectron2.') \
                and getattr(module, 'batched_nms', None) is wrapper:
            module.batched_nms = box_ops.batched_nms


def d2_side(family: str, images: list[str], float64: bool = False) -> None:
    import numpy as np
    import torch
    from detectron2.config import get_cfg
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image
    from detectron2.modeling import build_model
    yaml_rel, _, suffix, heads, _ = FAMILIES[family]
    cfg = get_cfg()
    cfg.merge_from_file(osp.join(D2_SRC, 'configs', yaml_rel))
    cfg.MODEL.DEVICE = 'cpu'
    cfg.MODEL.WEIGHTS = ''
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    inputs = []
    for path in images:
        img = read_image(path, format=cfg.INPUT.FORMAT)
        h, w = img.shape[:2]
        resized = resize.get_transform(img).apply_image(img)
        inputs.append(dict(image=torch.as_tensor(resized.astype('float32').transpose(2, 0, 1)),
                           height=h, width=w))
    _perturb(model, inputs, {**GAINS, **FAMILY_GAINS.get(family, {})})
    ckpt = osp.join(OUT, family + suffix)
    state = {k: v for k, v in model.state_dict().items()}
    if suffix == '.pkl':  # the zoo's model_final_*.pkl: numpy arrays
        with open(ckpt, 'wb') as f:
            pickle.dump({'model': {k: v.numpy() for k, v in state.items()},
                         '__author__': 'detforge check_d2_parity'}, f)
    else:  # DetectionCheckpointer.save: {'model': state_dict, ...}
        torch.save({'model': state, 'iteration': 0}, ckpt)
    if float64:  # the saved float32 weights, run in float64
        model.double()
        _d2_boxes_in_float64()
    masks = family in MASKED
    store = record_forwards(model, heads + ([MASK_LOGITS[0]] if masks else []))
    pooled, mask_rois = [], []

    def record_boxes(pooler, into):  # the per image boxes a pooler is given
        def wrapped(x, boxes, _forward=pooler.forward):
            into.append([b.tensor.detach().clone() for b in boxes])
            return _forward(x, boxes)
        pooler.forward = wrapped
    if family != 'retinanet':  # the proposals the box head pools (Res5ROIHeads: .pooler)
        record_boxes(getattr(model.roi_heads, 'box_pooler', None) or model.roi_heads.pooler,
                     pooled)
    if masks:  # the detections the mask head pools
        record_boxes(model.roi_heads.mask_pooler, mask_rois)
    with torch.no_grad():
        outputs = model(inputs)
    dets = []
    for out in outputs:
        inst = out['instances']
        dets.append(dict(boxes=inst.pred_boxes.tensor.numpy(), scores=inst.scores.numpy(),
                         classes=inst.pred_classes.numpy()))
        if masks:  # bool (n, H, W) in the original image
            dets[-1]['masks'] = inst.pred_masks.numpy()
    if masks:
        logits = store[MASK_LOGITS[0]][0][0]
        print(f'[d2] mask logits |max| {logits.abs().max():.3g}, std {logits.std():.3g}; '
              f'mask pixels per detection {[int(m.sum()) for m in dets[0]["masks"][:5]]}',
              flush=True)
    torch.save(dict(heads=store, dets=dets, proposals=pooled, mask_rois=mask_rois,
                    shapes=[tuple(i['image'].shape[1:]) for i in inputs]),
               osp.join(OUT, f'{family}_d2{"_f64" if float64 else ""}.pt'))
    print(f'[d2] {family}: {sum(len(d["scores"]) for d in dets)} detections; resized '
          f'{[tuple(i["image"].shape[1:]) for i in inputs]}', flush=True)
    del np


# ---------------------------------------------------------------- detforge's side
def _preprocess_float64(model) -> None:
    """Make ``model.preprocess`` normalise in float64 as Detectron2 does once ``.double()``:
    ``x - mean`` with the mean rounded to float32 (its buffer's value), then zero padding."""
    import torch
    original = model.preprocess

    def preprocess(img, img_metas):
        norm = (img_metas[0].get('img_norm_cfg') if img_metas else None) or model.data_preprocessor
        x = img.double()
        if norm.get('to_rgb', False):
            x = x.flip(1)
        mean, std = (torch.tensor(norm[k], dtype=torch.float32).double().view(1, -1, 1, 1)
                     for k in ('mean', 'std'))
        x = (x - mean) / std
        for i, meta in enumerate(img_metas):  # the padding (outside img_shape) is 0
            h, w = meta['img_shape'][:2]
            x[i, :, h:] = 0
            x[i, :, :, w:] = 0
        return original(x, img_metas)  # a floating input is taken as normalised
    model.preprocess = preprocess


def detforge_side(family: str, images: list[str], config: str, float64: bool = False) -> dict:
    import numpy as np
    import torch
    from detforge.apis import inference_detector, init_detector
    from detforge.engine.checkpoint import load_checkpoint
    _, _, _, _, heads = FAMILIES[family]
    masks = family in MASKED
    logits_name = (MASK_LOGITS_CASCADE if family == 'cascade_mask_rcnn' else MASK_LOGITS)[1]
    converted = osp.join(OUT, f'{family}_detforge.pth')
    ref = torch.load(osp.join(OUT, f'{family}_d2{"_f64" if float64 else ""}.pt'),
                     weights_only=False)
    model = init_detector(config, None, device='cpu')
    if float64:
        model.double()
        _preprocess_float64(model)
    report = load_checkpoint(model, converted, log_report=False)['load_report']
    store = record_forwards(model, heads + ([logits_name] if masks else []))
    rois, mask_rois = [], []

    def record_rois(extractor, into):  # the (n, 5) RoIs an extractor is given
        def wrapped(feats, r, *args, _forward=extractor.forward, **kwargs):
            into.append(r.detach().clone())
            return _forward(feats, r, *args, **kwargs)
        extractor.forward = wrapped
    def first(module):  # a cascade's stage 0 (its extractor pools the proposals)
        return module[0] if isinstance(module, torch.nn.ModuleList) else module
    if family != 'retinanet':
        record_rois(first(model.roi_head.bbox_roi_extractor), rois)
    if masks:
        record_rois(first(model.roi_head.mask_roi_extractor), mask_rois)
    with torch.no_grad():
        dets = inference_detector(model, images)
    if masks:  # (bbox_result, segm_result) per image
        segms = [d[1] for d in dets]
        dets = [d[0] for d in dets]
    head_diff = roi_diff = roi_abs = 0.0
    for d2_name, name in zip(FAMILIES[family][3], heads):
        a, b = ref['heads'][d2_name], store[name]
        assert len(a) == len(b), f'{name}: {len(a)} calls in Detectron2, {len(b)} in detforge'
        for xs, ys in zip(a, b):
            assert len(xs) == len(ys), f'{name}: {len(xs)} outputs vs {len(ys)}'
            for x, y in zip(xs, ys):
                assert x.shape == y.shape, f'{name}: shape {tuple(x.shape)} vs {tuple(y.shape)}'
                if not x.numel():
                    continue
                if name.startswith('roi_head'):  # rows: proposals of equal score may swap
                    # max-abs distance, computed directly (p=2 uses a matmul shortcut whose
                    # cancellation alone is ~1e-2 on rows this size: benchmarks check_mmdet_parity)
                    dist, idx = torch.cdist(x.flatten(1), y.flatten(1), p=float("inf")).min(1)
                    # relative to the row's size: logits x10 (GAINS) are large
                    scale = x.flatten(1).norm(dim=1).clamp(min=1.0)
                    roi_diff = max(roi_diff, (dist / scale).max().item())
                    roi_abs = max(roi_abs, (x.flatten(1) - y.flatten(1)[idx]).abs().max().item())
                else:
                    head_diff = max(head_diff, (x - y).abs().max().item())
    proposal_diff = 0.0
    if family != 'retinanet':
        proposal_diff = _box_set_diff(ref['proposals'][0], rois[0])
    mask = {}
    box_diff = score_diff = 0.0
    same_counts, n, boundary, swaps = True, 0, 0, 0
    keep_d2, keep_ours = _outside_cut_band(ref['dets'], dets)
    for i, (r_d2, r_ours) in enumerate(zip(ref['dets'], dets)):
        for c, ours in enumerate(r_ours):
            sel = r_d2['classes'] == c
            theirs = np.concatenate([r_d2['boxes'][sel], r_d2['scores'][sel, None]], 1)
            boundary += int((~keep_d2[i][sel]).sum() + (~keep_ours[i][c]).sum())
            theirs, ours = theirs[keep_d2[i][sel]], ours[keep_ours[i][c]]
            if theirs.shape != ours.shape:
                same_counts = False
                continue
            n += len(ours)
            if len(ours):  # each of Detectron2's to the nearest box of detforge's: two
                # detections of near-equal score (within the score difference) may swap
                dist = np.abs(theirs[:, None, :4] - ours[None, :, :4]).max(-1)
                match = dist.argmin(1)
                if len(set(match.tolist())) != len(match):
                    same_counts = False  # not one to one: other boxes, not a reordering
                swaps += int((match != np.arange(len(match))).sum())
                box_diff = max(box_diff, float(dist.min(1).max()))
                score_diff = max(score_diff, float(np.abs(theirs[:, 4] - ours[match, 4]).max()))
    if masks:
        mask = _compare_masks(ref, store[logits_name][0][0], mask_rois[0], segms, keep_d2, keep_ours)
    ok = (report.ok and same_counts and n > 0 and head_diff < HEAD_TOL and roi_diff < ROI_TOL
          and proposal_diff < BOX_TOL and box_diff < BOX_TOL and score_diff < SCORE_TOL
          and (not masks or mask['mask_ok']))
    return dict(family=family, config=osp.relpath(config, REPO) if config.startswith(REPO) else config,
                missing=len(report.missing), unexpected=len(report.unexpected),
                mismatched=len(report.mismatched), detections=n,
                detections_d2=int(sum(len(d['scores']) for d in ref['dets'])),
                same_counts=same_counts, input_shapes=ref['shapes'],
                max_dense_head_diff=head_diff, max_roi_head_row_rel_diff=roi_diff,
                max_roi_head_abs_diff=roi_abs,
                max_proposal_diff_px=proposal_diff, max_box_diff_px=box_diff,
                max_score_diff=score_diff, cut_band_detections=boundary,
                reordered_detections=swaps, **mask, ok=ok)


def _outside_cut_band(d2_dets, dets):
    """Per image, which detections lie clear of the ``max_per_img`` cut: when an image keeps
    exactly TEST.DETECTIONS_PER_IMAGE (100), a candidate whose score is within SCORE_TOL of the
    lowest kept one may be kept on one side and its near-tie on the other (float noise decides
    a tie); those are left out of the in-order comparison and counted (``cut_band_detections``).

    Returns:
        ``(keep_d2, keep_ours)``: per image a bool array over Detectron2's detections, and per
        image a list over classes of bool arrays over detforge's."""
    import numpy as np
    keep_d2, keep_ours = [], []
    for r_d2, r_ours in zip(d2_dets, dets):
        scores_ours = np.concatenate([o[:, 4] for o in r_ours]) if r_ours else np.zeros(0)
        band = -np.inf
        if len(r_d2['scores']) == 100 or len(scores_ours) == 100:
            lows = [v.min() for v in (r_d2['scores'], scores_ours) if len(v)]
            band = max(lows) + SCORE_TOL
        keep_d2.append(r_d2['scores'] > band)
        keep_ours.append([o[:, 4] > band for o in r_ours])
    return keep_d2, keep_ours


def _box_set_diff(d2_boxes, rois) -> float:
    """Largest distance (px, max over coordinates) from a box of one side to the nearest box
    of the same image on the other side; inf when an image's counts differ.

    Args:
        d2_boxes: per image ``(n_i, 4)`` (Detectron2's pooler input); rois: ``(n, 5)``
            ``[image, x1, y1, x2, y2]`` (detforge's extractor input)."""
    diff = 0.0
    for i, boxes in enumerate(d2_boxes):
        mine = rois[rois[:, 0] == i, 1:]
        if len(boxes) != len(mine):
            return float('inf')
        if not len(boxes):
            continue
        d = (boxes[:, None, :] - mine[None, :, :]).abs().amax(-1)
        diff = max(diff, d.min(1).values.max().item(), d.min(0).values.max().item())
    return diff


def _paste_same_input(ref: dict) -> int:
    """Pixels where detforge's ``paste_masks`` (the config's paste mode), given Detectron2's
    own mask probabilities and final boxes, differs from Detectron2's pasted masks: 0 means
    the paste itself is the same and any other difference comes from the inputs."""
    import numpy as np
    import torch
    from detforge.models.roi_heads.mask_heads.fcn_mask_head import paste_masks
    logits, start, differing = ref['heads'][MASK_LOGITS[0]][0][0], 0, 0
    for r_d2 in ref['dets']:
        n = len(r_d2['scores'])
        classes = torch.as_tensor(r_d2['classes'], dtype=torch.long)
        probs = logits[start:start + n][torch.arange(n), classes].sigmoid()
        h, w = r_d2['masks'].shape[1:]
        ours = paste_masks(probs, torch.as_tensor(r_d2['boxes']), h, w, 0.5, 'mmdet')
        differing += int(np.logical_xor(ours.numpy(), r_d2['masks']).sum())
        start += n
    return differing


def _compare_masks(ref: dict, logits, rois, segms, keep_d2, keep_ours) -> dict:
    """Mask logits of the same detection (the RoI nearest to Detectron2's, same image) and
    the pasted masks of each detection (per image and class in score order, as the boxes).

    Args:
        ref: Detectron2's record; logits: detforge's ``(n, C, 28, 28)`` mask logits of the
            RoIs ``rois`` ``(n, 5)``; segms: per image, per class lists of bool masks."""
    import numpy as np
    import torch
    d2_logits, d2_rois = ref['heads'][MASK_LOGITS[0]][0][0], ref['mask_rois'][0]
    logit_diff, scale, start = 0.0, float(d2_logits.abs().max()), 0
    for i, boxes in enumerate(d2_rois):  # the mask RoIs are the detections, in their order
        mine = (rois[:, 0] == i).nonzero()[:, 0]
        if len(boxes) != len(mine):
            logit_diff = float('inf')
            break
        if len(boxes):
            # a cut-band detection may have no counterpart (all kept if postprocessing dropped
            # an empty box, so that the detections no longer align with the mask RoIs)
            keep = torch.as_tensor(keep_d2[i]) if len(keep_d2[i]) == len(boxes) else \
                torch.ones(len(boxes), dtype=torch.bool)
            nearest = (boxes[:, None, :] - rois[mine][None, :, 1:]).abs().amax(-1).argmin(1)
            theirs = d2_logits[start:start + len(boxes)]
            diff = (theirs - logits[mine[nearest]]).abs().flatten(1).amax(1)[keep]
            logit_diff = max(logit_diff, diff.max().item() if len(diff) else 0.0)
        start += len(boxes)
    worst_iou, worst_frac, flipped, pixels, count = 1.0, 0.0, 0, 0, 0
    for i, (r_d2, per_class) in enumerate(zip(ref['dets'], segms)):
        for c, ours in enumerate(per_class):
            sel = r_d2['classes'] == c
            theirs = r_d2['masks'][sel][keep_d2[i][sel]]
            ours = [m for m, k in zip(ours, keep_ours[i][c]) if k]
            if len(theirs) != len(ours):
                return dict(mask_ok=False, mask_counts_differ=True)
            for a, b in zip(theirs, ours):
                union = int(np.logical_or(a, b).sum())
                diff = int(np.logical_xor(a, b).sum())
                worst_iou = min(worst_iou, 1.0 - diff / union if union else 1.0)
                worst_frac = max(worst_frac, diff / union if union else 0.0)
                flipped += diff
                pixels += union
                count += 1
    rel = logit_diff / max(scale, 1e-12)
    return dict(masks=count, paste_pixels_differing_same_input=_paste_same_input(ref),
                max_mask_logit_diff=logit_diff, max_abs_mask_logit=scale,
                min_mask_iou=worst_iou, max_mask_pixel_disagreement=worst_frac,
                mask_pixels_differing=flipped, mask_pixels_union=pixels,
                mask_ok=rel < MASK_TOL and flipped <= MASK_PIXEL_TOL * pixels and count > 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('families', nargs='*', default=list(FAMILIES))
    parser.add_argument('--side', choices=['both', 'd2', 'detforge'], default='both')
    parser.add_argument('--float64', action='store_true',
                        help='run both models in float64 (the same float32 weights): what is '
                             'left of a difference is not float32 rounding')
    args = parser.parse_args()
    f64 = ['--float64'] if args.float64 else []
    images = _images() if args.side != 'd2' else [
        osp.join(OUT, name.replace('.jpg', '.png')) for name, _ in IMAGES]
    failed = False
    for family in args.families:
        if args.side == 'd2':
            d2_side(family, images, args.float64)
            continue
        yaml_rel, config, suffix, _, _ = FAMILIES[family]
        if args.side == 'both':
            env = dict(os.environ, PYTHONPATH=D2_SRC)
            subprocess.run([D2_PYTHON, __file__, family, '--side', 'd2', *f64], check=True,
                           env=env)
        translated = osp.join(OUT, f'{family}_translated.py')
        subprocess.run([sys.executable, '-m', 'detforge', 'convert', 'detectron2',
                        osp.join(OUT, family + suffix), osp.join(OUT, f'{family}_detforge.pth'),
                        '--config', osp.join(D2_SRC, 'configs', yaml_rel),
                        '--out-config', translated], check=True, cwd=REPO)
        for cfg in (osp.join(REPO, config), translated):
            result = detforge_side(family, images, cfg, args.float64)
            failed |= not result['ok']
            print(json.dumps(dict(result, float64=args.float64)), flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
