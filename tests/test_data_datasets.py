"""Data sets on the real BCCD and raccoon folders: counts, VOC vs COCO route, wrappers."""
import json
import logging

import numpy as np
import pytest

from detforge.data import (ClassBalancedDataset, CocoDataset, ConcatDataset, RepeatDataset,
                           VOCDataset, XMLDataset, build_dataset)
from detforge.converters.voc2coco import convert

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


@pytest.fixture(scope='module')
def bccd_all(bccd_voc_root):
    return XMLDataset(ann_file=None, img_prefix=str(bccd_voc_root), classes=BCCD_CLASSES,
                      test_mode=True)


def test_bccd_counts_of_images_boxes_and_classes(bccd_all):
    # 364 images, 4,888 boxes in the files, of which 2 degenerate ones are dropped
    assert len(bccd_all) == 364
    labels = np.concatenate([bccd_all.get_ann_info(i)['labels'] for i in range(len(bccd_all))])
    assert len(labels) == 4886
    assert np.bincount(labels, minlength=3).tolist() == [4153, 372, 361]
    assert {(info['width'], info['height']) for info in bccd_all.data_infos} == {(640, 480)}


def test_bccd_splits_have_the_documented_sizes(bccd_voc_root):
    sizes = {s: len(VOCDataset(f'ImageSets/Main/{s}.txt', [], classes=BCCD_CLASSES,
                               data_root=str(bccd_voc_root) + '/', test_mode=True))
             for s in ('train', 'val', 'trainval', 'test')}
    assert sizes == dict(train=205, val=87, trainval=292, test=72)


def test_raccoon_counts_and_aspect_ratio_flag(raccoon_root):
    ds = XMLDataset(ann_file=None, img_prefix=str(raccoon_root), img_subdir='images',
                    ann_subdir='annotations', classes=('raccoon',), test_mode=True)
    assert len(ds) == 200
    assert sum(len(ds.get_ann_info(i)['bboxes']) for i in range(len(ds))) == 217
    assert int(ds.flag.sum()) == 159  # landscape images; 41 portrait
    train = XMLDataset(ann_file=str(raccoon_root / 'train.txt'), img_prefix=str(raccoon_root),
                       img_subdir='images', ann_subdir='annotations', classes=('raccoon',))
    assert len(train) == 160


def test_voc_boxes_are_zero_based_like_mmdet(bccd_voc_root):
    ds = XMLDataset(ann_file=None, img_prefix=str(bccd_voc_root), classes=BCCD_CLASSES,
                    test_mode=True)
    i = [info['id'] for info in ds.data_infos].index('BloodImage_00000')
    ann = ds.get_ann_info(i)
    # first object of BloodImage_00000.xml: WBC 260 177 491 376 (1-based) -> minus 1
    np.testing.assert_array_equal(ann['bboxes'][0], [259, 176, 490, 375])
    assert ann['labels'][0] == 1
    assert ann['bboxes'].dtype == np.float32 and ann['labels'].dtype == np.int64


def test_bundled_coco_json_reloads_with_the_same_boxes_as_the_voc_route(repo_root):
    root = str(repo_root / 'data' / 'bccd') + '/'
    for split in ('trainval', 'test'):
        voc = VOCDataset(f'ImageSets/Main/{split}.txt', [], classes=BCCD_CLASSES, data_root=root,
                         test_mode=True)
        coco = CocoDataset(f'annotations/{split}.json', [], classes=BCCD_CLASSES, data_root=root,
                           test_mode=True)
        assert len(voc) == len(coco)
        for i in range(len(voc)):
            assert voc.data_infos[i]['filename'] == coco.data_infos[i]['filename']
            a, b = voc.get_ann_info(i), coco.get_ann_info(i)
            np.testing.assert_array_equal(a['bboxes'], b['bboxes'])
            np.testing.assert_array_equal(a['labels'], b['labels'])


def test_bundled_json_is_what_the_converter_writes(repo_root, bccd_voc_root, tmp_path):
    out = tmp_path / 'test.json'
    convert(str(bccd_voc_root), str(out), 'test', list(BCCD_CLASSES), verbose=False)
    fresh = json.loads(out.read_text())
    shipped = json.loads((repo_root / 'data' / 'bccd' / 'annotations' / 'test.json').read_text())
    assert fresh['images'] == shipped['images']
    assert fresh['annotations'] == shipped['annotations']
    assert [c['name'] for c in shipped['categories']] == list(BCCD_CLASSES)


def test_coco_classes_subset_selects_and_reindexes(repo_root):
    root = str(repo_root / 'data' / 'bccd') + '/'
    ds = CocoDataset('annotations/test.json', [], classes=('Platelets', 'WBC'), data_root=root)
    labels = np.concatenate([ds.get_ann_info(i)['labels'] for i in range(len(ds))])
    assert set(labels.tolist()) == {0, 1}
    assert ds.cat_ids == [3, 2]
    full = CocoDataset('annotations/test.json', [], classes=BCCD_CLASSES, data_root=root)
    n_platelets = sum(int((full.get_ann_info(i)['labels'] == 2).sum()) for i in range(len(full)))
    assert int((labels == 0).sum()) == n_platelets


def test_filter_empty_gt_drops_images_without_boxes_only_in_training(repo_root, tmp_path):
    coco = json.loads((repo_root / 'data' / 'bccd' / 'annotations' / 'test.json').read_text())
    first = coco['images'][0]['id']
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] != first]
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(coco))
    kw = dict(classes=BCCD_CLASSES, img_prefix=str(repo_root / 'data' / 'bccd'))
    assert len(CocoDataset(str(path), [], **kw)) == 71
    assert len(CocoDataset(str(path), [], filter_empty_gt=False, **kw)) == 72
    assert len(CocoDataset(str(path), [], test_mode=True, **kw)) == 72


