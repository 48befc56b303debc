"""Multi-image mixing (Mosaic, MixUp in MultiImageMixDataset) and the optional Albu bridge."""
import random

import numpy as np
import pytest

from detforge.data import MultiImageMixDataset, build_dataset
from detforge.data.pipelines.mix import Mosaic, MixUp
from detforge.registry import BuildError

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def _part(h, w, box, label, value):
    return dict(img=np.full((h, w, 3), value, np.uint8), img_shape=(h, w, 3),
                gt_bboxes=np.array([box], np.float32), gt_labels=np.array([label]),
                bbox_fields=['gt_bboxes'])


def test_mosaic_places_each_image_in_its_quadrant():
    # four 100x100 images, centre fixed at (100, 100) on a 200x200 canvas
    parts = [_part(100, 100, (10, 20, 30, 40), k, 10 * (k + 1)) for k in range(4)]
    results = dict(parts[0], mix_results=parts[1:])
    r = Mosaic(img_scale=(100, 100), center_ratio_range=(1.0, 1.0))(results)
    assert r['img'].shape == (200, 200, 3)
    assert r['img'][50, 50, 0] == 10 and r['img'][50, 150, 0] == 20
    assert r['img'][150, 50, 0] == 30 and r['img'][150, 150, 0] == 40
    np.testing.assert_allclose(r['gt_bboxes'], [[10, 20, 30, 40], [110, 20, 130, 40],
                                                [10, 120, 30, 140], [110, 120, 130, 140]])
    assert r['gt_labels'].tolist() == [0, 1, 2, 3]


def test_mixup_keeps_the_boxes_of_both_images():
    random.seed(0)
    a = _part(100, 100, (10, 10, 50, 50), 0, 100)
    b = _part(100, 100, (20, 20, 80, 80), 1, 200)
    r = MixUp(img_scale=(100, 100), ratio_range=(1.0, 1.0), flip_ratio=0.0)(dict(a, mix_results=[b]))
    assert r['img'].dtype == np.uint8 and r['img'].shape == (100, 100, 3)
    assert r['img'][50, 50, 0] == 150  # 0.5 * 100 + 0.5 * 200
    np.testing.assert_allclose(r['gt_bboxes'], [[10, 10, 50, 50], [20, 20, 80, 80]])
    assert r['gt_labels'].tolist() == [0, 1]


def test_multi_image_mix_dataset_with_mosaic_on_bccd(repo_root):
    cfg = dict(type='MultiImageMixDataset', dataset=dict(
        type='CocoDataset', classes=BCCD_CLASSES, data_root=str(repo_root / 'data/bccd') + '/',
        ann_file='annotations/test.json',
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]),
        pipeline=[dict(type='Mosaic', img_scale=(120, 160)),
                  dict(type='Resize', img_scale=(320, 240), keep_ratio=True),
                  dict(type='DefaultFormatBundle'),
                  dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])])
    ds = build_dataset(cfg)
    assert isinstance(ds, MultiImageMixDataset) and len(ds) == 72
    random.seed(0)
    np.random.seed(0)
    s = ds[0]
    assert tuple(s['img'].shape) == (3, 240, 320)
    boxes = s['gt_bboxes'].numpy()
    assert len(boxes) > len(ds.get_ann_info(0)['bboxes'])  # boxes of four images
    assert (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 240).all()
    ds.update_skip_type_keys(['Mosaic'])
    assert len(ds[0]['gt_bboxes']) == len(ds.get_ann_info(0)['bboxes'])


def test_albu_without_albumentations_is_a_clear_error():
    try:
        import albumentations  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip('albumentations is installed; this checks the message given without it')
    from detforge.data import Compose
    with pytest.raises(BuildError, match=r'pip install albumentations.*\(in pipeline\.0\)'):
        Compose([dict(type='Albu', transforms=[dict(type='Blur')])])


def test_multi_image_mix_dataset_with_mixup_adds_the_other_images_boxes(repo_root):
    cfg = dict(type='MultiImageMixDataset', dataset=dict(
        type='CocoDataset', classes=BCCD_CLASSES, data_root=str(repo_root / 'data/bccd') + '/',
        ann_file='annotations/test.json',
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]),
        pipeline=[dict(type='MixUp', img_scale=(480, 640), ratio_range=(1.0, 1.0),
                       flip_ratio=0.0)])
    ds = build_dataset(cfg)
    random.seed(3)
    r = ds[5]
    # same-sized images, no jitter, no flip: the other image lands unmoved, so its boxes are
    # kept exactly and every pixel is the mean of the two images
    random.seed(3)
    other = ds.pipeline[0].get_indexes(ds.dataset)
    own, theirs = ds.dataset[5], ds.dataset[other]
    np.testing.assert_allclose(r['gt_bboxes'], np.concatenate([own['gt_bboxes'],
                                                               theirs['gt_bboxes']]))
    assert r['gt_labels'].tolist() == own['gt_labels'].tolist() + theirs['gt_labels'].tolist()
    mean = np.rint((own['img'].astype(np.float32) + theirs['img']) / 2)
    assert np.abs(r['img'].astype(np.float32) - mean).max() <= 1


