"""ONNX export (post-processing in the graph) and the onnxruntime backend, against the PyTorch
model on real BCCD test images.

Tiny ResNet-18 models (32-channel FPN) with random weights; the predictors' weights are drawn
wider than at initialisation so that scores spread out (at initialisation they are all within
1e-6 of each other and float noise alone would reorder them)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detforge.registry import DetforgeError

CLASSES = ('RBC', 'WBC', 'Platelets')
PREDICTORS = ('retina_cls', 'retina_reg', 'rpn_cls', 'rpn_reg', 'fc_cls', 'fc_reg')

MODELS = {
    'retinanet': '''
_base_ = ['{base}/retinanet_r50_fpn.py']
model = dict(backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(num_classes=3, in_channels=32, feat_channels=32, stacked_convs=1),
    test_cfg=dict(score_thr={score_thr}, max_per_img=100, nms_pre=1000))
''',
    'faster_rcnn': '''
_base_ = ['{base}/faster_rcnn_r50_fpn.py']
model = dict(backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32),
                  bbox_head=dict(num_classes=3, in_channels=32, fc_out_channels=64)),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(score_thr={score_thr})))
''',
    'cascade_rcnn': '''
_base_ = ['{base}/cascade_rcnn_r50_fpn.py']
model = dict(backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32),
                  bbox_head=[dict(type='Shared2FCBBoxHead', num_classes=3, in_channels=32,
                                  fc_out_channels=64, reg_class_agnostic=True,
                                  bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                                  target_stds=[s, s, 2 * s, 2 * s]))
                             for s in (0.1, 0.05, 0.033)]),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(score_thr={score_thr})))
''',
}
# Detectron2's cascade (configs/cascade_rcnn/*_d2.py): the stages' softmax probabilities averaged
MODELS['cascade_rcnn_probs'] = MODELS['cascade_rcnn'].replace(
    "roi_head=dict(bbox_roi_extractor", "roi_head=dict(score_average='probs', bbox_roi_extractor")

DATA = '''
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(427, 320), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])]
data = dict(samples_per_gpu=2, workers_per_gpu=0,
            test=dict(type='CocoDataset', classes={classes!r}, ann_file='{ann}',
                      img_prefix='{root}', pipeline=test_pipeline))
'''


def make_model(folder: Path, repo_root: Path, kind: str, num_images: int = 4,
               score_thr: float = 0.05):
    """Config (427x320 test scale, padded to 448x320), a 4-image BCCD test split and a
    checkpoint of random weights; returns (config path, checkpoint path, PyTorch model)."""
    root = repo_root / 'data' / 'bccd'
    ann = root / 'annotations' / 'test.json'
    folder.mkdir(parents=True, exist_ok=True)
    data = json.loads(ann.read_text())
    images = data['images'][:num_images]
    ids = {im['id'] for im in images}
    data = dict(images=images, categories=data['categories'],
                annotations=[a for a in data['annotations'] if a['image_id'] in ids])
    (folder / 'test.json').write_text(json.dumps(data))
    base = (repo_root / 'configs' / '_base_' / 'models').as_posix()
    cfg_file = folder / f'{kind}.py'
    cfg_file.write_text(MODELS[kind].format(base=base, score_thr=score_thr) + DATA.format(
        classes=CLASSES, ann=(folder / 'test.json').as_posix(), root=root.as_posix()))
    from detforge.apis.inference import init_detector
    torch.manual_seed(0)
    model = init_detector(str(cfg_file))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit('.', 2)[-2] in PREDICTORS and name.endswith('weight'):
                p.normal_(0, 0.2)
    ckpt = folder / f'{kind}.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'CLASSES': CLASSES}}, ckpt)
    model.CLASSES = CLASSES
    return cfg_file, ckpt, model, [root / im['file_name'] for im in images]


def assert_same_detections(expected, actual, top: int = 100, atol: float = 1e-2):
    """Per image: the ``top`` best detections of both are the same boxes (within ``atol`` px)
    with the same labels and scores."""
    def flat(result):
        dets = np.concatenate(result)
        labels = np.repeat(np.arange(len(result)), [len(r) for r in result])
        order = np.argsort(-dets[:, 4], kind='stable')[:top]
        return dets[order], labels[order]
    for exp, act in zip(expected, actual):
        (e, el), (a, al) = flat(exp), flat(act)
        assert len(e) == len(a) > 0
        # match each expected box to its nearest actual box (robust to score ties)
        dist = np.abs(e[:, None, :4] - a[None, :, :4]).max(-1)
        nearest = dist.argmin(1)
        assert dist.min(1).max() < atol
        assert np.array_equal(el, al[nearest])
        np.testing.assert_allclose(e[:, 4], a[nearest, 4], atol=1e-4)
        assert len(set(nearest.tolist())) == len(nearest)


@pytest.fixture(scope='module')
def retinanet(tmp_path_factory, repo_root):
    """RetinaNet exported by the CLI: static 320x448 input (the padded test batch)."""
    from detforge.cli import main
    folder = tmp_path_factory.mktemp('onnx_retinanet')
    cfg, ckpt, model, images = make_model(folder, repo_root, 'retinanet', score_thr=0.0)
    out = folder / 'retinanet.onnx'
    assert main(['export', str(cfg), str(ckpt), '--out', str(out)]) == 0
    return cfg, out, model, images


@pytest.fixture(scope='module')
def faster_rcnn(tmp_path_factory, repo_root):
    """Faster R-CNN exported with dynamic batch/height/width."""
    from detforge.deployment import export_onnx
    folder = tmp_path_factory.mktemp('onnx_faster')
    cfg, ckpt, model, images = make_model(folder, repo_root, 'faster_rcnn')
    out = folder / 'faster_rcnn.onnx'
    export_onnx(model, str(out), input_shape=(320, 448), dynamic=True)
    return cfg, out, model, images


def test_retinanet_onnxruntime_gives_the_pytorch_detections(retinanet):
    from detforge.apis.inference import inference_detector
    from detforge.deployment import build_backend_model
    cfg, onnx_file, model, images = retinanet
    ort_model = build_backend_model(str(cfg), str(onnx_file))
    assert ort_model.CLASSES == CLASSES and ort_model.input_shape == (320, 448)
    paths = [str(p) for p in images[:3]]
    expected = inference_detector(model, paths)
    actual = inference_detector(ort_model, paths)
    assert_same_detections(expected, actual)
    # boxes are in original-image pixels (640x480), not the 427x320 network input
    assert max(r[:, 2].max() for r in actual[0] if len(r)) > 427


def test_faster_rcnn_onnxruntime_gives_the_pytorch_detections_in_batches(faster_rcnn):
    from detforge.apis.inference import inference_detector
    from detforge.deployment import build_backend_model
    cfg, onnx_file, model, images = faster_rcnn
    ort_model = build_backend_model(str(cfg), str(onnx_file))
    assert ort_model.input_shape is None          # dynamic
    paths = [str(p) for p in images[:3]]          # one batch of 3
    assert_same_detections(inference_detector(model, paths), inference_detector(ort_model, paths))


def test_dynamic_graph_runs_other_input_sizes(faster_rcnn):
    """The dynamic graph traced at 320x448 also runs a 256x352 batch of two images of
    different sizes, with the PyTorch model's detections."""
    import cv2
    from detforge.deployment import ORTDetector
    _, onnx_file, model, images = faster_rcnn
    ort_model = ORTDetector(str(onnx_file))
    img = torch.zeros(2, 3, 256, 352, dtype=torch.uint8)
    shapes = [(256, 341), (224, 352)]
    metas = []
    for i, (h, w) in enumerate(shapes):
        picture = cv2.resize(cv2.imread(str(images[i])), (w, h))
        img[i, :, :h, :w] = torch.from_numpy(picture).permute(2, 0, 1)
        metas.append(dict(img_shape=(h, w, 3), ori_shape=(480, 640, 3), pad_shape=(256, 352, 3),
                          scale_factor=np.array([w / 640, h / 480] * 2, np.float32)))
    with torch.no_grad():
        expected = model.simple_test(img, [dict(m) for m in metas], rescale=True)
    assert_same_detections(expected, ort_model.simple_test(img, metas, rescale=True))


