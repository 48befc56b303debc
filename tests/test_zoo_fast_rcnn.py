"""Fast R-CNN from precomputed proposals: `detforge test` of an RPN writes the proposal file,
LoadProposals reads it through the pipeline, and FastRCNN on those proposals gives Faster
R-CNN's detections."""
import pickle

import numpy as np
import pytest
import torch

from detforge.cli import main
from detforge.config import Config
from detforge.data import build_dataset
from detforge.engine.checkpoint import save_checkpoint
from detforge.registry import BuildError, DETECTORS, PIPELINES, DetforgeError

from conftest import data_options

RPN_CFG = 'configs/rpn/rpn_r18_fpn_1x_bccd.py'
FASTER_CFG = 'configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py'
FAST_CFG = 'configs/fast_rcnn/fast_rcnn_r18_fpn_1x_bccd.py'
# the RPN config's test nms_pre (2000) is not Faster R-CNN's (1000); 100 proposals per image
# (not 1000) keep the test fast
# and a small test scale (213x160, not 427x320) keep the test fast
FEW = ['model.test_cfg.rpn.max_per_img=100', 'data.test.pipeline.1.img_scale=(213,160)']
FAST_SMALL = 'data.test.pipeline.2.img_scale=(213,160)'   # LoadProposals comes first
SAME_RPN = ['model.test_cfg.rpn.nms_pre=1000', *FEW]


@pytest.fixture(scope='module')
def faster_and_proposals(repo_root, bccd_subset, tmp_path_factory):
    """A seeded random Faster R-CNN R18 checkpoint, its detections on 2 BCCD test images and
    the proposals `detforge test` of the RPN config writes with the same weights."""
    folder = tmp_path_factory.mktemp('fast_rcnn')
    ann = bccd_subset(2)
    torch.manual_seed(0)
    model = DETECTORS.build(Config.fromfile(str(repo_root / FASTER_CFG)).model)
    with torch.no_grad():   # spread the class scores so some pass score_thr=0.05
        model.roi_head.bbox_head.fc_cls.weight.normal_(0, 0.3)
        model.rpn_head.rpn_cls.weight.normal_(0, 0.3)
    ckpt = str(folder / 'faster.pth')
    save_checkpoint(model, ckpt, meta=dict(CLASSES=('RBC', 'WBC', 'Platelets')))
    options = data_options(repo_root, ann)
    proposals, faster_dets = str(folder / 'proposals.pkl'), str(folder / 'faster.pkl')
    assert main(['test', str(repo_root / RPN_CFG), ckpt, '--out', proposals,
                 '--cfg-options', *options, *SAME_RPN]) == 0
    assert main(['test', str(repo_root / FASTER_CFG), ckpt, '--out', faster_dets,
                 '--cfg-options', *options, *FEW]) == 0
    return dict(ckpt=ckpt, ann=ann, options=options, proposals=proposals,
                faster_dets=faster_dets, folder=folder)


def test_rpn_test_out_is_a_proposal_file(faster_and_proposals):
    with open(faster_and_proposals['proposals'], 'rb') as f:
        proposals = pickle.load(f)
    assert len(proposals) == 2
    for p in proposals:      # (n, 5), original BCCD pixels (640x480), best first
        assert p.dtype == np.float32 and p.ndim == 2 and p.shape == (100, 5)
        assert p[:, 2].max() <= 640 and p[:, 3].max() <= 480
        assert (np.diff(p[:, 4]) <= 0).all()


def _fast_cfg(repo_root, fp):
    cfg = Config.fromfile(str(repo_root / FAST_CFG))
    for split in ('train', 'val', 'test'):
        cfg.data[split].update(ann_file=fp['ann'], img_prefix=str(repo_root / 'data/bccd') + '/',
                               proposal_file=fp['proposals'])
    cfg.data.train.pipeline[3].img_scale = (213, 160)
    return cfg


