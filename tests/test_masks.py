"""Instance masks: structures, annotation loading, transforms, mask targets, pasting, segm AP."""
import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detforge.data.builder import build_dataset
from detforge.data.loader import collate
from detforge.models.roi_heads.mask_heads.fcn_mask_head import (FCNMaskHead, _paste_chunk_mmdet,
                                                                 paste_masks)
from detforge.structures.masks import (BitmapMasks, PolygonMasks, mask2rle, rle2mask,
                                       segm_to_bitmap)

# an 8x8 image whose object fills the left half (columns 0..3)
LEFT_HALF = np.pad(np.ones((8, 4), np.uint8), ((0, 0), (0, 4)))
LEFT_HALF_POLY = [[0., 0., 4., 0., 4., 8., 0., 8.]]


# ----------------------------------------------------------------------------- structures
def test_polygon_to_bitmap_and_back_areas():
    poly = PolygonMasks([LEFT_HALF_POLY, [[1., 1., 3., 1., 3., 2., 1., 2.]]], 8, 8)
    bitmaps = poly.to_ndarray()
    assert bitmaps.shape == (2, 8, 8) and bitmaps.dtype == np.uint8
    np.testing.assert_array_equal(bitmaps[0], LEFT_HALF)
    assert bitmaps[1].sum() == 2 and bitmaps[1][1, 1:3].all()
    np.testing.assert_allclose(poly.areas, [32, 2])
    np.testing.assert_allclose(BitmapMasks(bitmaps, 8, 8).areas, [32, 2])


def test_mask_targets_hand_computed():
    """The RoI [2, 0, 6, 4] holds columns 2..5 of the top half: columns 2, 3 are object."""
    expected = np.array([[1, 1, 0, 0]] * 4, np.uint8)
    box = np.array([[2., 0., 6., 4.]])
    for masks in (BitmapMasks([LEFT_HALF], 8, 8), PolygonMasks([LEFT_HALF_POLY], 8, 8)):
        target = masks.crop_and_resize(box, (4, 4), [0]).to_ndarray()
        np.testing.assert_array_equal(target[0], expected, err_msg=type(masks).__name__)
    # before binarising: pixel-centre sampling (RoIAlign aligned=True) reads whole pixels
    # 1, 2, 3, 4 inside [1, 5): exactly 1, 1, 1, 0 (aligned=False would give 1, 1, .5, 0)
    soft = BitmapMasks([LEFT_HALF], 8, 8).crop_and_resize(
        np.array([[1., 0., 5., 4.]]), (4, 4), [0], binarize=False).to_ndarray()
    np.testing.assert_allclose(soft[0], [[1, 1, 1, 0]] * 4, atol=1e-6)
    # the whole image halved: 2 object columns of 4
    target = BitmapMasks([LEFT_HALF], 8, 8).crop_and_resize(
        torch.tensor([[0., 0., 8., 8.]]), (4, 4), torch.tensor([0])).to_ndarray()
    np.testing.assert_array_equal(target[0], expected)
    # the box chooses its mask: a second, empty mask gives an empty target
    two = BitmapMasks([LEFT_HALF, np.zeros((8, 8), np.uint8)], 8, 8)
    targets = two.crop_and_resize(np.array([[0., 0., 8., 8.]] * 2), (4, 4), [1, 0]).to_ndarray()
    assert targets[0].sum() == 0 and targets[1].sum() == 8


def test_torchvision_style_mask_targets_are_its_soft_unaligned_roi_align():
    """``mask_target(aligned=False, binarize=False)`` gives torchvision's
    ``project_masks_on_boxes`` values (soft, pixel corners), from bitmaps and polygons alike;
    the default stays MMDetection's binarised ``aligned=True`` crop."""
    from types import SimpleNamespace
    from torchvision.models.detection.roi_heads import project_masks_on_boxes
    from detforge.models.roi_heads.mask_heads.fcn_mask_head import mask_target
    boxes = torch.tensor([[1., 0., 5., 4.], [0.5, 1.5, 7.25, 6.]])
    inds = torch.tensor([0, 0])
    res = [SimpleNamespace(pos_bboxes=boxes, pos_assigned_gt_inds=inds)]
    expected = project_masks_on_boxes(torch.from_numpy(LEFT_HALF)[None], boxes, inds, 4)
    assert ((expected > 0) & (expected < 1)).any()   # soft values
    for masks in (BitmapMasks([LEFT_HALF], 8, 8), PolygonMasks([LEFT_HALF_POLY], 8, 8)):
        ours = mask_target(res, [masks], 4, aligned=False, binarize=False)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    # aligned=False, soft: the first box reads columns 1..5 at pixel corners (1, 1, .5, 0)
    torch.testing.assert_close(expected[0], torch.tensor([[1., 1., .5, 0.]] * 4))
    default = mask_target(res, [BitmapMasks([LEFT_HALF], 8, 8)], 4)
    torch.testing.assert_close(default[0], torch.tensor([[1., 1., 1., 0.]] * 4))


