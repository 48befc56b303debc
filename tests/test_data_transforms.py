"""Each transform's effect on the image and the boxes, against hand-computed values."""
import cv2
import numpy as np
import pytest
import torch

from detforge.data import Compose
from detforge.data.pipelines.formatting import Collect, DefaultFormatBundle, ImageToTensor
from detforge.data.pipelines.loading import LoadImageFromFile, imdecode
from detforge.data.pipelines.test_time_aug import MultiScaleFlipAug
from detforge.data.pipelines.transforms import (Normalize, Pad, PhotoMetricDistortion,
                                                RandomCrop, RandomFlip, Resize,
                                                ResizeShortestEdge)
from detforge.registry import BuildError


def make_results(h=100, w=200, boxes=((10, 20, 50, 60),), labels=None):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :]  # blue channel encodes x (w <= 256)
    img[..., 1] = np.arange(h, dtype=np.uint8)[:, None]  # green channel encodes y
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    labels = np.arange(len(boxes), dtype=np.int64) if labels is None else np.array(labels)
    return dict(img=img, img_shape=img.shape, ori_shape=img.shape, img_fields=['img'],
                gt_bboxes=boxes, gt_labels=labels, bbox_fields=['gt_bboxes'], filename='x.jpg')


def test_resize_keep_ratio_follows_mmdet_rule_and_scales_boxes():
    r = Resize(img_scale=(1333, 800), keep_ratio=True)(make_results())
    # factor = min(1333 / 200, 800 / 100) = 6.665 -> (int(1333.0 + .5), int(666.5 + .5))
    assert r['img'].shape == (667, 1333, 3) and r['img'].dtype == np.uint8
    np.testing.assert_allclose(r['scale_factor'], [1333 / 200, 667 / 100] * 2, rtol=1e-6)
    np.testing.assert_allclose(r['gt_bboxes'], [[66.65, 133.4, 333.25, 400.2]], rtol=1e-5)
    assert r['img_shape'] == r['pad_shape'] == (667, 1333, 3) and r['keep_ratio']


def test_resize_bccd_recipe_gives_427x320():
    r = Resize(img_scale=(427, 320))(make_results(480, 640, [(259, 176, 490, 375)]))
    assert r['img'].shape == (320, 427, 3)
    np.testing.assert_allclose(r['gt_bboxes'], [[259 * 427 / 640, 176 * 2 / 3, 490 * 427 / 640,
                                                 375 * 2 / 3]], rtol=1e-6)


def test_resize_without_keep_ratio_and_clipping():
    r = Resize(img_scale=(100, 100), keep_ratio=False)(make_results(boxes=[(150, 20, 250, 60)]))
    assert r['img'].shape == (100, 100, 3)
    np.testing.assert_allclose(r['gt_bboxes'], [[75, 20, 100, 60]])  # x2 = 125 clipped to 100


def test_resize_multiscale_value_picks_one_of_the_scales():
    t = Resize(img_scale=[(400, 100), (600, 300)], multiscale_mode='value')
    np.random.seed(0)
    shapes = {t(make_results())['img'].shape[:2] for _ in range(20)}
    assert shapes == {(100, 200), (300, 600)}


def test_resize_range_and_ratio_range_stay_within_bounds():
    np.random.seed(1)
    t = Resize(img_scale=[(400, 100), (600, 300)], multiscale_mode='range')
    for _ in range(10):
        scale = t(make_results())['scale']
        assert 400 <= scale[0] <= 600 and 100 <= scale[1] <= 300
    t = Resize(img_scale=(400, 200), ratio_range=(0.5, 1.0))
    for _ in range(10):
        h, w = t(make_results())['img'].shape[:2]
        assert 50 <= h <= 200 and 100 <= w <= 400



def test_resize_ratio_range_scales_the_single_scale_by_the_drawn_ratio():
    np.random.seed(5)  # first draw 0.22199 -> ratio 0.5 + 0.5 * 0.22199 = 0.61100
    r = Resize(img_scale=(400, 200), ratio_range=(0.5, 1.0))(make_results())
    # scale (int(400 * 0.611), int(200 * 0.611)) = (244, 122); the 200x100 image fits it
    # with factor min(244 / 200, 122 / 100) = 1.22 -> 244x122
    assert r['scale'] == (244, 122) and r['img'].shape == (122, 244, 3)
    np.testing.assert_allclose(r['gt_bboxes'], [[12.2, 24.4, 61, 73.2]], rtol=1e-5)