def test_crowd_boxes_become_ignore_boxes_and_ignored_annotations_go(repo_root, tmp_path):
    coco = json.loads((repo_root / 'data' / 'bccd' / 'annotations' / 'test.json').read_text())
    first_image = [a for a in coco['annotations'] if a['image_id'] == coco['images'][0]['id']]
    first_image[0]['iscrowd'] = 1
    first_image[1]['ignore'] = 1
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(coco))
    ds = CocoDataset(str(path), [], classes=BCCD_CLASSES, test_mode=True)
    ann = ds.get_ann_info(0)
    x, y, w, h = first_image[0]['bbox']
    np.testing.assert_allclose(ann['bboxes_ignore'], [[x, y, x + w, y + h]])
    expected = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in first_image[2:])]
    np.testing.assert_allclose(ann['bboxes'], expected)
    assert ds.skipped.count('degenerate') == 0  # nothing counted as dropped for either


def test_list_of_ann_files_and_repeat_dataset(bccd_voc_root):
    cfg = dict(type='RepeatDataset', times=2, dataset=dict(
        type='VOCDataset', classes=BCCD_CLASSES, data_root=str(bccd_voc_root) + '/',
        ann_file=['ImageSets/Main/train.txt', 'ImageSets/Main/val.txt'], pipeline=[]))
    ds = build_dataset(cfg)
    assert isinstance(ds, RepeatDataset) and isinstance(ds.dataset, ConcatDataset)
    assert len(ds.dataset) == 205 + 87 and len(ds) == 2 * 292
    assert len(ds.flag) == len(ds)
    assert ds.get_cat_ids(292) == ds.get_cat_ids(0)


def test_class_balanced_dataset_repeats_images_of_rare_classes(bccd_voc_root):
    base = VOCDataset('ImageSets/Main/test.txt', [], classes=BCCD_CLASSES,
                      data_root=str(bccd_voc_root) + '/')
    thr = 1.0
    ds = ClassBalancedDataset(base, oversample_thr=thr)
    cats = [set(base.get_cat_ids(i)) for i in range(len(base))]
    freq = {c: sum(c in s for s in cats) / len(base) for c in range(3)}
    expected = [int(np.ceil(max(max(1.0, np.sqrt(thr / freq[c])) for c in s))) for s in cats]
    assert len(ds) == sum(expected)
    assert len(ds) > len(base)  # platelets appear in fewer images, so they are repeated


def test_builder_error_names_the_key_path():
    from detforge.registry import BuildError
    with pytest.raises(BuildError, match=r'VOCDatset.*did you mean.*in dataset'):
        build_dataset(dict(type='RepeatDataset', times=2, dataset=dict(type='VOCDatset')))


def test_degenerate_boxes_of_bccd_are_dropped_with_one_summary_line(bccd_voc_root, caplog):
    with caplog.at_level(logging.WARNING, logger='detforge.data'):
        VOCDataset('ImageSets/Main/trainval.txt', [], classes=BCCD_CLASSES,
                   data_root=str(bccd_voc_root) + '/')
    lines = [r.getMessage() for r in caplog.records if 'degenerate' in r.getMessage()]
    assert len(lines) == 1
    assert '2 degenerate boxes dropped in 2 images' in lines[0]
    assert 'BloodImage_00338.xml object 12' in lines[0]


def test_custom_dataset_reads_the_middle_format(tmp_path, bccd_voc_root):
    from detforge.data import CustomDataset
    infos = [dict(filename='BloodImage_00000.jpg', width=640, height=480,
                  ann=dict(bboxes=[[10, 10, 50, 60], [5, 5, 5, 9]], labels=[0, 2],
                           bboxes_ignore=[[1, 1, 20, 20]]))]
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(infos))
    ds = CustomDataset(str(path), [dict(type='LoadImageFromFile')], classes=BCCD_CLASSES,
                       img_prefix=str(bccd_voc_root / 'JPEGImages'))
    ann = ds.get_ann_info(0)
    np.testing.assert_array_equal(ann['bboxes'], [[10, 10, 50, 60]])  # degenerate one dropped
    np.testing.assert_array_equal(ann['bboxes_ignore'], [[1, 1, 20, 20]])
    assert ds.skipped.count('degenerate') == 1
    assert ds[0]['img'].shape == (480, 640, 3)


def test_classes_dict_selects_and_renames_in_coco_and_voc(repo_root):
    root = str(repo_root / 'data' / 'bccd') + '/'
    rename = {'Platelets': 'platelet', 'WBC': 'white cell'}
    coco = CocoDataset('annotations/test.json', [], classes=rename, data_root=root,
                       test_mode=True)
    voc = VOCDataset('ImageSets/Main/test.txt', [], classes=rename, data_root=root,
                     test_mode=True)
    plain = CocoDataset('annotations/test.json', [], classes=('Platelets', 'WBC'),
                        data_root=root, test_mode=True)
    assert coco.CLASSES == voc.CLASSES == ('platelet', 'white cell')
    assert coco.cat_ids == [3, 2]  # the order of the dict, not of the file
    for i in range(len(plain)):
        for ds in (coco, voc):
            np.testing.assert_array_equal(ds.get_ann_info(i)['bboxes'],
                                          plain.get_ann_info(i)['bboxes'])
            np.testing.assert_array_equal(ds.get_ann_info(i)['labels'],
                                          plain.get_ann_info(i)['labels'])
    from detforge.data.errors import DatasetError
    with pytest.raises(DatasetError, match='new, distinct name'):
        CocoDataset('annotations/test.json', [], classes={'RBC': 'cell', 'WBC': 'cell'},
                    data_root=root)