def test_test_loop_gives_the_same_coco_ap_with_onnxruntime(faster_rcnn):
    """``single_gpu_test`` runs the ORT model unchanged; COCO AP equal to 3 decimals."""
    from detforge.apis.test import single_gpu_test
    from detforge.config import Config
    from detforge.data import build_dataset
    from detforge.data.loader import build_dataloader
    from detforge.deployment import build_backend_model
    cfg_file, onnx_file, model, _ = faster_rcnn
    cfg = Config.fromfile(str(cfg_file))
    dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    loader = build_dataloader(dataset, samples_per_gpu=2, workers_per_gpu=0, dist=False,
                              shuffle=False)
    expected = single_gpu_test(model, loader)
    actual = single_gpu_test(build_backend_model(cfg, str(onnx_file)), loader)
    assert sum(len(r) for res in actual for r in res) > 0
    assert_same_detections(expected, actual)
    ap_torch = dataset.evaluate(expected, metric='bbox')
    ap_ort = dataset.evaluate(actual, metric='bbox')
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
        assert round(ap_torch[key], 3) == round(ap_ort[key], 3), key


@pytest.mark.parametrize('kind', ['cascade_rcnn', 'cascade_rcnn_probs'])
def test_cascade_rcnn_onnxruntime_gives_the_pytorch_detections(tmp_path, repo_root, kind):
    from detforge.apis.inference import inference_detector
    from detforge.deployment import build_backend_model, export_onnx
    cfg, _, model, images = make_model(tmp_path, repo_root, kind, num_images=1)
    assert model.roi_head.score_average == ('probs' if kind.endswith('probs') else 'logits')
    export_onnx(model, str(tmp_path / 'cascade.onnx'), input_shape=(320, 448))
    ort_model = build_backend_model(str(cfg), str(tmp_path / 'cascade.onnx'))
    path = str(images[0])
    assert_same_detections([inference_detector(model, path)], [inference_detector(ort_model, path)])


