"""Every shipped config under configs/ loads, builds its detector, and (where its data is in the
repository) builds its datasets with the class count the head expects."""
from pathlib import Path

import pytest

from conftest import REPO
from detforge.config import Config
from detforge.data import build_dataset
from detforge.models import build_detector

CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)


def test_the_configs_are_found():
    assert 'configs/retinanet/retinanet_r18_fpn_lite_8e_bccd.py' in CONFIGS   # the README demo
    assert len(CONFIGS) >= 10


def _head_num_classes(model_cfg):
    if 'bbox_head' in model_cfg:
        return model_cfg.bbox_head.num_classes
    if 'roi_head' in model_cfg:
        heads = model_cfg.roi_head.bbox_head
        return (heads[0] if isinstance(heads, list) else heads).num_classes
    return None  # RPN: class-agnostic


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_its_model_and_bundled_data(path, monkeypatch):
    monkeypatch.chdir(REPO)  # data_root is relative to the working directory, as in MMDetection
    cfg = Config.fromfile(path)
    model = build_detector(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 1e6
    if 'data' not in cfg:
        return  # the *_tv.py configs: a model in torchvision's conventions, for its weights
    assert cfg.runner.max_epochs or cfg.runner.get('max_iters')
    ann_file = cfg.data.train.get('ann_file')
    if isinstance(ann_file, str) and not Path(ann_file).is_file():
        return  # COCO configs: the data is the user's
    proposal_file = cfg.data.train.get('proposal_file')
    if isinstance(proposal_file, str) and not Path(proposal_file).is_file():
        return  # Fast R-CNN: the proposal files are made by the user's RPN (`detforge test`)
    train, test = build_dataset(cfg.data.train), build_dataset(cfg.data.test, dict(test_mode=True))
    assert len(train) > 0 and len(test) > 0
    num_classes = _head_num_classes(cfg.model)
    if num_classes is not None:
        assert len(train.CLASSES) == num_classes, (path, train.CLASSES, num_classes)
    sample = train[0]
    assert sample['img'].data.shape[0] == 3
