"""``docs/design.md`` names the files of one RetinaNet training step: the list must be what the
step runs. One ``run_step`` is traced and the detforge files whose code ran are compared with
the files the page lists (so the page cannot go stale when code moves)."""
import logging
import re
import sys
from pathlib import Path

import torch

from detforge.config import Config
from detforge.engine import EpochBasedRunner
from detforge.models.builder import build_detector

from test_models_retinanet import make_batch

REPO = Path(__file__).resolve().parents[1]


def _listed_files() -> set[str]:
    text = (REPO / 'docs' / 'design.md').read_text()
    block = text[text.index('<!-- step-files'):text.index('<!-- /step-files -->')]
    return set(re.findall(r'`(detforge/[\w/]+\.py)`', block)) - {'detforge/engine/runner/iter_based_runner.py'}


def _traced_files(bccd_voc_root, tmp_path) -> set[str]:
    cfg = Config.fromfile(str(REPO / 'configs/retinanet/retinanet_r18_fpn_1x_bccd.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.feat_channels = 32
    cfg.model.bbox_head.stacked_convs = 1
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=1e-3),
                              work_dir=str(tmp_path), logger=logging.getLogger('design_map'),
                              max_epochs=1)
    runner.configure_step(cfg.optimizer_config)
    batch = make_batch(bccd_voc_root, names=('BloodImage_00000',))
    seen = set()

    def profile(frame, event, arg):
        if event == 'call':
            path = Path(frame.f_code.co_filename)
            if REPO / 'detforge' in path.parents:
                seen.add(path.relative_to(REPO).as_posix())
    sys.setprofile(profile)
    try:
        runner.train([batch])  # the loop (one batch) and its step
    finally:
        sys.setprofile(None)
    return seen


def test_the_design_map_lists_exactly_the_files_one_training_step_runs(bccd_voc_root, tmp_path):
    traced = _traced_files(bccd_voc_root, tmp_path)
    listed = _listed_files()
    assert traced - listed == set(), f'the step runs files docs/design.md does not list: {sorted(traced - listed)}'
    assert listed - traced == set(), f'docs/design.md lists files the step does not run: {sorted(listed - traced)}'
    assert len(listed) == 22