def test_flip_and_resize_bitmap_and_polygon_agree():
    rng = np.random.RandomState(0)
    poly = PolygonMasks([[[1., 1., 9., 2., 5., 7.]], [[0., 0., 3., 0., 3., 5., 0., 5.]]], 8, 12)
    bitmap = poly.to_bitmap()
    for direction in ('horizontal', 'vertical', 'diagonal'):
        flipped = bitmap.flip(direction).to_ndarray()
        axis = {'horizontal': (2,), 'vertical': (1,), 'diagonal': (1, 2)}[direction]
        np.testing.assert_array_equal(flipped, np.flip(bitmap.masks, axis))
        # the rectangle (integer corners) rasterises exactly after a polygon flip too
        np.testing.assert_array_equal(poly.flip(direction).to_ndarray()[1], flipped[1])
    big = bitmap.resize((16, 24))
    assert (big.height, big.width) == (16, 24)
    np.testing.assert_array_equal(big.masks[:, ::2, ::2], bitmap.masks)  # nearest, 2x
    np.testing.assert_array_equal(poly.resize((16, 24)).to_ndarray()[1], big.masks[1])
    assert bitmap.rescale(0.5).masks.shape == (2, 4, 6)
    assert poly.rescale((24, 16)).height == 16
    cropped = bitmap.crop(np.array([2, 1, 10, 6]))
    np.testing.assert_array_equal(cropped.masks, bitmap.masks[:, 1:6, 2:10])
    np.testing.assert_array_equal(poly.crop(np.array([0, 0, 6, 6])).to_ndarray()[1],
                                  bitmap.masks[1, :6, :6])
    padded = bitmap.pad((10, 14))
    assert padded.masks.shape == (2, 10, 14) and padded.masks.sum() == bitmap.masks.sum()
    shifted = bitmap.translate((8, 12), 2).masks
    np.testing.assert_array_equal(shifted[:, :, 2:], bitmap.masks[:, :, :-2])
    assert rng is not None and len(bitmap[[1]]) == 1 and len(poly[np.array([True, False])]) == 1


def test_rle_round_trip_compressed_and_uncompressed():
    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:8] = True
    mask[6, 0] = True
    rle = mask2rle(mask)
    assert isinstance(rle['counts'], str) and rle['size'] == [7, 9]
    json.dumps(rle)  # JSON-ready
    np.testing.assert_array_equal(rle2mask(rle), mask)
    # uncompressed (counts as a list of run lengths, column-major, starting with zeros)
    flat = mask.flatten(order='F').astype(np.uint8)
    runs, current, count = [], 0, 0
    for v in flat:
        if v == current:
            count += 1
        else:
            runs.append(count)
            current, count = v, 1
    runs.append(count)
    np.testing.assert_array_equal(segm_to_bitmap({'size': [7, 9], 'counts': runs}, 7, 9), mask)


# ----------------------------------------------------------------------------- loading
@pytest.fixture
def tiny_coco(tmp_path):
    """One 40x60 image with a polygon object, a compressed-RLE object, an uncompressed-RLE
    object and a crowd region."""
    cv2.imwrite(str(tmp_path / 'a.png'), np.full((40, 60, 3), 128, np.uint8))
    rle_mask = np.zeros((40, 60), np.uint8)
    rle_mask[10:18, 20:28] = 1
    compressed = mask_util.encode(np.asfortranarray(rle_mask))
    compressed['counts'] = compressed['counts'].decode('ascii')
    uncompressed = {'size': [40, 60], 'counts': [40 * 2 + 1, 3, 40 * 60 - 84]}  # col 2, rows 1..3
    anns = [
        dict(id=1, image_id=1, category_id=1, bbox=[2, 2, 6, 6], area=36, iscrowd=0,
             segmentation=[[2, 2, 8, 2, 8, 8, 2, 8]]),
        dict(id=2, image_id=1, category_id=1, bbox=[20, 10, 8, 8], area=64, iscrowd=0,
             segmentation=compressed),
        dict(id=3, image_id=1, category_id=1, bbox=[2, 1, 1, 3], area=3, iscrowd=0,
             segmentation=uncompressed),
        dict(id=4, image_id=1, category_id=1, bbox=[0, 0, 60, 40], area=2400, iscrowd=1,
             segmentation=compressed),
    ]
    data = dict(images=[dict(id=1, file_name='a.png', width=60, height=40)],
                annotations=anns, categories=[dict(id=1, name='thing')])
    (tmp_path / 'ann.json').write_text(json.dumps(data))
    return tmp_path, rle_mask


