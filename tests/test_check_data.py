"""``detforge check-data``: every fault of a deliberately damaged copy of a few BCCD images is
found, the clean copy gives no finding; the anchor check; and ``detforge train`` stops on
annotation errors before its first iteration."""
from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest

from detforge.cli import main as _cli
from detforge.data import detect_format
from detforge.data.data_check import check_data

from bccd_layouts import SPARE, TRAIN, VAL, make_voc_subset, write_train_config


def cli(argv):
    for handler in logging.getLogger('detforge').handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr
    return _cli(argv)


@pytest.fixture(scope='module')
def clean(bccd_voc_root, tmp_path_factory):
    """The TRAIN/VAL images in Roboflow's COCO layout (images copied beside the JSON)."""
    tmp = tmp_path_factory.mktemp('check')
    voc = make_voc_subset(bccd_voc_root, tmp / 'voc')
    assert cli(['convert', 'to-coco', str(voc), str(tmp / 'clean'), '--images', 'copy']) == 0
    return tmp / 'clean'


# what the damaged copy breaks (one of each) -> the finding kind expected
FAULTS = {
    'unreadable_image': 'error', 'truncated_image': 'warning', 'missing_image': 'error',
    'size_mismatch': 'error', 'degenerate_box': 'warning', 'box_outside': 'warning',
    'duplicate_image': 'warning', 'no_labels': 'warning', 'unnamed_category': 'error',
    'class_names_differ': 'error', 'class_imbalance': 'warning',
}


def _damage(clean, out, bccd_voc_root):
    """A copy of ``clean`` with one fault of each kind of FAULTS."""
    shutil.copytree(clean, out)
    train, val = out / 'train', out / 'valid'
    ann_path = train / '_annotations.coco.json'
    coco = json.loads(ann_path.read_text())
    images = {im['file_name']: im for im in coco['images']}
    anns = coco['annotations']

    def anns_of(name):
        return [a for a in anns if a['image_id'] == images[name]['id']]

    # unreadable: bytes no decoder reads; truncated: a JPEG missing its last 300 bytes
    (train / f'{TRAIN[0]}.jpg').write_bytes(b'not an image at all' * 50)
    data = (train / f'{TRAIN[1]}.jpg').read_bytes()
    (train / f'{TRAIN[1]}.jpg').write_bytes(data[:-300])
    # size in the annotations disagrees with the file (640x480)
    images[f'{TRAIN[2]}.jpg']['width'] = 800
    # a degenerate box, a box entirely outside, a box reaching past the border
    a, b, c = anns_of(f'{TRAIN[3]}.jpg')[:3]
    a['bbox'][2] = 0
    b['bbox'][:2] = [700, 10]
    c['bbox'][0] = 620
    # a category id no category names
    anns_of(f'{TRAIN[3]}.jpg')[3]['category_id'] = 9
    # class imbalance: all Platelets (category 1) but one become RBC (2)
    platelets = [x for x in anns if x['category_id'] == 1]
    for x in platelets[1:]:
        x['category_id'] = 2
    # a duplicate (same bytes, other name) and an image without any box
    shutil.copy(train / f'{TRAIN[3]}.jpg', train / 'copy_of_4.jpg')
    shutil.copy(bccd_voc_root / 'JPEGImages' / f'{SPARE}.jpg', train)
    n = max(images[k]['id'] for k in images)
    coco['images'] += [dict(id=n + 1, file_name='copy_of_4.jpg', width=640, height=480),
                       dict(id=n + 2, file_name=f'{SPARE}.jpg', width=640, height=480)]
    anns.append(dict(anns_of(f'{TRAIN[3]}.jpg')[5], id=len(anns) + 100, image_id=n + 1))
    ann_path.write_text(json.dumps(coco))
    # val: a class spelt differently; an image file missing
    val_path = val / '_annotations.coco.json'
    vcoco = json.loads(val_path.read_text())
    vcoco['categories'] = [dict(c, name='wbc') if c['name'] == 'WBC' else c
                           for c in vcoco['categories']]
    val_path.write_text(json.dumps(vcoco))
    (val / f'{VAL[1]}.jpg').unlink()
    return out


