"""Detectron2 checkpoints and configs: ``detforge convert detectron2`` / ``d2-config``.

CI does not install Detectron2. What stands in for it here:

* ``tests/data/detectron2/*.keys.txt``: the name and shape of every entry of the state_dict of
  Detectron2's own RetinaNet / Faster R-CNN / Mask R-CNN / Cascade Mask R-CNN R50-FPN and
  Faster R-CNN R50-C4 models, dumped from Detectron2 (commit in the files' header) built from
  its YAML configs;
* ``tests/data/detectron2/configs``: those YAML configs, unchanged (Apache-2.0, see LICENSE
  there);
* ``_d2_name`` below: detforge's parameter names -> Detectron2's, written from Detectron2's
  module names (``bottom_up.stem``, ``res{2-5}``, ``fpn_lateral{s}``, ...), independently of
  the converter's rules, so that a wrong rule in the converter fails these tests;
* the mask head and the C4 res5 head written here in plain torch from Detectron2's layer
  names, against detforge's modules with converted weights.

The side-by-side check against Detectron2 itself is ``benchmarks/check_d2_parity.py``.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from detforge.cli import main as cli
from detforge.config import Config
from detforge.engine.checkpoint import load_checkpoint
from detforge.models import build_detector
from detforge.registry import DetforgeError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / 'tests' / 'data' / 'detectron2'
YAML = {'retinanet': DATA / 'configs' / 'COCO-Detection' / 'retinanet_R_50_FPN_1x.yaml',
        'faster_rcnn': DATA / 'configs' / 'COCO-Detection' / 'faster_rcnn_R_50_FPN_1x.yaml',
        'mask_rcnn': DATA / 'configs' / 'COCO-InstanceSegmentation' / 'mask_rcnn_R_50_FPN_1x.yaml',
        'faster_rcnn_c4': DATA / 'configs' / 'COCO-Detection' / 'faster_rcnn_R_50_C4_1x.yaml',
        'cascade_mask_rcnn': DATA / 'configs' / 'Misc' / 'cascade_mask_rcnn_R_50_FPN_1x.yaml'}
KEYS = {'retinanet': DATA / 'retinanet_R_50_FPN_1x.keys.txt',
        'faster_rcnn': DATA / 'faster_rcnn_R_50_FPN_1x.keys.txt',
        'mask_rcnn': DATA / 'mask_rcnn_R_50_FPN_1x.keys.txt',
        'faster_rcnn_c4': DATA / 'faster_rcnn_R_50_C4_1x.keys.txt',
        'cascade_mask_rcnn': DATA / 'cascade_mask_rcnn_R_50_FPN_1x.keys.txt'}
CONFIGS = {'retinanet': REPO / 'configs' / 'retinanet' / 'retinanet_r50_fpn_d2.py',
           'faster_rcnn': REPO / 'configs' / 'faster_rcnn' / 'faster_rcnn_r50_fpn_d2.py',
           'mask_rcnn': REPO / 'configs' / 'mask_rcnn' / 'mask_rcnn_r50_fpn_d2.py',
           'faster_rcnn_c4': REPO / 'configs' / 'faster_rcnn' / 'faster_rcnn_r50_c4_d2.py',
           'cascade_mask_rcnn': REPO / 'configs' / 'cascade_rcnn' / 'cascade_mask_rcnn_r50_fpn_d2.py'}
FAMILIES = list(CONFIGS)


def _bottleneck_name(p: list[str], block: str) -> str:
    """``p``: a detforge bottleneck parameter's name parts after ``layerN.b``; ``block``:
    Detectron2's name of that block."""
    if p[0].startswith('conv'):
        return f'{block}.{p[0]}.weight'
    if p[0].startswith('bn'):
        return f'{block}.conv{p[0][2:]}.norm.{p[1]}'
    assert p[0] == 'downsample'
    return f'{block}.shortcut.weight' if p[1] == '0' else f'{block}.shortcut.norm.{p[2]}'


