"""``detforge test --eval bbox segm`` and ``detforge infer`` with a (narrow, untrained) Mask
R-CNN on 2 Penn-Fudan test images: the segm table is printed, the JSON of --out holds RLE
masks, and infer's detections.json carries a decodable RLE per detection."""
import json

import numpy as np
import pycocotools.mask as mask_util
import torch

from detforge.cli import main
from detforge.config import Config
from detforge.models import build_detector

NARROW = '''
_base_ = {base!r}
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
model = dict(
    neck=dict(out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        mask_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64),
        mask_head=dict(in_channels=32, conv_out_channels=16, num_convs=1)),
    test_cfg=dict(rcnn=dict(score_thr=0.0, max_per_img=5)))
data = dict(test=dict(ann_file={ann!r},
                      pipeline=[dict(type='LoadImageFromFile'),
                                dict(type='MultiScaleFlipAug', img_scale=(160, 120), flip=False,
                                     transforms=[dict(type='Resize', keep_ratio=True),
                                                 dict(type='Normalize', **img_norm_cfg),
                                                 dict(type='Pad', size_divisor=32),
                                                 dict(type='ImageToTensor', keys=['img']),
                                                 dict(type='Collect', keys=['img'])])]))
'''


def test_test_and_infer_with_masks(repo_root, shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    full = json.loads((shared_data / 'pennfudan/annotations/test.json').read_text())
    images = full['images'][:2]
    ids = {im['id'] for im in images}
    subset = dict(full, images=images,
                  annotations=[a for a in full['annotations'] if a['image_id'] in ids])
    ann = tmp_path / 'two.json'
    ann.write_text(json.dumps(subset))
    cfg_file = tmp_path / 'narrow.py'
    base = str(repo_root / 'configs/mask_rcnn/mask_rcnn_r18_fpn_12e_pennfudan.py')
    cfg_file.write_text(NARROW.format(base=base, ann=str(ann)))
    torch.manual_seed(0)
    model = build_detector(Config.fromfile(str(cfg_file)).model)
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)

    out = tmp_path / 'results.json'
    assert main(['test', str(cfg_file), str(ckpt), '--eval', 'bbox', 'segm',
                 '--out', str(out)]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert 'segm_mAP' in text and 'Evaluating segm' in text
    results = json.loads(out.read_text())
    assert len(results) == 2
    bbox_result, segm_result = results[0]
    assert len(bbox_result[0]) == len(segm_result[0]) == 5
    rle = segm_result[0][0]
    h, w = images[0]['height'], images[0]['width']
    assert mask_util.decode(dict(rle, counts=rle['counts'].encode())).shape == (h, w)

    # the analysis tools take (bbox, segm) results and judge the boxes
    pkl = tmp_path / 'results.pkl'
    assert main(['test', str(cfg_file), str(ckpt), '--out', str(pkl)]) == 0
    assert main(['confusion-matrix', str(cfg_file), str(pkl), str(tmp_path / 'cm'),
                 '--score-thr', '0']) == 0
    matrix = np.array(json.loads((tmp_path / 'cm/confusion_matrix.json').read_text())['matrix'])
    n_gt = sum(a['image_id'] in ids and not a.get('iscrowd', 0) for a in subset['annotations'])
    assert matrix.shape == (2, 2) and matrix[0].sum() == n_gt  # each pedestrian counted once
    assert main(['analyze-results', str(cfg_file), str(pkl), str(tmp_path / 'ar'),
                 '--topk', '1']) == 0
    assert len(list((tmp_path / 'ar/good').iterdir())) == 1

    img = shared_data / 'pennfudan/images' / images[0]['file_name']
    assert main(['infer', str(cfg_file), str(ckpt), str(img), '--out', str(tmp_path / 'inf'),
                 '--score-thr', '0']) == 0
    dets = json.loads((tmp_path / 'inf/detections.json').read_text())['detections']
    records = next(iter(dets.values()))
    assert len(records) == 5 and all('segmentation' in r for r in records)
    mask = mask_util.decode(dict(records[0]['segmentation'],
                                 counts=records[0]['segmentation']['counts'].encode()))
    assert mask.shape == (h, w) and np.isin(mask, (0, 1)).all()
    assert (tmp_path / 'inf' / images[0]['file_name']).is_file()


def test_browse_dataset_blends_masks(repo_root, tmp_path, monkeypatch):
    import cv2
    monkeypatch.chdir(repo_root)
    cfg = 'configs/_base_/datasets/pennfudan_instance.py'
    args = ['browse-dataset', cfg, '--num', '1', '--cfg-options',
            'data.train.pipeline.3.flip_ratio=0.0']
    assert main(args + ['--output-dir', str(tmp_path / 'masks')]) == 0
    with_masks = cv2.imread(str(next((tmp_path / 'masks').glob('*.png'))))
    args.append('data.train.pipeline.1.with_mask=False')
    assert main(args + ['--output-dir', str(tmp_path / 'boxes')]) == 0
    boxes_only = cv2.imread(str(next((tmp_path / 'boxes').glob('*.png'))))
    assert with_masks.shape == boxes_only.shape
    assert (np.abs(with_masks.astype(int) - boxes_only).sum(2) > 0).mean() > 0.05


def test_onnx_export_names_the_mask_branch():
    import pytest
    from detforge.deployment.onnx_export import check_exportable
    model = build_detector(Config.fromfile('configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py').model)
    with pytest.raises(Exception, match=r'mask branch \(roi_head.mask_head'):
        check_exportable(model)
