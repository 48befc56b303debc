"""RTMDet's training pipeline: RandomResize, YOLOXHSVRandomAug, CachedMosaic, CachedMixUp and
the PipelineSwitchHook (a real loader run with a worker process).

Boxes are checked against pixels: a solid marker colour is painted on real BCCD images
exactly under the ground-truth boxes; after a transform, every box must still cover marker
pixels and no marker pixel may lie outside the boxes."""
import logging
import random

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detforge.data import build_dataloader, build_dataset
from detforge.data.pipelines.compose import Compose
from detforge.data.pipelines.mix import CachedMixUp, CachedMosaic
from detforge.data.pipelines.transforms import RandomResize, YOLOXHSVRandomAug
from detforge.registry import BuildError

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')
MARKER = (255, 0, 255)  # BGR magenta: absent from the stained-cell photographs
# two boxes per image, away from each other; x1 y1 x2 y2 on the 640x480 BCCD images
PAINTED = np.array([[50, 60, 170, 150], [330, 210, 470, 350]], np.float32)


def _marker_mask(img: np.ndarray) -> np.ndarray:
    b, g, r = img[..., 0].astype(int), img[..., 1].astype(int), img[..., 2].astype(int)
    return (b > 200) & (r > 200) & (g < 60)


def _painted_bccd(repo_root, k: int) -> dict:
    """A real BCCD image with the PAINTED boxes filled with the marker, as results dict."""
    path = sorted((repo_root / 'data/bccd/JPEGImages').glob('*.jpg'))[k]
    img = cv2.imread(str(path))
    assert not _marker_mask(img).any()  # the marker colour is not in the photograph
    for x1, y1, x2, y2 in PAINTED.astype(int):
        img[y1:y2, x1:x2] = MARKER
    return dict(img=img, img_shape=img.shape, ori_shape=img.shape, filename=str(path),
                img_fields=['img'], gt_bboxes=PAINTED.copy(), gt_labels=np.array([0, 1]),
                bbox_fields=['gt_bboxes'])


def assert_boxes_on_marker(img: np.ndarray, boxes: np.ndarray, margin: int = 2) -> None:
    """Every box is filled with marker pixels (its interior, ``margin`` px in from the
    edges blurred by resizing) and no marker pixel lies outside the boxes grown by
    ``margin``."""
    mask = _marker_mask(img)
    h, w = mask.shape
    covered = np.zeros_like(mask)
    for x1, y1, x2, y2 in boxes:
        ix1, iy1 = int(np.ceil(x1)) + margin, int(np.ceil(y1)) + margin
        ix2, iy2 = int(np.floor(x2)) - margin, int(np.floor(y2)) - margin
        if ix2 > ix1 and iy2 > iy1:
            assert mask[iy1:iy2, ix1:ix2].mean() > 0.97, (x1, y1, x2, y2)
        covered[max(int(y1) - margin, 0):min(int(np.ceil(y2)) + margin, h),
                max(int(x1) - margin, 0):min(int(np.ceil(x2)) + margin, w)] = True
    assert not (mask & ~covered).any(), 'marker pixels outside every box'


def test_random_resize_moves_boxes_with_the_pixels(repo_root):
    t = RandomResize(scale=(320, 320), ratio_range=(0.5, 2.0), keep_ratio=True)
    sizes = set()
    for seed in range(4):
        np.random.seed(seed)
        r = t(_painted_bccd(repo_root, seed))
        h, w = r['img'].shape[:2]
        sizes.add((w, h))
        assert r['img_shape'][:2] == (h, w) and r['img'].dtype == np.uint8
        assert max(h, w) <= r['scale'][0] + 1 and w / h == pytest.approx(640 / 480, rel=0.02)
        np.testing.assert_allclose(r['gt_bboxes'], PAINTED * r['scale_factor'], rtol=1e-6)
        assert_boxes_on_marker(r['img'], r['gt_bboxes'])
    assert len(sizes) == 4  # the scale is drawn