@pytest.mark.parametrize('direction,expected', [
    ('horizontal', [150, 20, 190, 60]), ('vertical', [10, 40, 50, 80]),
    ('diagonal', [150, 40, 190, 80])])
def test_flip_moves_boxes_as_mmdet(direction, expected):
    r = RandomFlip(flip_ratio=1.0, direction=direction)(make_results())
    np.testing.assert_array_equal(r['gt_bboxes'], [expected])
    assert r['flip'] and r['flip_direction'] == direction
    if direction == 'horizontal':
        assert r['img'][0, 0, 0] == 199 and r['img'][0, 199, 0] == 0  # x encoded in blue


def test_flip_prob_alias_and_no_flip():
    r = RandomFlip(prob=0.0)(make_results())
    assert not r['flip'] and r['flip_direction'] is None
    np.testing.assert_array_equal(r['gt_bboxes'], [[10, 20, 50, 60]])


def test_flip_list_of_directions_draws_each_with_its_ratio():
    np.random.seed(0)
    t = RandomFlip(flip_ratio=[0.5, 0.5], direction=['horizontal', 'vertical'])
    seen = {t(make_results())['flip_direction'] for _ in range(30)}
    assert seen == {'horizontal', 'vertical'}
    with pytest.raises(BuildError):
        RandomFlip(flip_ratio=[0.8, 0.5], direction=['horizontal', 'vertical'])


def test_resize_shortest_edge_rounds_as_detectron2():
    t = ResizeShortestEdge(short_edge_length=40, sample_style='choice')
    assert t(make_results(60, 125))['img'].shape[:2] == (40, 83)   # 83.33 -> 83
    assert t(make_results(60, 127))['img'].shape[:2] == (40, 85)   # 84.67 -> 85 (not floor)
    t = ResizeShortestEdge(min_size=(100,), max_size=150, sample_style='choice')
    r = t(make_results(100, 200))
    assert r['img'].shape[:2] == (75, 150)  # long side capped: scale 0.75
    np.testing.assert_allclose(r['gt_bboxes'], [[7.5, 15, 37.5, 45]])
    np.random.seed(0)
    t = ResizeShortestEdge(short_edge_length=(20, 30), sample_style='range')
    assert all(20 <= min(t(make_results())['img'].shape[:2]) <= 30 for _ in range(10))


def test_random_crop_shifts_clips_and_drops_boxes():
    np.random.seed(3)
    boxes = [(10, 20, 50, 60), (150, 20, 190, 60), (0, 0, 200, 100)]
    r = RandomCrop(crop_size=(100, 80))(make_results(boxes=boxes))
    off = int(r['img'][0, 0, 0])  # blue encodes the original x
    assert r['img'].shape == (100, 80, 3)
    expected = np.array(boxes, np.float32) - [off, 0, off, 0]
    expected[:, 0::2] = expected[:, 0::2].clip(0, 80)
    keep = expected[:, 2] > expected[:, 0]
    np.testing.assert_allclose(r['gt_bboxes'], expected[keep])
    np.testing.assert_array_equal(r['gt_labels'], np.arange(3)[keep])


def test_random_crop_without_boxes_left_drops_the_sample_unless_allowed():
    np.random.seed(0)
    t = RandomCrop(crop_size=(10, 10))
    outcomes = [t(make_results(boxes=[(195, 95, 200, 100)])) for _ in range(5)]
    assert any(o is None for o in outcomes)
    t = RandomCrop(crop_size=(10, 10), allow_negative_crop=True)
    assert all(t(make_results(boxes=[(195, 95, 200, 100)])) is not None for _ in range(5))


def test_photometric_distortion_keeps_uint8_and_boxes():
    np.random.seed(0)
    r = PhotoMetricDistortion()(make_results())
    assert r['img'].dtype == np.uint8 and r['img'].shape == (100, 200, 3)
    np.testing.assert_array_equal(r['gt_bboxes'], [[10, 20, 50, 60]])


NEUTRAL = dict(brightness_delta=0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)