def test_clean_copy_reports_nothing(clean, tmp_path, capsys):
    report = check_data(str(clean))
    assert report.findings == [], report.summary()
    assert cli(['check-data', str(clean), '--out-dir', str(tmp_path / 'plots')]) == 0
    out = capsys.readouterr().out
    assert '0 error(s), 0 warning(s)' in out
    assert f'train: {len(TRAIN)} images' in out and 'RBC' in out
    assert {p.name for p in (tmp_path / 'plots').iterdir()} == {
        'class_counts.png', 'box_sizes.png', 'aspect_ratios.png', 'check_data.json'}
    saved = json.loads((tmp_path / 'plots' / 'check_data.json').read_text())
    assert saved['exit_status'] == 0 and saved['findings'] == []
    assert saved['stats']['train']['images'] == len(TRAIN)
    assert sum(saved['stats']['train']['class_counts'].values()) == \
        saved['stats']['train']['boxes'] > 0


def test_damaged_copy_finds_every_fault(clean, tmp_path, bccd_voc_root, capsys):
    damaged = _damage(clean, tmp_path / 'damaged', bccd_voc_root)
    report = check_data(str(damaged))
    found = {f.kind: f for f in report.findings}
    for kind, level in FAULTS.items():
        assert kind in found, f'{kind} not reported:\n{report.summary()}'
        assert found[kind].level == level, found[kind].line()
    text = report.summary()
    assert f'{TRAIN[0]}.jpg' in found['unreadable_image'].line()
    assert 'truncated but decodable' in found['truncated_image'].line()
    assert f'{TRAIN[1]}.jpg' in found['truncated_image'].line()
    assert 'annotations 800x480, file 640x480' in found['size_mismatch'].line()
    assert 'copy_of_4.jpg' in found['duplicate_image'].line()
    assert f'{SPARE}.jpg' in found['no_labels'].line()
    assert 'category_id 9' in found['unnamed_category'].line()
    assert "'WBC'" in text and "'wbc'" in text
    assert f'{VAL[1]}.jpg' in found['missing_image'].line()
    kinds_outside = [f.message for f in report.findings if f.kind == 'box_outside']
    assert any('entirely outside' in m for m in kinds_outside)
    assert any('past the image border' in m for m in kinds_outside)
    assert cli(['check-data', str(damaged), '--out-dir', str(tmp_path / 'out')]) == 1
    assert 'ERROR [unreadable_image]' in capsys.readouterr().out  # errors: exit status 1
    saved = json.loads((tmp_path / 'out' / 'check_data.json').read_text())
    assert saved['exit_status'] == 1
    assert {f['kind'] for f in saved['findings']} >= set(FAULTS)


def test_warnings_only_exit_zero(clean, tmp_path, capsys):
    root = tmp_path / 'warn'
    shutil.copytree(clean, root)
    data = (root / 'train' / f'{TRAIN[1]}.jpg').read_bytes()
    (root / 'train' / f'{TRAIN[1]}.jpg').write_bytes(data[:-300])
    assert cli(['check-data', str(root)]) == 0
    out = capsys.readouterr().out
    assert 'WARNING [truncated_image]' in out and '0 error(s), 1 warning(s)' in out


def test_a_training_image_also_in_val_is_reported(clean, tmp_path):
    """The same file listed in train and val (a config mistake, not a copied file)."""
    root = tmp_path / 'leak'
    shutil.copytree(clean, root)
    val_path = root / 'valid' / '_annotations.coco.json'
    val = json.loads(val_path.read_text())
    val['images'][0]['file_name'] = f'../train/{TRAIN[0]}.jpg'
    val_path.write_text(json.dumps(val))
    found = {f.kind: f for f in check_data(str(root)).findings}
    assert 'across splits' in found['duplicate_image'].message
    assert f'train:{TRAIN[0]}.jpg = val:../train/{TRAIN[0]}.jpg' in found['duplicate_image'].line()