def test_random_resize_scale_pairs_and_exact_size():
    np.random.seed(0)
    t = RandomResize(scale=[(100, 60), (140, 80)], keep_ratio=False)
    for _ in range(20):
        w, h = t.draw_scale()
        assert 100 <= w <= 140 and 60 <= h <= 80
    r = t(dict(img=np.zeros((50, 70, 3), np.uint8), gt_bboxes=np.array([[7, 5, 70, 50]], np.float32),
               bbox_fields=['gt_bboxes']))
    h, w = r['img'].shape[:2]
    assert (w, h) == r['scale']
    np.testing.assert_allclose(r['gt_bboxes'], [[7 * w / 70, 5 * h / 50, w, h]], rtol=1e-5)
    with pytest.raises(BuildError, match='ratio_range'):
        RandomResize(scale=[(100, 60), (140, 80)], ratio_range=(0.5, 2.0))
    with pytest.raises(BuildError, match='scale must be'):
        RandomResize(scale=320)


def test_yolox_hsv_keeps_shape_dtype_and_boxes_and_shifts_value(repo_root):
    aug = YOLOXHSVRandomAug(hue_delta=0, saturation_delta=0, value_delta=30)
    base = _painted_bccd(repo_root, 0)
    hsv_before = cv2.cvtColor(base['img'], cv2.COLOR_BGR2HSV).astype(int)
    seed = next(s for s in range(100) if (np.random.seed(s) or True)
                and abs(int(aug.draw_gains()[2])) >= 10)
    np.random.seed(seed)
    gain = int(aug.draw_gains()[2])
    np.random.seed(seed)
    r = aug(dict(base, img=base['img'].copy(), gt_bboxes=PAINTED.copy()))
    assert r['img'].shape == base['img'].shape and r['img'].dtype == np.uint8
    np.testing.assert_array_equal(r['gt_bboxes'], PAINTED)
    assert np.abs(r['img'].astype(int) - base['img']).mean() > 3  # the colour changed
    hsv_after = cv2.cvtColor(r['img'], cv2.COLOR_BGR2HSV).astype(int)
    # value shifted by the gain where it was not clipped (up to the 8-bit round trip)
    unclipped = (hsv_before[..., 2] + gain > 5) & (hsv_before[..., 2] + gain < 250)
    shift = hsv_after[..., 2][unclipped] - hsv_before[..., 2][unclipped]
    assert np.median(shift) == gain and np.abs(shift - gain).max() <= 2
    with pytest.raises(ValueError, match='uint8'):
        aug(dict(img=np.zeros((4, 4, 3), np.float32)))


def test_yolox_hsv_draws_all_three_gains_like_mmdetection():
    """The gains: uniform(-1, 1, 3) * deltas, each kept with probability 1/2, truncated."""
    aug = YOLOXHSVRandomAug(hue_delta=5, saturation_delta=30, value_delta=30)
    np.random.seed(7)
    expected = np.random.uniform(-1, 1, 3) * [5, 30, 30]
    expected = (expected * np.random.randint(0, 2, 3)).astype(np.int16)
    np.random.seed(7)
    np.testing.assert_array_equal(aug.draw_gains(), expected)
    gains = np.stack([aug.draw_gains() for _ in range(400)])
    assert (np.abs(gains) <= [5, 30, 30]).all()
    assert 0.3 < (gains[:, 1] == 0).mean() < 0.7  # zeroed about half of the time


def test_cached_mosaic_waits_for_its_cache_then_keeps_boxes_on_pixels(repo_root):
    t = CachedMosaic(img_scale=(320, 320), max_cached_images=6, random_pop=False)
    random.seed(0)
    for k in range(4):  # four images in the cache or fewer: passed through
        r = t(_painted_bccd(repo_root, k))
        assert r['img'].shape == (480, 640, 3)
    for k in range(4, 9):
        r = t(_painted_bccd(repo_root, k))
        assert r['img'].shape == (640, 640, 3)  # (2h, 2w)
        assert len(r['gt_bboxes']) > 2 and len(r['gt_labels']) == len(r['gt_bboxes'])
        assert_boxes_on_marker(r['img'], r['gt_bboxes'])
    assert len(t.cache) == 6  # oldest dropped
    assert t.cache.items[0]['filename'].endswith(
        sorted((repo_root / 'data/bccd/JPEGImages').glob('*.jpg'))[3].name)


