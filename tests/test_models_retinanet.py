"""RetinaNet end to end: configs build, training step, inference, test-time augmentation,
MMDetection 1.x keys and Detectron2's head options."""
import warnings
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch

from detforge.config import Config
from detforge.models.builder import build_detector
from detforge.models.detectors.base import BaseDetector
from detforge.registry import HEADS, BuildError, build_context
from detforge.structures import bbox_flip, bbox_mapping_back

CLASSES = ('RBC', 'WBC', 'Platelets')
NAMES = ('BloodImage_00000', 'BloodImage_00001')
H, W = 240, 320  # BCCD's 640x480 halved
NORM = dict(mean=np.array([123.675, 116.28, 103.53], np.float32),
            std=np.array([58.395, 57.12, 57.375], np.float32), to_rgb=True)


def make_batch(voc_root, names=NAMES, flip=False):
    """A training batch as the collate makes it: uint8 BGR images padded to 32, metas, boxes."""
    imgs, metas, boxes, labels = [], [], [], []
    for name in names:
        img = cv2.imread(str(voc_root / 'JPEGImages' / f'{name}.jpg'))
        sx, sy = W / img.shape[1], H / img.shape[0]
        img = cv2.resize(img, (W, H))
        b, l = [], []
        for obj in ET.parse(voc_root / 'Annotations' / f'{name}.xml').findall('object'):
            bb = obj.find('bndbox')
            x1, y1, x2, y2 = (float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
            b.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
            l.append(CLASSES.index(obj.find('name').text.strip()))
        b = torch.tensor(b, dtype=torch.float32)
        if flip:
            img = img[:, ::-1]
            b = bbox_flip(b, (H, W))
        imgs.append(torch.from_numpy(np.ascontiguousarray(img).transpose(2, 0, 1).copy()))
        boxes.append(b)
        labels.append(torch.tensor(l))
        metas.append(dict(filename=name, ori_shape=(480, 640, 3), img_shape=(H, W, 3),
                          pad_shape=(256, W, 3), scale_factor=np.array([sx, sy, sx, sy], np.float32),
                          flip=flip, flip_direction='horizontal', img_norm_cfg=NORM,
                          batch_input_shape=(256, W)))
    batch = torch.zeros((len(names), 3, 256, W), dtype=torch.uint8)
    for i, img in enumerate(imgs):
        batch[i, :, :H, :W] = img
    return dict(img=batch, img_metas=metas, gt_bboxes=boxes, gt_labels=labels)


@pytest.fixture(scope='module')
def r18_cfg(repo_root):
    cfg = Config.fromfile(str(repo_root / 'configs/retinanet/retinanet_r18_fpn_1x_bccd.py'))
    cfg.model.bbox_head.feat_channels = 64
    cfg.model.bbox_head.stacked_convs = 2
    cfg.model.test_cfg.score_thr = 0.0  # a fresh head scores 0.01 everywhere: keep its boxes
    return cfg


@pytest.fixture(scope='module')
def model(r18_cfg):
    torch.manual_seed(0)
    return build_detector(r18_cfg.model)


def test_train_step_returns_losses_and_backpropagates(model, bccd_voc_root):
    model.train()
    out = model.train_step(make_batch(bccd_voc_root), optimizer=None)
    assert set(out) == {'loss', 'log_vars', 'num_samples'}
    assert out['num_samples'] == 2
    assert set(out['log_vars']) == {'loss_cls', 'loss_bbox', 'loss'}
    assert out['log_vars']['loss'] == pytest.approx(out['log_vars']['loss_cls'] + out['log_vars']['loss_bbox'],
                                                    rel=1e-5)
    out['loss'].backward()
    grad = model.backbone.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    model.zero_grad()


def test_parse_losses_sums_only_loss_entries_and_lists():
    losses = {'loss_a': torch.tensor(1.0), 'loss_b': [torch.tensor(2.0), torch.tensor(3.0)],
              'acc': torch.tensor(50.0)}
    total, log_vars = BaseDetector._parse_losses(losses)
    assert float(total) == 6.0
    assert log_vars == {'loss_a': 1.0, 'loss_b': 5.0, 'acc': 50.0, 'loss': 6.0}


def test_preprocess_normalises_flips_channels_and_zeroes_padding(bccd_voc_root):
    batch = make_batch(bccd_voc_root)
    x = BaseDetector().preprocess(batch['img'], batch['img_metas'])
    assert x.dtype == torch.float32 and x.shape == (2, 3, 256, W)
    assert (x[:, :, H:] == 0).all()
    bgr = batch['img'][0, :, :H].float()
    expected_r = (bgr[2] - 123.675) / 58.395  # channel 0 of the output is red
    torch.testing.assert_close(x[0, 0, :H], expected_r)


def test_simple_test_returns_per_class_arrays_in_original_pixels(model, bccd_voc_root):
    model.eval()
    batch = make_batch(bccd_voc_root)
    with torch.no_grad():
        rescaled = model(img=[batch['img']], img_metas=[batch['img_metas']], return_loss=False)
        raw = model.simple_test(batch['img'], batch['img_metas'], rescale=False)
    assert len(rescaled) == 2 and len(rescaled[0]) == 3
    assert all(r.dtype == np.float32 and r.shape[1] == 5 for r in rescaled[0])
    n = sum(len(r) for r in rescaled[0])
    assert 0 < n <= model.bbox_head.test_cfg['max_per_img']
    # rescale divides by the scale factor (0.5 here): boxes in 640x480 pixels
    np.testing.assert_allclose(np.vstack(rescaled[0])[:, :4], np.vstack(raw[0])[:, :4] * 2, rtol=1e-5)
    assert np.vstack(rescaled[0])[:, [0, 2]].max() <= 640 and np.vstack(raw[0])[:, [0, 2]].max() <= W


def test_aug_test_of_identical_views_equals_simple_test(model, bccd_voc_root):
    model.eval()
    batch = make_batch(bccd_voc_root, names=NAMES[:1])
    with torch.no_grad():
        single = model.simple_test(batch['img'], batch['img_metas'])
        merged = model(img=[batch['img'], batch['img']], img_metas=[batch['img_metas'], batch['img_metas']],
                       return_loss=False)
    for a, b in zip(single[0], merged[0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def _unflipped_detections(model, flipped):
    """simple_test on the flipped image, its boxes flipped back and rescaled by hand."""
    meta = flipped['img_metas'][0]
    dets = torch.from_numpy(np.vstack(model.simple_test(flipped['img'], flipped['img_metas'],
                                                        rescale=False)[0]))
    sf = torch.as_tensor(meta['scale_factor'])
    w = meta['img_shape'][1]
    x1, y1, x2, y2, score = dets.unbind(1)
    return torch.stack([(w - x2) / sf[0], y1 / sf[1], (w - x1) / sf[2], y2 / sf[3], score], 1)


def _sorted(dets):
    dets = np.asarray(dets)
    return dets[np.lexsort(dets.T[::-1])]


def test_aug_test_of_a_flipped_view_maps_its_detections_back(model, bccd_voc_root):
    """aug_test on the flipped view alone = its detections un-flipped by hand (so a missing
    or wrong un-flip fails here)."""
    model.eval()
    flipped = make_batch(bccd_voc_root, names=NAMES[:1], flip=True)
    with torch.no_grad():
        expected = _unflipped_detections(model, flipped).numpy()
        merged = model.aug_test([flipped['img']], [flipped['img_metas']])
    got = np.vstack(merged[0])
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(_sorted(got), _sorted(expected), rtol=1e-5, atol=1e-3)


def test_aug_test_maps_flipped_detections_back(model, bccd_voc_root):
    """Plain + flipped views merged by one NMS: the best detection of either view (the
    flipped one un-flipped) survives unchanged, and each view's best box has a merged box on
    it (same place in the original image, IoU > 0.9)."""
    from detforge.structures import bbox_overlaps
    model.eval()
    plain = make_batch(bccd_voc_root, names=NAMES[:1])
    flipped = make_batch(bccd_voc_root, names=NAMES[:1], flip=True)
    with torch.no_grad():
        from_plain = np.vstack(model.simple_test(plain['img'], plain['img_metas'])[0])
        from_flipped = _unflipped_detections(model, flipped).numpy()
        merged = model.aug_test([plain['img'], flipped['img']], [plain['img_metas'], flipped['img_metas']])
    dets = np.vstack(merged[0])
    candidates = np.vstack([from_plain, from_flipped])
    best = candidates[candidates[:, 4].argmax()]
    assert np.abs(dets - best).max(1).min() < 1e-3
    for view in (from_plain, from_flipped):
        top = torch.from_numpy(view[view[:, 4].argmax(), None, :4])
        assert float(bbox_overlaps(top, torch.from_numpy(dets[:, :4])).max()) > 0.9


def test_bbox_mapping_back_undoes_flip_and_scale():
    boxes = torch.tensor([[10., 20., 50., 60.]])
    mapped = bbox_mapping_back(bbox_flip(boxes * 2, (200, 300)), (200, 300), [2., 2., 2., 2.], True)
    torch.testing.assert_close(mapped, boxes)


def test_top_level_train_and_test_cfg_are_merged_with_a_warning(r18_cfg):
    cfg = r18_cfg.copy()
    model_cfg = dict(cfg.model)
    train_cfg, test_cfg = model_cfg.pop('train_cfg'), model_cfg.pop('test_cfg')
    with pytest.warns(DeprecationWarning, match='train_cfg'):
        det = build_detector(model_cfg, train_cfg=train_cfg, test_cfg=test_cfg)
    assert det.bbox_head.test_cfg['max_per_img'] == 100
    with pytest.raises(BuildError, match='train_cfg'), pytest.warns(DeprecationWarning):
        build_detector(dict(cfg.model), train_cfg=train_cfg)


def test_mmdet_1x_head_keys_are_accepted_with_a_warning():
    old = dict(type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
               octave_base_scale=4, scales_per_octave=3, anchor_ratios=[0.5, 1.0, 2.0],
               anchor_strides=[8, 16, 32, 64, 128], target_means=[0., 0., 0., 0.],
               target_stds=[0.1, 0.1, 0.2, 0.2])
    with pytest.warns(DeprecationWarning) as record:
        head = HEADS.build(old)
    messages = ' '.join(str(w.message) for w in record)
    assert 'anchor_generator=dict(' in messages and 'bbox_coder=dict(' in messages
    new = HEADS.build(dict(type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                           bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_stds=[0.1, 0.1, 0.2, 0.2])))
    for a, b in zip(head.anchor_generator.base_anchors, new.anchor_generator.base_anchors):
        torch.testing.assert_close(a, b)
    assert head.bbox_coder.stds == (0.1, 0.1, 0.2, 0.2)


def test_nms_iou_thr_key_is_accepted_with_a_warning(model, bccd_voc_root):
    model.eval()
    batch = make_batch(bccd_voc_root, names=NAMES[:1])
    cfg = dict(model.bbox_head.test_cfg, nms=dict(type='nms', iou_thr=0.5))
    with torch.no_grad():
        outs = model.bbox_head(model.extract_feat(model.preprocess(batch['img'], batch['img_metas'])))
        with pytest.warns(DeprecationWarning, match='iou_threshold'):
            old = model.bbox_head.get_bboxes(*outs, img_metas=batch['img_metas'], cfg=cfg)
        new = model.bbox_head.get_bboxes(*outs, img_metas=batch['img_metas'])
    torch.testing.assert_close(old[0][0], new[0][0])


def test_compat_r101_config_builds(repo_root):
    from detforge import compat
    path = repo_root.parent / 'shared' / 'compat' / 'retinanet_r101_fpn_1x.py'
    assert path.is_file(), f'{path} is missing (CI has ../shared beside the repository)'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        cfg = compat.compat_cfg(Config.fromfile(str(path)))
        det = build_detector(cfg.model)
    assert det.backbone.depth == 101
    assert det.bbox_head.num_classes == 80
    assert det.bbox_head.num_anchors == 9
    assert det.backbone.init_cfg['checkpoint'] == 'torchvision://resnet101'


def test_giou_regression_and_moving_average_normaliser(r18_cfg, bccd_voc_root):
    cfg = r18_cfg.copy()
    head = dict(cfg.model.bbox_head, reg_decoded_bbox=True, loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
                loss_normalizer_momentum=0.9)
    det = build_detector(dict(cfg.model, bbox_head=head)).train()
    batch = make_batch(bccd_voc_root)
    losses = det(**batch)
    assert torch.isfinite(losses['loss_bbox']) and losses['loss_bbox'] > 0
    losses['loss_bbox'].backward()
    # the normaliser moved from 100 towards the number of positives: 0.9 * 100 + 0.1 * n
    n = (float(det.bbox_head.loss_normalizer) - 90.0) / 0.1
    assert 1 <= n < 10000 and abs(n - round(n)) < 0.05


def test_typo_in_head_type_names_the_key_path(r18_cfg):
    bad = dict(r18_cfg.model, bbox_head=dict(r18_cfg.model.bbox_head, type='RetinaHaed'))
    with pytest.raises(BuildError) as info:
        with build_context('model', filename='my_config.py'):
            build_detector(bad)
    msg = str(info.value)
    assert "'RetinaHead'" in msg and 'model.bbox_head' in msg and 'my_config.py' in msg


def test_show_result_draws_detections(model, bccd_voc_root, tmp_path):
    import detforge.visualization.draw  # noqa: F401  (must import: a failure is a bug)
    img = cv2.imread(str(bccd_voc_root / 'JPEGImages' / f'{NAMES[0]}.jpg'))
    result = [np.array([[10, 10, 100, 100, 0.9]], np.float32), np.zeros((0, 5), np.float32),
              np.array([[200, 200, 250, 260, 0.2]], np.float32)]
    out = tmp_path / 'shown.jpg'
    drawn = model.show_result(img, result, score_thr=0.3, out_file=str(out))
    assert out.is_file() and drawn.shape == img.shape
    assert not np.array_equal(drawn[5:105, 5:105], img[5:105, 5:105])  # the box is drawn
    np.testing.assert_array_equal(drawn[150:190, 300:400], img[150:190, 300:400])  # nothing elsewhere


def test_head_loss_with_an_image_without_objects():
    torch.manual_seed(0)
    train_cfg = dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0),
                     allowed_border=-1, pos_weight=-1)
    head = HEADS.build(dict(type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                            train_cfg=train_cfg))
    feats = [torch.randn(2, 8, 128 // s, 128 // s, requires_grad=True) for s in (8, 16, 32, 64, 128)]
    metas = [dict(img_shape=(128, 128, 3), pad_shape=(128, 128, 3))] * 2
    boxes = [torch.zeros((0, 4)), torch.tensor([[8., 8., 40., 40.]])]
    labels = [torch.zeros(0, dtype=torch.long), torch.tensor([1])]
    losses = head.forward_train(feats, metas, boxes, labels)
    assert torch.isfinite(losses['loss_cls']) and torch.isfinite(losses['loss_bbox'])
    (losses['loss_cls'] + losses['loss_bbox']).backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    # with no object anywhere, only the classification loss remains
    empty = head.forward_train(feats, metas, [boxes[0]] * 2, [labels[0]] * 2)
    assert empty['loss_bbox'].item() == 0.0 and empty['loss_cls'].item() > 0


def test_retina_head_options_group_norm_and_prior_bias():
    head = HEADS.build(dict(type='RetinaHead', num_classes=3, in_channels=16, feat_channels=16,
                            stacked_convs=2, norm_cfg=dict(type='GN', num_groups=4)))
    conv = head.cls_convs[0]
    assert isinstance(conv.gn, torch.nn.GroupNorm) and conv.conv.bias is None
    # every anchor starts as foreground with probability 0.01
    torch.testing.assert_close(head.retina_cls.bias.sigmoid(), torch.full((9 * 3,), 0.01))
    cls, reg = head([torch.randn(1, 16, 8, 8)] * 5)
    assert cls[0].shape == (1, 27, 8, 8) and reg[0].shape == (1, 36, 8, 8)


def test_batched_targets_equal_image_by_image_assignment(model, bccd_voc_root):
    """The head assigns the whole batch at once; the result is what assigning, sampling and
    encoding each image on its own gives."""
    head = model.bbox_head
    batch = make_batch(bccd_voc_root, names=NAMES + ('BloodImage_00002',))
    batch['gt_bboxes'][2] = torch.zeros((0, 4))  # an image without objects
    batch['gt_labels'][2] = torch.zeros(0, dtype=torch.long)
    sizes = [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]
    anchors, valid = head.get_anchors(sizes, batch['img_metas'])
    valid = valid.clone()
    valid[0, :500] = False  # some anchors off the image
    t = head.get_targets(anchors, valid, batch['gt_bboxes'], batch['img_metas'], None, batch['gt_labels'])

    num_pos = 0
    for i, (gt, gt_labels) in enumerate(zip(batch['gt_bboxes'], batch['gt_labels'])):
        idx = torch.nonzero(valid[i]).squeeze(-1)
        res = head.sampler.sample(head.assigner.assign(anchors[idx], gt), anchors[idx], gt, gt_labels)
        pos, neg = idx[res.pos_inds], idx[res.neg_inds]
        labels = torch.full((len(anchors),), head.num_classes)
        labels[pos] = gt_labels[res.pos_assigned_gt_inds]
        assert torch.equal(t.labels[i], labels)
        weights = torch.zeros(len(anchors))
        weights[pos] = weights[neg] = 1.0
        assert torch.equal(t.label_weights[i], weights)
        torch.testing.assert_close(t.bbox_targets[i, pos], head.bbox_coder.encode(res.pos_bboxes, res.pos_gt_bboxes))
        assert (t.bbox_targets[i][labels == head.num_classes] == 0).all()
        assert torch.equal(t.bbox_weights[i, :, 0], (labels < head.num_classes).float())
        num_pos += max(len(pos), 1)
    assert num_pos > 3 and t.num_pos_per_image_clamped().item() == num_pos
    assert t.neg.sum().item() == t.label_weights.sum().item() - num_pos + 1  # image 2 has no positive


def test_allowed_border_leaves_anchors_beyond_the_image_out_of_training():
    train_cfg = dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0),
                     allowed_border=0, pos_weight=-1)
    head = HEADS.build(dict(type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                            train_cfg=train_cfg))
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    metas = [dict(img_shape=(128, 128, 3), pad_shape=(128, 128, 3)), dict(img_shape=(100, 128, 3), pad_shape=(128, 128, 3))]
    anchors, valid = head.get_anchors(sizes, metas)
    args = (anchors, valid, [torch.tensor([[8., 8., 60., 60.]])] * 2, metas, None, [torch.tensor([1])] * 2)
    t = head.get_targets(*args)
    head.train_cfg.allowed_border = -1
    every = head.get_targets(*args)
    for i, h in enumerate((128, 100)):
        inside = (anchors[:, :2] >= 0).all(1) & (anchors[:, 2] < 128) & (anchors[:, 3] < h)
        assert inside.sum() > 100 and (~inside).sum() > 100
        assert (t.label_weights[i][~inside] == 0).all() and (every.label_weights[i][~inside] > 0).any()
        assert torch.equal(t.label_weights[i][inside], every.label_weights[i][inside])