class _FakeAlbumentations:
    """Just enough of albumentations' API for the bridge: Compose with BboxParams that drops
    boxes left without area (and their label_fields), and a Crop of the top-left corner."""

    class BboxParams:
        def __init__(self, format, label_fields=(), min_visibility=0.0):
            self.format, self.label_fields = format, list(label_fields)

    class Crop:
        def __init__(self, x_max, y_max, p=1.0):
            self.x_max, self.y_max = x_max, y_max

        def __call__(self, data):
            data['image'] = data['image'][:self.y_max, :self.x_max]
            data['bboxes'] = [[min(max(v, 0), m) for v, m in zip(b, [self.x_max, self.y_max] * 2)]
                              for b in data['bboxes']]
            return data

    class Compose:
        def __init__(self, transforms, bbox_params=None):
            self.transforms, self.bbox_params = transforms, bbox_params

        def __call__(self, **data):
            for t in self.transforms:
                data = t(data)
            keep = [i for i, b in enumerate(data['bboxes']) if b[2] > b[0] and b[3] > b[1]]
            data['bboxes'] = [data['bboxes'][i] for i in keep]
            for field in self.bbox_params.label_fields:
                data[field] = [data[field][i] for i in keep]
            return data


def test_albu_bridge_keeps_labels_with_their_boxes(monkeypatch):
    import sys
    from detforge.data import Compose
    monkeypatch.setitem(sys.modules, 'albumentations', _FakeAlbumentations)
    t = Compose([dict(type='Albu', transforms=[dict(type='Crop', x_max=60, y_max=50)],
                      bbox_params=dict(type='BboxParams', format='pascal_voc',
                                       label_fields=['gt_labels']),
                      update_pad_shape=True, skip_img_without_anno=True)])
    r = t(dict(_part(100, 200, (10, 20, 50, 60), 7, 0),
               gt_bboxes=np.array([[10, 20, 50, 60], [100, 0, 200, 100], [0, 0, 20, 40]],
                                  np.float32), gt_labels=np.array([1, 2, 0])))
    np.testing.assert_array_equal(r['gt_bboxes'], [[10, 20, 50, 50], [0, 0, 20, 40]])
    assert r['gt_bboxes'].dtype == np.float32
    assert r['gt_labels'].tolist() == [1, 0]  # the label of the dropped box went with it
    assert r['img_shape'] == r['pad_shape'] == (50, 60, 3)
    assert t(dict(_part(100, 200, (100, 60, 150, 90), 1, 0))) is None  # no box left


def _masked_part():
    """A 100x200 image with three boxes, each with a mask filling its box exactly."""
    from detforge.structures.masks import BitmapMasks
    boxes = np.array([[10, 20, 50, 60], [100, 0, 200, 100], [0, 0, 20, 40]], np.float32)
    masks = np.zeros((3, 100, 200), np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
        m[y1:y2, x1:x2] = 1
    return dict(_part(100, 200, (0, 0, 1, 1), 0, 0), gt_bboxes=boxes,
                gt_labels=np.array([1, 2, 0]), gt_masks=BitmapMasks(masks, 100, 200),
                mask_fields=['gt_masks'])


def _mask_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_albu_bridge_moves_masks_and_drops_them_with_their_boxes(monkeypatch):
    import sys
    from detforge.data import Compose

    class Crop(_FakeAlbumentations.Crop):
        def __call__(self, data):
            data = super().__call__(data)
            data['masks'] = [m[:self.y_max, :self.x_max] for m in data['masks']]
            return data

    fake = type('fake', (), dict(vars(_FakeAlbumentations), Crop=Crop))
    monkeypatch.setitem(sys.modules, 'albumentations', fake)
    t = Compose([dict(type='Albu', transforms=[dict(type='Crop', x_max=60, y_max=50)],
                      bbox_params=dict(type='BboxParams', format='pascal_voc',
                                       label_fields=['gt_labels']),
                      keymap=dict(img='image', gt_bboxes='bboxes'))])  # MMDet's usual keymap
    r = t(_masked_part())
    assert r['gt_labels'].tolist() == [1, 0]
    assert r['gt_masks'].masks.shape == (2, 50, 60)
    for box, mask in zip(r['gt_bboxes'], r['gt_masks'].masks):
        assert _mask_box(mask) == box.tolist()  # each mask still belongs to its box


def test_albu_with_the_real_albumentations_flips_and_crops_masks_with_boxes():
    A = pytest.importorskip('albumentations')  # optional dependency; the test above runs without
    from detforge.data import Compose
    t = Compose([dict(type='Albu',
                      transforms=[dict(type='HorizontalFlip', p=1.0),
                                  dict(type='Crop', x_min=0, y_min=0, x_max=120, y_max=70)],
                      bbox_params=dict(type='BboxParams', format='pascal_voc',
                                       label_fields=['gt_labels'], min_visibility=0.1))])
    r = t(_masked_part())
    # flipped in a 200-wide image: [150,20,190,60] (cut off), [0,0,100,100]->[0,0,100,70],
    # [180,0,200,40] (cut off); only the middle box is left, with its label and mask
    assert r['gt_labels'].tolist() == [2]
    np.testing.assert_allclose(r['gt_bboxes'], [[0, 0, 100, 70]])
    assert r['gt_masks'].masks.shape == (1, 70, 120)
    assert _mask_box(r['gt_masks'].masks[0]) == [0, 0, 100, 70]


def test_albu_refuses_polygon_masks_with_the_fix():
    from detforge.data import Compose
    from detforge.registry import DetforgeError
    from detforge.structures.masks import PolygonMasks
    pytest.importorskip('albumentations')
    t = Compose([dict(type='Albu', transforms=[dict(type='HorizontalFlip', p=1.0)])])
    r = dict(_masked_part(), filename='a.jpg',
             gt_masks=PolygonMasks([[np.array([0, 0, 10, 0, 10, 10], float)]] * 3, 100, 200))
    with pytest.raises(DetforgeError, match=r'a\.jpg.*poly2mask=True'):
        t(r)
