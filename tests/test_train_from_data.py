"""`detforge train --data PATH --model NAME` and `detforge list-models`, on a few real raccoon
images (VOC layout) copied into tmp_path."""
from __future__ import annotations

import json
import logging
import shutil
import sys

import pytest
import torch

from detforge.apis.config_from_data import config_from_data, scale_pipeline, scale_schedule
from detforge.apis.model_names import MODEL_NAMES, recorded_measurements, repo_root
from detforge.cli import main as _cli
from detforge.config import Config
from detforge.registry import DetforgeError


def cli(argv):
    """``detforge ARGV`` in this process (the logger's console handler follows pytest's
    stderr, as in test_train_cli)."""
    for handler in logging.getLogger('detforge').handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr
    return _cli(argv)


@pytest.fixture(autouse=True)
def restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture
def raccoon_voc(shared_data, tmp_path):
    """4 training and 2 validation images of the raccoon set, VOC layout with split files."""
    src = shared_data / 'raccoon'
    root = tmp_path / 'my_raccoons'
    (root / 'images').mkdir(parents=True)
    (root / 'annotations').mkdir()
    ids = ['raccoon-1', 'raccoon-2', 'raccoon-3', 'raccoon-4', 'raccoon-5', 'raccoon-6']
    for name in ids:
        shutil.copy(src / 'images' / f'{name}.jpg', root / 'images')
        shutil.copy(src / 'annotations' / f'{name}.xml', root / 'annotations')
    (root / 'train.txt').write_text('\n'.join(ids[:4]) + '\n')
    (root / 'val.txt').write_text('\n'.join(ids[4:]) + '\n')
    return root


# 2 iterations of 2 images at short side 64, the head and neck at 32 channels (a few seconds)
FAST = ['--epochs', '1', '--img-size', '64', '--batch-size', '2', '--seed', '0',
        '--cfg-options', 'data.workers_per_gpu=0', 'log_config.interval=1',
        'model.neck.out_channels=32', 'model.bbox_head.in_channels=32',
        'model.bbox_head.feat_channels=32', 'model.bbox_head.stacked_convs=1',
        'model.bbox_head.norm_cfg.num_groups=8']


@pytest.mark.slow
def test_train_from_a_data_folder_writes_a_config_that_trains_again(raccoon_voc, tmp_path,
                                                                   capsys):
    work = tmp_path / 'work'
    assert cli(['train', '--data', str(raccoon_voc), '--model', 'retinanet_r18',
                '--work-dir', str(work), *FAST]) == 0
    written = work / 'retinanet_r18_my_raccoons.py'
    text = written.read_text()
    assert text.startswith('# Written by `detforge train --data')  # the comments are kept
    cfg = Config.fromfile(str(written))
    assert cfg.classes == ('raccoon',) and cfg.model.bbox_head.num_classes == 1
    assert cfg.data.train.type == 'XMLDataset'
    assert cfg.data.train.ann_file == str(raccoon_voc / 'train.txt')
    assert cfg.data.val.ann_file == str(raccoon_voc / 'val.txt')
    assert cfg.runner.max_epochs == 1 and cfg.data.samples_per_gpu == 2
    assert cfg.data.workers_per_gpu == 0  # --cfg-options went into the file
    assert cfg.data.test.pipeline[1].img_scale == (85, 64)  # 427x320 scaled to short side 64
    records = [json.loads(x) for x in next(work.glob('*.log.json')).read_text().splitlines()]
    assert [r['iter'] for r in records if r.get('mode') == 'train'] == [1, 2]
    log_text = next(work.glob('*.log')).read_text()
    assert 'ProgressBarHook' in log_text  # registered; it draws on a terminal only
    # evaluated after the epoch (an untrained model may detect nothing: no AP then)
    assert [r['epoch'] for r in records if r.get('mode') == 'val'] == [1]
    assert cfg.model.bbox_head.feat_channels == 32

    # the artefact the user edits: train it again as a plain config file, here with the
    # validation loss of MMDetection 2.x's workflow added
    edited = text.replace("workflow = [('train', 1)]", "workflow = [('train', 1), ('val', 1)]")
    assert edited != text
    written.write_text(edited)
    again = tmp_path / 'again'
    assert cli(['train', str(written), '--work-dir', str(again), '--seed', '0',
                '--no-progress']) == 0
    assert 'ProgressBarHook' not in next(again.glob('*.log')).read_text()
    assert written.read_text() == edited  # not overwritten by the run
    # nor by running the --data command again: the edited file is kept, with a clear error
    assert cli(['train', '--data', str(raccoon_voc), '--model', 'retinanet_r18',
                '--work-dir', str(work), *FAST]) == 2
    assert 'exists and differs from the config this command writes' in capsys.readouterr().err
    assert written.read_text() == edited
    assert (again / 'retinanet_r18_my_raccoons.py').is_file()
    assert Config.fromfile(str(again / 'retinanet_r18_my_raccoons.py')).data == cfg.data
    records = [json.loads(x) for x in next(again.glob('*.log.json')).read_text().splitlines()]
    assert [r['iter'] for r in records if r.get('mode') == 'train'] == [1, 2]
    val_loss = [r for r in records if r.get('mode') == 'val' and 'loss' in r]
    assert len(val_loss) == 1 and val_loss[0]['loss'] > 0  # loss on the 2 val images
    assert {'loss_cls', 'loss_bbox'} <= set(val_loss[0])