def _d2_name(key: str, first_fpn_stage: int, fpn_inputs: int) -> str | None:
    """Detectron2's name of detforge parameter ``key`` (None: not a Detectron2 parameter).
    ``first_fpn_stage`` 0: a C4 model (no FPN: the ResNet is ``backbone.*`` itself)."""
    p = key.split('.')
    resnet = 'backbone.bottom_up' if first_fpn_stage else 'backbone'
    if p[0] == 'backbone':
        if p[1] == 'conv1':
            return f'{resnet}.stem.conv1.weight'
        if p[1] == 'bn1':
            return f'{resnet}.stem.conv1.norm.{p[2]}'
        stage = f'res{int(p[1][len("layer"):]) + 1}'  # layer1 is Detectron2's res2
        return _bottleneck_name(p[3:], f'{resnet}.{stage}.{p[2]}')
    if p[0] == 'neck':
        j = int(p[2])
        if p[1] == 'lateral_convs':
            return f'backbone.fpn_lateral{first_fpn_stage + j}.{p[4]}'
        if j < fpn_inputs:
            return f'backbone.fpn_output{first_fpn_stage + j}.{p[4]}'
        return f'backbone.top_block.p{6 + j - fpn_inputs}.{p[4]}'
    if p[0] == 'bbox_head':
        if p[1] == 'loss_normalizer':
            return None  # detforge's moving average (Detectron2 keeps it outside state_dict)
        if p[1] in ('cls_convs', 'reg_convs'):
            tower = 'cls_subnet' if p[1] == 'cls_convs' else 'bbox_subnet'
            return f'head.{tower}.{2 * int(p[2])}.{p[4]}'  # Sequential(conv, ReLU, ...)
        return {'retina_cls': 'head.cls_score', 'retina_reg': 'head.bbox_pred'}[p[1]] + '.' + p[2]
    if p[0] == 'rpn_head':
        part = {'rpn_conv': 'conv', 'rpn_cls': 'objectness_logits', 'rpn_reg': 'anchor_deltas'}[p[1]]
        return f'proposal_generator.rpn_head.{part}.{p[2]}'
    if p[:2] == ['roi_head', 'bbox_head'] and p[2].isdigit():  # cascade stage p[2]
        if p[3] == 'shared_fcs':
            return f'roi_heads.box_head.{p[2]}.fc{int(p[4]) + 1}.{p[5]}'
        return {'fc_cls': f'roi_heads.box_predictor.{p[2]}.cls_score',
                'fc_reg': f'roi_heads.box_predictor.{p[2]}.bbox_pred'}[p[3]] + '.' + p[4]
    if p[:3] == ['roi_head', 'mask_head', '0']:  # a cascade's one mask head
        p = p[:2] + p[3:]
    if p[:2] == ['roi_head', 'bbox_head']:
        if p[2] == 'shared_fcs':
            return f'roi_heads.box_head.fc{int(p[3]) + 1}.{p[4]}'
        return {'fc_cls': 'roi_heads.box_predictor.cls_score',
                'fc_reg': 'roi_heads.box_predictor.bbox_pred'}[p[2]] + '.' + p[3]
    if p[:2] == ['roi_head', 'mask_head']:  # MaskRCNNConvUpsampleHead
        if p[2] == 'convs':
            return f'roi_heads.mask_head.mask_fcn{int(p[3]) + 1}.{p[5]}'
        return {'upsample': 'roi_heads.mask_head.deconv',
                'conv_logits': 'roi_heads.mask_head.predictor'}[p[2]] + '.' + p[3]
    if p[:3] == ['roi_head', 'shared_head', 'layer4']:  # Res5ROIHeads' res5
        return _bottleneck_name(p[4:], f'roi_heads.res5.{p[3]}')
    raise AssertionError(f'no Detectron2 name for {key}')


def _cli_error(argv: list[str], capsys) -> str:
    """The one-line error the CLI prints for ``argv`` (exit status 2, no traceback)."""
    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('detforge convert: error: ') and 'Traceback' not in err, err
    return err


