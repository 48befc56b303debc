"""Dense heads by composition: the shared targets, the saved loss normaliser, and a custom
head written for MMDetection 2.x (a subclass of AnchorHead) trained from a config."""
import copy
import json
import logging
import sys

import pytest
import torch

from detforge.cli import main as _cli
from detforge.registry import HEADS

from conftest import data_options

TINY = 'tests/configs/retinanet_r18_tiny_bccd.py'

# What a user of MMDetection 2.x writes: layers in _init_layers, one level in forward_single;
# the parent builds the anchors, targets, losses and post-processing.
CUSTOM_HEAD = '''
import torch.nn as nn
from detforge.models.dense_heads import AnchorHead
from detforge.registry import HEADS


@HEADS.register_module()
class MyTinyHead(AnchorHead):
    def __init__(self, num_classes, in_channels, **kwargs):
        super().__init__(num_classes, in_channels, **kwargs)

    def _init_layers(self):
        self.shared = nn.Conv2d(self.in_channels, self.feat_channels, 3, padding=1)
        self.my_cls = nn.Conv2d(self.feat_channels, self.num_anchors * self.cls_out_channels, 1)
        self.my_reg = nn.Conv2d(self.feat_channels, self.num_anchors * 4, 1)

    def forward_single(self, x):
        x = self.shared(x).relu()
        return self.my_cls(x), self.my_reg(x)
'''


def cli(argv):
    for handler in logging.getLogger('detforge').handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr
    return _cli(argv)


def _head(momentum=None):
    torch.manual_seed(0)
    return HEADS.build(dict(
        type='RetinaHead', num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1,
        loss_normalizer_momentum=momentum,
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0))))


def _loss(head, seed):
    torch.manual_seed(seed)
    feats = [torch.randn(2, 8, s, s) for s in (16, 8, 4, 2, 1)]
    metas = [dict(img_shape=(128, 128, 3), pad_shape=(128, 128, 3))] * 2
    gts = [torch.tensor([[10., 10., 60., 70.]]), torch.tensor([[30., 20., 90., 100.], [5., 5., 40., 30.]])]
    labels = [torch.tensor([1]), torch.tensor([0, 1])]
    losses = head.loss(*head(feats), gts, labels, metas)
    return losses['loss_cls'] + losses['loss_bbox']


def test_a_float64_heads_detections_are_float64_and_match_its_float32_ones():
    head = _head().eval()
    cfg = dict(nms_pre=1000, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    torch.manual_seed(1)
    feats = [torch.randn(1, 8, s, s) for s in (16, 8, 4, 2, 1)]
    metas = [dict(img_shape=(128, 128, 3), pad_shape=(128, 128, 3), scale_factor=1.0)]
    with torch.no_grad():
        (dets32, _), = head.get_bboxes(*head(feats), img_metas=metas, cfg=cfg)
        head.double()
        (dets64, _), = head.get_bboxes(*head([f.double() for f in feats]), img_metas=metas, cfg=cfg)
    assert dets32.dtype == torch.float32 and dets64.dtype == torch.float64  # not cast down
    torch.testing.assert_close(dets64.float(), dets32, rtol=1e-5, atol=1e-4)


def test_loss_normaliser_is_in_the_state_dict_and_resumes_exactly():
    head = _head(momentum=0.9).train()
    for seed in (1, 2):
        _loss(head, seed)
    state = copy.deepcopy(head.state_dict())
    assert 'loss_normalizer' in state and float(state['loss_normalizer']) < 100.
    resumed = _head(momentum=0.9).train()
    resumed.load_state_dict(state)
    assert torch.equal(_loss(head, 3), _loss(resumed, 3))
    assert torch.equal(head.loss_normalizer, resumed.loss_normalizer)


def test_loss_normaliser_absent_from_older_checkpoints_starts_from_its_initial_value():
    state = _head(momentum=0.9).state_dict()
    del state['loss_normalizer']
    head = _head(momentum=0.9)
    head.loss_normalizer.fill_(3.)
    result = head.load_state_dict(state)  # strict: no missing key reported
    assert not result.missing_keys and float(head.loss_normalizer) == 100.
    assert 'loss_normalizer' not in _head().state_dict()  # unused: checkpoints unchanged


@pytest.mark.slow
def test_a_custom_mmdet2_style_head_trains_from_a_config(repo_root, bccd_subset, tmp_path,
                                                         monkeypatch):
    (tmp_path / 'my_tiny_head.py').write_text(CUSTOM_HEAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / 'custom_head.py'
    config.write_text(
        f"_base_ = '{repo_root / TINY}'\n"
        "custom_imports = dict(imports=['my_tiny_head'], allow_failed_imports=False)\n"
        "model = dict(bbox_head=dict(_delete_=True, type='MyTinyHead', num_classes=3,\n"
        "    in_channels=256, feat_channels=32,\n"
        "    anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,\n"
        "        scales_per_octave=3, ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),\n"
        "    loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25),\n"
        "    loss_bbox=dict(type='L1Loss', loss_weight=1.0)))\n")
    work_dir = tmp_path / 'work'
    rc = cli(['train', str(config), '--work-dir', str(work_dir), '--seed', '0', '--no-validate',
              '--cfg-options', *data_options(repo_root, bccd_subset(2)), 'data.samples_per_gpu=1'])
    assert rc == 0
    state = torch.load(work_dir / 'latest.pth', weights_only=True)
    assert state['meta']['iter'] == 2
    weights = state['state_dict']
    assert {'bbox_head.shared.weight', 'bbox_head.my_cls.weight', 'bbox_head.my_reg.weight'} <= set(weights)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    log = next(work_dir.glob('*.log.json')).read_text().splitlines()
    train = [json.loads(line) for line in log if '"mode": "train"' in line]
    assert [r['iter'] for r in train] == [1, 2] and all(r['loss_cls'] > 0 for r in train)