def test_the_written_config_reads_back_as_the_config_that_was_built(raccoon_voc, tmp_path):
    from detforge.apis.config_from_data import render_config
    cfg, notes = config_from_data(str(raccoon_voc), 'faster_rcnn_r18', epochs=6)
    path = tmp_path / 'x.py'
    path.write_text(render_config(cfg, 'faster_rcnn_r18', argv=['train'], notes=notes))
    assert Config.fromfile(str(path))._cfg_dict.to_dict() == Config(cfg)._cfg_dict.to_dict()
    assert cfg['model']['roi_head']['bbox_head']['num_classes'] == 1
    assert cfg['lr_config']['step'] == [4, 5]  # [8, 11] of 12 epochs scaled to 6
    assert 'train_pipeline_ms' not in cfg  # no stale names from the BCCD base file


def test_no_val_split_evaluates_on_train_and_says_so(shared_data, tmp_path):
    root = tmp_path / 'flat'
    shutil.copytree(shared_data / 'raccoon' / 'annotations', root / 'annotations')
    (root / 'images').symlink_to(shared_data / 'raccoon' / 'images')
    cfg, notes = config_from_data(str(root), 'retinanet_r18')
    assert cfg['data']['val']['ann_file'] == cfg['data']['train']['ann_file']
    assert any('uses the training images' in n for n in notes)


def test_scale_helpers():
    pipeline = [dict(type='Resize', img_scale=[(384, 288), (469, 352)]),
                dict(type='MultiScaleFlipAug', img_scale=(427, 320), transforms=[])]
    scaled = scale_pipeline(pipeline, 0.5)
    assert scaled[0]['img_scale'] == [(192, 144), (234, 176)]
    assert scaled[1]['img_scale'] == (214, 160) and pipeline[1]['img_scale'] == (427, 320)
    cfg = dict(runner=dict(type='EpochBasedRunner', max_epochs=9),
               lr_config=dict(policy='step', step=[6, 8]))
    scale_schedule(cfg, 3)
    assert cfg['runner']['max_epochs'] == 3 and cfg['lr_config']['step'] == [2]


def test_bad_model_name_and_flags_are_clear_errors(raccoon_voc, capsys):
    assert cli(['train', '--data', str(raccoon_voc), '--model', 'retinanet_r19']) == 2
    assert "did you mean 'retinanet_r18'" in capsys.readouterr().err
    assert cli(['train', '--data', str(raccoon_voc), '--model', 'mask_rcnn_r18']) == 2
    assert 'needs instance masks' in capsys.readouterr().err
    assert cli(['train']) == 2
    assert 'give a config file' in capsys.readouterr().err


def test_every_model_name_has_a_shipped_config():
    for model in MODEL_NAMES.values():
        assert (repo_root() / model.config).is_file(), model


def test_list_models_prints_only_recorded_numbers(capsys):
    assert cli(['list-models']) == 0
    out = capsys.readouterr().out
    measured, caveat = recorded_measurements()
    text = (repo_root() / 'benchmarks' / 'accuracy.md').read_text()
    for model in MODEL_NAMES.values():
        row = next(line for line in out.splitlines() if line.startswith(f'| {model.name} '))
        m = measured.get(model.config)
        if m is None:
            assert 'not measured' in row
        else:  # every number printed is in the recorded row of that config
            assert m.ap in row and m.date in row
            assert any(m.ap in line and m.s_per_iter in line and model.config in line
                       for line in text.splitlines())
    recipe = MODEL_NAMES['retinanet_r18'].config  # the recorded 9-epoch recipe run
    assert recipe in measured and f'| retinanet_r18 ' in out and measured[recipe].ap in out
    assert caveat and caveat in out


