"""Every entry point loads a config the same way (``detforge.compat.load_config``: file,
--cfg-options, then the 1.x upgrade), so an old config gives the trained model in ``infer``,
``export``, ``benchmark`` and the analysis tools just as in ``train``/``test``."""
import json

import numpy as np
import torch

from detforge.cli import main as cli_main
from detforge.compat import load_config

OLD_CONFIG = '''
# a 1.x-style RetinaNet: num_classes counts the background, anchor_*/target_* head keys,
# top-level train_cfg/test_cfg
model = dict(
    type='RetinaNet',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
                  norm_eval=False, style='pytorch'),
    neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=32, start_level=1,
              add_extra_convs=True, num_outs=5),
    bbox_head=dict(type='RetinaHead', num_classes=4, in_channels=32, stacked_convs=1,
                   feat_channels=32, octave_base_scale=4, scales_per_octave=3,
                   anchor_ratios=[0.5, 1.0, 2.0], anchor_strides=[8, 16, 32, 64, 128],
                   target_means=[.0, .0, .0, .0], target_stds=[1.0, 1.0, 1.0, 1.0],
                   loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                                 loss_weight=1.0),
                   loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0)))
train_cfg = dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                               min_pos_iou=0, ignore_iof_thr=-1),
                 allowed_border=-1, pos_weight=-1, debug=False)
test_cfg = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0, nms=dict(type='nms', iou_thr=0.5),
                max_per_img=100)
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(213, 160), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])]
data = dict(imgs_per_gpu=1, workers_per_gpu=0,
            test=dict(type='CocoDataset', classes=('RBC', 'WBC', 'Platelets'),
                      ann_file='unused.json', img_prefix='', pipeline=test_pipeline))
'''


def _trained(tmp_path):
    """The old config, and a checkpoint of the model that train would build from it."""
    cfg_file = tmp_path / 'old_retinanet.py'
    cfg_file.write_text(OLD_CONFIG)
    from detforge.models.builder import build_detector
    torch.manual_seed(0)
    model = build_detector(load_config(str(cfg_file)).model).eval()
    with torch.no_grad():  # "trained": predictors far from their initialisation
        for name, p in model.named_parameters():
            if 'retina_' in name:
                p.normal_(0, 0.2)
    ckpt = tmp_path / 'old_retinanet.pth'
    torch.save({'state_dict': model.state_dict(),
                'meta': {'CLASSES': ('RBC', 'WBC', 'Platelets')}}, ckpt)
    return cfg_file, ckpt, model


def test_init_detector_upgrades_an_old_config_and_loads_every_weight(tmp_path):
    from detforge.apis.inference import init_detector
    cfg_file, ckpt, trained = _trained(tmp_path)
    assert trained.bbox_head.num_classes == 3
    model = init_detector(str(cfg_file), str(ckpt))
    assert model.bbox_head.num_classes == 3
    expected = trained.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], msg=name)


def test_infer_cli_with_an_old_config_gives_the_trained_detections(tmp_path, repo_root):
    from detforge.apis.inference import inference_detector
    cfg_file, ckpt, trained = _trained(tmp_path)
    trained.cfg = load_config(str(cfg_file))
    image = repo_root / 'data' / 'bccd' / 'images' / 'test'
    image = sorted(image.iterdir())[0] if image.is_dir() else \
        sorted((repo_root / 'data' / 'bccd').rglob('*.jpg'))[0]
    assert cli_main(['infer', str(cfg_file), str(ckpt), str(image), '--out',
                     str(tmp_path / 'out'), '--score-thr', '0']) == 0
    (dets,) = json.loads((tmp_path / 'out' / 'detections.json').read_text())['detections'].values()
    expected = np.vstack(inference_detector(trained, str(image)))
    got = np.array([d['bbox'] + [d['score']] for d in dets], np.float32)
    assert len(got) == len(expected) > 0
    # detections.json rounds boxes to 0.01 px and scores to 1e-4: match each expected
    # detection to its nearest written one
    dist = np.abs(expected[:, None, :4] - got[None, :, :4]).max(-1)
    nearest = dist.argmin(1)
    assert dist.min(1).max() < 0.01 and len(set(nearest.tolist())) == len(expected)
    np.testing.assert_allclose(got[nearest, 4], expected[:, 4], atol=1e-4)


def test_analysis_tools_and_train_load_configs_the_same_way(tmp_path):
    from detforge.commands import _analysis_common, train
    cfg_file, _, _ = _trained(tmp_path)
    for load in (train.load_config, _analysis_common.load_config):
        cfg = load(str(cfg_file), None)
        assert cfg.model.bbox_head.num_classes == 3 and 'train_cfg' in cfg.model
