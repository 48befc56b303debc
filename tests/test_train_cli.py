"""`detforge train` / `detforge test` end to end on a few real BCCD images (tiny RetinaNet)."""
from __future__ import annotations

import json
import logging
import pickle
import sys

import pytest
import torch

from detforge.cli import main as _cli

from conftest import data_options

TINY = 'tests/configs/retinanet_r18_tiny_bccd.py'


def cli(argv):
    """``detforge ARGV`` in this process. The detforge logger's console handler keeps the
    stderr of the first call; point it at the current one (pytest swaps it per test)."""
    for handler in logging.getLogger('detforge').handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr  # setStream would flush the closed old one
    return _cli(argv)


@pytest.fixture(autouse=True)
def restore_determinism():
    """``--deterministic`` switches torch's global flag on; later tests must not pay for it."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope='module')
def trained(repo_root, bccd_subset, tmp_path_factory):
    """One epoch (2 iterations of 1 image) on 2 images, evaluated at the end."""
    work_dir = tmp_path_factory.mktemp('train')
    rc = cli(['train', str(repo_root / TINY), '--work-dir', str(work_dir), '--seed', '0',
              '--cfg-options', *data_options(repo_root, bccd_subset(2)),
              'data.samples_per_gpu=1'])
    assert rc == 0
    return work_dir


@pytest.mark.slow
def test_train_writes_config_logs_checkpoints_and_curves(trained):
    names = {p.name for p in trained.iterdir()}
    assert 'retinanet_r18_tiny_bccd.py' in names  # the resolved config
    assert {'epoch_1.pth', 'latest.pth'} <= names
    assert len([n for n in names if n.endswith('.log')]) == 1
    assert len([n for n in names if n.endswith('_curves.png')]) == 1
    log_json = next(trained.glob('*.log.json'))
    records = [json.loads(line) for line in log_json.read_text().splitlines()]
    train = [r for r in records if r.get('mode') == 'train']
    assert [r['iter'] for r in train] == [1, 2]
    assert all(r['loss'] > 0 and 'loss_cls' in r and 'loss_bbox' in r for r in train)
    val = [r for r in records if r.get('mode') == 'val']
    assert len(val) == 1 and 'bbox_mAP' in val[0]  # evaluated at the end of training
    text = next(trained.glob('*.log')).read_text()
    assert 'eta: ' in text and 'bbox_mAP' in text
    ckpt = torch.load(trained / 'epoch_1.pth', weights_only=True)
    assert ckpt['meta']['CLASSES'] == ['RBC', 'WBC', 'Platelets']
    assert 'runner = dict(' in ckpt['meta']['config']


@pytest.mark.slow
def test_test_command_prints_coco_ap_and_writes_results(repo_root, trained, bccd_subset,
                                                        tmp_path, capsys, monkeypatch):
    out = tmp_path / 'results.pkl'
    # the progress bar draws on a terminal only (issue 23): make pytest's stderr look like one
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: True, raising=False)
    rc = cli(['test', str(repo_root / TINY), str(trained / 'latest.pth'), '--eval', 'bbox',
              '--out', str(out), '--cfg-options', *data_options(repo_root, bccd_subset(2))])
    assert rc == 0
    printed = capsys.readouterr()
    assert 'bbox_mAP' in printed.out
    assert '100%' in printed.err  # the progress bar finished
    results = pickle.loads(out.read_bytes())
    assert len(results) == 2 and len(results[0]) == 3  # 2 images x 3 classes
    assert results[0][0].shape[1] == 5


@pytest.mark.slow
@pytest.mark.parametrize('layout', [[], ['channels_last=True']], ids=['nchw', 'channels_last'])
def test_resume_with_the_real_loader_is_bitwise_exact(repo_root, bccd_subset, tmp_path, layout):
    # 2 images in one batch of 2, 2 epochs (mid-epoch resume is covered by the toy tests)
    options = ['--seed', '0', '--deterministic', '--no-validate', '--cfg-options',
               *data_options(repo_root, bccd_subset(2)), 'runner.max_epochs=2', *layout]
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert cli(['train', str(repo_root / TINY), '--work-dir', str(straight), *options]) == 0
    assert cli(['train', str(repo_root / TINY), '--work-dir', str(resumed), *options,
                'runner.max_epochs=1']) == 0
    # the second run stops after epoch 1; a new command continues it to epoch 2
    assert cli(['train', str(repo_root / TINY), '--work-dir', str(resumed), '--auto-resume',
                *options]) == 0
    a = torch.load(straight / 'epoch_2.pth', weights_only=True)['state_dict']
    b = torch.load(resumed / 'epoch_2.pth', weights_only=True)['state_dict']
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the weights were trained (and saved) in the layout the config asked for
    conv = a['backbone.layer1.0.conv1.weight']
    assert conv.is_contiguous(memory_format=torch.channels_last) == bool(layout)
    assert conv.is_contiguous() != bool(layout)


def run_failing(args, capsys):
    rc = cli(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert 'Traceback' not in err
    return err


def test_config_without_optimizer_is_one_clear_line(tmp_path, capsys):
    config = tmp_path / 'no_optimizer.py'
    config.write_text("model = dict(type='RetinaNet')\nrunner = dict(type='EpochBasedRunner', "
                      "max_epochs=1)\n")
    err = run_failing(['train', str(config), '--work-dir', str(tmp_path / 'w')], capsys)
    assert "has no 'optimizer'" in err and 'schedule_1x.py' in err
    assert err.count('\n') == 1


def test_work_dir_that_is_not_writable_is_reported(repo_root, tmp_path, capsys):
    err = run_failing(['train', str(repo_root / TINY), '--work-dir',
                       '/proc/detforge_cannot_write'], capsys)
    assert 'work dir /proc/detforge_cannot_write' in err


def test_unknown_hook_type_names_the_registry_and_key(repo_root, bccd_subset, tmp_path,
                                                      capsys):
    config = tmp_path / 'typo.py'
    config.write_text(f"_base_ = {str(repo_root / TINY)!r}\n"
                      "custom_hooks = [dict(type='NumClassChekHook')]\n")
    err = run_failing(['train', str(config), '--work-dir', str(tmp_path), '--cfg-options',
                       *data_options(repo_root, bccd_subset(4))], capsys)
    assert "'NumClassChekHook' is not in the HOOKS registry; did you mean 'NumClassCheckHook'" \
        in err and 'custom_hooks.0' in err


def test_class_count_mismatch_stops_before_training(repo_root, bccd_subset, tmp_path, capsys):
    err = run_failing(['train', str(repo_root / TINY), '--work-dir', str(tmp_path),
                       '--cfg-options', *data_options(repo_root, bccd_subset(4)),
                       'model.bbox_head.num_classes=5'], capsys)
    assert '3 classes (RBC, WBC, Platelets)' in err and 'num_classes is 5' in err
    assert not list(tmp_path.glob('*.pth'))


def test_checkpoint_of_another_architecture_is_refused_by_test(repo_root, tmp_path, capsys):
    from detforge.engine import save_checkpoint
    save_checkpoint(torch.nn.Linear(2, 2), tmp_path / 'other.pth')
    err = run_failing(['test', str(repo_root / TINY), str(tmp_path / 'other.pth'), '--eval',
                       'bbox'], capsys)
    assert 'another architecture' in err


def test_load_from_with_another_class_count_skips_and_reports_the_head(tmp_path, repo_root):
    from detforge.config import Config
    from detforge.engine import load_checkpoint, save_checkpoint
    from detforge.models import build_detector
    cfg = Config.fromfile(str(repo_root / TINY))
    save_checkpoint(build_detector(cfg.model), tmp_path / 'three.pth')
    cfg.model.bbox_head.num_classes = 5
    model = build_detector(cfg.model)
    report = load_checkpoint(model, tmp_path / 'three.pth')['load_report']
    mismatched = [key for key, _, _ in report.mismatched]
    assert mismatched and all(key.startswith('bbox_head.') for key in mismatched)
    assert any('backbone.' in key for key in report.loaded)
    assert not report.missing or all(k in mismatched for k in report.missing)


def test_a_speed_switch_that_is_not_a_bool_stops_before_anything_is_written(repo_root, tmp_path,
                                                                            capsys):
    err = run_failing(['train', str(repo_root / TINY), '--work-dir', str(tmp_path / 'w'),
                       '--cfg-options', 'channels_last="yes"'], capsys)
    assert "channels_last must be True or False, got 'yes' (in channels_last of" in err
    assert err.count('\n') == 1 and not (tmp_path / 'w').exists()
