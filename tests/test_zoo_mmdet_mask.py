"""MMDetection 2.x Mask R-CNN / Cascade Mask R-CNN checkpoints load into detforge's own configs.

CI has no MMDetection: the mask branch's key names and shapes below were read from checkpoints
that MMDetection 2.28.2 itself built and saved (``mmcv.runner.save_checkpoint``) from its
``mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py`` and ``cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.py``
(2026-12-04, ``benchmarks/check_mmdet_parity.py``, which compares the two frameworks' outputs on
such checkpoints). Here: detforge's model has exactly those keys, and a checkpoint in the zoo's
``{'meta', 'state_dict'}`` layout, made in the test, loads with nothing missing or unexpected.
"""
import numpy as np
import pytest
import torch

from detforge.apis import init_detector
from detforge.engine.checkpoint import load_checkpoint

# one stage's mask branch as MMDetection 2.28.2 names it: FCNMaskHead, 4 convs, deconv, logits
MMDET_MASK_HEAD = {
    **{f'convs.{i}.conv.{p}': (256, 256, 3, 3) if p == 'weight' else (256,)
       for i in range(4) for p in ('weight', 'bias')},
    'upsample.weight': (256, 256, 2, 2), 'upsample.bias': (256,),
    'conv_logits.weight': (80, 256, 1, 1), 'conv_logits.bias': (80,),
}
# config, mask-head prefixes, all keys / keys outside the backbone in MMDetection's checkpoint
CASES = {
    'mask_rcnn': ('configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py', ['roi_head.mask_head.'],
                  360, 42),
    'cascade_mask_rcnn': ('configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.py',
                          [f'roi_head.mask_head.{i}.' for i in range(3)], 400, 82),
}


@pytest.mark.parametrize('family', list(CASES))
def test_keys_and_shapes_are_mmdetections(repo_root, family):
    config, prefixes, total, outside_backbone = CASES[family]
    model = init_detector(str(repo_root / config), None, device='cpu')
    state = model.state_dict()
    assert len(state) == total
    assert sum(not k.startswith('backbone.') for k in state) == outside_backbone
    mask_keys = {k: tuple(v.shape) for k, v in state.items() if k.startswith('roi_head.mask_head')}
    assert mask_keys == {prefix + k: shape for prefix in prefixes
                         for k, shape in MMDET_MASK_HEAD.items()}


def test_zoo_layout_checkpoint_loads_into_the_mask_rcnn_config(repo_root, tmp_path):
    config = str(repo_root / CASES['mask_rcnn'][0])
    model = init_detector(config, None, device='cpu')
    g = torch.Generator().manual_seed(0)
    state = {k: (v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    path = tmp_path / 'mask_rcnn_r50_fpn_1x_coco.pth'
    # as mmcv's save_checkpoint writes it (meta: the classes, mmcv version and time)
    torch.save({'meta': {'CLASSES': tuple(f'class{i}' for i in range(80)),
                         'mmcv_version': '1.7.2', 'time': 'Fri Dec  4 20:50:00 2026'},
                'state_dict': state}, path)
    fresh = init_detector(config, None, device='cpu')
    report = load_checkpoint(fresh, str(path), log_report=False)['load_report']
    assert report.ok and not report.missing and not report.unexpected and not report.mismatched
    loaded = fresh.state_dict()
    for key in ('roi_head.mask_head.conv_logits.weight', 'roi_head.mask_head.upsample.bias',
                'backbone.layer4.2.bn3.running_var'):
        assert torch.equal(loaded[key], state[key]), key
    assert np.isclose(float(loaded['roi_head.mask_head.convs.3.conv.bias'].sum()),
                      float(state['roi_head.mask_head.convs.3.conv.bias'].sum()))