@pytest.fixture
def every_step_at_its_upper_bound(monkeypatch):
    """Every coin flip says 'apply', every draw is its range's upper end, contrast comes
    first, and the channel permutation reverses BGR: each step's effect is then exact."""
    monkeypatch.setattr(np.random, 'randint', lambda *a, **k: 1)
    monkeypatch.setattr(np.random, 'uniform', lambda low, high: high)
    monkeypatch.setattr(np.random, 'permutation', lambda n: np.arange(n)[::-1])


def _with_gray(results):
    results['img'][..., 2] = 100  # red constant: a colourful image with saturation < 1
    return results


@pytest.mark.parametrize('options,expected', [
    (dict(brightness_delta=20), lambda img: np.clip(img + 20.0, 0, 255)),
    (dict(contrast_range=(0.5, 1.25)), lambda img: np.clip(np.rint(img * 1.25), 0, 255)),
])
def test_photometric_distortion_brightness_and_contrast(every_step_at_its_upper_bound,
                                                        options, expected):
    results = _with_gray(make_results())
    img = results['img'].astype(np.float32)
    out = PhotoMetricDistortion(**dict(NEUTRAL, **options))(results)['img']
    # the last step reversed the channels (patched permutation)
    np.testing.assert_allclose(out[..., ::-1], expected(img), atol=1)


def test_photometric_distortion_saturation_and_hue(every_step_at_its_upper_bound):
    results = _with_gray(make_results())
    hsv_in = cv2.cvtColor(results['img'].astype(np.float32), cv2.COLOR_BGR2HSV)
    out = PhotoMetricDistortion(**dict(NEUTRAL, saturation_range=(1, 1.5)))(
        _with_gray(make_results()))['img'][..., ::-1]
    hsv_out = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_BGR2HSV)
    inside = hsv_in[..., 1] * 1.5 < 0.95  # where the result stays a valid saturation
    np.testing.assert_allclose(hsv_out[..., 1][inside], hsv_in[..., 1][inside] * 1.5, atol=0.02)
    out = PhotoMetricDistortion(**dict(NEUTRAL, hue_delta=18))(
        _with_gray(make_results()))['img'][..., ::-1]
    hsv_out = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_BGR2HSV)
    colourful = hsv_in[..., 1] > 0.3
    shift = np.mod(hsv_out[..., 0] - hsv_in[..., 0], 360)[colourful]
    np.testing.assert_allclose(np.median(shift), 18, atol=1)


def test_photometric_distortion_channel_swap(every_step_at_its_upper_bound):
    results = make_results()
    before = results['img'].copy()
    out = PhotoMetricDistortion(**NEUTRAL)(results)['img']
    np.testing.assert_array_equal(out, before[..., ::-1])


def test_normalize_and_pad_only_record_for_uint8_images():
    results = make_results(100, 200)
    before = results['img'].copy()
    r = Pad(size_divisor=32)(Normalize(mean=[1, 2, 3], std=[4, 5, 6], to_rgb=True)(results))
    np.testing.assert_array_equal(r['img'], before)
    assert r['img_norm_cfg']['to_rgb'] is True
    np.testing.assert_array_equal(r['img_norm_cfg']['mean'], np.float32([1, 2, 3]))
    assert r['pad_shape'] == (128, 224, 3) and r['pad_size_divisor'] == 32
    assert Pad(size=(120, 250))(make_results())['pad_shape'] == (120, 250, 3)


def test_normalize_float_image_as_mmdet():
    results = make_results()
    results['img'] = results['img'].astype(np.float32)
    r = Normalize(mean=[1, 2, 3], std=[2, 2, 2], to_rgb=True)(results)
    x = make_results()['img'][5, 7].astype(np.float32)
    np.testing.assert_allclose(r['img'][5, 7], (x[::-1] - [1, 2, 3]) / 2)


def test_format_bundle_and_collect_make_contract_sample():
    r = Pad(size_divisor=32)(Resize(img_scale=(300, 150))(make_results()))
    r = Collect(keys=['img', 'gt_bboxes', 'gt_labels'])(DefaultFormatBundle()(r))
    assert r['img'].dtype == torch.uint8 and r['img'].shape == (3, 150, 300)
    assert r['img'].is_contiguous()
    assert r['gt_bboxes'].dtype == torch.float32 and r['gt_labels'].dtype == torch.int64
    assert r['img_metas']['pad_shape'] == (160, 320, 3)
    assert r['img_metas']['pad_size_divisor'] == 32
    assert set(r) == {'img', 'img_metas', 'gt_bboxes', 'gt_labels'}