def test_recorded_measurements_ignore_runs_with_overrides(tmp_path):
    table = tmp_path / 'accuracy.md'
    table.write_text(
        '| date | config | schedule | AP | AP50 | t | s/iter | s/img | threads |\n'
        '| d1 | `configs/a.py` | as configured | 0.1 | 0.2 | 3 | 1.0 | 0.5 | 2 of 2 |\n'
        '| d2 | `configs/a.py` | --cfg-options x=1 | 0.9 | 0.9 | 3 | 1.0 | 0.5 | 2 of 2 |\n')
    measured, caveat = recorded_measurements(table)
    assert measured['configs/a.py'].ap == '0.1' and caveat == ''
    assert recorded_measurements(tmp_path / 'missing.md') == ({}, '')


def test_train_rejects_config_and_data_together(raccoon_voc, capsys):
    assert cli(['train', 'configs/retinanet/retinanet_r18_fpn_12e_bccd320.py', '--data',
                str(raccoon_voc)]) == 2
    assert 'not both' in capsys.readouterr().err
    with pytest.raises(DetforgeError):
        config_from_data(str(raccoon_voc), 'no_such_model')


@pytest.fixture
def raccoon_yolo(shared_data, tmp_path):
    """3 raccoon images in the Ultralytics layout: data.yaml, images/{train,val}, labels/."""
    src = shared_data / 'raccoon' / 'images'
    root = tmp_path / 'yolo_raccoons'
    for split, names in (('train', ['raccoon-1', 'raccoon-2']), ('val', ['raccoon-3'])):
        (root / 'images' / split).mkdir(parents=True)
        (root / 'labels' / split).mkdir(parents=True)
        for name in names:
            shutil.copy(src / f'{name}.jpg', root / 'images' / split)
            (root / 'labels' / split / f'{name}.txt').write_text('0 0.5 0.5 0.4 0.6\n')
    (root / 'data.yaml').write_text('path: .\ntrain: images/train\nval: images/val\n'
                                    'names: [raccoon]\n')
    return root


def test_a_yolo_folder_becomes_a_config_whose_datasets_read_the_boxes(raccoon_yolo):
    from detforge.data import build_dataset
    cfg, notes = config_from_data(str(raccoon_yolo), 'fcos_r18', img_size=128)
    assert cfg['data']['train']['type'] == 'YOLODataset' and cfg['classes'] == ('raccoon',)
    assert cfg['model']['bbox_head']['num_classes'] == 1
    train = build_dataset(Config(cfg).data.train)
    val = build_dataset(Config(cfg).data.val, dict(test_mode=True))
    assert (len(train), len(val)) == (2, 1)
    ann = train.get_ann_info(0)
    w, h = train.data_infos[0]['width'], train.data_infos[0]['height']
    assert ann['bboxes'][0] == pytest.approx([0.3 * w, 0.2 * h, 0.7 * w, 0.8 * h], abs=1e-3)
    assert max(train[0]['img'].shape[-2:]) <= 188  # multi-scale range scaled 0.4: <= 188x141


def test_img_size_scales_every_size_of_the_rtmdet_pipelines(raccoon_yolo):
    """RTMDet's sizes (mosaic slots, RandomResize scale, crop, fixed pad) and its switch
    pipeline's follow --img-size, not only Resize's img_scale."""
    cfg, _ = config_from_data(str(raccoon_yolo), 'rtmdet_tiny', img_size=160)  # test short 320
    steps = {t['type']: t for t in cfg['data']['train']['pipeline']}
    assert steps['CachedMosaic']['img_scale'] == (160, 160)
    assert steps['RandomResize']['scale'] == (320, 320)
    assert steps['RandomCrop']['crop_size'] == (160, 160)
    assert steps['Pad']['size'] == (160, 160)
    switch = next(h for h in cfg['custom_hooks'] if h['type'] == 'PipelineSwitchHook')
    stage2 = {t['type']: t for t in switch['switch_pipeline']}
    assert stage2['RandomResize']['scale'] == (160, 160) and stage2['Pad']['size'] == (160, 160)


def test_a_coco_file_and_a_mask_model(repo_root, shared_data):
    cfg, _ = config_from_data(str(repo_root / 'data/bccd/annotations/trainval.json'), 'atss_r18')
    assert cfg['data']['train']['type'] == 'CocoDataset'
    assert cfg['classes'] == ('RBC', 'WBC', 'Platelets')  # COCO category id order
    assert cfg['model']['bbox_head']['num_classes'] == 3
    cfg, notes = config_from_data(str(shared_data / 'pennfudan'), 'mask_rcnn_r18')
    assert cfg['model']['roi_head']['bbox_head']['num_classes'] == 1
    assert cfg['model']['roi_head']['mask_head']['num_classes'] == 1
    assert cfg['data']['train']['pipeline'][1]['with_mask'] is True
    assert cfg['evaluation']['metric'] == ['bbox', 'segm']
    assert cfg['data']['val']['ann_file'].endswith('test.json')
    assert any('evaluating on the test split' in n for n in notes)