def test_load_proposals_moves_them_with_the_image(repo_root, faster_and_proposals):
    fp = faster_and_proposals
    cfg = _fast_cfg(repo_root, fp)
    cfg.data.train.pipeline[4].flip_ratio = 1.0          # always flipped: boxes mirror too
    sample = build_dataset(cfg.data.train)[0]
    with open(fp['proposals'], 'rb') as f:
        raw = pickle.load(f)[0][:, :4]
    meta = sample['img_metas']
    w = meta['img_shape'][1]
    expected = raw * meta['scale_factor']
    expected = np.stack([w - expected[:, 2], expected[:, 1], w - expected[:, 0],
                         expected[:, 3]], 1)
    assert meta['flip'] and sample['proposals'].shape == (len(raw), 4)
    np.testing.assert_allclose(sample['proposals'].numpy(), expected, atol=1e-3)


def test_fast_rcnn_on_the_rpn_proposals_gives_faster_rcnns_detections(repo_root,
                                                                      faster_and_proposals):
    fp = faster_and_proposals
    fast_dets = str(fp['folder'] / 'fast.pkl')
    prop = fp['proposals']
    assert main(['test', str(repo_root / FAST_CFG), fp['ckpt'], '--out', fast_dets,
                 '--cfg-options', *fp['options'], f'data.test.proposal_file={prop}',
                 FAST_SMALL]) == 0
    with open(fp['faster_dets'], 'rb') as f:
        faster = pickle.load(f)
    with open(fast_dets, 'rb') as f:
        fast = pickle.load(f)
    n = 0
    for per_class_faster, per_class_fast in zip(faster, fast):
        for a, b in zip(per_class_faster, per_class_fast):
            assert a.shape == b.shape
            n += len(a)
            if len(a):   # the proposals went through /scale and *scale: float rounding only
                np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-2)
                np.testing.assert_allclose(a[:, 4], b[:, 4], atol=1e-4)
    assert n > 0


def test_fast_rcnn_trains_on_loaded_proposals(repo_root, faster_and_proposals):
    from detforge.data.loader import collate
    cfg = _fast_cfg(repo_root, faster_and_proposals)
    dataset = build_dataset(cfg.data.train)
    batch = collate([dataset[0], dataset[1]])
    assert [len(p) for p in batch['proposals']] == [100, 100]
    torch.manual_seed(0)
    cfg.model.train_cfg.rcnn.sampler.num = 64
    model = DETECTORS.build(cfg.model)
    model.train()
    losses = model(**batch)
    assert {'loss_cls', 'loss_bbox', 'acc'} <= set(losses) and 'loss_rpn_cls' not in losses
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_fast_rcnn_without_proposals_says_what_is_missing(repo_root):
    cfg = Config.fromfile(str(repo_root / FAST_CFG))
    model = DETECTORS.build(cfg.model).eval()
    img = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    metas = [dict(img_shape=(64, 64, 3), ori_shape=(64, 64, 3), scale_factor=np.ones(4))]
    with pytest.raises(DetforgeError, match='LoadProposals'):
        model(img=[img], img_metas=[metas], return_loss=False)
    results = dict(img_info=dict(filename='a.jpg'), proposals=np.zeros((3, 6)))
    with pytest.raises(DetforgeError, match=r'\(n, 4\) or \(n, 5\).*\(3, 6\)'):
        PIPELINES.build(dict(type='LoadProposals'))(results)
    with pytest.raises(BuildError, match='only .img. is stacked'):
        PIPELINES.build(dict(type='ToDataContainer', fields=[dict(key='proposals', stack=True)]))


def test_load_proposals_keeps_the_best_n_and_one_box_for_none():
    step = PIPELINES.build(dict(type='LoadProposals', num_max_proposals=2))
    props = np.array([[0, 0, 5, 5, .9], [1, 1, 6, 6, .8], [2, 2, 7, 7, .7]], np.float32)
    out = step(dict(proposals=props, bbox_fields=[]))
    assert out['proposals'].tolist() == [[0, 0, 5, 5], [1, 1, 6, 6]]
    assert out['bbox_fields'] == ['proposals']
    out = step(dict(proposals=np.zeros((0, 5), np.float32), bbox_fields=[]))
    assert out['proposals'].tolist() == [[0, 0, 0, 0]]