def test_unsupported_head_fails_naming_it(tmp_path, repo_root):
    from torch import nn
    from detforge.deployment import export_onnx
    _, _, model, _ = make_model(tmp_path, repo_root, 'retinanet', num_images=1)

    class YOLOV3Head(nn.Module):  # (GFLHead before it was exported)
        pass

    model.bbox_head = YOLOV3Head()
    with pytest.raises(DetforgeError, match="bbox_head 'YOLOV3Head'"):
        export_onnx(model, str(tmp_path / 'x.onnx'), input_shape=(320, 448))
    assert not (tmp_path / 'x.onnx').exists()


def test_unsupported_nms_type_fails_naming_it(retinanet, tmp_path):
    from detforge.deployment import export_onnx
    model = retinanet[2]
    old = model.bbox_head.test_cfg['nms']
    model.bbox_head.test_cfg['nms'] = dict(type='soft_nms', iou_threshold=0.5)
    try:
        with pytest.raises(DetforgeError, match='soft_nms'):
            export_onnx(model, str(tmp_path / 'x.onnx'), input_shape=(64, 64))
    finally:
        model.bbox_head.test_cfg['nms'] = old


def test_simplify_without_onnxsim_says_what_to_install(retinanet, tmp_path, monkeypatch):
    import sys
    from detforge.deployment import export_onnx
    monkeypatch.setitem(sys.modules, 'onnxsim', None)   # import fails as if not installed
    with pytest.raises(DetforgeError, match='pip install onnxsim'):
        export_onnx(retinanet[2], str(tmp_path / 'x.onnx'), simplify=True)


def test_static_graph_refuses_a_larger_batch_clearly(retinanet):
    from detforge.deployment import ORTDetector
    model = ORTDetector(str(retinanet[1]))
    img = torch.zeros(1, 3, 352, 448, dtype=torch.uint8)
    with pytest.raises(DetforgeError, match='--shape 352 448'):
        model.simple_test(img, [dict(img_shape=(352, 448, 3), scale_factor=1.0)])


def test_float_images_are_refused(retinanet):
    from detforge.deployment import ORTDetector
    model = ORTDetector(str(retinanet[1]))
    with pytest.raises(DetforgeError, match='uint8'):
        model.simple_test(torch.zeros(1, 3, 320, 448), [dict(img_shape=(320, 448, 3))])


