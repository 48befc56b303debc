"""Export a detector to ONNX with its post-processing inside the graph.

The exported graph is self-contained::

    img       uint8   (B, 3, H, W)  BGR, padded at the bottom/right (as collate pads)
    img_shape float32 (B, 2)        [h, w] of each image inside the padded batch (its
                                    ``img_metas['img_shape'][:2]``)
      │ BGR→RGB, (x - mean) / std, zero outside img_shape        (the detector's preprocess)
      │ backbone → neck → head(s)                                (the detector's own modules)
      │ per level top-k → decode (the head's anchor generator and box coder) → clip
      │ class-aware NMS (ONNX NonMaxSuppression) → best max_per_img per image
    dets      float32 (B, N, 5)     [x1, y1, x2, y2, score] in the input image's pixels
    labels    int64   (B, N)        0-based class, -1 for the padding rows (score 0)

``N = max_per_img`` (fewer when fewer boxes survive NMS in the whole batch). Rescaling to the
original image (dividing by ``scale_factor``) is the backend's job (:mod:`.ort_backend`),
as the metas live outside the graph.

Supported: ``SingleStageDetector`` (RetinaNet) with ``AnchorHead`` / ``RetinaHead``, and the
dense heads on :class:`ConvTowerHead` (FCOS, ATSS, GFL, RTMDet: points or one anchor per
position, an optional quality score such as centerness multiplied in after the threshold);
``TwoStageDetector`` (Faster R-CNN, Cascade R-CNN) with ``RPNHead`` and ``StandardRoIHead`` /
``CascadeRoIHead`` (``SingleRoIExtractor`` + RoIAlign, ``BBoxHead`` family). Anything else
raises :class:`~detforge.registry.DetforgeError` naming the part before tracing starts.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): the data-dependent parts
(NMS, top-k of a dynamic size, per-level RoI pooling) trace into ONNX ops directly, and NMS is
emitted as ``NonMaxSuppression`` by a small ``autograd.Function`` with a symbolic.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from detforge.registry import DetforgeError

__all__ = ['ExportableDetector', 'export_onnx', 'check_exportable', 'onnx_nms',
           'METADATA_KEY']

#: key of the JSON metadata (classes, norm config, shapes) stored in the ONNX file
METADATA_KEY = 'detforge'

_SINGLE_STAGE_HEADS = ('AnchorHead', 'RetinaHead')
_DENSE_HEADS = ('FCOSHead', 'ATSSHead', 'GFLHead', 'RTMDetSepBNHead')
_DENSE_CODERS = ('DeltaXYWHBBoxCoder', 'DistancePointBBoxCoder')
_DENSE_PRIOR_GENERATORS = ('AnchorGenerator', 'MlvlPointGenerator')
_RPN_HEADS = ('RPNHead',)
_ROI_HEADS = ('StandardRoIHead', 'CascadeRoIHead')
_ROI_EXTRACTORS = ('SingleRoIExtractor',)
_BBOX_HEADS = ('BBoxHead', 'ConvFCBBoxHead', 'Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead')
_CODERS = ('DeltaXYWHBBoxCoder',)
_PRIOR_GENERATORS = ('AnchorGenerator',)


def _nms_iou(cfg, where: str) -> float:
    """The IoU threshold of a parsed test config's ``nms`` (a :class:`NMSConfig`); only
    hard NMS has an ONNX operator."""
    nms = None if cfg is None else cfg.nms
    if nms is None:
        raise DetforgeError(f'{where}: the test config has no nms=dict(type="nms", '
                            'iou_threshold=...)')
    if nms.type != 'nms':
        raise DetforgeError(f'{where}: nms type {nms.type!r} cannot be exported to ONNX; '
                            "only type='nms' (ONNX NonMaxSuppression) is supported")
    return float(nms.iou_threshold)


# ---------------------------------------------------------------------------- support check
def _name(obj) -> str:
    return type(obj).__name__


def _unsupported(part: str, obj, supported: Sequence[str]) -> DetforgeError:
    return DetforgeError(f'ONNX export does not support {part} {_name(obj)!r}; supported: '
                         f'{", ".join(supported)}')


def check_exportable(detector: nn.Module) -> str:
    """``'single_stage'``, ``'dense'`` (FCOS, ATSS, GFL, RTMDet heads) or ``'two_stage'``;
    raises :class:`DetforgeError` naming the first part (detector, head, extractor, coder,
    prior generator) the exporter cannot handle."""
    from detforge.models.dense_heads.conv_tower_head import ConvTowerHead
    from detforge.models.detectors.single_stage import SingleStageDetector
    from detforge.models.detectors.two_stage import TwoStageDetector
    if isinstance(detector, SingleStageDetector):
        head = detector.bbox_head
        if isinstance(head, ConvTowerHead) and _name(head) in _DENSE_HEADS:
            _check_dense_parts(head)
            return 'dense'
        if _name(head) not in _SINGLE_STAGE_HEADS:
            raise _unsupported('the bbox_head', head, _SINGLE_STAGE_HEADS + _DENSE_HEADS)
        _check_anchor_parts(head, 'bbox_head')
        return 'single_stage'
    if isinstance(detector, TwoStageDetector):
        if not detector.with_rpn:
            raise DetforgeError(f'ONNX export of {_name(detector)} needs an rpn_head (precomputed '
                                'proposals cannot be fed to the exported graph)')
        if not detector.with_roi_head:
            raise DetforgeError(f'ONNX export of {_name(detector)} needs a roi_head')
        if _name(detector.rpn_head) not in _RPN_HEADS:
            raise _unsupported('the rpn_head', detector.rpn_head, _RPN_HEADS)
        _check_anchor_parts(detector.rpn_head, 'rpn_head')
        roi_head = detector.roi_head
        if roi_head.with_mask:
            raise DetforgeError(f'ONNX export of {_name(detector)}: the mask branch '
                                f'(roi_head.mask_head {_name(roi_head.mask_head)!r}: mask RoI '
                                'pooling and pasting masks into the image) is not exported yet; '
                                'export the box part by removing roi_head.mask_head and '
                                'roi_head.mask_roi_extractor from the config')
        if _name(roi_head) not in _ROI_HEADS:
            raise _unsupported('the roi_head', roi_head, _ROI_HEADS)
        if roi_head.with_shared_head:
            raise _unsupported('the roi_head.shared_head', roi_head.shared_head, ('none',))
        extractors = roi_head.bbox_roi_extractor
        heads = roi_head.bbox_head
        if not isinstance(heads, nn.ModuleList):
            extractors, heads = [extractors], [heads]
        for extractor in extractors:
            if _name(extractor) not in _ROI_EXTRACTORS:
                raise _unsupported('the roi_head.bbox_roi_extractor', extractor, _ROI_EXTRACTORS)
            for layer in extractor.roi_layers:
                if _name(layer) != 'RoIAlign':
                    raise _unsupported('the RoI layer', layer, ('RoIAlign',))
        for head in heads:
            if _name(head) not in _BBOX_HEADS:
                raise _unsupported('the roi_head.bbox_head', head, _BBOX_HEADS)
            if not (head.with_cls and head.with_reg):
                raise DetforgeError(f'ONNX export needs {_name(head)} with both with_cls and with_reg')
            if _name(head.bbox_coder) not in _CODERS:
                raise _unsupported('the roi_head.bbox_head.bbox_coder', head.bbox_coder, _CODERS)
        return 'two_stage'
    raise _unsupported('the detector', detector, ('SingleStageDetector (RetinaNet)',
                                                  'TwoStageDetector (FasterRCNN, CascadeRCNN)'))


def _check_anchor_parts(head, key: str) -> None:
    if _name(head.bbox_coder) not in _CODERS:
        raise _unsupported(f'the {key}.bbox_coder', head.bbox_coder, _CODERS)
    if _name(head.prior_generator) not in _PRIOR_GENERATORS:
        raise _unsupported(f'the {key}.anchor_generator', head.prior_generator, _PRIOR_GENERATORS)


def _check_dense_parts(head) -> None:
    if _name(head.bbox_coder) not in _DENSE_CODERS:
        raise _unsupported('the bbox_head.bbox_coder', head.bbox_coder, _DENSE_CODERS)
    generator = head.prior_generator
    if _name(generator) not in _DENSE_PRIOR_GENERATORS:
        raise _unsupported('the bbox_head prior generator', generator, _DENSE_PRIOR_GENERATORS)
    if any(n != 1 for n in generator.num_base_priors):
        raise DetforgeError(f'ONNX export of {_name(head)} needs one prior per position')
    if head.test_settings is None:
        raise DetforgeError(f'ONNX export of {_name(head)} needs a test_cfg')


def _prior_generators(detector: nn.Module):
    """``(config key, generator)`` of the detector's anchor / point generators."""
    for key in ('rpn_head', 'bbox_head'):
        head = getattr(detector, key, None)
        generator = getattr(head, 'prior_generator', None)
        if generator is not None:
            yield (f'model.{key}.anchor_generator' if hasattr(generator, 'base_anchors')
                   else f'model.{key}.prior_generator'), generator


