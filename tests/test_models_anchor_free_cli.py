"""The BCCD-320 configs of FCOS, ATSS, GFL and RTMDet-tiny train and evaluate through ``detforge train``
(1 image, 1 iteration, a narrow model: the whole path from the config, not the accuracy)."""
import json

import pytest

from conftest import data_options
from detforge.cli import main as cli

CONFIGS = {
    'fcos': ('configs/fcos/fcos_r18_fpn_gn-head_center-normbbox-centeronreg-giou_ms_9e_bccd320.py',
             'loss_centerness'),
    'atss': ('configs/atss/atss_r18_fpn_gn-head_ms_9e_bccd320.py', 'loss_centerness'),
    'gfl': ('configs/gfl/gfl_r18_fpn_gn-head_ms_9e_bccd320.py', 'loss_dfl'),
    'rtmdet': ('configs/rtmdet/rtmdet_tiny_bccd320.py', None),  # with its AdamW, flat-cosine lr and EMA hook
}
NARROW = ['model.neck.out_channels=64', 'model.bbox_head.in_channels=64', 'model.bbox_head.feat_channels=64',
          'model.bbox_head.stacked_convs=1']


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_bccd_config_trains_and_evaluates(repo_root, bccd_subset, tmp_path, name):
    config, third_loss = CONFIGS[name]
    rc = cli(['train', str(repo_root / config), '--work-dir', str(tmp_path), '--seed', '0',
              '--cfg-options', *data_options(repo_root, bccd_subset(1)), 'data.samples_per_gpu=1',
              'runner.max_epochs=1', 'evaluation.interval=1', 'log_config.interval=1',
              *(NARROW if name != 'rtmdet' else []), 'model.test_cfg.score_thr=0.0'])  # fresh: no score > 0.05
    assert rc == 0
    records = [json.loads(line) for line in next(tmp_path.glob('*.log.json')).read_text().splitlines()]
    train = [r for r in records if r.get('mode') == 'train']
    assert [r['iter'] for r in train] == [1]
    assert all(r['loss'] > 0 and {'loss_cls', 'loss_bbox', third_loss or 'loss'} <= set(r) for r in train)
    val = [r for r in records if r.get('mode') == 'val']
    assert len(val) == 1 and 'bbox_mAP' in val[0]
