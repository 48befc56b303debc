"""ONNX export of the dense heads (FCOS, ATSS, GFL, RTMDet) against the PyTorch model.

Each model is its BCCD-320 config (narrowed for speed where it is a ResNet-18 one) with seeded
random weights; the predictor convolutions are drawn wider than at initialisation (std 0.3,
then the classification ones scaled so that the logits spread with std 2) so that the class
scores spread out and ties do not decide the ranking.
The graph is exported with dynamic axes, traced at 320x448, and run by onnxruntime on a batch
of two real BCCD images resized to odd sizes (203x277 and 224x251, padded to 224x288).

Tolerance: the same detections (every one of up to 100 per image, per class), boxes within
1e-2 px of the original 640x480 image (2e-2 for RTMDet-tiny) and scores within 1e-4 (5e-4 for
RTMDet-tiny, whose deeper float32 network differs more between the two runtimes; seen: 1.4e-4).
"""
import cv2
import numpy as np
import pytest
import torch


NARROW = dict(neck=dict(out_channels=32),
              bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1))
MODELS = {
    'fcos': ('fcos/fcos_r18_fpn_gn-head_center-normbbox-centeronreg-giou_ms_9e_bccd320.py',
             NARROW, ('conv_cls', 'conv_reg', 'conv_centerness')),
    'atss': ('atss/atss_r18_fpn_gn-head_ms_9e_bccd320.py', NARROW,
             ('atss_cls', 'atss_reg', 'atss_centerness')),
    'gfl': ('gfl/gfl_r18_fpn_gn-head_ms_9e_bccd320.py', NARROW, ('gfl_cls', 'gfl_reg')),
    'rtmdet': ('rtmdet/rtmdet_tiny_bccd320.py', {}, ('rtm_cls', 'rtm_reg')),
}
SHAPES = [(203, 277), (224, 251)]


def assert_same_detections(expected, actual, atol: float = 1e-2, score_atol: float = 1e-4):
    """Per image and class: the same number of detections, each expected one matched to a
    distinct actual one with its box within ``atol`` px and its score within ``score_atol``. (Matched
    per class: a dense head gives one prior's box to several classes.)"""
    for exp, act in zip(expected, actual):
        for label, (e, a) in enumerate(zip(exp, act)):
            assert len(e) == len(a), (label, len(e), len(a))
            if not len(e):
                continue
            # nearest in box and score together (degenerate boxes clipped to the border can
            # coincide; their scores tell them apart)
            dist = np.abs(e[:, None, :4] - a[None, :, :4]).max(-1)
            score_diff = np.abs(e[:, None, 4] - a[None, :, 4])
            nearest = (dist / atol + score_diff / score_atol).argmin(1)
            rows = np.arange(len(e))
            assert dist[rows, nearest].max() < atol, (label, dist[rows, nearest].max())
            assert score_diff[rows, nearest].max() < score_atol, \
                (label, score_diff[rows, nearest].max())
            assert len(set(nearest.tolist())) == len(nearest)


def _build(repo_root, name):
    from detforge.apis.inference import init_detector
    cfg_file, overrides, predictors = MODELS[name]
    torch.manual_seed(0)
    model = init_detector(str(repo_root / 'configs' / cfg_file), cfg_options={
        f'model.{k}.{kk}': v for k, d in overrides.items() for kk, v in d.items()})
    img, metas = _batch(repo_root, model.cfg.img_norm_cfg)
    with torch.no_grad():
        # batch-norm statistics of this batch (with the initial ones, mean 0 and variance 1,
        # RTMDet's activations shrink layer after layer to ~1e-10)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative: one pass sets the batch's statistics
        model.train()
        model.bbox_head(model.extract_feat(model.preprocess(img, metas)))
    model.eval()
    cls_weights = []
    with torch.no_grad():
        for pname, p in model.named_parameters():
            parts = pname.split('.')
            if any(pr in parts for pr in predictors) and pname.endswith('weight'):
                p.normal_(0, 0.3)
                if 'cls' in pname:
                    cls_weights.append(p)
            if 'rtm_reg' in parts:
                # RTMDet's distances are not kept positive (exp_on_reg=False): an untrained
                # head gives inverted boxes, which torchvision's and ONNX's NMS treat
                # differently; a trained one predicts positive distances
                p.normal_(0, 0.02) if pname.endswith('weight') else p.fill_(2.0)
        # classification logits spread to a standard deviation of 2 around the prior bias
        logits = model.bbox_head(model.extract_feat(model.preprocess(img, metas)))[0]
        spread = torch.cat([x.flatten() for x in logits]).std()
        for p in cls_weights:
            p.mul_(2.0 / spread)
    return model, model.cfg


def _batch(repo_root, norm_cfg):
    """Two real BCCD images at odd sizes in a 224x288 uint8 batch, and their metas."""
    paths = sorted((repo_root / 'data/bccd/JPEGImages').glob('*.jpg'))[:2]
    img = torch.zeros(2, 3, 224, 288, dtype=torch.uint8)
    metas = []
    for i, (h, w) in enumerate(SHAPES):
        picture = cv2.resize(cv2.imread(str(paths[i])), (w, h))
        img[i, :, :h, :w] = torch.from_numpy(picture).permute(2, 0, 1)
        metas.append(dict(img_shape=(h, w, 3), ori_shape=(480, 640, 3), pad_shape=(224, 288, 3),
                          batch_input_shape=(224, 288), img_norm_cfg=dict(norm_cfg),
                          scale_factor=np.array([w / 640, h / 480] * 2, np.float32)))
    return img, metas


@pytest.mark.parametrize('name', list(MODELS))
def test_dense_head_onnx_gives_the_pytorch_detections(name, repo_root, tmp_path):
    from detforge.deployment import ORTDetector, export_onnx
    model, cfg = _build(repo_root, name)
    onnx_file = tmp_path / f'{name}.onnx'
    meta = export_onnx(model, str(onnx_file), input_shape=(320, 448), dynamic=True,
                       norm_cfg=cfg.img_norm_cfg)
    assert meta['kind'] == 'dense' and meta['num_classes'] == 3
    img, metas = _batch(repo_root, cfg.img_norm_cfg)
    with torch.no_grad():
        expected = model.simple_test(img, [dict(m) for m in metas], rescale=True)
    actual = ORTDetector(str(onnx_file)).simple_test(img, metas, rescale=True)
    counts = [sum(len(r) for r in res) for res in expected]
    assert min(counts) >= 20  # enough detections for the comparison to mean something
    scores = np.concatenate([np.concatenate(res)[:, 4] for res in expected])
    assert len(np.unique(scores.round(5))) > 0.9 * len(scores)  # distinct scores
    if name == 'rtmdet':  # 40 layers of float32 differences between the two runtimes
        assert_same_detections(expected, actual, atol=2e-2, score_atol=5e-4)
    else:
        assert_same_detections(expected, actual)