def test_multiscale_flip_aug_makes_one_sample_per_scale_and_flip():
    t = MultiScaleFlipAug(img_scale=[(300, 150), (600, 300)], flip=True, transforms=[
        dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
        dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])
    r = t(make_results())
    assert len(r['img']) == 4
    assert [m['flip'] for m in r['img_metas']] == [False, True, False, True]
    assert [tuple(i.shape) for i in r['img']] == [(3, 150, 300)] * 2 + [(3, 300, 600)] * 2


def test_transforms_print_their_arguments():
    text = repr(Compose([dict(type='Resize', img_scale=(1333, 800)),
                         dict(type='RandomFlip', flip_ratio=0.5)]))
    assert 'Resize(img_scale=[(1333, 800)]' in text and 'flip_ratio=0.5' in text


def test_unknown_transform_names_its_place_in_the_pipeline():
    with pytest.raises(BuildError, match=r"'RandomFlop'.*RandomFlip.*pipeline\.1"):
        Compose([dict(type='Resize', img_scale=(10, 10)), dict(type='RandomFlop')])


def _exif_jpeg(path, orientation):
    from PIL import Image
    img = Image.new('RGB', (40, 20))
    img.paste((255, 0, 0), (0, 0, 20, 20))   # left half red
    img.paste((0, 0, 255), (20, 0, 40, 20))  # right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, quality=100, exif=exif.tobytes())


def test_load_image_applies_exif_orientation(tmp_path):
    _exif_jpeg(tmp_path / 'rot.jpg', 6)  # displayed rotated 90 degrees clockwise
    load = LoadImageFromFile()
    r = load(dict(img_prefix=str(tmp_path), img_info=dict(filename='rot.jpg')))
    img = r['img']
    assert img.shape == (40, 20, 3) and img.dtype == np.uint8 and r['ori_shape'] == img.shape
    # the left (red) half is now on top; BGR order
    assert img[5, 10].tolist() == pytest.approx([0, 0, 255], abs=8)
    assert img[35, 10].tolist() == pytest.approx([255, 0, 0], abs=8)
    raw = LoadImageFromFile(ignore_exif=True)(dict(img_prefix=str(tmp_path),
                                                   img_info=dict(filename='rot.jpg')))
    assert raw['img'].shape == (20, 40, 3)


@pytest.mark.parametrize('orientation', [2, 3, 4, 5, 7, 8])
def test_every_exif_orientation_matches_pillow(tmp_path, orientation):
    from PIL import Image, ImageOps
    path = tmp_path / f'o{orientation}.jpg'
    _exif_jpeg(path, orientation)
    ours = imdecode(path.read_bytes())
    with Image.open(path) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert('RGB'))[..., ::-1]
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 3


def test_grayscale_and_float32_loading(bccd_voc_root):
    info = dict(img_prefix=str(bccd_voc_root / 'JPEGImages'),
                img_info=dict(filename='BloodImage_00000.jpg'))
    gray = LoadImageFromFile(color_type='grayscale')(dict(info))
    assert gray['img'].shape == (480, 640)
    f = LoadImageFromFile(to_float32=True)(dict(info))
    assert f['img'].dtype == np.float32 and f['img'].shape == (480, 640, 3)
    bundled = ImageToTensor()(dict(img=gray['img']))
    assert bundled['img'].shape == (1, 480, 640)


@pytest.mark.parametrize('view', ['plain', 'crop', 'reversed', 'gray', 'float32', 'rgba'])
def test_image_to_tensor_is_the_chw_transpose(view):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    img = {'plain': img, 'crop': img[5:25, 3:33], 'reversed': img[:, ::-1],
           'gray': img[..., 0], 'float32': img.astype(np.float32) / 7,
           'rgba': rng.integers(0, 255, (30, 40, 4), dtype=np.uint8)}[view]
    t = ImageToTensor()(dict(img=img))['img']
    expected = img[..., None] if img.ndim == 2 else img
    assert t.is_contiguous() and t.numpy().dtype == img.dtype
    np.testing.assert_array_equal(t.numpy(), expected.transpose(2, 0, 1))