def _d2_keys(family: str) -> dict[str, tuple]:
    out = {}
    for line in KEYS[family].read_text().splitlines():
        if line.startswith('#'):
            continue
        name, shape = line.split()
        out[name] = () if shape == '-' else tuple(int(s) for s in shape.split('x'))
    return out


_MODELS: dict = {}


def _model(family: str):
    """The detforge model of the shipped Detectron2 config (built once per family)."""
    if family not in _MODELS:
        cfg = Config.fromfile(str(CONFIGS[family]))
        cfg.model.backbone.init_cfg = None
        _MODELS[family] = build_detector(cfg.model).eval()
    return _MODELS[family]


def _fpn_layout(family: str) -> tuple[int, int]:
    return {'retinanet': (3, 3), 'faster_rcnn_c4': (0, 0)}.get(family, (2, 4))


@pytest.mark.parametrize('family', FAMILIES)
def test_the_shipped_configs_have_detectron2s_parameters(family):
    """Every parameter of detforge's ``*_d2.py`` model has its Detectron2 counterpart of the
    same shape, and every entry of Detectron2's state_dict has one in detforge's."""
    d2 = _d2_keys(family)
    ours = {}
    for key, value in _model(family).state_dict().items():
        name = _d2_name(key, *_fpn_layout(family))
        if name is not None:
            ours[name] = tuple(value.shape)
    assert set(ours) == set(d2), (sorted(set(d2) - set(ours))[:5], sorted(set(ours) - set(d2))[:5])
    assert {k: v for k, v in ours.items() if d2[k] != v} == {}


def _random_d2_checkpoint(family: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random values in Detectron2's names and shapes (each tensor distinct)."""
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in _d2_keys(family).items()}


@pytest.mark.parametrize('family,fmt', [('retinanet', '.pkl'), ('faster_rcnn', '.pth'),
                                        ('mask_rcnn', '.pkl'), ('faster_rcnn_c4', '.pth'),
                                        ('cascade_mask_rcnn', '.pkl')])
def test_convert_detectron2_checkpoint_loads_with_equal_tensors(family, fmt, tmp_path):
    """A zoo-format checkpoint (``.pkl`` of numpy arrays, or ``.pth`` of ``{'model': ...}``)
    converts through the CLI and loads into the shipped config's model with 0 missing,
    unexpected or mis-shaped keys, each tensor equal to its Detectron2 original."""
    weights = _random_d2_checkpoint(family)
    src = tmp_path / f'model_final{fmt}'
    if fmt == '.pkl':
        with open(src, 'wb') as f:  # as Detectron2's zoo files: numpy arrays under 'model'
            pickle.dump({'model': weights, '__author__': 'Detectron2 Model Zoo'}, f)
    else:
        torch.save({'model': {k: torch.from_numpy(v) for k, v in weights.items()},
                    'iteration': 89999}, src)
    dst = tmp_path / 'converted.pth'
    assert cli(['convert', 'detectron2', str(src), str(dst), '--config', str(YAML[family])]) == 0
    model = _model(family)
    report = load_checkpoint(model, str(dst), log_report=False)['load_report']
    assert (len(report.missing), len(report.unexpected), len(report.mismatched)) == (0, 0, 0), report
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['config'] == str(CONFIGS[family].relative_to(REPO))
    assert len(ckpt['meta']['CLASSES']) == 80
    for key, value in model.state_dict().items():
        name = _d2_name(key, *_fpn_layout(family))
        if name is not None:
            assert torch.equal(value, torch.from_numpy(weights[name])), key