def test_yolo_class_number_without_name_and_class_only_in_val(clean, tmp_path):
    yolo = tmp_path / 'yolo'
    assert cli(['convert', 'to-yolo', str(clean), str(yolo)]) == 0
    label = yolo / 'labels' / 'train' / f'{TRAIN[0]}.txt'
    label.write_text(label.read_text() + '7 0.5 0.5 0.1 0.1\n')
    for path in (yolo / 'labels' / 'train').iterdir():  # no WBC (class 2) in train
        path.write_text(''.join(l for l in path.read_text().splitlines(True)
                                if not l.startswith('2 ')))
    report = check_data(str(yolo), images=False)
    found = {f.kind: f for f in report.findings}
    assert found['unnamed_category'].level == 'error'
    assert f'{TRAIN[0]}.txt line' in found['unnamed_category'].line()
    assert found['split_only_class'].level == 'error'
    assert "['WBC']" in found['split_only_class'].message
    assert found['class_without_boxes'].level == 'warning'


def test_anchor_check_against_the_config(repo_root, clean, tmp_path, capsys):
    """The BCCD-320 RetinaNet config (short side 320): its anchors fit the cells."""
    found = detect_format(clean)
    config = write_train_config(repo_root, found, tmp_path / 'cfg.py',
                                base='configs/retinanet/retinanet_r18_fpn_1x_bccd.py')
    report = check_data(str(config), images=False)
    assert report.anchors is not None and report.anchors['boxes'] > 50
    assert report.anchors['pos_iou_thr'] == 0.5
    assert report.anchors['unmatched_fraction'] < 0.05
    assert 'anchor_unmatched' not in report.kinds()
    # boxes are compared at the training scale: 640x480 -> short side 320, x 2/3
    train = report.stats['train']
    at_file = np.sqrt(train['widths'] * train['heights'])
    np.testing.assert_allclose(np.sort(report.anchors['sizes']), np.sort(at_file) * 2 / 3,
                               rtol=1e-4)
    # anchors 4x too tall for round cells: most boxes match none at IoU 0.5
    assert cli(['check-data', str(config), '--no-images', '--out-dir', str(tmp_path / 'p'),
                '--cfg-options', 'model.bbox_head.anchor_generator.ratios=[4.0]']) == 0
    out = capsys.readouterr().out
    assert 'WARNING [anchor_unmatched]' in out
    assert (tmp_path / 'p' / 'anchor_iou.png').is_file()


def test_anchor_check_of_a_two_stage_model_uses_the_rpn(repo_root, clean, tmp_path):
    """Faster R-CNN: the RPN's anchors and assigner (pos_iou_thr 0.7, by design above what
    many boxes reach: the warning judges the fit at 0.5)."""
    config = write_train_config(repo_root, detect_format(clean), tmp_path / 'cfg.py',
                                base='configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py')
    report = check_data(str(config), images=False)
    a = report.anchors
    assert (a['pos_iou_thr'], a['min_pos_iou'], a['warn_iou']) == (0.7, 0.3, 0.5)
    assert a['poor'] < a['unmatched']
    assert a['poor_fraction'] < 0.05 and 'anchor_unmatched' not in report.kinds()


@pytest.mark.slow
def test_train_stops_on_annotation_errors_before_the_first_iteration(repo_root, clean,
                                                                     tmp_path, capsys):
    root = tmp_path / 'bad'
    shutil.copytree(clean, root)
    ann_path = root / 'train' / '_annotations.coco.json'
    coco = json.loads(ann_path.read_text())
    coco['annotations'][0]['category_id'] = 9
    ann_path.write_text(json.dumps(coco))
    config = write_train_config(repo_root, detect_format(root), tmp_path / 'cfg.py')
    work_dir = tmp_path / 'work'
    assert cli(['train', str(config), '--work-dir', str(work_dir)]) == 2
    err = capsys.readouterr().err
    assert 'the training data has errors' in err and '[unnamed_category]' in err
    assert 'check_data=False' in err
    assert not list(work_dir.glob('*.pth'))