def test_test_and_infer_commands_run_the_onnx_file(retinanet, tmp_path, capsys):
    """``detforge test/infer CONFIG model.onnx --backend onnxruntime`` evaluate and draw with the
    exported graph; the detections JSON equals the PyTorch run's."""
    from detforge.cli import main
    cfg, onnx_file, _, images = retinanet
    ckpt = onnx_file.with_suffix('.pth')
    assert main(['test', str(cfg), str(onnx_file), '--backend', 'onnxruntime',
                 '--eval', 'bbox', '--out', str(tmp_path / 'ort.pkl')]) == 0
    assert 'bbox_mAP' in capsys.readouterr().out
    assert (tmp_path / 'ort.pkl').is_file()
    runs = {}
    for backend, model_file in (('onnxruntime', onnx_file), ('pytorch', ckpt)):
        out = tmp_path / backend
        assert main(['infer', str(cfg), str(model_file), str(images[0]), '--out', str(out),
                     '--backend', backend, '--score-thr', '0']) == 0
        runs[backend] = json.loads((out / 'detections.json').read_text())['detections']
    (ort,), (pt,) = runs['onnxruntime'].values(), runs['pytorch'].values()
    assert len(ort) == len(pt) > 0
    # the same boxes, scores and labels: each PyTorch detection matched to its nearest
    # onnxruntime one (robust to score ties reordering the list)
    pt_boxes = np.array([d['bbox'] for d in pt], np.float32)
    ort_boxes = np.array([d['bbox'] for d in ort], np.float32)
    dist = np.abs(pt_boxes[:, None] - ort_boxes[None]).max(-1)
    nearest = dist.argmin(1)
    assert dist.min(1).max() < 1e-2
    assert len(set(nearest.tolist())) == len(nearest)
    assert [d['label'] for d in pt] == [ort[j]['label'] for j in nearest]
    assert [d['class'] for d in pt] == [ort[j]['class'] for j in nearest]
    np.testing.assert_allclose([d['score'] for d in pt], [ort[j]['score'] for j in nearest],
                               atol=1e-4)
    with pytest.raises(DetforgeError, match='model file not found'):
        import argparse
        from detforge.commands.infer import add_arguments, main as infer_main
        parser = argparse.ArgumentParser()
        add_arguments(parser)  # every option at its default, as the CLI would give them
        infer_main(parser.parse_args([str(cfg), str(tmp_path / 'none.onnx'), str(images[0]),
                                      '--out', str(tmp_path), '--backend', 'onnxruntime']))


def assert_same_per_class(expected, actual, top: int = 20, atol: float = 1e-2):
    """Per image and class, the ``top`` best detections equal (boxes ``atol`` px, scores 1e-4):
    where one anchor gives a box in every class, matching boxes across classes is ambiguous."""
    for exp, act in zip(expected, actual):
        assert sum(len(e) for e in exp) > 0
        for e, a in zip(exp, act):
            e, a = e[np.argsort(-e[:, 4])[:top]], a[np.argsort(-a[:, 4])[:top]]
            assert len(e) == len(a)
            np.testing.assert_allclose(a[:, :4], e[:, :4], atol=atol)
            np.testing.assert_allclose(a[:, 4], e[:, 4], atol=1e-4)


def test_static_export_steps_anchors_by_torchvision_stride_rule(tmp_path, repo_root):
    """``stride_rule='batch_shape'`` (the ``_tv`` configs: stride = padded input // feature
    size) is fixed into a static graph: at 320x448, P7 is 3x4, so its anchors step 106/112 px,
    not the configured 128. P7's scores are raised (a hook, traced into the graph too) so that
    the compared detections come from that level."""
    from detforge.apis.inference import inference_detector, init_detector
    from detforge.commands.export import norm_cfg_from_config
    from detforge.deployment import build_backend_model, export_onnx
    from detforge.registry import DetforgeError
    cfg, ckpt, _, images = make_model(tmp_path, repo_root, 'retinanet', score_thr=0.0)
    model = init_detector(str(cfg), str(ckpt), cfg_options={
        'model.bbox_head.anchor_generator.stride_rule': 'batch_shape'})

    def raise_p7(module, inputs, outputs):
        cls_scores, bbox_preds = outputs
        return [*cls_scores[:-1], cls_scores[-1] + 6.0], bbox_preds
    model.bbox_head.register_forward_hook(raise_p7)
    out = tmp_path / 'tv_rule.onnx'
    export_onnx(model, str(out), input_shape=(320, 448), norm_cfg=norm_cfg_from_config(model.cfg),
                class_names=CLASSES)
    paths = [str(p) for p in images[:2]]
    expected = inference_detector(model, paths)
    generator = model.bbox_head.prior_generator
    generator.stride_rule = 'fixed'  # the configured 128 px: other boxes, so the test can tell
    with pytest.raises(AssertionError):
        assert_same_per_class(expected, inference_detector(model, paths))
    generator.stride_rule = 'batch_shape'
    assert_same_per_class(expected, inference_detector(build_backend_model(str(cfg), str(out)),
                                                       paths))
    with pytest.raises(DetforgeError,
                       match=r"model.bbox_head.anchor_generator.stride_rule='fixed'.*drop --dynamic"):
        export_onnx(model, str(tmp_path / 'dyn.onnx'), input_shape=(320, 448), dynamic=True)
