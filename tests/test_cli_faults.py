"""Faults seen from the command line (issue 18 items 3, 6, 10; issue 26): odd file names,
drawings that cannot be written, checkpoints that would run code, truncated JPEGs in a
training run, an unreadable validation image."""
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detforge.cli import main as _cli

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / 'tests' / 'configs' / 'retinanet_r18_tiny_bccd.py'


def cli(argv):
    for handler in logging.getLogger('detforge').handlers:  # see test_train_cli.cli
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr
    return _cli(argv)


@pytest.fixture(scope='module')
def setup(tmp_path_factory, repo_root):
    path = Path(__file__).with_name('test_inference_api.py')
    spec = importlib.util.spec_from_file_location('_tiny_detector_setup', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg, ckpt, images = module.make_tiny_setup(tmp_path_factory.mktemp('cli'), repo_root, 2)
    return dict(cfg=str(cfg), ckpt=str(ckpt), images=images)


def test_infer_on_an_image_whose_name_is_not_utf8(setup, tmp_path):
    # cv2.imwrite crashed the process (exit 139) on such a name, losing detections.json
    folder = os.fsencode(tmp_path) + b'/in'
    os.mkdir(folder)
    name = b'caf\xe9.jpg'
    shutil.copy(setup['images'][0], folder + b'/' + name)
    out = os.fsencode(tmp_path) + b'/out'
    proc = subprocess.run([sys.executable, '-m', 'detforge', 'infer', setup['cfg'], setup['ckpt'],
                           folder, '--out', out], capture_output=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors='replace')[-2000:]
    assert sorted(os.listdir(out)) == sorted([name, b'detections.json'])
    report = json.loads(open(out + b'/detections.json', 'rb').read())
    assert list(report['detections']) == [os.fsdecode(name)]
    assert b'caf\\xe9.jpg' not in proc.stderr  # nothing to warn about


def test_a_drawing_that_cannot_be_written_never_costs_the_json(setup, tmp_path, capsys):
    image = setup['images'][0]
    out = tmp_path / 'out'
    (out / image.name).mkdir(parents=True)  # the drawing's path is taken by a folder
    assert cli(['infer', setup['cfg'], setup['ckpt'], str(image), '--out', str(out)]) == 0
    err = capsys.readouterr().err
    assert f'warning: could not draw {out / image.name}' in err
    report = json.loads((out / 'detections.json').read_text())
    assert list(report['detections']) == [image.name]


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, 'w'))


def test_checkpoint_that_would_run_code_is_one_line_exit_2(setup, tmp_path, capsys):
    touched = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    ckpt = torch.load(setup['ckpt'], weights_only=True)
    ckpt['meta']['x'] = _Payload(str(touched))
    torch.save(ckpt, evil)
    assert cli(['infer', setup['cfg'], str(evil), str(setup['images'][0]),
                '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('detforge infer: error: checkpoint ')
    assert 'would run code when unpickled (global io.open)' in err
    assert 'DETFORGE_TRUSTED_CHECKPOINTS=' in err and not touched.exists()


def _bccd_folder(repo_root, folder, n, damage=None):
    """A COCO split of the first ``n`` BCCD test images copied into ``folder``; the first
    image damaged: 'truncated' (its last 400 bytes cut) or 'garbage'."""
    coco = json.loads((repo_root / 'data' / 'bccd' / 'annotations' / 'test.json').read_text())
    images = coco['images'][:n]
    ids = {im['id'] for im in images}
    (folder / 'JPEGImages').mkdir(parents=True, exist_ok=True)
    for im in images:
        shutil.copy(repo_root / 'data' / 'bccd' / im['file_name'], folder / im['file_name'])
    first = folder / images[0]['file_name']
    if damage == 'truncated':
        first.write_bytes(first.read_bytes()[:-400])
    elif damage == 'garbage':
        first.write_bytes(b'\xff\xd8 no longer an image')
    ann = folder / f'ann_{damage}.json'
    ann.write_text(json.dumps(dict(coco, images=images, annotations=[
        a for a in coco['annotations'] if a['image_id'] in ids])))
    return str(ann), str(folder) + '/', first.name


def _split_options(split, ann, prefix):
    return [f'data.{split}.ann_file={ann}', f'data.{split}.img_prefix={prefix}']


@pytest.mark.slow
def test_truncated_jpeg_in_train_and_val_trains_and_evaluates(repo_root, tmp_path, capsys):
    ann, prefix, damaged = _bccd_folder(repo_root, tmp_path / 'data', 2, 'truncated')
    work_dir = tmp_path / 'work'
    rc = cli(['train', str(TINY), '--work-dir', str(work_dir), '--seed', '0', '--auto-resume',
              '--cfg-options', *_split_options('train', ann, prefix),
              *_split_options('val', ann, prefix), 'data.samples_per_gpu=1'])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    log = next(work_dir.glob('*.log')).read_text()
    assert f'auto-resume: no complete checkpoint in {work_dir}; starting from scratch' in log
    repaired = [line for line in log.splitlines() if 'repaired' in line]
    assert len(repaired) == 1 and damaged in repaired[0]  # once per file, train and val
    records = [json.loads(line) for line in next(work_dir.glob('*.log.json')).read_text()
               .splitlines()]
    assert any(r.get('mode') == 'val' and 'bbox_mAP' in r for r in records)


@pytest.mark.slow
def test_undecodable_validation_image_stops_with_how_to_resume(repo_root, tmp_path, capsys):
    train_ann, train_prefix, _ = _bccd_folder(repo_root, tmp_path / 'good', 2)
    val_ann, val_prefix, broken = _bccd_folder(repo_root, tmp_path / 'bad', 2, 'garbage')
    work_dir = tmp_path / 'work'
    rc = cli(['train', str(TINY), '--work-dir', str(work_dir), '--seed', '0', '--cfg-options',
              *_split_options('train', train_ann, train_prefix),
              *_split_options('val', val_ann, val_prefix), 'data.samples_per_gpu=1'])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert len(lines) == 1
    line = lines[0]  # on a line of its own, not after the evaluation's progress bar
    assert line.startswith('detforge train: error: evaluation stopped the training: cannot '
                           'decode image ')
    assert broken in line and f'the checkpoint {work_dir / "epoch_1.pth"} is safe' in line
    assert 'data.val.ann_file' in line and '--auto-resume' in line
    assert torch.load(work_dir / 'epoch_1.pth', weights_only=True)['meta']['epoch'] == 1


def test_drawing_to_a_name_that_is_not_utf8_writes_the_file(tmp_path):
    # what `detforge test --show-dir` does per image; in a child process, since
    # cv2.imwrite crashed the process (exit 139) on such a name
    target = os.fsencode(tmp_path) + b'/caf\xe9.png'
    code = ('import os, sys, numpy as np\n'
            'from detforge.visualization.draw import imshow_det_bboxes\n'
            'imshow_det_bboxes(np.zeros((40, 60, 3), np.uint8), [[5, 5, 30, 30, 0.9]], [0],\n'
            '                  out_file=sys.argv[1])\n')  # str of the raw bytes (surrogates)
    proc = subprocess.run([sys.executable, '-c', code, os.fsdecode(target)], capture_output=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors='replace')[-2000:]
    import cv2
    import numpy as np
    img = cv2.imdecode(np.fromfile(target, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (40, 60, 3) and img.max() > 0
