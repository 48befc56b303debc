"""Bad data (issue 18 items 1, 2, 7, 12; issue 17's image-size check; issue 26 repair):
each case is made in the test and must give a one-line error naming the file, or a logged
repair."""
import json
import logging
import pickle
import shutil

import numpy as np
import pytest

from detforge.data import CocoDataset, CustomDataset, XMLDataset
from detforge.data.errors import AnnotationError, DatasetError, ImageLoadError
from detforge.data.pipelines.loading import decode_tolerant

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def _coco(repo_root, tmp_path, edit):
    coco = json.loads((repo_root / 'data' / 'bccd' / 'annotations' / 'test.json').read_text())
    edit(coco)
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(coco))
    return coco, str(path)


def test_training_set_with_no_box_at_all_stops_and_says_why(repo_root, tmp_path):
    _, path = _coco(repo_root, tmp_path, lambda c: c.update(annotations=[]))
    with pytest.raises(DatasetError, match=r'no image is left to train on: all 72 images were '
                                           r'left out \(72 without a box .*filter_empty_gt'):
        CocoDataset(path, [], classes=BCCD_CLASSES)
    # evaluation keeps every image; filter_empty_gt=False trains on them
    assert len(CocoDataset(path, [], classes=BCCD_CLASSES, test_mode=True)) == 72
    assert len(CocoDataset(path, [], classes=BCCD_CLASSES, filter_empty_gt=False)) == 72


def test_images_left_out_as_empty_are_counted_in_the_log(repo_root, tmp_path, caplog):
    def drop_first_two(c):
        ids = {c['images'][0]['id'], c['images'][1]['id']}
        c['annotations'] = [a for a in c['annotations'] if a['image_id'] not in ids]
    _, path = _coco(repo_root, tmp_path, drop_first_two)
    with caplog.at_level(logging.INFO, logger='detforge.data'):
        ds = CocoDataset(path, [], classes=BCCD_CLASSES)
    assert len(ds) == 70
    assert any('2 of 72 images left out of training: 2 without a box' in r.getMessage()
               for r in caplog.records)


def test_non_utf8_split_file_names_file_and_line(tmp_path, bccd_voc_root):
    (tmp_path / 'split.txt').write_bytes(b'BloodImage_00000\nBloodImage_\xff\xfe01\n')
    with pytest.raises(DatasetError, match=r'split\.txt, line 2: not valid UTF-8'):
        XMLDataset('split.txt', [], classes=BCCD_CLASSES, data_root=str(tmp_path) + '/',
                   img_prefix=str(bccd_voc_root))


