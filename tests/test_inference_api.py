"""init_detector / inference_detector on a tiny RetinaNet-R18 with BCCD classes."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detforge.registry import DetforgeError

CLASSES = ('RBC', 'WBC', 'Platelets')


def make_tiny_setup(folder: Path, repo_root: Path, num_images: int = 4, flip_tta: bool = False):
    """A config (RetinaNet-R18, narrow FPN and head, 160x120 test scale to stay fast on CPU,
    score_thr 0 so that random weights still give boxes), a COCO test split of the first
    ``num_images`` bundled BCCD test images, and a checkpoint of random weights with the
    class names in its meta."""
    root = repo_root / 'data' / 'bccd'
    ann = root / 'annotations' / 'test.json'
    folder.mkdir(parents=True, exist_ok=True)
    data = json.loads(ann.read_text())
    images = data['images'][:num_images]
    ids = {im['id'] for im in images}
    data = dict(images=images, categories=data['categories'],
                annotations=[a for a in data['annotations'] if a['image_id'] in ids])
    (folder / 'tiny_test.json').write_text(json.dumps(data))
    scales = '(160, 120)'
    base = repo_root / 'configs' / '_base_' / 'models' / 'retinanet_r50_fpn.py'
    (folder / 'tiny_cfg.py').write_text(f'''
_base_ = ['{base.as_posix()}']
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(num_classes=3, in_channels=32, feat_channels=32, stacked_convs=1),
    test_cfg=dict(score_thr=0.0, max_per_img=20, nms_pre=200))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale={scales}, flip={flip_tta},
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])]
data = dict(test=dict(type='CocoDataset', classes={CLASSES!r},
                      ann_file='{(folder / "tiny_test.json").as_posix()}',
                      img_prefix='{root.as_posix()}', pipeline=test_pipeline))
''')
    from detforge.apis.inference import init_detector
    torch.manual_seed(0)
    model = init_detector(str(folder / 'tiny_cfg.py'))
    torch.save({'state_dict': model.state_dict(), 'meta': {'CLASSES': CLASSES}},
               folder / 'tiny.pth')
    image_paths = [root / im['file_name'] for im in images]
    return folder / 'tiny_cfg.py', folder / 'tiny.pth', image_paths


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, repo_root):
    from detforge.apis.inference import init_detector
    cfg, ckpt, images = make_tiny_setup(tmp_path_factory.mktemp('tiny'), repo_root)
    return init_detector(str(cfg), str(ckpt)), cfg, ckpt, images


def test_result_is_per_class_boxes_in_original_pixels(tiny):
    from detforge.apis.inference import inference_detector
    model, _, _, images = tiny
    result = inference_detector(model, str(images[0]))
    assert len(result) == len(CLASSES)
    assert all(r.dtype == np.float32 and r.ndim == 2 and r.shape[1] == 5 for r in result)
    boxes = np.concatenate(result)
    assert 0 < len(boxes) <= 20                       # max_per_img of the config
    # rescaled to the 640x480 image, not the 160x120 network input
    assert boxes[:, [0, 2]].max() > 160 or boxes[:, [1, 3]].max() > 120
    assert (boxes[:, [0, 2]] <= 640 + 1e-3).all() and (boxes[:, [1, 3]] <= 480 + 1e-3).all()


def test_a_batch_of_arrays_gives_the_detections_of_each_path(tiny):
    from detforge.apis.inference import inference_detector
    model, _, _, images = tiny
    from_path = inference_detector(model, str(images[0]))
    batch = inference_detector(model, [cv2.imread(str(images[1])), cv2.imread(str(images[0]))])
    assert len(batch) == 2
    for a, b in zip(from_path, batch[1]):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_structured_form_is_sorted_and_named(tiny):
    from detforge.apis.inference import inference_detector
    model, _, _, images = tiny
    per_class = inference_detector(model, str(images[0]))
    det = inference_detector(model, str(images[0]), return_structured=True)
    assert det.bboxes.shape == (len(det), 4) and det.labels.shape == (len(det),)
    assert len(det) == sum(len(r) for r in per_class)
    assert (np.diff(det.scores) <= 0).all()
    records = det.to_list()
    assert records[0]['class'] == CLASSES[records[0]['label']]


def test_class_names_come_from_the_checkpoint_meta(tiny, tmp_path):
    from detforge.apis.inference import init_detector
    model, cfg, _, _ = tiny
    ckpt = tmp_path / 'renamed.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'CLASSES': ('a', 'b', 'c')}}, ckpt)
    assert init_detector(str(cfg), str(ckpt)).CLASSES == ('a', 'b', 'c')


def test_bad_inputs_are_clear_errors(tiny, tmp_path):
    from detforge.apis.inference import inference_detector, init_detector
    model, cfg, _, _ = tiny
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 not really a jpeg')
    with pytest.raises(DetforgeError, match='decode'):
        inference_detector(model, str(broken))
    with pytest.raises(DetforgeError, match='image not found'):
        inference_detector(model, str(tmp_path / 'missing.jpg'))
    with pytest.raises(DetforgeError, match='checkpoint file not found'):
        init_detector(str(cfg), str(tmp_path / 'missing.pth'))
    with pytest.raises(DetforgeError, match='config file not found'):
        init_detector(str(tmp_path / 'missing.py'))


def test_flip_tta_merges_back_into_original_coordinates(tmp_path, repo_root):
    """MultiScaleFlipAug with flip: detections on a mirrored image are the mirror of the
    detections on the image (the flipped branch is un-flipped before merging)."""
    from detforge.apis.inference import inference_detector, init_detector
    cfg, ckpt, images = make_tiny_setup(tmp_path, repo_root, num_images=1, flip_tta=True)
    model = init_detector(str(cfg), str(ckpt))
    img = cv2.imread(str(images[0]))
    result = inference_detector(model, img)
    mirrored = inference_detector(model, np.ascontiguousarray(img[:, ::-1]))
    w = img.shape[1]
    for a, b in zip(result, mirrored):
        assert len(a) == len(b)
        if not len(a):
            continue
        b_back = b.copy()
        b_back[:, 0], b_back[:, 2] = w - b[:, 2], w - b[:, 0]
        key = lambda arr: arr[np.lexsort(np.round(arr[:, :4], 0).T)]  # noqa: E731
        np.testing.assert_allclose(key(a)[:, :4], key(b_back)[:, :4], atol=1.0)
        np.testing.assert_allclose(np.sort(a[:, 4]), np.sort(b[:, 4]), atol=1e-4)


def test_channels_last_config_gives_the_same_detections(tiny):
    from detforge.apis.inference import inference_detector, init_detector
    model, cfg, ckpt, images = tiny
    nhwc = init_detector(str(cfg), str(ckpt), cfg_options=dict(channels_last=True))
    conv = nhwc.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert model.backbone.conv1.weight.is_contiguous()
    for a, b in zip(inference_detector(model, str(images[0])), inference_detector(nhwc, str(images[0]))):
        np.testing.assert_allclose(a, b, atol=1e-3)
