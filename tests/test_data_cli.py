"""``detforge convert voc2coco`` and ``detforge browse-dataset`` from the command line."""
import json

import cv2
import numpy as np

from detforge.cli import main
from detforge.data import CocoDataset, XMLDataset


def test_voc2coco_cli_with_split_and_classes(bccd_voc_root, tmp_path, capsys):
    out = tmp_path / 'val.json'
    rc = main(['convert', 'voc2coco', str(bccd_voc_root), str(out),
               '--split', str(bccd_voc_root / 'ImageSets' / 'Main' / 'val.txt'),
               '--classes', 'RBC', 'WBC', 'Platelets'])
    assert rc == 0
    text = capsys.readouterr().out
    assert '87 images' in text and '1 degenerate boxes dropped in 1 image' in text
    coco = json.loads(out.read_text())
    assert [c['name'] for c in coco['categories']] == ['RBC', 'WBC', 'Platelets']
    ds = CocoDataset(str(out), [], classes=('RBC', 'WBC', 'Platelets'), test_mode=True)
    assert len(ds) == 87


def test_voc2coco_default_classes_are_sorted_names(raccoon_root, tmp_path):
    out = tmp_path / 'raccoon.json'
    assert main(['convert', 'voc2coco', str(raccoon_root), str(out), '--split',
                 str(raccoon_root / 'val.txt'), '--img-subdir', 'images',
                 '--ann-subdir', 'annotations']) == 0
    coco = json.loads(out.read_text())
    assert [c['name'] for c in coco['categories']] == ['raccoon']
    voc = XMLDataset(str(raccoon_root / 'val.txt'), [], classes=('raccoon',),
                     img_prefix=str(raccoon_root), img_subdir='images',
                     ann_subdir='annotations', test_mode=True)
    ours = CocoDataset(str(out), [], classes=('raccoon',), test_mode=True)
    for i in range(len(voc)):
        np.testing.assert_array_equal(voc.get_ann_info(i)['bboxes'], ours.get_ann_info(i)['bboxes'])


def test_voc2coco_bad_split_file_is_a_clean_error(bccd_voc_root, tmp_path, capsys):
    rc = main(['convert', 'voc2coco', str(bccd_voc_root), str(tmp_path / 'x.json'),
               '--split', 'nosuchsplit'])
    assert rc == 2
    assert 'split file not found' in capsys.readouterr().err


def test_browse_dataset_writes_pngs_of_the_pipeline_output(repo_root, tmp_path):
    root = str(repo_root / 'data' / 'bccd') + '/'
    rc = main(['browse-dataset', str(repo_root / 'configs/_base_/datasets/bccd.py'),
               '--output-dir', str(tmp_path), '--num', '2', '--cfg-options',
               f'data.train.ann_file={root}annotations/test.json', f'data.train.img_prefix={root}'])
    assert rc == 0
    files = sorted(tmp_path.glob('*.png'))
    assert len(files) == 2
    img = cv2.imread(str(files[0]))
    assert img.shape == (320, 427, 3)  # resized by the pipeline, not padded