def _dataset(root, pipeline):
    return build_dataset(dict(type='CocoDataset', ann_file=str(root / 'ann.json'),
                              img_prefix=str(root) + '/', classes=('thing',), pipeline=pipeline))


def test_load_annotations_polygons_and_rle(tiny_coco):
    root, rle_mask = tiny_coco
    load = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_mask=True)]
    out = _dataset(root, load)[0]
    masks = out['gt_masks']
    assert isinstance(masks, BitmapMasks) and len(masks) == 3 == len(out['gt_bboxes'])
    assert out['mask_fields'] == ['gt_masks']
    assert masks.masks[0][2:8, 2:8].all() and masks.masks[0].sum() == 36
    np.testing.assert_array_equal(masks.masks[1], rle_mask)
    assert masks.masks[2][1:4, 2].all() and masks.masks[2].sum() == 3
    assert len(out['gt_bboxes_ignore']) == 1  # the crowd region: an ignore box, no mask

    polys = [dict(type='LoadImageFromFile'),
             dict(type='LoadAnnotations', with_mask=True, poly2mask=False)]
    with pytest.raises(Exception, match='RLE segmentation.*poly2mask=True'):
        _dataset(root, polys)[0]


def test_transforms_move_masks_with_boxes_and_collate_keeps_polygons(tiny_coco):
    root, _ = tiny_coco
    for poly2mask in (True, False):
        pipeline = [dict(type='LoadImageFromFile'),
                    dict(type='LoadAnnotations', with_mask=True, poly2mask=poly2mask),
                    dict(type='Resize', img_scale=(120, 80), keep_ratio=True),
                    dict(type='RandomFlip', flip_ratio=1.0),
                    dict(type='Pad', size_divisor=32), dict(type='DefaultFormatBundle'),
                    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_masks'])]
        ds = _dataset(root, pipeline)
        if not poly2mask:  # the RLE objects cannot stay polygons: keep the polygon one
            # (records are handed out as copies: change them and assign them back)
            infos = list(ds.data_infos)
            infos[0]['ann']['masks'] = infos[0]['ann']['masks'][:1]
            for k in ('bboxes', 'labels'):
                infos[0]['ann'][k] = infos[0]['ann'][k][:1]
            ds.data_infos = infos
        sample = ds[0]
        masks = sample['gt_masks']
        assert (masks.height, masks.width) == (80, 120)  # the image size, not the padded one
        bitmap = masks.to_ndarray()
        for box, m in zip(sample['gt_bboxes'].numpy(), bitmap):
            ys, xs = np.nonzero(m)
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box,
                                       atol=1.0)
        # polygon object: x 2..8 -> resized x 4..16 -> flipped in 120 px: 104..116
        assert bitmap[0][4:16, 104:116].all() and bitmap[0].sum() == 144
        batch = collate([sample, ds[0]])
        assert isinstance(batch['gt_masks'], list) and len(batch['gt_masks']) == 2
        assert type(batch['gt_masks'][0]) is type(masks)


def test_random_crop_drops_masks_with_their_boxes(tiny_coco):
    root, _ = tiny_coco
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_mask=True),
                dict(type='RandomCrop', crop_size=(30, 25))]
    np.random.seed(0)
    ds = _dataset(root, pipeline)
    for _ in range(5):
        out = ds[0]
        assert len(out['gt_masks']) == len(out['gt_bboxes']) == len(out['gt_labels'])
        assert out['gt_masks'].masks.shape[1:] == out['img'].shape[:2]


