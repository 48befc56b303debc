"""Test-time augmentation of two-stage detectors (Faster and Cascade R-CNN), merged as
MMDetection 2.x: proposals merged over views by one NMS, RoI boxes and scores averaged over
views, then one class-aware NMS.

Seeded random ResNet-18 models with narrow FPNs; the predictors' weights are drawn wider than
at initialisation so that scores spread out. Inputs come from the real test pipeline
(``MultiScaleFlipAug``) on bundled BCCD images."""
import copy

import numpy as np
import pytest
import torch

from detforge.cli import main as cli_main
from detforge.config import Config
from detforge.data import build_dataset
from detforge.data.loader import collate
from detforge.models.builder import build_detector
from detforge.models.roi_heads.test_mixins import merge_aug_bboxes, merge_aug_proposals

CONFIGS = {'faster': 'configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py',
           'cascade': 'configs/cascade_rcnn/cascade_rcnn_r18_fpn_1x_bccd.py'}
TTA_CONFIG = 'configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd_tta.py'
PREDICTORS = ('rpn_cls', 'rpn_reg', 'fc_cls', 'fc_reg')


def _narrow(model_cfg, channels=32):
    model = copy.deepcopy(model_cfg)
    model.backbone.update(depth=18, init_cfg=None, frozen_stages=-1, norm_eval=False)
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=channels)
    model.rpn_head.update(in_channels=channels, feat_channels=channels)
    model.roi_head.bbox_roi_extractor.update(out_channels=channels)
    heads = model.roi_head.bbox_head
    for head in heads if isinstance(heads, list) else [heads]:
        head.update(in_channels=channels, fc_out_channels=64)
    # the proposal merge adds one NMS; at IoU 1 it removes nothing, so that one flipped view
    # must give exactly what simple_test gives on the flipped image
    model.test_cfg.rpn.update(nms=dict(type='nms', iou_threshold=1.0), max_per_img=100)
    return model


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def detector(request, repo_root):
    cfg = Config.fromfile(str(repo_root / CONFIGS[request.param]))
    torch.manual_seed(0)
    model = build_detector(_narrow(cfg.model)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit('.', 2)[-2] in PREDICTORS and name.endswith('weight'):
                p.normal_(0, 0.2)
    return model


def _views(repo_root, bccd_subset, img_scale, flip):
    """The first bundled BCCD test image through MultiScaleFlipAug, collated (batch 1)."""
    cfg = Config.fromfile(str(repo_root / TTA_CONFIG))
    test = cfg.data.test
    test.ann_file = bccd_subset(1)
    test.img_prefix = str(repo_root / 'data' / 'bccd') + '/'
    test.pipeline[1].update(img_scale=img_scale, flip=flip)
    return collate([build_dataset(test)[0]])


def _by_hand_unflipped(model, img, metas):
    """simple_test on one flipped view, its boxes flipped back and divided by the scale."""
    meta = metas[0]
    dets, labels = _flat(model.simple_test(img, metas, rescale=False)[0])
    w = meta['img_shape'][1]
    out = dets.copy()
    out[:, 0], out[:, 2] = w - dets[:, 2], w - dets[:, 0]
    out[:, :4] /= meta['scale_factor']
    return out, labels


def _flat(result):
    dets = np.vstack(result)
    return dets, np.repeat(np.arange(len(result)), [len(r) for r in result])


def _assert_same(a, la, b, lb, atol=1e-3):
    """Same detections up to order: each one matched to its nearest (same label, score)."""
    assert len(a) == len(b) > 0
    dist = np.abs(a[:, None] - b[None]).max(-1)
    nearest = dist.argmin(1)
    assert dist.min(1).max() < atol
    assert len(set(nearest.tolist())) == len(a)
    assert np.array_equal(la, lb[nearest])


def test_flip_only_tta_maps_detections_back(detector, repo_root, bccd_subset):
    """One flipped view through aug_test = simple_test on that view, un-flipped by hand."""
    batch = _views(repo_root, bccd_subset, (320, 240), flip=True)
    assert [m[0]['flip'] for m in batch['img_metas']] == [False, True]
    img, metas = batch['img'][1], batch['img_metas'][1]
    with torch.no_grad():
        expected, labels = _by_hand_unflipped(detector, img, metas)
        got, got_labels = _flat(detector.aug_test([img], [metas])[0])
    _assert_same(got, got_labels, expected, labels)
    assert got[:, 2].max() > 320  # original 640x480 pixels, not the 320x240 view's


def test_tta_merges_plain_and_flipped_views(detector, repo_root, bccd_subset):
    """Two views: runs through forward (the test loop's entry), boxes inside the original
    image, and the merge differs from either view alone (both views count)."""
    batch = _views(repo_root, bccd_subset, (320, 240), flip=True)
    with torch.no_grad():
        merged, labels = _flat(detector(return_loss=False, **batch)[0])
        plain, _ = _flat(detector.simple_test(batch['img'][0], batch['img_metas'][0])[0])
        flipped, _ = _by_hand_unflipped(detector, batch['img'][1], batch['img_metas'][1])
    assert 0 < len(merged) <= 100
    assert merged[:, [0, 2]].max() <= 640 + 1e-3 and merged[:, [1, 3]].max() <= 480 + 1e-3
    for view in (plain, flipped):
        assert not (len(view) == len(merged) and np.allclose(np.sort(view, 0),
                                                             np.sort(merged, 0), atol=1e-3))


def test_multi_scale_flip_tta_runs_through_the_pipeline(detector, repo_root, bccd_subset):
    batch = _views(repo_root, bccd_subset, [(213, 160), (320, 240)], flip=True)
    assert [tuple(i.shape[-2:]) for i in batch['img']] == [(160, 224), (160, 224),
                                                           (256, 320), (256, 320)]
    with torch.no_grad():
        rescaled = detector(return_loss=False, **batch)
        raw = detector(return_loss=False, rescale=False, **copy.deepcopy(batch))
    dets, _ = _flat(rescaled[0])
    assert len(rescaled) == 1 and len(rescaled[0]) == 3 and len(dets) > 0
    assert dets[:, [0, 2]].max() <= 640 + 1e-3
    # rescale=False: in the first view's scale (213/640), as MMDetection 2.x
    scale = batch['img_metas'][0][0]['scale_factor']
    np.testing.assert_allclose(_flat(raw[0])[0][:, :4], dets[:, :4] * scale, rtol=1e-5,
                               atol=1e-3)


def test_merge_aug_proposals_maps_back_and_suppresses():
    """View 0 at scale 2, view 1 at scale 1 flipped in a 100 px wide image: both propose the
    original box (10, 10, 30, 30); the merge keeps the better one and the distinct box."""
    view0 = torch.tensor([[20., 20., 60., 60., 0.9], [100., 100., 140., 150., 0.5]])
    view1 = torch.tensor([[70., 10., 90., 30., 0.8]])
    metas = [dict(img_shape=(200, 200, 3), scale_factor=np.full(4, 2., np.float32), flip=False),
             dict(img_shape=(100, 100, 3), scale_factor=np.ones(4, np.float32), flip=True,
                  flip_direction='horizontal')]
    cfg = dict(nms=dict(type='nms', iou_threshold=0.7), max_per_img=10)
    merged = merge_aug_proposals([view0, view1], metas, cfg)
    torch.testing.assert_close(merged, torch.tensor([[10., 10., 30., 30., 0.9],
                                                     [50., 50., 70., 75., 0.5]]))
    assert len(merge_aug_proposals([view0, view1], metas, dict(cfg, max_per_img=1))) == 1


def test_merge_aug_bboxes_averages_boxes_and_scores_in_original_pixels():
    metas = [dict(img_shape=(200, 200, 3), scale_factor=np.full(4, 2., np.float32), flip=False),
             dict(img_shape=(100, 100, 3), scale_factor=np.ones(4, np.float32), flip=True)]
    # one RoI, two classes (per-class boxes)
    view0 = torch.tensor([[20., 20., 60., 60., 0., 0., 20., 20.]])
    view1 = torch.tensor([[68., 12., 92., 32., 90., 0., 100., 10.]])
    boxes, scores = merge_aug_bboxes([view0, view1],
                                     [torch.tensor([[0.6, 0.2, 0.2]]),
                                      torch.tensor([[0.4, 0.4, 0.2]])], metas)
    torch.testing.assert_close(boxes, torch.tensor([[9., 11., 31., 31., 0., 0., 10., 10.]]))
    torch.testing.assert_close(scores, torch.tensor([[0.5, 0.3, 0.2]]))


def test_detforge_test_with_a_tta_config(repo_root, bccd_subset, tmp_path, capsys):
    """``detforge test`` of the shipped TTA config (2 scales x flip; here a narrow model and
    smaller scales, to be quick) evaluates a checkpoint."""
    cfg = Config.fromfile(str(repo_root / TTA_CONFIG))
    cfg.model = _narrow(cfg.model)
    cfg.data.test.pipeline[1].img_scale = [(213, 160), (320, 240)]
    cfg_file = tmp_path / 'tta.py'
    cfg.dump(str(cfg_file))
    model_cfg = cfg.model
    torch.manual_seed(0)
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': build_detector(model_cfg).state_dict(), 'meta': {}}, ckpt)
    ann, prefix = bccd_subset(2), str(repo_root / 'data' / 'bccd') + '/'
    out = tmp_path / 'results.pkl'
    assert cli_main(['test', str(cfg_file), str(ckpt), '--eval', 'bbox',
                     '--out', str(out), '--cfg-options', f'data.test.ann_file={ann}',
                     f'data.test.img_prefix={prefix}', 'data.workers_per_gpu=0']) == 0
    assert 'bbox_mAP' in capsys.readouterr().out
    import pickle
    results = pickle.loads(out.read_bytes())
    assert len(results) == 2 and all(len(r) == 3 for r in results)
