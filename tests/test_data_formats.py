"""Dataset formats (VOC, YOLO txt, LabelMe JSON, COCO incl. Roboflow's layout): recognised by
``detect_format``, written by ``detforge convert to-*``, read back with the same boxes as the
VOC original, and trained from (two iterations each)."""
from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest
import yaml

from detforge.cli import main as _cli
from detforge.data import build_dataset, detect_format
from detforge.data.errors import AnnotationError, DatasetError

from bccd_layouts import TRAIN, VAL, make_layouts, make_voc_subset, write_train_config

FORMATS = ['voc', 'yolo', 'labelme', 'roboflow-coco']


def cli(argv):
    for handler in logging.getLogger('detforge').handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr
    return _cli(argv)


@pytest.fixture(scope='module')
def layouts(bccd_voc_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('layouts')
    return make_layouts(make_voc_subset(bccd_voc_root, tmp / 'voc'), tmp)


def _read(found, split):
    return build_dataset(found.dataset_cfg(split, pipeline=[], test_mode=True))


@pytest.mark.parametrize('fmt', FORMATS)
def test_detect_format_recognises_each_layout(layouts, fmt):
    found = detect_format(layouts[fmt])
    assert found.format == fmt
    assert found.classes == ('Platelets', 'RBC', 'WBC')  # Roboflow's 'cells' is no class
    assert list(found.splits) == ['train', 'val']
    assert found.metric == 'bbox'
    assert 'pipeline' not in found.splits['train']


@pytest.mark.parametrize('fmt', ['yolo', 'labelme', 'roboflow-coco'])
def test_each_format_reads_the_same_boxes_as_the_voc_original(layouts, fmt):
    voc, other = detect_format(layouts['voc']), detect_format(layouts[fmt])
    for split, ids in (('train', TRAIN), ('val', VAL)):
        a, b = _read(voc, split), _read(other, split)
        assert [i['filename'].rsplit('/', 1)[-1] for i in b.data_infos] == \
            [f'{i}.jpg' for i in ids]
        for ia, ib in zip(a.data_infos, b.data_infos):
            assert (ia['width'], ia['height']) == (ib['width'], ib['height']) == (640, 480)
            assert len(ia['ann']['bboxes']) > 10
            np.testing.assert_array_equal(ia['ann']['labels'], ib['ann']['labels'])
            # YOLO stores normalised centres with 6 decimals: 640 * 5e-7 px at most
            np.testing.assert_allclose(ia['ann']['bboxes'], ib['ann']['bboxes'], atol=2e-3)
        # every image is found, by the loader, where the record says
        for ds in (b,):
            from detforge.data.pipelines.loading import LoadImageFromFile
            results = dict(img_info=ds.data_infos[0], img_prefix=ds.img_prefix)
            assert LoadImageFromFile()(results)['img'].shape == (480, 640, 3)


def test_converted_layouts_convert_back_losslessly(layouts, tmp_path):
    """YOLO -> LabelMe (images kept in place) -> COCO: still the VOC boxes."""
    assert cli(['convert', 'to-labelme', str(layouts['yolo']), str(tmp_path / 'lm'),
                '--images', 'keep']) == 0
    assert cli(['convert', 'to-coco', str(tmp_path / 'lm'), str(tmp_path / 'coco')]) == 0
    data = json.loads((tmp_path / 'coco' / 'train' / '_annotations.coco.json').read_text())
    assert data['images'][0]['file_name'].startswith('..')  # points at the source images
    voc, back = detect_format(layouts['voc']), detect_format(tmp_path / 'coco')
    a, b = _read(voc, 'train'), _read(back, 'train')
    np.testing.assert_allclose(np.concatenate([i['ann']['bboxes'] for i in a.data_infos]),
                               np.concatenate([i['ann']['bboxes'] for i in b.data_infos]),
                               atol=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize('fmt', FORMATS)
def test_train_two_iterations_from_each_format(repo_root, layouts, fmt, tmp_path):
    found = detect_format(layouts[fmt])
    config = write_train_config(repo_root, found, tmp_path / f'{fmt}.py')
    work_dir = tmp_path / 'work'
    assert cli(['train', str(config), '--work-dir', str(work_dir), '--seed', '0']) == 0
    records = [json.loads(line) for line in
               next(work_dir.glob('*.log.json')).read_text().splitlines()]
    train = [r for r in records if r.get('mode') == 'train']
    assert [r['iter'] for r in train] == [1, 2]  # 4 images, batch 2
    assert all(np.isfinite(r['loss']) and r['loss'] > 0 for r in train)
    val = [r for r in records if r.get('mode') == 'val']
    assert len(val) == 1 and 'bbox_mAP' in val[0]
    assert (work_dir / 'epoch_1.pth').is_file()


# ----------------------------------------------------------------------------- YOLO details
def _yolo_tree(tmp_path, layouts):
    root = tmp_path / 'y'
    shutil.copytree(layouts['yolo'], root)
    return root


def test_yolo_roboflow_yaml_dict_names_unlabelled_images_and_segments(layouts, tmp_path):
    """Roboflow's YOLO export: ``train/images``, ``../train/images`` in data.yaml; names as a
    dict; an image without a label file has no objects; a segment line gives its bbox."""
    root = tmp_path / 'rf'
    src = layouts['yolo']
    for split, out in (('train', 'train'), ('val', 'valid')):
        shutil.copytree(src / 'images' / split, root / out / 'images')
        shutil.copytree(src / 'labels' / split, root / out / 'labels')
    (root / 'data.yaml').write_text(yaml.safe_dump(dict(
        train='../train/images', val='../valid/images', nc=3,
        names={0: 'Platelets', 1: 'RBC', 2: 'WBC'})))
    (root / 'train' / 'labels' / f'{TRAIN[0]}.txt').unlink()
    (root / 'valid' / 'labels' / f'{VAL[0]}.txt').write_text('1 0.1 0.1 0.3 0.1 0.3 0.4 0.2 0.4\n')
    found = detect_format(root / 'data.yaml')
    assert found.format == 'yolo' and found.classes == ('Platelets', 'RBC', 'WBC')
    assert found.splits['val']['img_prefix'].rstrip('/').endswith('valid/images')
    train = _read(found, 'train')
    assert len(train) == len(TRAIN) and len(train.data_infos[0]['ann']['bboxes']) == 0
    val = _read(found, 'val')
    np.testing.assert_allclose(val.data_infos[0]['ann']['bboxes'], [[64, 48, 192, 192]], atol=1e-3)
    assert val.data_infos[0]['ann']['labels'].tolist() == [1]


def test_yolo_bad_label_line_names_file_and_line(layouts, tmp_path):
    root = _yolo_tree(tmp_path, layouts)
    (root / 'labels' / 'train' / f'{TRAIN[1]}.txt').write_text('0 0.5 0.5 0.1 0.1\n1 0.5 0.5\n')
    with pytest.raises(AnnotationError, match=rf'{TRAIN[1]}\.txt, line 2: expected "CLASS cx cy'):
        _read(detect_format(root), 'train')
    (root / 'labels' / 'train' / f'{TRAIN[1]}.txt').write_text('0 320 240 30 30\n')
    with pytest.raises(AnnotationError, match=r'line 1: YOLO coordinates are normalised to 0\.\.1'
                       r'.*pixel coordinates\?'):
        _read(detect_format(root), 'train')


def test_yolo_without_names_is_a_clear_error(layouts, tmp_path):
    root = _yolo_tree(tmp_path, layouts)
    (root / 'data.yaml').unlink()
    with pytest.raises(DatasetError, match='class numbers; put the class names in'):
        detect_format(root)
    (root / 'classes.txt').write_text('Platelets\nRBC\nWBC\n')
    assert detect_format(root).classes == ('Platelets', 'RBC', 'WBC')


# ----------------------------------------------------------------------------- LabelMe details
def test_labelme_polygons_circles_points_and_moved_images(layouts, tmp_path):
    root = tmp_path / 'lm'
    shutil.copytree(layouts['labelme'] / 'train', root)
    path = root / f'{TRAIN[0]}.json'
    data = json.loads(path.read_text())
    data['imagePath'] = 'C:\\old\\place\\gone.jpg'  # the image beside the file is used
    data['shapes'] = [
        dict(label='RBC', points=[[10, 20], [50, 25], [30, 60]], shape_type='polygon'),
        dict(label='WBC', points=[[100, 100], [103, 104]], shape_type='circle'),
        dict(label='RBC', points=[[5, 5]], shape_type='point'),
        dict(label='Platelets', points=[[300, 200], [200, 100]], shape_type='rectangle'),
        dict(label='RBC', points=[[1, 2], [3, 4], [5, 9]]),  # no shape_type: a polygon
    ]
    path.write_text(json.dumps(data))
    found = detect_format(root)
    assert found.format == 'labelme' and list(found.splits) == ['train']
    ds = _read(found, 'train')
    info = ds.data_infos[0]
    assert info['filename'] == f'{TRAIN[0]}.jpg'
    np.testing.assert_allclose(info['ann']['bboxes'], [[10, 20, 50, 60], [95, 95, 105, 105],
                                                       [200, 100, 300, 200], [1, 2, 5, 9]])
    assert info['ann']['labels'].tolist() == [1, 2, 0, 1]
    assert ds.skipped.count('no_area_shape') == 1
    # the outlines are instance masks: a polygon as drawn, a rectangle's corners
    from detforge.data.pipelines.loading import LoadAnnotations
    results = LoadAnnotations(with_bbox=True, with_mask=True)(
        dict(img_info=info, ann_info=info['ann'], bbox_fields=[], mask_fields=[]))
    masks = results['gt_masks'].to_ndarray()
    assert masks.shape == (4, 480, 640)
    assert masks[0, 40, 30] and not masks[0, 50, 45]  # inside / outside the triangle
    assert masks[2, 100:200, 200:300].all() and masks[2].sum() == 100 * 100
    assert masks[1, 100, 100] and not masks[1, 95, 95]  # a disc, not its box
    # and to COCO, the outlines become "segmentation" polygons
    assert cli(['convert', 'to-coco', str(root), str(tmp_path / 'coco')]) == 0
    coco = json.loads((tmp_path / 'coco' / 'train' / '_annotations.coco.json').read_text())
    first = [a for a in coco['annotations'] if a['image_id'] == 1]
    assert first[0]['segmentation'] == [[10, 20, 50, 25, 30, 60]]
    assert len(first[1]['segmentation'][0]) == 64  # the circle's 32-gon


# ----------------------------------------------------------------------------- COCO layouts
def test_coco_annotations_folder_finds_the_image_folder(layouts, tmp_path):
    """COCO's own layout: ``annotations/instances_{train,val}2017.json``, images in
    ``{train,val}2017/``."""
    src = layouts['roboflow-coco']
    for split, sub in (('train', 'train'), ('val', 'valid')):
        shutil.copytree(src / sub, tmp_path / f'{split}2017',
                        ignore=shutil.ignore_patterns('*.json'))
        (tmp_path / 'annotations').mkdir(exist_ok=True)
        shutil.copy(src / sub / '_annotations.coco.json',
                    tmp_path / 'annotations' / f'instances_{split}2017.json')
    (tmp_path / 'annotations' / 'captions_train2017.json').write_text('{"images": []}')
    found = detect_format(tmp_path)
    assert found.format == 'coco' and list(found.splits) == ['train', 'val']
    assert found.splits['val']['img_prefix'].rstrip('/').endswith('val2017')
    assert found.splits['train']['ann_file'].endswith('instances_train2017.json')
    assert len(_read(found, 'val')) == len(VAL)


def test_voc_xml_beside_the_images_roboflow_export(layouts, tmp_path):
    """Roboflow's Pascal VOC export: ``train/ valid/``, each with images and XML files."""
    voc = layouts['voc']
    for split, sub, ids in (('train', 'train', TRAIN), ('val', 'valid', VAL)):
        (tmp_path / sub).mkdir()
        for i in ids:
            shutil.copy(voc / 'JPEGImages' / f'{i}.jpg', tmp_path / sub)
            shutil.copy(voc / 'Annotations' / f'{i}.xml', tmp_path / sub)
    found = detect_format(tmp_path)
    assert found.format == 'voc' and list(found.splits) == ['train', 'val']
    assert found.classes == ('Platelets', 'RBC', 'WBC')
    a, b = _read(detect_format(voc), 'val'), _read(found, 'val')
    assert len(b) == len(VAL)
    for ia, ib in zip(a.data_infos, b.data_infos):
        np.testing.assert_array_equal(ia['ann']['bboxes'], ib['ann']['bboxes'])
    from detforge.data.pipelines.loading import LoadImageFromFile
    results = dict(img_info=b.data_infos[0], img_prefix=b.img_prefix)
    assert LoadImageFromFile()(results)['img'].shape == (480, 640, 3)


def test_a_folder_holding_one_data_set_folder(shared_data):
    """``bccd/`` holds ``BCCD/`` (VOC) and a LICENSE file: the folder inside is used."""
    found = detect_format(shared_data / 'bccd')
    assert found.format == 'voc' and found.root.endswith('BCCD')
    assert list(found.splits) == ['train', 'val', 'test']
    assert found.classes == ('Platelets', 'RBC', 'WBC')


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(DatasetError, match='not a data set layout detforge recognises'):
        detect_format(tmp_path)
    with pytest.raises(DatasetError, match='no such file or folder'):
        detect_format(tmp_path / 'missing')