def test_mosaic_refuses_masks():
    from detforge.data.pipelines.mix import Mosaic
    with pytest.raises(Exception, match='does not move instance masks'):
        Mosaic()(dict(mask_fields=['gt_masks'], img=np.zeros((4, 4, 3), np.uint8)))


# ----------------------------------------------------------------------------- mask head
def test_paste_full_mask_fills_its_box_and_chunks_agree():
    probs = torch.ones(2, 28, 28)
    boxes = torch.tensor([[10., 20., 50., 40.], [0., 0., 8., 8.]])
    out = paste_masks(probs, boxes, 60, 70)
    assert out.dtype == torch.bool and out.shape == (2, 60, 70)
    assert out[0, 20:40, 10:50].all() and out[0].sum() == 20 * 40
    assert out[1, :8, :8].all() and out[1].sum() == 64
    # the windowed CPU paste equals the full-image (GPU) paste
    rand = torch.rand(3, 1, 28, 28)
    rb = torch.tensor([[5.3, 7.1, 40.2, 33.9], [0., 0., 69.5, 59.5], [30., 30., 31., 32.]])
    full, _ = _paste_chunk_mmdet(rand, rb, 60, 70, skip_empty=False)
    for i in range(3):
        part, (rows, cols) = _paste_chunk_mmdet(rand[i:i + 1], rb[i:i + 1], 60, 70, True)
        window = torch.zeros(60, 70)
        window[rows, cols] = part[0]
        torch.testing.assert_close(window, full[i], atol=1e-6, rtol=0)
    tv = paste_masks(probs, boxes, 60, 70, mode='torchvision')
    assert (tv ^ out).sum() <= 0.1 * out.sum()


def test_paste_of_a_zero_width_or_height_box_is_a_band_as_mmdetection():
    """MMDetection 2.x's paste maps the columns (rows) of a zero-width (height) box, +-inf, to
    the mask's centre: such a detection (a box clipped at the image border) pastes a band over
    the window around it, rows (columns) inside the box. Expected windows as MMDetection
    2.28.2's ``_do_paste_mask`` gave them for these inputs (run 2026-12-04)."""
    probs = torch.ones(2, 28, 28)
    boxes = torch.tensor([[5., 2., 5., 10.], [3., 4., 9., 4.]])
    out = paste_masks(probs, boxes, 16, 16)
    band = torch.zeros(2, 16, 16, dtype=torch.bool)
    band[0, 2:10, 4:6] = True   # window rows 1..10, columns 4..5; rows 1 and 10 outside
    band[1, 3:5, 3:9] = True    # window rows 3..4, columns 2..9; columns 2 and 9 outside
    assert torch.equal(out, band)


def test_fcn_mask_head_names_shapes_and_loss():
    head = FCNMaskHead(num_classes=3, in_channels=8, conv_out_channels=8)
    names = set(head.state_dict())
    assert {'convs.0.conv.weight', 'convs.3.conv.bias', 'upsample.weight',
            'conv_logits.weight'} <= names  # MMDetection 2.x names
    logits = head(torch.randn(5, 8, 14, 14))
    assert logits.shape == (5, 3, 28, 28)
    labels = torch.tensor([0, 2, 1, 1, 0])
    targets = (torch.rand(5, 28, 28) > 0.5).float()
    loss = head.loss(logits, targets, labels)['loss_mask']
    own = logits[torch.arange(5), labels]
    torch.testing.assert_close(loss, torch.nn.functional.binary_cross_entropy_with_logits(
        own, targets))
    assert FCNMaskHead(num_classes=3, in_channels=8, conv_out_channels=8,
                       class_agnostic=True)(torch.randn(1, 8, 14, 14)).shape[1] == 1


