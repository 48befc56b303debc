"""Fine-tuning a COCO-layout (80-class) checkpoint to BCCD's 3 classes through load_from."""
from __future__ import annotations

import logging
import sys

import pytest
import torch

from detforge.cli import main as _cli
from detforge.config import Config
from detforge.engine import load_checkpoint
from detforge.engine.checkpoint import summarize_load_from
from detforge.models import build_detector

from conftest import data_options

COCO_CLASSES = tuple(f'class{i}' for i in range(80))  # the count is what matters here
SMALL = ['model.backbone.depth=18', 'model.backbone.init_cfg=None',
         'model.neck.in_channels=[64,128,256,512]']


def _small_cfg(repo_root, name, num_classes):
    cfg = Config.fromfile(str(repo_root / 'configs' / name))
    cfg.model.backbone.update(depth=18, init_cfg=None)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    head = cfg.model.bbox_head if 'bbox_head' in cfg.model else cfg.model.roi_head.bbox_head
    head.num_classes = num_classes
    return cfg


def _coco_checkpoint(cfg, path):
    """A seeded random 80-class model saved the way MMDetection 2.x's zoo stores it."""
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    torch.save({'meta': {'mmdet_version': '2.28.2', 'CLASSES': COCO_CLASSES},
                'state_dict': model.state_dict()}, path)
    return model.state_dict()


@pytest.mark.parametrize('name,cls_keys', [
    ('retinanet/retinanet_r50_fpn_1x_finetune_bccd.py',
     {'bbox_head.retina_cls.weight': (720, 27), 'bbox_head.retina_cls.bias': (720, 27)}),
    ('faster_rcnn/faster_rcnn_r50_fpn_1x_finetune_bccd.py',
     {'roi_head.bbox_head.fc_cls.weight': (81, 4), 'roi_head.bbox_head.fc_cls.bias': (81, 4),
      'roi_head.bbox_head.fc_reg.weight': (320, 12), 'roi_head.bbox_head.fc_reg.bias': (320, 12)}),
])
def test_load_from_keeps_all_but_class_layers(repo_root, tmp_path, name, cls_keys):
    src = _coco_checkpoint(_small_cfg(repo_root, name, 80), tmp_path / 'coco.pth')
    model = build_detector(_small_cfg(repo_root, name, 3).model)
    ckpt = load_checkpoint(model, tmp_path / 'coco.pth', log_report=False)
    own = model.state_dict()
    kept = [k for k in src if k not in cls_keys]
    assert all(torch.equal(own[k], src[k]) for k in kept)
    assert {k: (a[0], b[0]) for k, a, b in ckpt['load_report'].mismatched} == cls_keys
    level, line = summarize_load_from('coco.pth', ckpt)
    assert level == logging.INFO and '\n' not in line
    assert f'kept {len(kept)} of {len(src)} tensors' in line
    assert 'the checkpoint has 80 classes' in line
    for key, (a, b) in cls_keys.items():
        assert f'{key} {a}->{b}' in line


@pytest.mark.slow
def test_finetune_two_iterations_on_bccd(repo_root, bccd_subset, tmp_path):
    name = 'retinanet/retinanet_r50_fpn_1x_finetune_bccd.py'
    src = _coco_checkpoint(_small_cfg(repo_root, name, 80), tmp_path / 'coco.pth')
    for handler in logging.getLogger('detforge').handlers:  # see test_train_cli.cli
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr
    work = tmp_path / 'work'
    rc = _cli(['train', str(repo_root / 'configs' / name), '--work-dir', str(work), '--seed', '0',
               '--no-validate', '--cfg-options', *data_options(repo_root, bccd_subset(2)),
               *SMALL, f'load_from={tmp_path / "coco.pth"}', 'data.samples_per_gpu=1',
               'data.workers_per_gpu=0', 'runner.max_epochs=1', 'optimizer.lr=0.0',
               'lr_config.warmup_iters=1'])
    assert rc == 0
    log = next(work.glob('*.log')).read_text().splitlines()
    said = [line for line in log if ' - detforge - ' in line and 'load_from' in line]
    assert len(said) == 1, said
    assert 're-initialised the class-specific layers' in said[0]
    assert 'bbox_head.retina_cls.weight 720->27' in said[0]
    assert not any('missing' in line or 'unexpected' in line for line in log)
    trained = torch.load(work / 'epoch_1.pth', weights_only=True)
    assert trained['meta']['iter'] == 2
    state = trained['state_dict']
    # lr 0: the kept tensors are still the checkpoint's after two optimizer steps
    for key in ('backbone.layer4.1.conv2.weight', 'neck.fpn_convs.0.conv.weight',
                'bbox_head.retina_reg.weight'):
        assert torch.equal(state[key], src[key]), key
    assert state['bbox_head.retina_cls.weight'].shape[0] == 27