def test_the_rtmdet_stage1_chain_keeps_boxes_on_pixels(repo_root):
    """CachedMosaic -> RandomResize -> RandomCrop -> RandomFlip as the BCCD config has them."""
    chain = Compose([
        dict(type='CachedMosaic', img_scale=(320, 320), max_cached_images=20, random_pop=False),
        dict(type='RandomResize', scale=(640, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(320, 320)),
        dict(type='RandomFlip', flip_ratio=0.5)])
    random.seed(1)
    np.random.seed(1)
    checked = 0
    for k in range(12):
        r = chain(_painted_bccd(repo_root, k))
        if r is None:  # a crop without boxes is redrawn by the data set
            continue
        assert r['img'].shape[:2] == (320, 320) or k < 4
        assert_boxes_on_marker(r['img'], r['gt_bboxes'])
        checked += 1
    assert checked >= 8


def _flat(h, w, box, channel):
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2, channel] = 200
    return dict(img=img, img_shape=img.shape, gt_bboxes=np.array([box], np.float32),
                gt_labels=np.array([channel]), bbox_fields=['gt_bboxes'])


def test_cached_mixup_blends_a_cached_image_and_its_moved_boxes():
    t = CachedMixUp(img_scale=(160, 120), ratio_range=(0.8, 0.8), flip_ratio=1.0,
                    max_cached_images=3, random_pop=False, prob=1.0)
    first = _flat(120, 160, (100, 30, 150, 90), 1)  # its box in the green channel
    r = t(first)
    assert r['img'] is first['img']  # one image in the cache: unchanged
    # a seed whose draws (prob, then the cache index) pick `first` from the cache of two
    seed = next(s for s in range(50) if random.seed(s) or (random.uniform(0, 1) is not None
                                                            and random.randint(0, 1) == 0))
    random.seed(seed)
    r = t(_flat(120, 160, (10, 10, 60, 50), 2))
    assert r['img'].shape == (120, 160, 3) and r['img'].dtype == np.uint8
    # the flipped, 0.8x other image: its green box (value 100 after blending) is where the
    # new box says: x mirrored in the 128 px wide scaled canvas, then the random crop
    other_box = r['gt_bboxes'][1]
    ys, xs = np.nonzero(r['img'][..., 1] >= 99)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], other_box,
                               atol=1.5)
    assert other_box[2] - other_box[0] == pytest.approx(50 * 0.8, abs=0.01)
    np.testing.assert_allclose(r['gt_bboxes'][0], [10, 10, 60, 50])
    assert r['img'][30, 30, 2] == 100  # 0.5 * 200 + 0.5 * 0, truncated as MMDetection


def test_cached_mixup_with_prob_zero_never_mixes_and_bad_sizes_are_refused():
    t = CachedMixUp(img_scale=(160, 120), prob=0.0)
    for _ in range(3):
        r = t(_flat(120, 160, (10, 10, 60, 50), 2))
        assert len(r['gt_bboxes']) == 1
    with pytest.raises(BuildError, match='max_cached_images'):
        CachedMosaic(max_cached_images=3)
    with pytest.raises(BuildError, match=r'\(w, h\)'):
        CachedMixUp(img_scale=(1, 2, 3))