def test_convert_detectron2_refuses_an_unknown_parameter_and_a_wrong_class_count(tmp_path, capsys):
    weights = _random_d2_checkpoint('faster_rcnn')
    src = tmp_path / 'model.pkl'
    with open(src, 'wb') as f:
        pickle.dump({'model': dict(weights, **{'roi_heads.box_head.conv1.weight':
                                                np.zeros((256, 256, 3, 3), np.float32)})}, f)
    err = _cli_error(['convert', 'detectron2', str(src), str(tmp_path / 'out.pth')], capsys)
    assert 'roi_heads.box_head.conv1.weight' in err
    # a 3-class model against the 80-class COCO YAML: named, not loaded wrongly
    weights['roi_heads.box_predictor.cls_score.weight'] = np.zeros((4, 1024), np.float32)
    weights['roi_heads.box_predictor.cls_score.bias'] = np.zeros(4, np.float32)
    with open(src, 'wb') as f:
        pickle.dump({'model': weights}, f)
    err = _cli_error(['convert', 'detectron2', str(src), str(tmp_path / 'out.pth'),
                      '--config', str(YAML['faster_rcnn'])], capsys)
    assert 'NUM_CLASSES is 80 but the checkpoint has 3' in err
    assert not (tmp_path / 'out.pth').exists()


