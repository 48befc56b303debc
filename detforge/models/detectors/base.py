"""The detector base class: preprocessing, the train/test entry points and loss parsing."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from detforge.registry import DetforgeError

__all__ = ['BaseDetector', 'IMAGENET_RGB']

#: ImageNet statistics ×255, RGB order (what torchvision's and MMDetection's models expect)
IMAGENET_RGB = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)


def _to_device(x, device):
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    return x


class BaseDetector(nn.Module):
    """Base of all detectors.

    Subclasses implement :meth:`extract_feat`, :meth:`forward_train`, :meth:`simple_test` and
    (optionally) :meth:`aug_test`. Images enter as uint8 BGR batches ``(B, 3, H, W)`` padded at
    the bottom/right; :meth:`preprocess` turns them into normalised float on the model's device.

    Args:
        data_preprocessor: ``dict(mean=[3], std=[3], to_rgb=bool)`` used when the image metas
            carry no ``img_norm_cfg`` (mean/std in the order of the channels after the flip).
        init_cfg: initialisation config (``dict(type='Pretrained', checkpoint=...)``).
    """

    def __init__(self, data_preprocessor: dict | None = None, init_cfg: dict | None = None):
        super().__init__()
        cfg = dict(IMAGENET_RGB)
        cfg.update(data_preprocessor or {})
        self.data_preprocessor = cfg
        self.init_cfg = init_cfg
        self.fp16_enabled = False
        self._norm_cache: dict = {}

    # ------------------------------------------------------------------ properties
    @property
    def with_neck(self) -> bool:
        return getattr(self, 'neck', None) is not None

    @property
    def with_bbox(self) -> bool:
        return getattr(self, 'bbox_head', None) is not None or (
            getattr(self, 'roi_head', None) is not None and getattr(self.roi_head, 'with_bbox', False))

    @property
    def with_shared_head(self) -> bool:
        return getattr(self, 'roi_head', None) is not None and getattr(self.roi_head, 'with_shared_head', False)

    @property
    def with_mask(self) -> bool:
        return False

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device('cpu')

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Initialise the parts (each part's ``init_weights``, e.g. loading pretrained backbone
        weights). Call it once after building, before training."""
        from detforge.models.weight_init import INITIALIZERS, initialize
        for module in self.children():
            if hasattr(module, 'init_weights'):
                module.init_weights()
        # the parts' init_cfg (Normal, Xavier, ...; see models/weight_init.py) win over their
        # default initialisation, outermost first (recorded by build_detector)
        for part, init_cfg in getattr(self, '_init_cfgs', ()):
            initialize(part, init_cfg)
        cfg = self.init_cfg
        if isinstance(cfg, (list, tuple)):
            cfg = next((c for c in cfg if c.get('type') == 'Pretrained'), None)
        if cfg and cfg.get('type') not in INITIALIZERS:
            if cfg.get('type') != 'Pretrained' or 'checkpoint' not in cfg:
                raise DetforgeError(f"model.init_cfg must be dict(type='Pretrained', checkpoint=...), got {cfg!r}")
            from detforge.models.pretrained import load_pretrained_state_dict
            state = load_pretrained_state_dict(cfg['checkpoint'])
            self.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ preprocessing
    def _norm_tensors(self, norm_cfg: dict, device, dtype):
        mean = np.asarray(norm_cfg['mean'], dtype=np.float32).reshape(-1)
        std = np.asarray(norm_cfg['std'], dtype=np.float32).reshape(-1)
        key = (mean.tobytes(), std.tobytes(), str(device), dtype)
        cached = self._norm_cache.get(key)
        if cached is None:
            cached = (torch.as_tensor(mean, device=device, dtype=dtype).view(1, -1, 1, 1),
                      torch.as_tensor(std, device=device, dtype=dtype).view(1, -1, 1, 1))
            self._norm_cache = {key: cached}
        return cached

    def preprocess(self, img: Tensor, img_metas: Sequence[dict]) -> Tensor:
        """uint8 BGR ``(B, 3, H, W)`` → float32 ``(B, 3, H, W)`` on the model's device:
        BGR→RGB if ``to_rgb``, ``(x - mean) / std``, zero outside each image's ``img_shape``.

        The norm config comes from ``img_metas[0]['img_norm_cfg']`` if present, else from
        ``data_preprocessor``. Floating inputs are taken as already normalised.
        """
        device = self.device
        img = img.to(device, non_blocking=True)
        if img.is_floating_point():
            return img
        if img.dim() != 4 or img.size(1) != 3:
            raise DetforgeError(f'images must be a (B, 3, H, W) batch, got shape {tuple(img.shape)}')
        norm_cfg = (img_metas[0].get('img_norm_cfg') if img_metas else None) or self.data_preprocessor
        x = img.float()
        if norm_cfg.get('to_rgb', False):
            x = x.flip(1)
        mean, std = self._norm_tensors(norm_cfg, device, x.dtype)
        x = (x - mean) / std
        # zero the padding so that it is "mean colour" for the network, as padding a
        # normalised image with 0 would give
        B, _, H, W = x.shape
        shapes = [m.get('img_shape', (H, W)) for m in img_metas]
        if any(s[0] < H or s[1] < W for s in shapes):
            hw = torch.tensor([[s[0], s[1]] for s in shapes], device=device)
            inside_y = torch.arange(H, device=device)[None, :] < hw[:, :1]  # (B, H)
            inside_x = torch.arange(W, device=device)[None, :] < hw[:, 1:]  # (B, W)
            mask = inside_y[:, None, :, None] & inside_x[:, None, None, :]
            x = x * mask
        return x

    # ------------------------------------------------------------------ to implement
    def extract_feat(self, img: Tensor):
        raise NotImplementedError

    def forward_train(self, img: Tensor, img_metas: list[dict], gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor], gt_bboxes_ignore: list[Tensor] | None = None,
                      **kwargs) -> dict:
        raise NotImplementedError

    def simple_test(self, img: Tensor, img_metas: list[dict], rescale: bool = True, **kwargs):
        raise NotImplementedError

    def aug_test(self, imgs: list[Tensor], img_metas: list[list[dict]], rescale: bool = True, **kwargs):
        raise NotImplementedError(f'{type(self).__name__} does not support test-time augmentation')

    # ------------------------------------------------------------------ entry points
    def forward(self, img, img_metas, return_loss: bool = True, **kwargs):
        """Training (``return_loss=True``): ``img`` is a batch, returns the losses dict.
        Testing: ``img`` is a list over augmentations of batches and ``img_metas`` a list over
        augmentations of lists of metas (a plain batch is accepted as one augmentation)."""
        if return_loss:
            kwargs = {k: _to_device(v, self.device) for k, v in kwargs.items()}
            return self.forward_train(img, img_metas, **kwargs)
        return self.forward_test(img, img_metas, **kwargs)

    def forward_test(self, imgs, img_metas, rescale: bool = True, **kwargs):
        if isinstance(imgs, Tensor):
            imgs, img_metas = [imgs], [img_metas]
        if not isinstance(imgs, (list, tuple)) or not isinstance(img_metas, (list, tuple)):
            raise DetforgeError(f'imgs and img_metas must be lists (one entry per augmentation), got '
                                f'{type(imgs).__name__} and {type(img_metas).__name__}')
        if len(imgs) != len(img_metas):
            raise DetforgeError(f'{len(imgs)} augmentations of images but {len(img_metas)} of metas')
        for metas in img_metas:
            for meta in metas:
                meta.setdefault('batch_input_shape', tuple(imgs[0].shape[-2:]))
        if len(imgs) == 1:
            if 'proposals' in kwargs:
                kwargs['proposals'] = kwargs['proposals'][0]
            return self.simple_test(imgs[0], img_metas[0], rescale=rescale, **kwargs)
        if imgs[0].size(0) != 1:
            raise DetforgeError(f'test-time augmentation runs on one image at a time, got a batch of '
                                f'{imgs[0].size(0)}')
        return self.aug_test(imgs, img_metas, rescale=rescale, **kwargs)

    @staticmethod
    def _parse_losses(losses: dict) -> tuple[Tensor, OrderedDict]:
        """Sum every entry whose key contains ``loss`` into the total loss, and make the log.

        Under DDP the log values are averaged over processes here, in one all-reduce (the
        runner does not reduce them again); the returned loss stays this process's own.

        Args:
            losses: ``{name: Tensor | list[Tensor] | number}`` from ``forward_train``; a list
                (one entry per feature level, say) counts as the sum of its means.

        Returns:
            ``(loss, log_vars)``: the scalar total loss (with its graph) and an
            ``OrderedDict[str, float]`` of every entry and ``loss``.
        """
        log_vars = OrderedDict()
        for name, value in losses.items():
            if isinstance(value, Tensor):
                log_vars[name] = value.mean()
            elif isinstance(value, (list, tuple)):
                log_vars[name] = sum(v.mean() for v in value)
            elif isinstance(value, (int, float)):
                log_vars[name] = torch.tensor(float(value))
            else:
                raise TypeError(f'{name} is not a tensor or a list of tensors: {type(value).__name__}')
        loss = sum(v for k, v in log_vars.items() if 'loss' in k)
        log_vars['loss'] = loss
        values = list(log_vars.values())
        stacked = torch.stack([v.detach().float().to(loss.device) for v in values])
        if dist.is_available() and dist.is_initialized():
            stacked = stacked.clone()
            dist.all_reduce(stacked.div_(dist.get_world_size()))
        for name, v in zip(list(log_vars), stacked.tolist()):  # one device-to-host copy
            log_vars[name] = v
        return loss, log_vars

    def train_step(self, data: dict, optimizer=None) -> dict:
        """The model's part of a training step: forward, losses, parse. Backward and the
        optimizer step follow in the runner's ``run_step`` (``detforge/engine/runner``).

        Args:
            data: a collated batch: ``img`` uint8 ``(B, 3, H, W)``, ``img_metas`` (B dicts),
                ``gt_bboxes`` (B float32 ``(n_i, 4)``), ``gt_labels`` (B int64 ``(n_i,)``), ...
            optimizer: unused (MMCV's signature; a model that steps itself may use it).

        Returns:
            ``dict(loss=Tensor, log_vars=OrderedDict[str, float], num_samples=B)``.
        """
        losses = self(**data)
        loss, log_vars = self._parse_losses(losses)
        return dict(loss=loss, log_vars=log_vars, num_samples=len(data['img_metas']))

    def val_step(self, data: dict, optimizer=None) -> dict:
        """Like :meth:`train_step`, on validation data (the runner does no backward).

        Args:
            data: a collated batch with ground truth, as for :meth:`train_step`.
            optimizer: unused.

        Returns:
            ``dict(loss=Tensor, log_vars=OrderedDict[str, float], num_samples=B)``.
        """
        losses = self(**data)
        loss, log_vars = self._parse_losses(losses)
        return dict(loss=loss, log_vars=log_vars, num_samples=len(data['img_metas']))

    # ------------------------------------------------------------------ visualisation
    def show_result(self, img, result, score_thr: float = 0.3, bbox_color=(72, 101, 241),
                    text_color=(72, 101, 241), mask_color=None, thickness: int = 2,
                    font_size: int = 13, win_name: str = '', show: bool = False, wait_time: float = 0,
                    out_file: str | None = None):
        """Draw ``result`` (a list over classes of ``(n, 5)`` arrays) on ``img`` (a BGR array
        or a path); write it to ``out_file`` if given and return the drawn BGR image."""
        from detforge.visualization.draw import imshow_det_bboxes
        if isinstance(img, (str, bytes)) or hasattr(img, '__fspath__'):
            import cv2
            path = str(img)
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise DetforgeError(f'cannot read the image {path}')
        img = np.ascontiguousarray(img).copy()
        if isinstance(result, tuple):
            result = result[0]
        bboxes = np.vstack([np.asarray(r, dtype=np.float32).reshape(-1, 5) for r in result]) \
            if len(result) else np.zeros((0, 5), np.float32)
        labels = np.concatenate([np.full(len(r), i, dtype=np.int64) for i, r in enumerate(result)]) \
            if len(result) else np.zeros((0,), np.int64)
        class_names = getattr(self, 'CLASSES', None) or [str(i) for i in range(len(result))]
        kwargs = dict(score_thr=score_thr, out_file=out_file)
        extra = dict(bbox_color=bbox_color, text_color=text_color, thickness=thickness,
                     font_size=font_size, win_name=win_name, show=show, wait_time=wait_time)
        import inspect
        accepted = inspect.signature(imshow_det_bboxes).parameters
        kwargs.update({k: v for k, v in extra.items() if k in accepted})
        return imshow_det_bboxes(img, bboxes, labels, class_names, **kwargs)