# ---------------------------------------------------------------------------- graph helpers
def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def _dim(x: Tensor, dim: int):
    """``x.shape[dim]``, read in-graph while exporting so that dynamic axes stay dynamic."""
    if _exporting():
        return torch._shape_as_tensor(x)[dim]
    return x.shape[dim]


def _topk(x: Tensor, k: int, dim: int = 1):
    """``x.topk(min(k, x.shape[dim]), dim)`` (sorted, largest first), with the ``min`` taken
    in-graph when exporting."""
    if _exporting():
        k = torch.clamp(torch._shape_as_tensor(x)[dim], max=k)
    else:
        k = min(k, x.shape[dim])
    return x.topk(k, dim=dim)


def _reference_nms(boxes: Tensor, scores: Tensor, max_output_boxes_per_class: int,
                   iou_threshold: float, score_threshold: float) -> Tensor:
    """What ONNX ``NonMaxSuppression`` computes, in PyTorch: boxes ``(B, K, 4)``, scores
    ``(B, G, K)`` → selected ``(S, 3)`` int64 ``[batch, group, box]``; per (batch, group) at
    most ``max_output_boxes_per_class``, best first; candidates need score > threshold."""
    from torchvision.ops import batched_nms
    G = scores.size(1)
    b, g, i = torch.nonzero(scores > score_threshold, as_tuple=True)
    group = b * G + g
    keep = batched_nms(boxes[b, i].float(), scores[b, g, i].float(), group, iou_threshold)
    order = torch.argsort(group[keep], stable=True)  # by (batch, group), then score
    keep = keep[order]
    group = group[keep]
    rank = torch.arange(group.numel(), device=group.device) - torch.searchsorted(group, group)
    keep = keep[rank < max_output_boxes_per_class]
    return torch.stack([b[keep], g[keep], i[keep]], 1)


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (boxes given as corners, any diagonal) with a reference
    PyTorch forward, so that the wrapper also runs eagerly."""

    @staticmethod
    def forward(ctx, boxes, scores, max_output_boxes_per_class: int, iou_threshold: float,
                score_threshold: float):
        return _reference_nms(boxes, scores, max_output_boxes_per_class, iou_threshold,
                              score_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold):
        return g.op('NonMaxSuppression', boxes, scores,
                    g.op('Constant', value_t=torch.tensor([max_output_boxes_per_class],
                                                          dtype=torch.long)),
                    g.op('Constant', value_t=torch.tensor([iou_threshold], dtype=torch.float)),
                    g.op('Constant', value_t=torch.tensor([score_threshold], dtype=torch.float)),
                    center_point_box_i=0)


def onnx_nms(boxes: Tensor, scores: Tensor, groups: Tensor, valid: Tensor, num_groups: int,
             iou_threshold: float, max_per_group: int, max_per_img: int):
    """Group-aware NMS of a batch, then the best ``max_per_img`` per image.

    Args:
        boxes: ``(B, K, 4)`` xyxy px; scores: ``(B, K)`` in [0, 1]; groups: ``(B, K)`` long
            in ``[0, num_groups)`` (classes, or levels for RPN): boxes of different groups
            never suppress each other; valid: ``(B, K)`` bool, candidates to consider.

    Returns:
        boxes ``(B, N, 4)``, scores ``(B, N)``, groups ``(B, N)`` (``-1`` and zeros on the
        padding rows), sorted by score; ``N = min(max_per_img, boxes kept in the batch)``.
    """
    B, K = scores.shape[0], scores.shape[1]
    # one score row per group: a candidate scores only in its own group, so that the
    # ONNX op (which shares the boxes across its "classes") keeps the groups apart
    group_ids = torch.arange(num_groups, device=scores.device)
    in_group = (groups[:, None, :] == group_ids[None, :, None]) & valid[:, None, :]
    group_scores = torch.where(in_group, scores[:, None, :], torch.full_like(scores[:, None, :], -1.))
    selected = _NonMaxSuppression.apply(boxes, group_scores, int(max_per_group),
                                        float(iou_threshold), -0.5)
    b, i = selected[:, 0], selected[:, 2]
    flat = b * _dim(scores, 1) + i
    sel_scores = scores.reshape(-1)[flat]
    batch_ids = torch.arange(_dim(scores, 0), device=scores.device)
    per_img = torch.where(b[None, :] == batch_ids[:, None], sel_scores[None, :],
                          torch.full_like(sel_scores[None, :], -1.))     # (B, S)
    top, j = _topk(per_img, max_per_img, dim=1)                           # (B, N)
    idx = flat[j]
    keep = top >= 0
    out_boxes = boxes.reshape(-1, 4)[idx] * keep[..., None].to(boxes.dtype)
    out_groups = torch.where(keep, groups.reshape(-1)[idx], torch.full_like(idx, -1))
    return out_boxes, top.clamp(min=0), out_groups


def _grid_anchors(base_anchors: Tensor, feat: Tensor, stride) -> Tensor:
    """Anchors of one level ``(H * W * A, 4)``, position-major (the generator's order), from
    the feature map's size read in-graph (dynamic height/width)."""
    stride_w, stride_h = stride
    shift_x = torch.arange(_dim(feat, 3), device=feat.device, dtype=torch.float32) * stride_w
    shift_y = torch.arange(_dim(feat, 2), device=feat.device, dtype=torch.float32) * stride_h
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (shifts[:, None, :] + base_anchors[None, :, :].to(feat.device)).reshape(-1, 4)


def _grid_points(generator, feat: Tensor, stride) -> Tensor:
    """:class:`MlvlPointGenerator` points ``(H * W, 2)`` of one level, row-major, from the
    feature map's size read in-graph, ``stride = (w, h)`` apart."""
    stride_w, stride_h = stride
    xs = (torch.arange(_dim(feat, 3), dtype=torch.float32) + generator.offset) * stride_w
    ys = (torch.arange(_dim(feat, 2), dtype=torch.float32) + generator.offset) * stride_h
    yy, xx = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def _clip(boxes: Tensor, img_shape: Tensor) -> Tensor:
    """boxes ``(B, K, 4)`` clamped to ``[0, w] x [0, h]`` of each image (img_shape ``(B, 2)``)."""
    h = img_shape[:, 0:1]
    w = img_shape[:, 1:2]
    zero = torch.zeros_like(boxes[..., 0])
    x1 = torch.max(torch.min(boxes[..., 0], w), zero)
    y1 = torch.max(torch.min(boxes[..., 1], h), zero)
    x2 = torch.max(torch.min(boxes[..., 2], w), zero)
    y2 = torch.max(torch.min(boxes[..., 3], h), zero)
    return torch.stack([x1, y1, x2, y2], -1)


def _gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x (B, K, C)``, ``idx (B, k)`` → ``(B, k, C)``."""
    return x.gather(1, idx[..., None].expand(-1, -1, x.size(-1)))


def _roi_features(extractor, feats, rois: Tensor) -> Tensor:
    """:class:`SingleRoIExtractor` forward in traceable form: each RoI pooled from its level
    (the same level mapping), ``rois (n, 5)`` → ``(n, C, out_h, out_w)``."""
    feats = feats[:extractor.num_inputs]
    if len(feats) == 1:
        return extractor.roi_layers[0](feats[0], rois)
    levels = extractor.map_roi_levels(rois, len(feats))
    if extractor.roi_scale_factor is not None:
        rois = extractor.roi_rescale(rois, extractor.roi_scale_factor)
    out = None
    for level, (feat, layer) in enumerate(zip(feats, extractor.roi_layers)):
        inds = torch.nonzero(levels == level).reshape(-1)
        pooled = layer(feat, rois[inds])
        if out is None:
            out = torch.zeros_like(pooled[:1]).expand(_dim(rois, 0), -1, -1, -1).clone() \
                if _exporting() else pooled.new_zeros((rois.size(0),) + tuple(pooled.shape[1:]))
        out = out.index_put((inds,), pooled)
    return out


# ---------------------------------------------------------------------------- the wrapper
class ExportableDetector(nn.Module):
    """A traceable module around a built detector (its modules are reused, not copied).

    ``forward(img uint8 (B, 3, H, W) BGR, img_shape float32 (B, 2) [h, w])`` →
    ``dets (B, N, 5)``, ``labels (B, N)`` (see the module docstring). The normalisation
    (``norm_cfg = dict(mean, std, to_rgb)``) is part of the graph, so a deployed model needs
    nothing from detforge.

    Args:
        detector: a built detector in eval mode.
        norm_cfg: the test pipeline's ``Normalize`` arguments; default: the detector's
            ``data_preprocessor``.
    """

    def __init__(self, detector: nn.Module, norm_cfg: dict | None = None):
        super().__init__()
        self.kind = check_exportable(detector)
        self.detector = detector
        norm_cfg = dict(norm_cfg or detector.data_preprocessor)
        self.norm_cfg = dict(mean=[float(v) for v in np.asarray(norm_cfg['mean']).reshape(-1)],
                             std=[float(v) for v in np.asarray(norm_cfg['std']).reshape(-1)],
                             to_rgb=bool(norm_cfg.get('to_rgb', False)))
        self.register_buffer('mean', torch.tensor(self.norm_cfg['mean']).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(self.norm_cfg['std']).view(1, -1, 1, 1),
                             persistent=False)
        if self.kind == 'dense':
            self.test_cfg = detector.bbox_head.test_settings  # QualityTestConfig
            self.num_classes = detector.bbox_head.num_classes
        elif self.kind == 'single_stage':
            self.test_cfg = detector.bbox_head.test_cfg
            self.num_classes = detector.bbox_head.num_classes
        else:
            self.test_cfg = detector.roi_head.test_cfg
            heads = detector.roi_head.bbox_head
            self.num_classes = (heads[-1] if isinstance(heads, nn.ModuleList) else heads).num_classes
        self.max_per_img = int(self.test_cfg.max_per_img)
        #: the padded (H, W) of a static export: torchvision's stride rule
        #: (``stride_rule='batch_shape'``) reads it; None for a dynamic graph
        self.batch_input_shape: tuple[int, int] | None = None
        # configuration errors surface here, before the (slow) tracing starts
        if self.kind == 'single_stage':
            _nms_iou(self.test_cfg, 'bbox_head.test_cfg')
        elif self.kind == 'two_stage':
            _nms_iou(self.test_cfg, 'roi_head.test_cfg')
            if detector.rpn_head.test_cfg.nms is not None:
                _nms_iou(detector.rpn_head.test_cfg, 'rpn_head.test_cfg')
        if self.max_per_img <= 0:
            raise DetforgeError('ONNX export needs test_cfg.max_per_img > 0 (the graph output '
                                f'has a fixed maximum size), got {self.max_per_img}')

    # ------------------------------------------------------------------ preprocessing
    def normalise(self, img: Tensor, img_shape: Tensor) -> Tensor:
        """As :meth:`BaseDetector.preprocess`: BGR→RGB, ``(x - mean) / std``, padding → 0."""
        x = img.float()
        if self.norm_cfg['to_rgb']:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        inside_y = torch.arange(_dim(x, 2), dtype=torch.float32)[None, :] < img_shape[:, 0:1]
        inside_x = torch.arange(_dim(x, 3), dtype=torch.float32)[None, :] < img_shape[:, 1:2]
        mask = inside_y[:, None, :, None] & inside_x[:, None, None, :]
        return x * mask.to(x.dtype)

    def forward(self, img: Tensor, img_shape: Tensor):
        img_shape = img_shape.float()
        feats = self.detector.extract_feat(self.normalise(img, img_shape))
        if self.kind == 'dense':
            return self._dense(feats, img_shape)
        if self.kind == 'single_stage':
            return self._single_stage(feats, img_shape)
        return self._two_stage(feats, img_shape)

    # ------------------------------------------------------------------ RetinaNet
    def _single_stage(self, feats, img_shape: Tensor):
        """:meth:`AnchorHead._get_bboxes_single` for a batch: per level the ``nms_pre`` best
        (anchor, class) pairs, decoded and clipped; ``score_thr``; class-aware NMS."""
        head = self.detector.bbox_head
        cfg = head.test_cfg
        nms_pre, score_thr = cfg.nms_pre, cfg.score_thr
        iou = _nms_iou(cfg, 'bbox_head.test_cfg')
        cls_scores, bbox_preds = head(feats)
        C = head.cls_out_channels
        generator = head.prior_generator
        all_boxes, all_scores, all_labels = [], [], []
        for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
            B = cls_score.shape[0]
            logits = cls_score.permute(0, 2, 3, 1).reshape(B, -1, C)
            scores = logits.sigmoid() if head.use_sigmoid_cls else logits.softmax(-1)[..., :-1]
            num_cls = scores.shape[-1]
            deltas = bbox_pred.permute(0, 2, 3, 1).reshape(B, -1, 4)
            anchors = _grid_anchors(generator.base_anchors[level], cls_score,
                                    self._stride(generator, level, cls_score))
            flat = scores.reshape(B, -1)                                 # (B, HWA * classes)
            if nms_pre > 0:
                flat, idx = _topk(flat, nms_pre, dim=1)
            else:
                idx = torch.arange(_dim(flat, 1))[None].expand(B, -1)
            anchor_idx = torch.div(idx, num_cls, rounding_mode='floor')
            labels = idx - anchor_idx * num_cls
            boxes = head.bbox_coder.decode(anchors[anchor_idx], _gather_rows(deltas, anchor_idx))
            if head.bbox_coder.clip_border:
                boxes = _clip(boxes, img_shape)
            all_boxes.append(boxes)
            all_scores.append(flat)
            all_labels.append(labels)
        boxes, scores = torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
        labels = torch.cat(all_labels, 1)
        boxes, scores, labels = onnx_nms(boxes, scores, labels, scores > score_thr,
                                         self.num_classes, iou, self.max_per_img,
                                         self.max_per_img)
        return torch.cat([boxes, scores[..., None]], -1), labels

    # ------------------------------------------------------------------ FCOS, ATSS, GFL, RTMDet
    def _dense(self, feats, img_shape: Tensor):
        """:meth:`ConvTowerHead._get_bboxes_single` for a batch: per level the ``nms_pre`` best
        (prior, class) pairs by class score, decoded by the head's own ``decode_level`` and
        clipped; ``score_thr`` on the class score; the quality score (centerness) multiplied
        in (or ``sqrt(class * quality)`` ranked, ``score_factor_fusion='geometric_mean'``);
        class-aware NMS."""
        head = self.detector.bbox_head
        settings = head.test_settings
        outs = head(feats)
        cls_scores, bbox_preds = outs[0], outs[1]
        factors = outs[2] if len(outs) > 2 else None
        generator = head.prior_generator
        all_boxes, all_scores, all_labels, all_valid = [], [], [], []
        for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
            B, C = cls_score.shape[0], head.cls_out_channels
            scores = cls_score.float().permute(0, 2, 3, 1).reshape(B, -1, C).sigmoid()
            preds = bbox_pred.float().permute(0, 2, 3, 1).reshape(B, _dim(scores, 1), -1)
            factor = None
            if factors is not None:
                factor = factors[level].float().permute(0, 2, 3, 1).reshape(B, -1).sigmoid()
                if settings.score_factor_fusion == 'geometric_mean':
                    scores, factor = torch.sqrt(scores * factor[..., None]), None
            if _name(generator) == 'MlvlPointGenerator':
                priors = _grid_points(generator, cls_score,
                                      self._stride(generator, level, cls_score))
            else:
                priors = _grid_anchors(generator.base_anchors[level], cls_score,
                                       self._stride(generator, level, cls_score))
            flat = scores.reshape(B, -1)                                 # (B, HW * classes)
            if settings.nms_pre > 0:
                flat, idx = _topk(flat, settings.nms_pre, dim=1)
            else:
                idx = torch.arange(_dim(flat, 1))[None].expand(B, -1)
            prior_idx = torch.div(idx, C, rounding_mode='floor')
            labels = idx - prior_idx * C
            sel_preds = _gather_rows(preds, prior_idx)
            boxes = head.decode_level(priors[prior_idx].reshape(-1, priors.shape[-1]),
                                      sel_preds.reshape(-1, sel_preds.shape[-1]), level, None)
            boxes = _clip(boxes.reshape(B, -1, 4), img_shape) \
                if head.bbox_coder.clip_border else boxes.reshape(B, -1, 4)
            all_valid.append(flat > settings.score_thr)
            all_scores.append(flat if factor is None else flat * factor.gather(1, prior_idx))
            all_boxes.append(boxes)
            all_labels.append(labels)
        boxes, scores = torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
        labels, valid = torch.cat(all_labels, 1), torch.cat(all_valid, 1)
        boxes, scores, labels = onnx_nms(boxes, scores, labels, valid, self.num_classes,
                                         settings.iou_threshold, self.max_per_img,
                                         self.max_per_img)
        return torch.cat([boxes, scores[..., None]], -1), labels

    def _stride(self, generator, level: int, feat: Tensor) -> tuple[int, int]:
        """The ``(w, h)`` grid step of ``level``: the configured stride, or under torchvision's
        ``stride_rule='batch_shape'`` the padded input size over this feature map's size,
        fixed at export time (the graph is static then: :func:`export_onnx` refuses
        ``dynamic``)."""
        if getattr(generator, 'stride_rule', 'fixed') == 'fixed':
            return tuple(generator.strides[level])
        if self.batch_input_shape is None:
            raise DetforgeError("stride_rule='batch_shape' needs the static input shape of the "
                                'graph (export without --dynamic)')
        size = (int(feat.shape[2]), int(feat.shape[3]))
        return tuple(generator.level_strides([size], self.batch_input_shape)[0])

    # ------------------------------------------------------------------ Faster / Cascade R-CNN
    def _proposals(self, feats, img_shape: Tensor):
        """:meth:`RPNHead.get_bboxes` for a batch → proposals ``(B, P, 4)``, valid ``(B, P)``."""
        head = self.detector.rpn_head
        cfg = head.test_cfg
        nms_pre, max_per_img, min_size = cfg.nms_pre, cfg.max_per_img, cfg.min_bbox_size
        iou = 0.7 if cfg.nms is None else _nms_iou(cfg, 'rpn_head.test_cfg')
        if max_per_img <= 0:
            raise DetforgeError('ONNX export needs test_cfg.rpn.max_per_img > 0')
        cls_scores, bbox_preds = head(feats)
        generator = head.prior_generator
        all_boxes, all_scores, all_levels = [], [], []
        for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
            B = cls_score.shape[0]
            logits = cls_score.permute(0, 2, 3, 1).reshape(B, -1, head.cls_out_channels)
            # (B, HWA) probabilities: onnx_nms marks its padding with negative scores; eager
            # ranks by the logit, the same order but for float32 ties of saturated sigmoids
            scores = head._probability(logits)
            deltas = bbox_pred.permute(0, 2, 3, 1).reshape(B, -1, 4)
            anchors = _grid_anchors(generator.base_anchors[level], cls_score,
                                    self._stride(generator, level, cls_score))
            if nms_pre > 0:
                scores, idx = _topk(scores, nms_pre, dim=1)
                deltas = _gather_rows(deltas, idx)
                anchors = anchors[idx]
            else:
                anchors = anchors[None].expand(B, -1, -1)
            all_boxes.append(_clip(head.bbox_coder.decode(anchors, deltas), img_shape))
            all_scores.append(scores)
            all_levels.append(torch.full_like(scores, level, dtype=torch.long))
        boxes, scores = torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
        levels = torch.cat(all_levels, 1)
        if min_size is not None and min_size >= 0:
            valid = ((boxes[..., 2] - boxes[..., 0]) > min_size) & \
                ((boxes[..., 3] - boxes[..., 1]) > min_size)
        else:
            valid = torch.ones_like(levels, dtype=torch.bool)
        boxes, _, levels = onnx_nms(boxes, scores, levels, valid, len(cls_scores), iou,
                                    max_per_img, max_per_img)
        return boxes, levels >= 0

    def _two_stage(self, feats, img_shape: Tensor):
        roi_head = self.detector.roi_head
        proposals, valid = self._proposals(feats, img_shape)            # (B, P, 4), (B, P)
        B = proposals.shape[0]
        P = _dim(proposals, 1)
        batch_idx = torch.arange(_dim(proposals, 0), dtype=torch.float32)[:, None] \
            .expand(-1, proposals.shape[1])
        rois = torch.cat([batch_idx.reshape(-1, 1), proposals.reshape(-1, 4)], 1)
        roi_shapes = img_shape[:, None, :].expand(-1, proposals.shape[1], -1).reshape(-1, 2)
        if isinstance(roi_head.bbox_head, nn.ModuleList):                # cascade
            extractors, heads = list(roi_head.bbox_roi_extractor), list(roi_head.bbox_head)
        else:
            extractors, heads = [roi_head.bbox_roi_extractor], [roi_head.bbox_head]
        stage_scores = []
        for i, (extractor, bbox_head) in enumerate(zip(extractors, heads)):
            cls_score, bbox_pred = bbox_head(_roi_features(extractor, feats, rois))
            stage_scores.append(cls_score)
            if i < len(heads) - 1:  # refine with the deltas of the predicted class
                labels = cls_score[:, :-1].argmax(1)
                rois = bbox_head.regress_by_class(rois, labels, bbox_pred,
                                                  {'img_shape': roi_shapes})
        if getattr(roi_head, 'score_average', 'logits') == 'probs':     # Detectron2's cascade
            scores = (sum(s.softmax(-1) for s in stage_scores) / float(len(heads)))[:, :-1]
        else:
            cls_score = stage_scores[0] if len(heads) == 1 else sum(stage_scores) / float(len(heads))
            scores = cls_score.softmax(-1)[:, :-1]                       # (B * P, classes)
        head = heads[-1]
        C = scores.shape[1]
        boxes = head.decode_per_class(rois[:, 1:], bbox_pred).reshape(B, P, -1, 4)
        boxes = _clip(boxes.reshape(B, -1, 4), img_shape)
        if boxes.shape[1] != scores.shape[0] // B * C:                   # class-agnostic deltas
            boxes = boxes.reshape(B, P, 1, 4).expand(-1, -1, C, -1).reshape(B, -1, 4)
        scores = scores.reshape(B, -1)                                   # (B, P * classes)
        labels = torch.arange(C)[None, None, :].expand(B, P, -1).reshape(B, -1)
        keep = valid[:, :, None].expand(-1, -1, C).reshape(B, -1) & \
            (scores > self.test_cfg.score_thr)
        min_size = self.test_cfg.min_bbox_size
        if min_size > 0:
            keep = keep & ((boxes[..., 2] - boxes[..., 0]) > min_size) & \
                ((boxes[..., 3] - boxes[..., 1]) > min_size)
        boxes, scores, labels = onnx_nms(boxes, scores, labels, keep, C,
                                         _nms_iou(self.test_cfg, 'roi_head.test_cfg'),
                                         self.max_per_img, self.max_per_img)
        return torch.cat([boxes, scores[..., None]], -1), labels


# ---------------------------------------------------------------------------- export
def export_onnx(model: nn.Module, out_file: str, input_shape: Sequence[int] = (800, 1344),
                dynamic: bool = False, opset: int = 17, simplify: bool = False,
                norm_cfg: dict | None = None, batch_size: int = 1,
                class_names: Sequence[str] | None = None, verify: bool = True) -> dict:
    """Export ``model`` (a built detector, weights loaded) to ``out_file``.

    Args:
        input_shape: ``(H, W)`` of the (padded) network input of the graph; with ``dynamic``
            only the shape of the example used for tracing.
        dynamic: batch, height and width axes are dynamic (any padded size; keep it a multiple
            of the largest stride, e.g. 32, as ``Pad(size_divisor=32)`` does).
        opset: ONNX opset (>= 16: RoIAlign's ``half_pixel`` mode needs it).
        simplify: run onnx-simplifier (``pip install onnxsim``) on the result.
        norm_cfg: normalisation baked into the graph (the test pipeline's ``Normalize``).
        batch_size: the batch of the static graph (ignored with ``dynamic``).
        class_names: stored in the file's metadata (default ``model.CLASSES``).
        verify: check the file with ``onnx.checker``.

    Returns:
        The metadata dict written into the file (key ``detforge``).
    """
    import onnx
    if opset < 16:
        raise DetforgeError(f'ONNX export needs opset >= 16 (RoIAlign half_pixel, '
                            f'NonMaxSuppression), got {opset}')
    if len(input_shape) != 2 or min(input_shape) <= 0:
        raise DetforgeError(f'input_shape must be (H, W) with positive sizes, got {input_shape}')
    if simplify:
        try:
            import onnxsim  # noqa: F401
        except ImportError:
            raise DetforgeError('--simplify needs onnx-simplifier: pip install onnxsim') from None
    model = model.eval()
    wrapper = ExportableDetector(model, norm_cfg).eval()
    H, W = int(input_shape[0]), int(input_shape[1])
    B = 1 if dynamic else int(batch_size)
    rules = {key: generator.stride_rule for key, generator in _prior_generators(model)
             if getattr(generator, 'stride_rule', 'fixed') != 'fixed'}
    if dynamic and rules:
        key = next(iter(rules))
        raise DetforgeError(f"a dynamic ONNX graph needs {key}.stride_rule='fixed'; "
                            f"{rules[key]!r} (torchvision's rule: stride = padded input size // "
                            'feature map size) is exported only for a static input shape '
                            '(drop --dynamic)')
    wrapper.batch_input_shape = None if dynamic else (H, W)
    img = torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8)
    img_shape = torch.tensor([[H, W]] * B, dtype=torch.float32)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {'img': {0: 'batch', 2: 'height', 3: 'width'},
                        'img_shape': {0: 'batch'}, 'dets': {0: 'batch', 1: 'num_dets'},
                        'labels': {0: 'batch', 1: 'num_dets'}}
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # tracer warnings on shape arithmetic are expected
            torch.onnx.export(wrapper, (img, img_shape), out_file, input_names=['img', 'img_shape'],
                              output_names=['dets', 'labels'], opset_version=opset,
                              dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    except DetforgeError:
        raise
    except Exception as e:  # noqa: BLE001 - turn exporter internals into one clear message
        raise DetforgeError(f'ONNX export of {_name(model)} failed while tracing '
                            f'{_name(model)}.{wrapper.kind} (backbone {_name(model.backbone)}): '
                            f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}') from e
    onnx_model = onnx.load(out_file)
    if simplify:
        import onnxsim
        onnx_model, ok = onnxsim.simplify(onnx_model)
        if not ok:
            raise DetforgeError('onnx-simplifier could not validate the simplified model')
    names = class_names if class_names is not None else getattr(model, 'CLASSES', None)
    meta = dict(detector=_name(model), kind=wrapper.kind, num_classes=wrapper.num_classes,
                classes=list(names) if names else None, norm_cfg=wrapper.norm_cfg,
                input_shape=None if dynamic else [H, W], batch_size=None if dynamic else B,
                dynamic=bool(dynamic), max_per_img=wrapper.max_per_img, opset=int(opset),
                inputs=['img: uint8 (B, 3, H, W) BGR', 'img_shape: float32 (B, 2) [h, w]'],
                outputs=['dets: float32 (B, N, 5)', 'labels: int64 (B, N), -1 = padding'])
    del onnx_model.metadata_props[:]
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(onnx_model, out_file)
    if verify:
        onnx.checker.check_model(out_file)
    return meta
