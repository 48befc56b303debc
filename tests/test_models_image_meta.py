"""The per-image record: typed fields, read by key like MMDetection 2.x's dicts, geometry
updated in one place (a crop's pad_shape reaches collate)."""
import copy
import pickle

import numpy as np
import pytest
import torch

from detforge.data import ImageMeta, collate
from detforge.data.pipelines.compose import Compose


def _results(h=480, w=640):
    img = np.random.RandomState(0).randint(0, 255, (h, w, 3), dtype=np.uint8)
    return dict(img=img, img_shape=img.shape, ori_shape=img.shape, filename='a.jpg',
                ori_filename='a.jpg', img_fields=['img'], bbox_fields=['gt_bboxes'],
                gt_bboxes=np.array([[0., 0., 640., 480.]], np.float32), gt_labels=np.array([0]))


def test_random_crop_sets_pad_shape_so_collate_pads_the_crop_only():
    pipeline = Compose([
        dict(type='Resize', img_scale=(1333, 800), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(384, 384)),
        dict(type='DefaultFormatBundle'),
        dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
    ])
    sample = pipeline(_results())
    meta = sample['img_metas']
    assert meta['img_shape'][:2] == (384, 384) and meta['pad_shape'][:2] == (384, 384)
    batch = collate([sample])
    assert tuple(batch['img'].shape[-2:]) == (384, 384)  # was padded to 800 x 1088
    assert batch['img_metas'][0]['batch_input_shape'] == (384, 384)


def test_collect_makes_a_typed_record_read_by_key():
    pipeline = Compose([dict(type='Resize', img_scale=(320, 240), keep_ratio=True),
                        dict(type='RandomFlip', flip_ratio=1.0),
                        dict(type='Pad', size_divisor=32), dict(type='DefaultFormatBundle'),
                        dict(type='Collect', keys=['img'],
                             meta_keys=('filename', 'img_shape', 'pad_shape', 'scale_factor',
                                        'flip', 'flip_direction', 'keep_ratio'))])
    meta = pipeline(_results())['img_metas']
    assert isinstance(meta, ImageMeta)
    assert meta.img_shape == meta['img_shape'] == (240, 320, 3) and meta.flip is True
    assert meta.get('flip_direction') == 'horizontal' and meta['keep_ratio'] is True  # extra key
    assert 'ori_shape' not in meta and meta.get('ori_shape', 'absent') == 'absent'
    with pytest.raises(KeyError):
        meta['ori_shape']
    assert set(meta) == {'filename', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
                         'flip_direction', 'keep_ratio', 'pad_size_divisor'}
    again = pickle.loads(pickle.dumps(meta))
    assert again == meta and copy.deepcopy(meta) == meta.to_dict()
    np.testing.assert_allclose(again['scale_factor'], [0.5, 0.5, 0.5, 0.5])


def test_models_take_records_and_plain_dicts_alike(repo_root):
    from detforge.config import Config
    from detforge.models.builder import build_detector
    cfg = Config.fromfile(str(repo_root / 'configs/retinanet/retinanet_r18_fpn_1x_bccd.py'))
    cfg.model.test_cfg.score_thr = 0.0
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    img = torch.randint(0, 255, (1, 3, 64, 96), dtype=torch.uint8)
    plain = dict(img_shape=(64, 90, 3), ori_shape=(64, 90, 3), pad_shape=(64, 96, 3),
                 scale_factor=np.ones(4, np.float32), flip=False)
    with torch.no_grad():
        a = model(img=[img], img_metas=[[plain]], return_loss=False)
        b = model(img=[img], img_metas=[[ImageMeta.from_dict(plain)]], return_loss=False)
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