class _Payload:
    """Unpickling this calls ``open(target, 'w')``: code from the file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, 'w'))


def test_pickle_annotation_file_that_runs_code_is_refused(tmp_path):
    target = tmp_path / 'pwned'
    ann = tmp_path / 'ann.pkl'
    ann.write_bytes(pickle.dumps([dict(filename='a.jpg', width=64, height=64,
                                       ann=dict(bboxes=[[1, 1, 9, 9]], labels=[0]),
                                       extra=_Payload(str(target)))]))
    with pytest.raises(DatasetError, match=r'ann\.pkl: this pickle holds objects that would run '
                                           r'code when unpickled \(global (io|builtins)\.open\)'
                                           r'.*allow_pickle=True'):
        CustomDataset(str(ann), [], classes=('a',))
    assert not target.exists()
    # a trusted file loads with allow_pickle=True (and then runs its code, as pickle does)
    CustomDataset(str(ann), [], classes=('a',), allow_pickle=True)
    assert target.exists()


def test_pickle_of_plain_data_loads_without_trust(tmp_path):
    ann = tmp_path / 'ann.pkl'
    ann.write_bytes(pickle.dumps([dict(filename='a.jpg', width=64, height=64, ann=dict(
        bboxes=np.array([[1, 1, 9, 9]], np.float32), labels=np.array([0])))]))
    ds = CustomDataset(str(ann), [], classes=('a',))
    assert ds.get_ann_info(0)['bboxes'].tolist() == [[1, 1, 9, 9]]


def test_string_box_coordinates_are_converted_with_a_warning(repo_root, tmp_path, caplog):
    def stringify(c):
        c['annotations'][0]['bbox'] = [str(v) for v in c['annotations'][0]['bbox']]
    coco, path = _coco(repo_root, tmp_path, stringify)
    first = coco['annotations'][0]
    with caplog.at_level(logging.WARNING, logger='detforge.data'):
        ds = CocoDataset(path, [], classes=BCCD_CLASSES, test_mode=True)
    assert ds.skipped.count('string_coords') == 1
    assert any('1 boxes given as strings converted to numbers in 1 image' in r.getMessage()
               and f'annotation id {first["id"]}' in r.getMessage() for r in caplog.records)
    x, y, w, h = (float(v) for v in first['bbox'])
    boxes = np.concatenate([ds.get_ann_info(i)['bboxes'] for i in range(len(ds))])
    assert [x, y, x + w, y + h] in boxes.tolist()
    with pytest.raises(AnnotationError, match=rf'annotation id {first["id"]} gives its "bbox" as '
                                              r'strings'):
        CocoDataset(path, [], classes=BCCD_CLASSES, skip_invalid=False)


def test_non_numeric_box_strings_are_an_error(repo_root, tmp_path):
    def garble(c):
        c['annotations'][0]['bbox'] = ['ten', 1, 2, 3]
    coco, path = _coco(repo_root, tmp_path, garble)
    with pytest.raises(AnnotationError, match=rf'annotation id {coco["annotations"][0]["id"]} '
                                              r'has no valid "bbox"'):
        CocoDataset(path, [], classes=BCCD_CLASSES)


def test_wrong_image_size_in_annotations_names_the_file(repo_root, tmp_path):
    def wrong_size(c):
        c['images'][0]['width'] = 800
    coco, path = _coco(repo_root, tmp_path, wrong_size)
    ds = CocoDataset(path, [dict(type='LoadImageFromFile')], classes=BCCD_CLASSES,
                     img_prefix=str(repo_root / 'data' / 'bccd'), test_mode=True)
    name = coco['images'][0]['file_name'].split('/')[-1]
    with pytest.raises(AnnotationError, match=rf'{name}: the annotations give its size as '
                                              r'800x480 \(width x height\) but the image is '
                                              r'640x480'):
        ds[0]
    assert ds[1]['img'].shape == (480, 640, 3)  # the others load


def _truncated_jpeg(src, dst, cut=400):
    data = src.read_bytes()
    dst.write_bytes(data[:-cut])
    return data


def test_truncated_jpeg_is_repaired_as_viewers_do_and_logged_once(tmp_path, repo_root, caplog):
    import cv2
    src = repo_root / 'data' / 'bccd' / 'JPEGImages' / 'BloodImage_00000.jpg'
    shutil.copytree(repo_root / 'data' / 'bccd' / 'JPEGImages', tmp_path / 'img',
                    ignore=lambda d, names: [n for n in names if n != src.name])
    path = tmp_path / 'img' / src.name
    full = _truncated_jpeg(src, path)
    # OpenCV's in-memory decoder refuses it; the repaired image matches cv2.imread on the file
    assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR) is None
    img, repair = decode_tolerant(path.read_bytes())
    assert repair.startswith('truncated JPEG')
    np.testing.assert_array_equal(img, cv2.imread(str(path)))
    intact = cv2.imdecode(np.frombuffer(full, np.uint8), cv2.IMREAD_COLOR)
    assert decode_tolerant(full)[1] is None
    assert np.abs(img.astype(int) - intact).mean() < 5  # only the last rows differ
    from detforge.data.pipelines.loading import LoadImageFromFile
    load = LoadImageFromFile()
    with caplog.at_level(logging.WARNING, logger='detforge.data'):
        for _ in range(3):
            out = load(dict(img_prefix=str(tmp_path / 'img'), img_info=dict(filename=src.name)))
    assert out['img'].shape == (480, 640, 3)
    repaired = [r for r in caplog.records if 'repaired' in r.getMessage()]
    assert len(repaired) == 1 and src.name in repaired[0].getMessage()


def test_bytes_no_decoder_reads_are_still_an_error(tmp_path):
    from detforge.data.pipelines.loading import imdecode
    assert decode_tolerant(b'\xff\xd8 not a jpeg')[0] is None
    with pytest.raises(ImageLoadError, match=r'cannot decode image x\.jpg'):
        imdecode(b'\xff\xd8 not a jpeg', filename='x.jpg')