# ------------------------------------------------------------------------- PipelineSwitchHook
class _ShapeRecorder(nn.Module):
    """A model whose train step records the batch's image size per epoch (no backward)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int]] = []

    def train_step(self, data, optimizer=None):
        self.seen.append(tuple(data['img'].data[0].shape[-2:]))
        return dict(loss=self.w.sum(), log_vars={}, num_samples=1)


def _pipeline(w, h):
    return [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', img_scale=(w, h), keep_ratio=False),
            dict(type='DefaultFormatBundle'),
            dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])]


@pytest.mark.parametrize('persistent', [False, True])
def test_pipeline_switch_hook_switches_at_its_epoch_with_a_worker(repo_root, tmp_path,
                                                                  persistent):
    from detforge.engine.hooks import PipelineSwitchHook
    from detforge.engine.runner import EpochBasedRunner
    ds = build_dataset(dict(type='CocoDataset', classes=BCCD_CLASSES,
                            data_root=str(repo_root / 'data/bccd') + '/',
                            ann_file='annotations/test.json', pipeline=_pipeline(64, 32)))
    loader = build_dataloader(ds, samples_per_gpu=24, workers_per_gpu=1, seed=0,
                              persistent_workers=persistent)
    model = _ShapeRecorder()
    runner = EpochBasedRunner(model, work_dir=str(tmp_path), max_epochs=3,
                              logger=logging.getLogger('test_pipeline_switch'))
    hook = PipelineSwitchHook(switch_epoch=2, switch_pipeline=_pipeline(96, 64))
    runner.register_hook(hook)
    runner.run([loader], [('train', 1)])
    per_epoch = len(loader)
    assert len(model.seen) == 3 * per_epoch
    assert set(model.seen[:2 * per_epoch]) == {(32, 64)}  # epochs 0 and 1: the first pipeline
    assert set(model.seen[2 * per_epoch:]) == {(64, 96)}  # epoch 2 on: the switched one
    assert hook.switched


def test_pipeline_switch_hook_refuses_a_bad_switch_pipeline_at_build_time():
    from detforge.registry import HOOKS, build_from_cfg
    with pytest.raises(BuildError, match=r'switch_pipeline\.1'):
        build_from_cfg(dict(type='PipelineSwitchHook', switch_epoch=1,
                            switch_pipeline=[dict(type='LoadImageFromFile'),
                                             dict(type='NoSuchTransform')]), HOOKS)
    with pytest.raises(BuildError, match='switch_epoch'):
        build_from_cfg(dict(type='PipelineSwitchHook', switch_epoch=-1, switch_pipeline=[]),
                       HOOKS)


def test_pipeline_switch_hook_goes_through_wrappers_to_the_mixing_pipeline(repo_root):
    """Through the loader's seeding wrapper and RepeatDataset to a MultiImageMixDataset: its
    mixing pipeline (Mosaic) is replaced; its inner data set keeps loading the images."""
    from types import SimpleNamespace
    from detforge.data import MultiImageMixDataset
    from detforge.engine.hooks import PipelineSwitchHook
    inner = dict(type='CocoDataset', classes=BCCD_CLASSES,
                 data_root=str(repo_root / 'data/bccd') + '/', ann_file='annotations/test.json',
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])
    ds = build_dataset(dict(type='RepeatDataset', times=2, dataset=dict(
        type='MultiImageMixDataset', dataset=inner,
        pipeline=[dict(type='Mosaic', img_scale=(120, 160))])))
    loader = build_dataloader(ds, samples_per_gpu=2, workers_per_gpu=0, seed=0)
    mix = ds.dataset
    assert isinstance(mix, MultiImageMixDataset)
    hook = PipelineSwitchHook(switch_epoch=3, switch_pipeline=[
        dict(type='Resize', img_scale=(160, 120), keep_ratio=False)])
    runner = SimpleNamespace(epoch=2, data_loader=loader, logger=logging.getLogger('t'))
    hook.before_train_epoch(runner)
    assert mix.pipeline_types == ['Mosaic'] and not hook.switched  # epoch 2 < 3
    runner.epoch = 3
    hook.before_train_epoch(runner)
    assert mix.pipeline_types == ['Resize'] and hook.switched
    assert ds[0]['img'].shape == (120, 160, 3)  # one image resized, no mosaic


def test_cached_transforms_take_mmdetection_3x_w_h_order():
    t = CachedMosaic(img_scale=(320, 240), max_cached_images=5)  # (w, h)
    for _ in range(6):
        r = t(dict(img=np.zeros((100, 200, 3), np.uint8), gt_labels=np.array([0]),
                   gt_bboxes=np.array([[1, 1, 5, 5]], np.float32), bbox_fields=['gt_bboxes']))
    assert r['img'].shape == (480, 640, 3)  # (2h, 2w)
    assert CachedMixUp(img_scale=(320, 240)).img_scale == (240, 320)  # stored (h, w) as MixUp
