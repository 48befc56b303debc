"""Bad input: a clear error naming the file (and annotation), or a counted, logged skip."""
import json
import logging
import shutil

import numpy as np
import pytest

from detforge.data import CocoDataset, XMLDataset, build_dataloader
from detforge.data.errors import AnnotationError, DatasetError, ImageLoadError

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')

XML = """<annotation><filename>{name}.jpg</filename>
<size><width>640</width><height>480</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = ('<object><name>{cls}</name><difficult>{difficult}</difficult><bndbox><xmin>{b[0]}</xmin>'
       '<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>')


def voc_folder(tmp_path, bccd_voc_root, objects, name='BloodImage_00000'):
    """A one-image VOC folder with the given (class, box, difficult) objects."""
    (tmp_path / 'Annotations').mkdir()
    (tmp_path / 'JPEGImages').mkdir()
    shutil.copy(bccd_voc_root / 'JPEGImages' / f'{name}.jpg', tmp_path / 'JPEGImages')
    body = ''.join(OBJ.format(cls=c, b=b, difficult=d) for c, b, d in objects)
    (tmp_path / 'Annotations' / f'{name}.xml').write_text(XML.format(name=name, objects=body))
    (tmp_path / 'split.txt').write_text(name + '\n')
    return dict(ann_file=str(tmp_path / 'split.txt'), img_prefix=str(tmp_path),
                classes=BCCD_CLASSES)


def test_missing_image_file_names_the_path(tmp_path, bccd_voc_root):
    kw = voc_folder(tmp_path, bccd_voc_root, [('RBC', (10, 10, 50, 50), 0)])
    (tmp_path / 'JPEGImages' / 'BloodImage_00000.jpg').unlink()
    ds = XMLDataset(pipeline=[dict(type='LoadImageFromFile')], **kw)
    with pytest.raises(ImageLoadError, match=r'not found: .*JPEGImages/BloodImage_00000\.jpg'):
        ds[0]


def test_corrupt_image_names_the_path_even_from_a_worker(tmp_path, bccd_voc_root):
    kw = voc_folder(tmp_path, bccd_voc_root, [('RBC', (10, 10, 50, 50), 0)])
    (tmp_path / 'JPEGImages' / 'BloodImage_00000.jpg').write_bytes(b'\xff\xd8 not a jpeg')
    ds = XMLDataset(pipeline=[dict(type='LoadImageFromFile')], **kw)
    with pytest.raises(ImageLoadError, match=r'cannot decode image .*BloodImage_00000\.jpg'):
        ds[0]
    batches = iter(build_dataloader(ds, 1, 1, seed=0))
    with pytest.raises(ImageLoadError, match='BloodImage_00000.jpg'):
        next(batches)
    batches._shutdown_workers()  # now, not whenever the garbage collector gets to it


@pytest.mark.parametrize('damage', ['headers_only', 'empty'])
def test_undecodable_or_empty_image_is_a_load_error(tmp_path, bccd_voc_root, damage):
    # a JPEG cut inside its headers has no pixel data any decoder could show
    # (a JPEG cut inside its pixel data is repaired: test_truncated_jpeg.py)
    kw = voc_folder(tmp_path, bccd_voc_root, [('RBC', (10, 10, 50, 50), 0)])
    path = tmp_path / 'JPEGImages' / 'BloodImage_00000.jpg'
    data = path.read_bytes()
    path.write_bytes(data[:300] if damage == 'headers_only' else b'')
    ds = XMLDataset(pipeline=[dict(type='LoadImageFromFile')], **kw)
    with pytest.raises(ImageLoadError, match=r'cannot decode image .*BloodImage_00000\.jpg'):
        ds[0]


def test_annotation_file_that_is_not_json(tmp_path):
    bad = tmp_path / 'ann.json'
    bad.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r'ann\.json is not a valid JSON file'):
        CocoDataset(str(bad), [], classes=BCCD_CLASSES)
    with pytest.raises(DatasetError, match='annotation file not found'):
        CocoDataset(str(tmp_path / 'missing.json'), [], classes=BCCD_CLASSES)


def test_annotation_file_that_is_not_xml(tmp_path, bccd_voc_root):
    kw = voc_folder(tmp_path, bccd_voc_root, [])
    (tmp_path / 'Annotations' / 'BloodImage_00000.xml').write_text('<annotation><size>')
    with pytest.raises(DatasetError, match=r'BloodImage_00000\.xml is not a valid XML file'):
        XMLDataset(pipeline=[], **kw)


def test_unknown_class_is_an_error_or_a_counted_skip(tmp_path, bccd_voc_root, caplog):
    kw = voc_folder(tmp_path, bccd_voc_root, [('RBC', (10, 10, 50, 50), 0),
                                              ('Neutrophil', (60, 60, 90, 90), 0)])
    with pytest.raises(AnnotationError, match=r"BloodImage_00000\.xml: object 1 has class "
                                              r"'Neutrophil'"):
        XMLDataset(pipeline=[], skip_invalid=False, **kw)
    with caplog.at_level(logging.WARNING, logger='detforge.data'):
        ds = XMLDataset(pipeline=[], **kw)
    assert len(ds.get_ann_info(0)['bboxes']) == 1
    assert any('1 boxes of unknown classes skipped in 1 image' in r.getMessage()
               for r in caplog.records)


def test_degenerate_box_is_an_error_naming_file_and_object(tmp_path, bccd_voc_root):
    kw = voc_folder(tmp_path, bccd_voc_root, [('RBC', (10, 10, 50, 50), 0),
                                              ('WBC', (70, 40, 70, 80), 0)])
    with pytest.raises(AnnotationError, match=r'BloodImage_00000\.xml: object 1 .*x2 <= x1'):
        XMLDataset(pipeline=[], skip_invalid=False, **kw)
    ds = XMLDataset(pipeline=[], **kw)
    assert ds.skipped.count('degenerate') == 1 and len(ds.get_ann_info(0)['bboxes']) == 1


def test_bccd_degenerate_boxes_raise_when_skipping_is_off(bccd_voc_root):
    with pytest.raises(AnnotationError, match=r'BloodImage_00338\.xml: object 12'):
        XMLDataset('ImageSets/Main/trainval.txt', [], classes=BCCD_CLASSES,
                   data_root=str(bccd_voc_root) + '/', skip_invalid=False)


def test_box_outside_the_image_in_coco_json(tmp_path, repo_root, caplog):
    coco = json.loads((repo_root / 'data' / 'bccd' / 'annotations' / 'test.json').read_text())
    first = coco['annotations'][0]
    first['bbox'] = [700.0, 10.0, 20.0, 20.0]  # the image is 640 wide
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(coco))
    with pytest.raises(AnnotationError, match=rf'annotation id {first["id"]} .*entirely outside'):
        CocoDataset(str(path), [], classes=BCCD_CLASSES, skip_invalid=False)
    with caplog.at_level(logging.WARNING, logger='detforge.data'):
        ds = CocoDataset(str(path), [], classes=BCCD_CLASSES)
    assert ds.skipped.count('outside') == 1
    assert any('1 boxes outside their image dropped in 1 image' in r.getMessage()
               for r in caplog.records)
    boxes = np.concatenate([ds.get_ann_info(i)['bboxes'] for i in range(len(ds))])
    assert len(boxes) == len(coco['annotations']) - 1


def test_coco_classes_missing_from_categories(repo_root):
    with pytest.raises(DatasetError, match=r"\['Neutrophil'\] are not among its categories"):
        CocoDataset(str(repo_root / 'data' / 'bccd' / 'annotations' / 'test.json'), [],
                    classes=('RBC', 'Neutrophil'))


def test_collect_of_a_missing_key_says_what_is_missing(tmp_path, bccd_voc_root):
    kw = voc_folder(tmp_path, bccd_voc_root, [('RBC', (10, 10, 50, 50), 0)])
    ds = XMLDataset(pipeline=[dict(type='LoadImageFromFile'), dict(type='DefaultFormatBundle'),
                              dict(type='Collect', keys=['img', 'gt_bboxes'])], **kw)
    with pytest.raises(DatasetError, match="'gt_bboxes'.*LoadAnnotations"):
        ds[0]


def test_difficult_and_small_voc_objects_become_ignore_boxes(tmp_path, bccd_voc_root):
    kw = voc_folder(tmp_path, bccd_voc_root, [('RBC', (11, 21, 51, 61), 0),
                                              ('WBC', (101, 101, 201, 151), 1),
                                              ('Platelets', (301, 301, 305, 341), 0)])
    ann = XMLDataset(pipeline=[], **kw).get_ann_info(0)
    # 1-based VOC corners minus 1; the difficult WBC is an ignore box
    np.testing.assert_array_equal(ann['bboxes'], [[10, 20, 50, 60], [300, 300, 304, 340]])
    np.testing.assert_array_equal(ann['labels'], [0, 2])
    np.testing.assert_array_equal(ann['bboxes_ignore'], [[100, 100, 200, 150]])
    np.testing.assert_array_equal(ann['labels_ignore'], [1])
    # min_size=5: the 4 px wide platelet becomes an ignore box too, and is counted
    ds = XMLDataset(pipeline=[], min_size=5, **kw)
    ann = ds.get_ann_info(0)
    np.testing.assert_array_equal(ann['bboxes'], [[10, 20, 50, 60]])
    np.testing.assert_array_equal(ann['labels_ignore'], [1, 2])
    assert ds.skipped.count('small') == 1
    # the ignore boxes reach the sample when collected
    sample = XMLDataset(pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                                  dict(type='DefaultFormatBundle'),
                                  dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels',
                                                             'gt_bboxes_ignore'])], **kw)[0]
    assert sample['gt_bboxes_ignore'].tolist() == [[100, 100, 200, 150]]


def test_grayscale_image_in_a_color_batch_is_a_clear_collate_error(tmp_path, bccd_voc_root):
    import cv2
    import torch
    from detforge.data import collate
    kw = voc_folder(tmp_path, bccd_voc_root, [('RBC', (10, 10, 50, 50), 0)])
    pipeline = [dict(type='LoadImageFromFile', color_type='unchanged'),
                dict(type='LoadAnnotations'), dict(type='DefaultFormatBundle'),
                dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])]
    color = XMLDataset(pipeline=pipeline, **kw)[0]
    path = tmp_path / 'JPEGImages' / 'BloodImage_00000.jpg'
    cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    gray = XMLDataset(pipeline=pipeline, **kw)[0]
    assert color['img'].shape[0] == 3 and gray['img'].shape[0] == 1
    with pytest.raises(DatasetError, match=r'differ in channels \[1, 3\].*BloodImage_00000'):
        collate([color, gray])
    assert collate([color, color])['img'].dtype == torch.uint8