class _RunsCode:
    """Unpickling this calls os.system (a pickle may name any importable function)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_pkl_is_read_as_data_a_pickle_that_runs_code_is_refused(tmp_path):
    from detforge.converters._detectron2_weights import (UnsafeCheckpointError,
                                                          load_detectron2_checkpoint)
    marker = tmp_path / 'ran'
    src = tmp_path / 'evil.pkl'
    with open(src, 'wb') as f:
        pickle.dump({'model': {'head.cls_score.weight': np.zeros(3, np.float32)},
                     '__author__': _RunsCode(marker)}, f)
    with pytest.raises(UnsafeCheckpointError, match='posix.system|os.system|nt.system'):
        load_detectron2_checkpoint(src)
    assert not marker.exists()
    # the same through torch.save: torch.load(weights_only=True) refuses it too
    src = tmp_path / 'evil.pth'
    torch.save({'model': {}, 'x': _RunsCode(marker)}, src)
    with pytest.raises(UnsafeCheckpointError, match='weights_only'):
        load_detectron2_checkpoint(src)
    assert not marker.exists()


def _subset_equal(small, big, path='') -> list[str]:
    """Paths where ``small``'s values differ from ``big``'s (``big`` may have more keys)."""
    if isinstance(small, dict):
        return [p for k, v in small.items()
                for p in (_subset_equal(v, big.get(k), f'{path}.{k}') if isinstance(big, dict)
                          else [f'{path}.{k} (missing)'])]
    if isinstance(small, (list, tuple)) and isinstance(big, (list, tuple)) and len(small) == len(big):
        return [p for i, (a, b) in enumerate(zip(small, big)) for p in _subset_equal(a, b, f'{path}.{i}')]
    if isinstance(small, float) or isinstance(big, float):
        return [] if big is not None and abs(float(small) - float(big)) <= 1e-9 * max(1, abs(float(big))) \
            else [f'{path}: {small!r} != {big!r}']
    return [] if small == big else [f'{path}: {small!r} != {big!r}']


@pytest.mark.parametrize('family', FAMILIES)
def test_d2_config_translates_detectron2s_yaml_into_the_shipped_config(family, tmp_path):
    """``detforge convert d2-config`` of Detectron2's own YAML (with its ``_BASE_`` and the
    ``!!python/object/apply:eval`` anchor sizes) gives the model the hand-written
    ``*_d2.py`` config describes, names nothing as untranslated but what has no effect, and
    the written file loads."""
    out = tmp_path / 'translated.py'
    assert cli(['convert', 'd2-config', str(YAML[family]), str(out)]) == 0
    text = out.read_text()
    assert 'NOT TRANSLATED' not in text
    translated = Config.fromfile(str(out))
    shipped = Config.fromfile(str(CONFIGS[family])).to_dict()
    m = translated.model.to_dict()
    parts = ['type', 'data_preprocessor', 'backbone', 'test_cfg']
    if family == 'retinanet':
        parts += ['bbox_head.anchor_generator', 'bbox_head.bbox_coder', 'bbox_head.num_classes',
                  'bbox_head.loss_normalizer_momentum', 'neck']
    elif family == 'faster_rcnn_c4':  # no neck; res5 as the shared head, then avg pool
        parts += ['rpn_head.anchor_generator', 'rpn_head.bbox_coder', 'rpn_head.in_channels',
                  'roi_head.bbox_roi_extractor', 'roi_head.shared_head', 'roi_head.bbox_head',
                  'train_cfg.rpn_proposal']
        assert 'neck' not in m
    else:
        parts += ['rpn_head.anchor_generator', 'rpn_head.bbox_coder', 'roi_head.bbox_roi_extractor',
                  'roi_head.bbox_head.bbox_coder', 'roi_head.bbox_head.num_classes',
                  'roi_head.bbox_head.fc_out_channels', 'neck']
    if family == 'mask_rcnn':
        parts += ['roi_head.mask_roi_extractor', 'roi_head.mask_head', 'train_cfg.rcnn.mask_size']
    elif family == 'cascade_mask_rcnn':  # 3 class-agnostic stages at 1 / (10, 20, 30) ...
        parts = [p for p in parts if not p.startswith('roi_head.bbox_head')]
        parts += ['roi_head.mask_roi_extractor', 'roi_head.mask_head', 'roi_head.bbox_head',
                  'roi_head.score_average', 'roi_head.mask_stages', 'roi_head.num_stages',
                  'roi_head.stage_loss_weights', 'train_cfg.rcnn', 'train_cfg.rpn_proposal']
    else:
        assert 'mask_head' not in m.get('roi_head', {})
    for part in parts:
        ours, theirs = m, shipped['model']
        for k in part.split('.'):
            ours, theirs = ours[k], theirs.get(k) if isinstance(theirs, dict) else None
        if isinstance(ours, dict) and isinstance(theirs, dict):
            # defaults the shipped config leaves to the constructors
            for default in ('center_offset', 'start_level', 'type', 'num_stages', 'out_channels',
                            'target_means', 'in_channels', 'num_outs'):
                if default not in theirs:
                    ours = {k: v for k, v in ours.items() if k != default}
        assert _subset_equal(ours, theirs, part) == [], part
    # Detectron2's test input: short side 800, long side at most 1333, with Pillow
    resize = translated.test_pipeline[1]['transforms'][0]
    assert (resize['type'], resize['short_edge_length'], resize['max_size'], resize['backend']) == \
        ('ResizeShortestEdge', 800, 1333, 'pillow')
    # padding as the backbone's size_divisibility: FPN 32, a plain ResNet (C4) none
    pad = dict(type='Pad', size_divisor=1 if family == 'faster_rcnn_c4' else 32)
    assert translated.test_pipeline[1]['transforms'][3] == pad
    assert shipped['test_pipeline'][1]['transforms'][3] == pad
    masks = 'mask' in family  # gt masks loaded for training, masks evaluated
    assert translated.train_pipeline[1] == dict(type='LoadAnnotations', with_bbox=True,
                                                **(dict(with_mask=True) if masks else {}))
    assert ('gt_masks' in translated.train_pipeline[-1]['keys']) == masks
    assert translated.evaluation.metric == (['bbox', 'segm'] if masks else 'bbox')
    assert translated.optimizer.lr == (0.01 if family == 'retinanet' else 0.02)
    assert translated.lr_config.step == [60000, 80000] and translated.runner.max_iters == 90000


def test_d2_config_names_the_keys_it_cannot_translate(tmp_path, capsys):
    """A key without a detforge equivalent, a value detforge does not have and an unknown key
    are all named in the written file and printed, never dropped silently."""
    base = YAML['retinanet']
    yaml_file = tmp_path / 'custom.yaml'
    yaml_file.write_text(
        f'_BASE_: "{os.path.relpath(base, tmp_path)}"\n'
        'MODEL:\n'
        '  RESNETS:\n'
        '    DEFORM_ON_PER_STAGE: [False, True, True, True]\n'
        '  RETINANET:\n'
        '    NUM_CLASSES: 3\n'
        '  MY_EXTENSION:\n'
        '    GAIN: 2\n'
        'SOLVER:\n'
        '  CLIP_GRADIENTS:\n'
        '    ENABLED: True\n')
    out = tmp_path / 'custom.py'
    assert cli(['convert', 'd2-config', str(yaml_file), str(out)]) == 0
    printed = capsys.readouterr().out
    text = out.read_text()
    for key in ('MODEL.RESNETS.DEFORM_ON_PER_STAGE', 'MODEL.MY_EXTENSION.GAIN',
                'SOLVER.CLIP_GRADIENTS.ENABLED'):
        assert re.search(rf'^#   {re.escape(key)} = ', text, re.M), key
        assert f'warning: {key} = ' in printed, key
    cfg = Config.fromfile(str(out))
    assert cfg.model.bbox_head.num_classes == 3  # translated keys still are


@pytest.mark.parametrize('tagged', [
    '!!python/object/apply:os.system ["true"]',
    '!!python/object/apply:eval ["__import__(\'os\').system(\'true\')"]',
    '!!python/object/apply:eval ["[2 ** 100000000]"]',
])
def test_d2_yaml_is_data_no_code_runs(tagged, tmp_path, capsys):
    yaml_file = tmp_path / 'evil.yaml'
    yaml_file.write_text(f'MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: {tagged}\n')
    err = _cli_error(['convert', 'd2-config', str(yaml_file), str(tmp_path / 'out.py')], capsys)
    assert 'evil.yaml' in err
    assert not (tmp_path / 'out.py').exists()
    with pytest.raises(DetforgeError):
        from detforge.converters._detectron2_config import load_d2_yaml
        load_d2_yaml(yaml_file)


def test_resize_shortest_edge_pillow_backend_is_pillows_bilinear():
    """Detectron2 resizes uint8 images with Pillow: ``backend='pillow'`` gives its pixels."""
    from PIL import Image

    from detforge.data.pipelines.transforms import ResizeShortestEdge
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = ResizeShortestEdge(80, max_size=1333, backend='pillow')(dict(img=img.copy()))
    assert out['img'].shape == (80, 107, 3)
    expected = np.asarray(Image.fromarray(img).resize((107, 80), Image.Resampling.BILINEAR))
    assert np.array_equal(out['img'], expected)
    cv2_out = ResizeShortestEdge(80, max_size=1333)(dict(img=img.copy()))['img']
    assert not np.array_equal(cv2_out, expected)  # the two filters do round differently


def test_clip_rescaled_clips_to_the_original_image_and_drops_empty_boxes():
    """Detectron2's detector_postprocess: boxes clipped to the original image, those left
    without width or height removed (order kept)."""
    from detforge.models.postprocess import clip_and_drop_empty
    dets = torch.tensor([[-5., 2., 30., 50., .9], [10., 10., 20., 20., .8],
                         [101., 5., 120., 9., .7], [50., 60., 70., 90., .6]])
    labels = torch.tensor([0, 1, 2, 3])
    out, kept = clip_and_drop_empty(dets, labels, (80, 100, 3))
    assert kept.tolist() == [0, 1, 3]
    assert out[:, :4].tolist() == [[0., 2., 30., 50.], [10., 10., 20., 20.], [50., 60., 70., 80.]]


def _scaled_d2_checkpoint(family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded float64 weights in Detectron2's names and shapes at a scale that keeps
    activations finite through ResNet blocks (batch-norm variances positive)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in _d2_keys(family).items():
        if name.endswith('running_var'):
            out[name] = 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
        else:
            out[name] = 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)
    return out


def _converted(weights: dict, prefix: str) -> dict:
    from detforge.converters._detectron2_weights import convert_state_dict
    state, _ = convert_state_dict(weights)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_converted_mask_head_computes_detectron2s_mask_logits():
    """detforge's FCNMaskHead with converted weights gives the logits of Detectron2's
    MaskRCNNConvUpsampleHead, written here from Detectron2's layer names: mask_fcn1..4
    (3x3 conv, pad 1, ReLU), deconv (2x2, stride 2) + ReLU, predictor (1x1)."""
    import torch.nn.functional as F

    from detforge.registry import HEADS
    w = _scaled_d2_checkpoint('mask_rcnn')
    cfg = Config.fromfile(str(CONFIGS['mask_rcnn'])).model.roi_head.mask_head.to_dict()
    head = HEADS.build(cfg).double().eval()
    head.load_state_dict(_converted(w, 'roi_head.mask_head.'))
    x = torch.randn(3, 256, 14, 14, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = x
    for k in range(1, 5):
        p = f'roi_heads.mask_head.mask_fcn{k}'
        y = F.relu(F.conv2d(y, w[p + '.weight'], w[p + '.bias'], padding=1))
    y = F.relu(F.conv_transpose2d(y, w['roi_heads.mask_head.deconv.weight'],
                                  w['roi_heads.mask_head.deconv.bias'], stride=2))
    y = F.conv2d(y, w['roi_heads.mask_head.predictor.weight'], w['roi_heads.mask_head.predictor.bias'])
    with torch.no_grad():
        ours = head(x)
    assert ours.shape == (3, 80, 28, 28)
    torch.testing.assert_close(ours, y, rtol=1e-10, atol=1e-10)


def _frozen_bn(x, w: dict, name: str):
    """Detectron2's FrozenBatchNorm2d (eps 1e-5) from its buffers."""
    scale = w[name + '.weight'] / (w[name + '.running_var'] + 1e-5).sqrt()
    shift = w[name + '.bias'] - w[name + '.running_mean'] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def test_converted_c4_head_computes_detectron2s_res5_box_predictions():
    """detforge's C4 RoI head (ResLayer shared head + avg-pooled BBoxHead) with converted
    weights gives Detectron2's Res5ROIHeads outputs, written here from its layer names: res5's
    3 bottlenecks (the first with a projection shortcut and stride 2 on its 1x1 conv1,
    STRIDE_IN_1X1), frozen BN, the 14x14 RoI features' 7x7 output averaged, then
    box_predictor's cls_score (81) and bbox_pred (320)."""
    import torch.nn.functional as F
    w = _scaled_d2_checkpoint('faster_rcnn_c4')
    model = _model('faster_rcnn_c4')
    shared, bbox_head = model.roi_head.shared_head, model.roi_head.bbox_head
    x = torch.randn(2, 1024, 14, 14, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = x
    for b in range(3):
        p = f'roi_heads.res5.{b}'
        stride = 2 if b == 0 else 1
        out = F.relu(_frozen_bn(F.conv2d(y, w[p + '.conv1.weight'], stride=stride), w, p + '.conv1.norm'))
        out = F.relu(_frozen_bn(F.conv2d(out, w[p + '.conv2.weight'], padding=1), w, p + '.conv2.norm'))
        out = _frozen_bn(F.conv2d(out, w[p + '.conv3.weight']), w, p + '.conv3.norm')
        short = _frozen_bn(F.conv2d(y, w[p + '.shortcut.weight'], stride=2), w, p + '.shortcut.norm') \
            if b == 0 else y
        y = F.relu(out + short)
    assert y.shape == (2, 2048, 7, 7)
    feat = y.mean(dim=(2, 3))
    cls = F.linear(feat, w['roi_heads.box_predictor.cls_score.weight'],
                   w['roi_heads.box_predictor.cls_score.bias'])
    reg = F.linear(feat, w['roi_heads.box_predictor.bbox_pred.weight'],
                   w['roi_heads.box_predictor.bbox_pred.bias'])
    shared.double(), bbox_head.double()  # float64 weights, not float32-rounded ones
    try:
        shared.load_state_dict(_converted(w, 'roi_head.shared_head.'))
        bbox_head.load_state_dict(_converted(w, 'roi_head.bbox_head.'))
        with torch.no_grad():
            ours_cls, ours_reg = bbox_head(shared(x))
    finally:
        shared.float(), bbox_head.float()
    torch.testing.assert_close(ours_cls, cls, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours_reg, reg, rtol=1e-9, atol=1e-9)


def test_converted_mask_rcnn_runs_end_to_end(tmp_path):
    """A converted Mask R-CNN checkpoint (through the CLI, checked against Detectron2's
    YAML) runs in detforge: per image 80 classes of boxes and, for each box, a bool mask of
    the original image's size."""
    w = {k: v.float().numpy() for k, v in _scaled_d2_checkpoint('mask_rcnn').items()}
    # a classifier that favours class 3 and an RPN that scores every anchor: detections exist
    w['roi_heads.box_predictor.cls_score.bias'][3] = 8.0
    src = tmp_path / 'model_final.pkl'
    with open(src, 'wb') as f:
        pickle.dump({'model': w}, f)
    dst = tmp_path / 'converted.pth'
    assert cli(['convert', 'detectron2', str(src), str(dst), '--config', str(YAML['mask_rcnn'])]) == 0
    model = _model('mask_rcnn')
    report = load_checkpoint(model, str(dst), log_report=False)['load_report']
    assert report.ok, report
    img = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    meta = dict(img_shape=(96, 128, 3), ori_shape=(48, 64, 3), pad_shape=(96, 128, 3),
                scale_factor=np.array([2.0, 2.0, 2.0, 2.0], dtype=np.float32), flip=False)
    with torch.no_grad():
        (boxes, segms), = model.simple_test(img, [meta], rescale=True)
    assert len(boxes) == len(segms) == 80
    assert len(boxes[3]) > 0
    for per_class_boxes, per_class_masks in zip(boxes, segms):
        assert len(per_class_boxes) == len(per_class_masks)
        for m in per_class_masks:
            assert m.shape == (48, 64) and m.dtype == bool


def test_cascade_averages_the_stages_probabilities_as_detectron2():
    """``score_average='probs'`` (Detectron2's CascadeROIHeads): each detection's score is the
    mean over the 3 stages of the softmax probability of its class, computed on the boxes each
    stage saw; averaging the logits instead (MMDetection) gives other scores. The one mask head
    of ``mask_stages='last'`` gives each detection a mask."""
    from detforge.registry import HEADS
    cfg = Config.fromfile(str(CONFIGS['cascade_mask_rcnn'])).model
    roi_cfg = cfg.roi_head.to_dict()
    roi_cfg['test_cfg'] = cfg.test_cfg.rcnn.to_dict()
    torch.manual_seed(0)
    head = HEADS.build(roi_cfg).eval()
    assert len(head.mask_head) == 1
    for stage in head.bbox_head:  # spread the classifier so that some scores pass 0.05
        stage.fc_cls.weight.data.mul_(40)
    g = torch.Generator().manual_seed(3)
    x = [torch.randn(1, 256, 64 // 2 ** i, 64 // 2 ** i, generator=g) for i in range(5)]
    xy = torch.rand(60, 2, generator=g) * 200
    proposals = [torch.cat([xy, xy + 8 + torch.rand(60, 2, generator=g) * 50], 1)]
    meta = dict(img_shape=(256, 256, 3), ori_shape=(256, 256, 3), scale_factor=1.0)
    with torch.no_grad():
        (dets,), (labels,) = head.simple_test_bboxes(x, [meta], proposals, head.test_cfg)
        assert len(dets) > 0
        probs = sum(torch.softmax(head._bbox_forward(i, x, rois)['cls_score'], -1)
                    for i, rois in enumerate(head.last_stage_rois)) / 3
        logits = sum(head._bbox_forward(i, x, rois)['cls_score']
                     for i, rois in enumerate(head.last_stage_rois)) / 3
        for score, label in zip(dets[:, 4], labels):
            assert (probs[:, label] - score).abs().min() < 1e-6
        by_logits = torch.softmax(logits, -1)
        assert not all((by_logits[:, label] - score).abs().min() < 1e-6
                       for score, label in zip(dets[:, 4], labels))
        (bbox_res, segm_res), = head.simple_test(x, proposals, [meta])
    assert sum(len(b) for b in bbox_res) == sum(len(m) for m in segm_res) == len(dets)
