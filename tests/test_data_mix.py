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
