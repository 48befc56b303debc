"""``CocoDataset.format_results`` and ``detforge test --format-only``: results written as COCO
result JSON (``PREFIX.bbox.json``), as MMDetection 2.x writes them."""
import json
import pickle

import numpy as np
import pytest
import torch

from conftest import data_options
from detforge.cli import main as cli
from detforge.data import build_dataset
from detforge.registry import DetforgeError

TINY = 'tests/configs/retinanet_r18_tiny_bccd.py'


def _dataset(repo_root, ann_file):
    return build_dataset(dict(type='CocoDataset', classes=('RBC', 'WBC', 'Platelets'),
                              ann_file=ann_file, img_prefix=str(repo_root / 'data' / 'bccd'),
                              pipeline=[], test_mode=True))


def test_format_results_writes_coco_json_with_coco_ids_and_xywh(repo_root, bccd_subset, tmp_path):
    dataset = _dataset(repo_root, bccd_subset(2))
    results = [[np.array([[10, 20, 50, 80, 0.9]], np.float32), np.zeros((0, 5), np.float32),
                np.array([[1, 2, 3, 4, 0.5], [5, 6, 9, 10, 0.25]], np.float32)],
               [np.zeros((0, 5), np.float32)] * 3]
    files, tmp_dir = dataset.format_results(results, jsonfile_prefix=str(tmp_path / 'res'))
    assert tmp_dir is None and files['bbox'] == str(tmp_path / 'res.bbox.json')
    records = json.loads((tmp_path / 'res.bbox.json').read_text())
    image_id = dataset.img_ids[0]
    assert [(r['image_id'], r['category_id']) for r in records] == [
        (image_id, dataset.cat_ids[0]), (image_id, dataset.cat_ids[2]),
        (image_id, dataset.cat_ids[2])]
    np.testing.assert_allclose([r['bbox'] for r in records],
                               [[10, 20, 40, 60], [1, 2, 2, 2], [5, 6, 4, 4]])
    np.testing.assert_allclose([r['score'] for r in records], [0.9, 0.5, 0.25])
    # without a prefix: a temporary folder the caller keeps alive (MMDetection's contract)
    files, tmp_dir = dataset.format_results(results)
    assert json.loads(open(files['bbox']).read()) == records
    tmp_dir.cleanup()
    with pytest.raises(DetforgeError, match='1 results for a data set of 2 images'):
        dataset.format_results(results[:1], jsonfile_prefix=str(tmp_path / 'x'))


def test_test_command_format_only_writes_the_json(repo_root, bccd_subset, tmp_path, capsys):
    from detforge.apis.inference import init_detector
    torch.manual_seed(0)
    model = init_detector(str(repo_root / TINY))
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    options = ['--cfg-options', *data_options(repo_root, bccd_subset(2))]
    prefix = tmp_path / 'out' / 'dets'
    assert cli(['test', str(repo_root / TINY), str(ckpt), '--format-only', '--out',
                str(tmp_path / 'r.pkl'), '--eval-options', f'jsonfile_prefix={prefix}',
                *options]) == 0
    assert f'{prefix}.bbox.json' in capsys.readouterr().out
    records = json.loads(open(f'{prefix}.bbox.json').read())
    results = pickle.loads((tmp_path / 'r.pkl').read_bytes())
    assert len(records) == sum(len(r) for per_image in results for r in per_image) > 0
    # the prefix is required (a temporary file nobody can read would be useless)
    with pytest.raises(DetforgeError, match='jsonfile_prefix'):
        from detforge.commands.test import add_arguments, main
        import argparse
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        main(parser.parse_args([str(repo_root / TINY), str(ckpt), '--format-only']))