# ----------------------------------------------------------------------------- evaluation
def test_segm_ap_of_ground_truth_is_one(shared_data, tmp_path):
    root = shared_data / 'pennfudan'
    ds = build_dataset(dict(type='CocoDataset', ann_file=str(root / 'annotations/test.json'),
                            img_prefix=str(root / 'images') + '/', classes=('person',),
                            pipeline=[], test_mode=True))
    results = []
    for i, info in enumerate(ds.data_infos):
        ann = ds.get_ann_info(i)
        dets = np.hstack([ann['bboxes'], np.ones((len(ann['bboxes']), 1), np.float32)])
        masks = [segm_to_bitmap(s, info['height'], info['width']).astype(bool)
                 for s in ann['masks']]
        results.append(([dets], [masks]))
    out = ds.evaluate(results, metric=['bbox', 'segm'], jsonfile_prefix=str(tmp_path / 'r'))
    assert out['bbox_mAP'] == pytest.approx(1.0) and out['segm_mAP'] == pytest.approx(1.0)
    assert out['segm_mAP_copypaste'].startswith('1.000')
    segm = json.loads((tmp_path / 'r.segm.json').read_text())
    assert len(segm) == sum(len(r[0][0]) for r in results)
    assert set(segm[0]) >= {'image_id', 'category_id', 'segmentation', 'score'}
    # a mask moved off its object lowers segm AP but not bbox AP
    shifted = [(b, [[np.roll(m, 15, axis=1) for m in s[0]]]) for b, s in results]
    out = ds.evaluate(shifted, metric=['bbox', 'segm'])
    assert out['bbox_mAP'] == pytest.approx(1.0) and out['segm_mAP'] < 0.9


def _tiny_roi_head(base):
    from detforge.config import Config
    from detforge.registry import HEADS
    model = Config.fromfile(base).model
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = 16
    roi.mask_roi_extractor.out_channels = 16
    heads = roi.bbox_head if isinstance(roi.bbox_head, list) else [roi.bbox_head]
    for head in heads:
        head.update(num_classes=2, in_channels=16, fc_out_channels=32)
    roi.mask_head.update(num_classes=2, in_channels=16, conv_out_channels=16, num_convs=1)
    return HEADS.build(dict(roi, train_cfg=model.train_cfg.rcnn, test_cfg=model.test_cfg.rcnn))


@pytest.mark.parametrize('base', ['configs/_base_/models/mask_rcnn_r50_fpn.py',
                                  'configs/_base_/models/cascade_mask_rcnn_r50_fpn.py'])
def test_roi_heads_with_masks_train_and_test(base):
    torch.manual_seed(0)
    head = _tiny_roi_head(base)
    x = tuple(torch.randn(1, 16, 64 // s, 64 // s) for s in (4, 8, 16, 32))
    gt_boxes = [torch.tensor([[4., 4., 30., 40.], [30., 10., 60., 30.]])]
    gt_labels = [torch.tensor([0, 1])]
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[0, 4:40, 4:30] = 1
    masks[1, 10:30, 30:60] = 1
    proposals = [torch.cat([gt_boxes[0] + 1, torch.tensor([[0., 0., 20., 20.]])])]
    metas = [dict(img_shape=(64, 64, 3), ori_shape=(32, 32, 3), scale_factor=np.full(4, 2.))]
    losses = head.forward_train(x, metas, proposals, gt_boxes, gt_labels,
                                gt_masks=[BitmapMasks(masks, 64, 64)])
    mask_losses = {k: v for k, v in losses.items() if 'loss_mask' in k}
    if 'cascade' in base:
        assert set(mask_losses) == {'s0.loss_mask', 's1.loss_mask', 's2.loss_mask'}
    else:
        assert set(mask_losses) == {'loss_mask'}
    assert all(v > 0 for v in mask_losses.values())
    with pytest.raises(Exception, match='gt_masks'):
        head.forward_train(x, metas, proposals, gt_boxes, gt_labels)
    head.eval()
    head.test_cfg.score_thr = 0.0
    with torch.no_grad():
        bbox_result, segm_result = head.simple_test(x, proposals, metas, rescale=True)[0]
    assert len(bbox_result) == len(segm_result) == 2
    for boxes, cls_masks in zip(bbox_result, segm_result):
        assert len(boxes) == len(cls_masks)
        assert all(m.shape == (32, 32) and m.dtype == bool for m in cls_masks)  # original size


def test_a_float64_models_masks_paste_as_its_float32_ones():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 28, 28, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[3.3, 4.1, 40.7, 30.2], [10.5, 0.0, 63.0, 47.9], [0., 0., 1e-3, 20.]],
                         dtype=torch.float64)
    ours64 = paste_masks(probs, boxes, 48, 64, threshold=-1)  # uint8 probabilities x 255
    ours32 = paste_masks(probs.float(), boxes.float(), 48, 64, threshold=-1)
    assert (ours64.int() - ours32.int()).abs().max() <= 1  # the same paste, up to rounding
    assert ours64.sum() > 0
