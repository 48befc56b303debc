"""FCNMaskHead: Mask R-CNN's mask branch (He et al., 2017), MMDetection 2.x layout.

``convs`` (4 x ConvModule 3x3) -> ``upsample`` (2x2 deconv, stride 2) -> ReLU ->
``conv_logits`` (1x1, one channel per class or one for all): pooled ``(n, 256, 14, 14)``
RoI features -> ``(n, C, 28, 28)`` mask logits. Training targets are the gt masks cut out
inside each positive RoI (``crop_and_resize``); testing pastes each detection's mask
probabilities into the image, a few detections at a time.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detforge.models.train_test_cfg import RoITestConfig, RoITrainConfig
from detforge.models.layers import ConvModule
from detforge.registry import HEADS, LOSSES, BuildError

__all__ = ['FCNMaskHead', 'paste_masks', 'mask_target']

#: memory a chunk of pasted float masks may take on a GPU (MMDetection's GPU_MEM_LIMIT)
PASTE_MEM_LIMIT = 1024 ** 3
_PASTE_MODES = ('mmdet', 'torchvision')


def mask_target(sampling_results, gt_masks, mask_size, aligned: bool = True,
                binarize: bool = True) -> Tensor:
    """Training targets of the positive RoIs of a batch: float ``(P, h, w)``.

    Each positive RoI ``pos_bboxes[i]`` takes the part of its matched gt mask
    (``pos_assigned_gt_inds[i]``) that lies inside it, resampled to ``mask_size``: by default
    as MMDetection 2.x (``crop_and_resize``: RoIAlign ``aligned=True`` of bitmaps, then
    ``>= 0.5``; polygons rasterised in the box); ``aligned=False, binarize=False`` as
    torchvision's ``project_masks_on_boxes`` (soft RoIAlign values of the bitmap).
    """
    size = (mask_size, mask_size) if isinstance(mask_size, int) else tuple(mask_size)
    targets = []
    for res, masks in zip(sampling_results, gt_masks):
        boxes = res.pos_bboxes
        if len(boxes) == 0:
            continue
        if aligned and binarize:
            t = masks.crop_and_resize(boxes, size, res.pos_assigned_gt_inds, device=boxes.device)
            t = torch.as_tensor(t.to_ndarray(), device=boxes.device, dtype=torch.float32)
        else:
            t = _roi_align_targets(masks, boxes, size, res.pos_assigned_gt_inds, aligned,
                                   binarize)
        targets.append(t)
    if not targets:
        device = sampling_results[0].pos_bboxes.device if sampling_results else 'cpu'
        return torch.zeros((0,) + size, device=device)
    return torch.cat(targets)


def _roi_align_targets(masks, boxes: Tensor, size, inds: Tensor, aligned: bool,
                       binarize: bool) -> Tensor:
    """RoIAlign of the gt bitmaps (polygons rasterised first) inside ``boxes`` ``(k, 4)``
    -> float ``(k, h, w)`` (``>= 0.5`` when ``binarize``)."""
    from torchvision.ops import roi_align
    bitmaps = masks.to_bitmap() if hasattr(masks, 'to_bitmap') else masks
    gt = torch.as_tensor(bitmaps.to_ndarray(), device=boxes.device, dtype=torch.float32)
    gt = gt.index_select(0, inds.to(boxes.device).long())
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None],
                      boxes], dim=1)
    out = roi_align(gt[:, None], rois, size, 1.0, 0, aligned)[:, 0]
    return (out >= 0.5).float() if binarize else out


def _paste_chunk_mmdet(masks: Tensor, boxes: Tensor, img_h: int, img_w: int, skip_empty: bool):
    """Bilinear resampling of ``(k, 1, m, m)`` masks into their boxes by ``grid_sample``
    (MMDetection's ``_do_paste_mask``): image pixel centres ``(x + 0.5)`` mapped into the box.

    Returns ``((k, h', w') float, (rows, cols))`` where the slices say where in the image the
    ``h' x w'`` window lies (the boxes' union plus a pixel when ``skip_empty``, else all)."""
    if skip_empty:
        x0, y0 = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int64).tolist()
        x1 = int(torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w))
        y1 = int(torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h))
    else:
        x0, y0, x1, y1 = 0, 0, img_w, img_h
    bx0, by0, bx1, by1 = torch.split(boxes, 1, dim=1)  # each (k, 1)
    ys = torch.arange(y0, y1, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(x0, x1, device=masks.device, dtype=torch.float32) + 0.5
    ys = (ys - by0) / (by1 - by0) * 2 - 1  # (k, h')
    xs = (xs - bx0) / (bx1 - bx0) * 2 - 1  # (k, w')
    # a box of zero width (height) maps its columns (rows) to +-inf: MMDetection samples the
    # mask's centre there instead, so such a detection pastes a band, not nothing
    xs = torch.where(torch.isinf(xs), torch.zeros_like(xs), xs)
    ys = torch.where(torch.isinf(ys), torch.zeros_like(ys), ys)
    k = masks.size(0)
    gx = xs[:, None, :].expand(k, ys.size(1), xs.size(1))
    gy = ys[:, :, None].expand(k, ys.size(1), xs.size(1))
    grid = torch.stack([gx, gy], dim=3)
    # in the grid's dtype: float32 (fp16/bf16 masks are cast up), float64 for float64 boxes
    pasted = F.grid_sample(masks.to(grid.dtype), grid, align_corners=False)
    return pasted[:, 0], (slice(y0, y1), slice(x0, x1))


def paste_masks(mask_probs: Tensor, boxes: Tensor, img_h: int, img_w: int,
                threshold: float = 0.5, mode: str = 'mmdet') -> Tensor:
    """Paste ``(n, m, m)`` mask probabilities into an ``img_h x img_w`` image at ``boxes``
    ``(n, 4)`` (image pixels) -> ``(n, img_h, img_w)`` bool (``>= threshold``; uint8
    probabilities x 255 when ``threshold < 0``).

    ``mode='mmdet'``: MMDetection 2.x's bilinear ``grid_sample`` paste; on the CPU one
    detection at a time over its box only, on a GPU in chunks of at most
    ``PASTE_MEM_LIMIT`` bytes of float masks, so 100 detections in a 1333 x 800 image take
    the 107 MB of the boolean output plus one chunk. ``mode='torchvision'``: torchvision's
    ``paste_masks_in_image`` (mask padded by one pixel, box grown to match, resized to the
    rounded box), for parity with its Mask R-CNN; one detection at a time.
    """
    n = mask_probs.size(0)
    device = mask_probs.device
    dtype = torch.bool if threshold >= 0 else torch.uint8
    out = torch.zeros(n, img_h, img_w, device=device, dtype=dtype)
    if n == 0:
        return out
    if mode == 'torchvision':
        from torchvision.models.detection.roi_heads import paste_masks_in_image
        for i in range(n):  # torchvision pastes one by one too; this keeps memory bounded
            prob = paste_masks_in_image(mask_probs[i:i + 1, None], boxes[i:i + 1],
                                        (img_h, img_w), padding=1)[:, 0]
            out[i] = prob >= threshold if threshold >= 0 else (prob * 255).to(torch.uint8)
        return out
    skip_empty = device.type == 'cpu'
    num_chunks = n if skip_empty else \
        max(1, min(n, int(np.ceil(n * img_h * img_w * 4 / PASTE_MEM_LIMIT))))
    for inds in torch.chunk(torch.arange(n, device=device), num_chunks):
        pasted, (rows, cols) = _paste_chunk_mmdet(mask_probs[inds][:, None], boxes[inds],
                                                  img_h, img_w, skip_empty)
        pasted = pasted >= threshold if threshold >= 0 else (pasted * 255).to(torch.uint8)
        out[inds, rows, cols] = pasted
    return out


@HEADS.register_module()
class FCNMaskHead(nn.Module):
    """Mask logits for RoIs (parameter names as MMDetection 2.x, so its checkpoints load).

    Args:
        num_convs, roi_feat_size, in_channels, conv_kernel_size, conv_out_channels: the conv
            tower (4 convs of 256 channels on 14 x 14 features in Mask R-CNN).
        num_classes: foreground classes.
        class_agnostic: one mask channel for all classes.
        upsample_cfg: ``dict(type='deconv', scale_factor=2)`` (learned 2x2 transposed conv,
            then ReLU) or ``'nearest'`` / ``'bilinear'`` (``nn.Upsample``), or ``type=None``.
        conv_cfg, norm_cfg: for the conv tower (ConvModule).
        predictor_cfg: ``dict(type='Conv')`` only.
        loss_mask: ``dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0)``.
        paste_mode: how test masks go into the image: ``'mmdet'`` (MMDetection 2.x) or
            ``'torchvision'`` (torchvision's ``paste_masks_in_image``).
    """

    def __init__(self, num_convs: int = 4, roi_feat_size: int = 14, in_channels: int = 256,
                 conv_kernel_size: int = 3, conv_out_channels: int = 256, num_classes: int = 80,
                 class_agnostic: bool = False, upsample_cfg=dict(type='deconv', scale_factor=2),
                 conv_cfg=None, norm_cfg=None, predictor_cfg=dict(type='Conv'),
                 loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0),
                 paste_mode: str = 'mmdet', init_cfg=None):
        super().__init__()
        upsample_cfg = dict(upsample_cfg or dict(type=None))
        up_type = upsample_cfg.pop('type', None)
        scale = upsample_cfg.pop('scale_factor', 2)
        if up_type not in (None, 'deconv', 'nearest', 'bilinear'):
            raise BuildError(f"FCNMaskHead: upsample_cfg type must be 'deconv', 'nearest', "
                             f"'bilinear' or None, got {up_type!r}", key_path=['upsample_cfg'])
        if (predictor_cfg or {}).get('type', 'Conv') not in ('Conv', 'Conv2d'):
            raise BuildError('FCNMaskHead: predictor_cfg type must be Conv',
                             key_path=['predictor_cfg'])
        if paste_mode not in _PASTE_MODES:
            raise BuildError(f'FCNMaskHead: paste_mode must be one of {_PASTE_MODES}, got '
                             f'{paste_mode!r}', key_path=['paste_mode'])
        self.num_convs = num_convs
        self.roi_feat_size = roi_feat_size
        self.in_channels = in_channels
        self.conv_out_channels = conv_out_channels
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.upsample_method = up_type
        self.scale_factor = scale
        self.paste_mode = paste_mode
        self.convs = nn.ModuleList()
        for i in range(num_convs):
            self.convs.append(ConvModule(
                in_channels if i == 0 else conv_out_channels, conv_out_channels,
                conv_kernel_size, padding=(conv_kernel_size - 1) // 2, conv_cfg=conv_cfg,
                norm_cfg=norm_cfg))
        up_in = conv_out_channels if num_convs > 0 else in_channels
        if up_type == 'deconv':
            self.upsample = nn.ConvTranspose2d(up_in, conv_out_channels, scale, stride=scale)
        elif up_type is None:
            self.upsample = None
        else:
            self.upsample = nn.Upsample(scale_factor=scale, mode=up_type,
                                        align_corners=False if up_type == 'bilinear' else None)
        logits_in = conv_out_channels if up_type == 'deconv' else up_in
        self.conv_logits = nn.Conv2d(logits_in, 1 if class_agnostic else num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        loss_mask = dict(loss_mask)
        self.loss_mask = LOSSES.build(loss_mask)
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-normal (fan_out) deconv and logits, zero biases (MMDetection 2.x)."""
        for m in (self.upsample, self.conv_logits):
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(n, in_channels, s, s)`` -> ``(n, C, 2s, 2s)`` logits."""
        for conv in self.convs:
            x = conv(x)
        if self.upsample is not None:
            x = self.upsample(x)
            if self.upsample_method == 'deconv':
                x = self.relu(x)
        return self.conv_logits(x)

    # ------------------------------------------------------------------ training
    def get_targets(self, sampling_results, gt_masks, rcnn_train_cfg) -> Tensor:
        # the RoI head passes its RoITrainConfig; a dict (direct use) is checked the same way
        cfg = RoITrainConfig.parse(rcnn_train_cfg) if rcnn_train_cfg is not None else None
        if cfg is None:
            return mask_target(sampling_results, gt_masks, RoITrainConfig.mask_size)
        return mask_target(sampling_results, gt_masks, cfg.mask_size, cfg.mask_target_aligned,
                           cfg.mask_target_binarize)

    def loss(self, mask_pred: Tensor, mask_targets: Tensor, labels: Tensor) -> dict:
        """BCE of each positive RoI's own-class logits against its target (mean per pixel)."""
        if mask_pred.size(0) == 0:
            loss = mask_pred.sum()  # no positives: a zero that keeps the graph
        elif self.class_agnostic:
            loss = self.loss_mask(mask_pred, mask_targets, torch.zeros_like(labels))
        else:
            loss = self.loss_mask(mask_pred, mask_targets, labels)
        return dict(loss_mask=loss)

    # ------------------------------------------------------------------ testing
    def mask_probs(self, mask_pred: Tensor, labels: Tensor) -> Tensor:
        """``(n, C, m, m)`` logits -> ``(n, m, m)`` sigmoid probabilities of each box's class."""
        if self.class_agnostic or mask_pred.size(1) == 1:
            return mask_pred[:, 0].sigmoid()
        return mask_pred[torch.arange(len(labels), device=labels.device), labels].sigmoid()

    def get_seg_masks(self, mask_pred: Tensor, det_bboxes: Tensor, det_labels: Tensor,
                      rcnn_test_cfg, ori_shape, scale_factor, rescale: bool) -> list[list]:
        """Per class lists of bool ``(h, w)`` masks, ``(h, w)`` the original image size when
        ``rescale`` (else the network input size).

        Args:
            mask_pred: ``(n, C, m, m)`` logits of the detections.
            det_bboxes: ``(n, 4+)`` boxes in network-input pixels (where the RoIs were).
            scale_factor: ``[w, h, w, h]`` input / original.
        """
        return self.paste_seg_masks(self.mask_probs(mask_pred, det_labels), det_bboxes,
                                    det_labels, rcnn_test_cfg, ori_shape, scale_factor, rescale)

    def paste_seg_masks(self, probs: Tensor, det_bboxes: Tensor, det_labels: Tensor,
                        rcnn_test_cfg, ori_shape, scale_factor, rescale: bool) -> list[list]:
        """:meth:`get_seg_masks` from ``(n, m, m)`` probabilities (e.g. averaged over the
        stages of a cascade)."""
        cfg = RoITestConfig.parse(rcnn_test_cfg) if rcnn_test_cfg is not None else None
        threshold = cfg.mask_thr_binary if cfg is not None else RoITestConfig.mask_thr_binary
        segms = [[] for _ in range(self.num_classes)]
        if len(det_bboxes) == 0:
            return segms
        boxes = det_bboxes[:, :4]
        sf = torch.as_tensor(np.asarray(scale_factor, dtype=np.float32).reshape(-1),
                             device=boxes.device)
        if rescale:
            img_h, img_w = (int(v) for v in ori_shape[:2])
            boxes = boxes / sf
        else:
            img_h = int(np.round(ori_shape[0] * float(sf[1 % len(sf)])))
            img_w = int(np.round(ori_shape[1] * float(sf[0])))
        masks = paste_masks(probs, boxes, img_h, img_w, threshold, self.paste_mode)
        masks = masks.cpu().numpy()
        for m, label in zip(masks, det_labels.tolist()):
            segms[label].append(m)
        return segms
