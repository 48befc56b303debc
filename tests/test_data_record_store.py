"""Records pickled in one numpy buffer (``RecordStore``): exact round trip, the data sets,
wrappers, samplers and loader on it give what the Python-dict records give, and
``CocoDataset``'s vectorised loading equals the per-image parse."""
import json
import pickle
import tracemalloc

import numpy as np
import pytest
import torch

from detforge.data import (ClassBalancedDataset, CocoDataset, ConcatDataset, RepeatDataset,
                           build_dataloader, build_dataset)
from detforge.data.coco_api import COCO
from detforge.data.errors import SkipCounter
from detforge.data import record_store
from detforge.data.record_store import RecordStore
from detforge.data.samplers import DistributedGroupSampler

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def assert_same(a, b, where='record'):
    """Deep equality with numpy arrays compared by dtype, shape and values."""
    assert type(a) is type(b), f'{where}: {type(a)} != {type(b)}'
    if isinstance(a, dict):
        assert list(a) == list(b), f'{where}: keys {list(a)} != {list(b)}'
        for k in a:
            assert_same(a[k], b[k], f'{where}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f'{where}: length {len(a)} != {len(b)}'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), \
            f'{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}'
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == 'f'), where
    else:
        assert a == b or (a != a and b != b), f'{where}: {a!r} != {b!r}'


def sample_records():
    rng = np.random.default_rng(0)
    records = []
    for i in range(40):
        n = i % 5
        records.append(dict(
            id=i if i % 3 else f'img_{i}', filename=f'dir/é_{i}.jpg', width=640 + i,
            height=None if i == 7 else 480, score=float('nan') if i == 3 else 0.5,
            ann=dict(bboxes=rng.random((n, 4)).astype(np.float32),
                     labels=rng.integers(0, 3, n), bboxes_ignore=np.zeros((0, 4), np.float32),
                     labels_ignore=np.zeros(0, np.int64),
                     masks=[[[1.5, 2.0, 3.25, 4.0, 5.0, 6.0]]] * n,
                     big_endian=np.arange(3, dtype='>i4'), fortran=np.asfortranarray(
                         rng.random((2, 3))), scalar=np.array(3.5), flags=np.ones(n, bool)),
            extra=(1, 'a', None)))
    return records


def test_store_round_trips_records_exactly_and_hands_out_copies():
    records = sample_records()
    store = RecordStore(records)
    assert len(store) == len(records) and store.buffer.dtype == np.uint8
    # the builder's one pickler writes each record as a fresh pickler would
    starts = np.concatenate([[0], store.ends[:-1]])
    assert [bytes(store.buffer[a:b]) for a, b in zip(starts, store.ends)] == [
        record_store.dumps(r) for r in records]
    for i, record in enumerate(records):
        assert_same(store[i], record, f'store[{i}]')
    assert_same(store[-1], records[-1])
    assert_same(list(store), records)
    # a pipeline changing its record (in place, arrays too) leaves the store as it was
    got = store[4]
    got['ann']['bboxes'][:] = -1
    got['filename'] = 'changed'
    assert_same(store[4], records[4])
    # subsets without unpickling, in any order, with repeats; slices; pickled store
    order = [5, 3, 3, 39, 0, 1, 2]
    assert_same(list(store.take(order)), [records[i] for i in order])
    assert_same(list(store[10:20:3]), records[10:20:3])
    assert_same(list(pickle.loads(pickle.dumps(store))), records)
    assert len(RecordStore([])) == 0 and len(store.take([])) == 0
    with pytest.raises(IndexError):
        store[40]


def bccd(repo_root, **kw):
    return CocoDataset('annotations/train.json', [], classes=BCCD_CLASSES,
                       data_root=str(repo_root / 'data' / 'bccd') + '/', **kw)


def test_serialised_and_dict_records_give_the_same_dataset(repo_root):
    ser, dicts = bccd(repo_root), bccd(repo_root, serialize_data=False)
    # category ids from the label columns (kept through the training filter) = the records'
    cat_ids = [[ser.cat_ids[label] for label in r['ann']['labels'].tolist()]
               for r in ser.data_infos]
    assert [ser.get_cat_ids(i) for i in range(len(ser))] == cat_ids
    assert [dicts.get_cat_ids(i) for i in range(len(dicts))] == cat_ids
    assert ser.get_cat_ids(-1) == cat_ids[-1]
    with pytest.raises(IndexError):
        ser.get_cat_ids(len(ser))
    assert isinstance(ser.data_infos, RecordStore) and isinstance(dicts.data_infos, list)
    assert len(ser) == len(dicts) and ser.img_ids == dicts.img_ids
    assert np.array_equal(ser.flag, dicts.flag) and ser.flag.dtype == dicts.flag.dtype == np.uint8
    for i in range(len(ser)):
        assert_same(ser.data_infos[i], dicts.data_infos[i])
        assert ser.get_cat_ids(i) == dicts.get_cat_ids(i)
    # the store is much smaller than the Python objects it replaces
    tracemalloc.start()
    objects = list(ser.data_infos)
    in_memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(objects) == len(ser) and ser.data_infos.nbytes < in_memory / 2


def test_wrappers_and_group_sampler_work_on_serialised_records(repo_root):
    ser, dicts = bccd(repo_root), bccd(repo_root, serialize_data=False)
    for wrap in (lambda d: ClassBalancedDataset(d, oversample_thr=1.0),
                 lambda d: RepeatDataset(d, 3),
                 lambda d: ConcatDataset([d, RepeatDataset(d, 2)])):
        a, b = wrap(ser), wrap(dicts)
        assert len(a) == len(b) > len(ser)
        assert np.array_equal(a.flag, b.flag)
        assert ([a.get_cat_ids(i) for i in range(len(a))]
                == [b.get_cat_ids(i) for i in range(len(b))])
        sa = DistributedGroupSampler(a, 2, 1, 0, seed=3)
        sb = DistributedGroupSampler(b, 2, 1, 0, seed=3)
        assert list(sa) == list(sb)
    # the class-balanced repeats repeat the images of the rarest class most
    cb = ClassBalancedDataset(ser, oversample_thr=1.0)
    assert isinstance(cb.repeat_indices, np.ndarray)
    cats = [set(ser.get_cat_ids(i)) for i in range(len(ser))]
    freq = {c: sum(c in s for s in cats) for c in ser.cat_ids}
    rarest = min(freq, key=freq.get)
    counts = np.bincount(cb.repeat_indices, minlength=len(ser))
    with_rarest = [i for i, s in enumerate(cats) if rarest in s]
    expected = int(np.ceil(np.sqrt(len(ser) / freq[rarest])))
    assert expected > 1 and (counts[with_rarest] >= expected).all()
    empty = [i for i, s in enumerate(cats) if not s]
    assert (counts[empty] == 1).all()  # images without boxes are not repeated


def test_filter_empty_gt_on_serialised_records(repo_root, tmp_path):
    coco = json.loads((repo_root / 'data' / 'bccd' / 'annotations' / 'test.json').read_text())
    emptied = {im['id'] for im in coco['images'][:5]}
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] not in emptied]
    coco['images'][6]['width'] = 20  # too small to train on
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(coco))
    train = CocoDataset(str(path), [], classes=BCCD_CLASSES)
    keep = CocoDataset(str(path), [], classes=BCCD_CLASSES, filter_empty_gt=False)
    test = CocoDataset(str(path), [], classes=BCCD_CLASSES, test_mode=True)
    n = len(coco['images'])
    assert (len(train), len(keep), len(test)) == (n - 6, n - 1, n)
    names = [r['filename'] for r in train.data_infos]
    left_out = coco['images'][:5] + coco['images'][6:7]
    assert not any(im['file_name'] in names for im in left_out)
    assert train.img_ids == [r['id'] for r in train.data_infos]
    for ds in (train, keep, test):  # label columns kept through the filter
        assert [ds.get_cat_ids(i) for i in range(len(ds))] == [
            [ds.cat_ids[label] for label in r['ann']['labels'].tolist()] for r in ds.data_infos]
    assert np.array_equal(train.flag, [int(r['width'] / r['height'] > 1) for r in train.data_infos])


SEGMENTATIONS = [
    [[1.5, 2.0, 30, 2, 30.25, 40.0]],                              # floats and ints
    [[1e1, 2.5E-1, 3e+2, -0.0, 5, 6], [0, 0, 7.125, 0, 7, 8, 0.1, 9]],  # exponents, 2 parts
    [],                                                            # BCCD's empty list
    {'size': [480, 640], 'counts': 'ab3c\\d"e'},                  # compressed RLE
    {'size': [4, 4], 'counts': [0, 3, 13]},                        # uncompressed RLE
    [[10, 20, 50, 25, 30, 60, 123456789012345678901234567890, 1.7976931348623157e308]],
    None,
]


def _reference_records(ds: CocoDataset, ann_file: str) -> list[dict]:
    """The records as the per-image parse makes them (the COCO API's index, one image at a
    time, through ``_parse_ann_info``)."""
    coco = COCO(ann_file)
    cats = {c['id']: c['name'] for c in coco.dataset['categories']}
    out = []
    for img_id in coco.get_img_ids():
        info = dict(coco.load_imgs([img_id])[0])
        info['filename'] = info['file_name']
        info['ann'] = ds._parse_ann_info(info, coco.imgToAnns.get(img_id, []), cats)
        out.append(info)
    return out


@pytest.mark.parametrize('options', [dict(classes=BCCD_CLASSES),
                                     dict(classes=('WBC', 'RBC'), min_size=12),
                                     dict(classes={'Platelets': 'platelet', 'RBC': 'red'})])
def test_vectorised_coco_loading_equals_the_per_image_parse(repo_root, tmp_path, options):
    coco = json.loads((repo_root / 'data' / 'bccd' / 'annotations' / 'train.json').read_text())
    anns = coco['annotations']
    # one oddity per image, so that the other images (with a crowd box, an ignored box, a
    # box of an unselected class) take the fast path
    first_of = {}
    for k, a in enumerate(anns):
        first_of.setdefault(a['image_id'], k)
    k = list(first_of.values())
    anns[k[0]]['iscrowd'] = 1
    anns[k[1]]['ignore'] = 1
    anns[k[2]]['bbox'] = [str(v) for v in anns[k[2]]['bbox']]  # strings: converted, counted
    anns[k[3]]['bbox'][2] = 0.5                                # degenerate
    anns[k[4]]['bbox'][0] = 5000                               # outside its image
    anns[k[5]]['area'] = 0                                     # area <= 0: degenerate
    anns[k[6]]['category_id'] = 99                             # unknown category
    anns[k[7]]['image_id'] = -5                                # no such image
    anns[k[8]]['iscrowd'] = 1
    anns[k[8] + 1]['iscrowd'] = 1
    anns[k[9]:k[9] + 4] = anns[k[9]:k[9] + 4][::-1]            # not in file order
    del anns[k[10]]['area']
    anns.append(dict(anns[k[11]], id=10 ** 7))                # annotations after the images'
    coco['images'].append(dict(coco['images'][0], id=10 ** 6, file_name='none.jpg'))
    # masks of every kind: polygons (kept as JSON text while loading), RLE, none
    for j, a in enumerate(anns):
        a['segmentation'] = SEGMENTATIONS[j % len(SEGMENTATIONS)]
    del anns[k[12]]['segmentation']
    path = tmp_path / 'ann.json'
    # an indented file puts line breaks inside the polygon lists
    path.write_text(json.dumps(coco, indent=1 if len(options) == 2 else None))
    ds = CocoDataset(str(path), [], test_mode=True, **options)
    ref_ds = CocoDataset(str(path), [], test_mode=True, **options)
    ref_ds.skipped = SkipCounter()
    ref = _reference_records(ref_ds, str(path))
    assert len(ds) == len(ref) == len(coco['images'])
    for i, r in enumerate(ref):
        assert_same(ds.data_infos[i], r, f'image {i}')
    # get_cat_ids reads the label columns kept at loading, not the records
    assert [ds.get_cat_ids(i) for i in range(len(ds))] == [
        [ds.cat_ids[label] for label in r['ann']['labels'].tolist()] for r in ref]
    # the same skips, counted once each, with the same messages
    assert dict(ds.skipped.items) == dict(ref_ds.skipped.items)
    if len(ds.CLASSES) == 3:
        counts = {kind: ds.skipped.count(kind) for kind in ds.skipped.items}
        assert counts == dict(degenerate=2, outside=1, unknown_class=1, string_coords=1)


def test_coco_index_is_built_only_when_evaluation_asks(repo_root):
    ds = bccd(repo_root)
    assert ds._coco is None  # training does not keep the parsed JSON and its index
    gt = ds.coco.dataset
    assert len(gt['annotations']) == len(json.loads(
        (repo_root / 'data' / 'bccd' / 'annotations' / 'train.json').read_text())['annotations'])
    assert ds.coco is ds.coco


def test_loader_gives_the_same_batches_with_0_and_2_workers_on_serialised_records(repo_root):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='Resize', img_scale=[(96, 64), (160, 120)], multiscale_mode='range'),
                dict(type='RandomFlip', flip_ratio=0.5), dict(type='DefaultFormatBundle'),
                dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])]
    cfg = dict(type='CocoDataset', classes=BCCD_CLASSES, ann_file='annotations/test.json',
               data_root=str(repo_root / 'data' / 'bccd') + '/', pipeline=pipeline)
    ser = build_dataset(cfg)
    dicts = build_dataset(dict(cfg, serialize_data=False))
    assert isinstance(ser.data_infos, RecordStore)

    def batches(ds, workers):
        out = []
        for i, batch in enumerate(build_dataloader(ds, 3, workers, seed=5)):
            if i == 3:
                break
            out.append(batch)
        return out

    ref = batches(ser, 0)
    for other in (batches(ser, 2), batches(dicts, 2)):
        for a, b in zip(ref, other):
            names = [[m['filename'] for m in x['img_metas']] for x in (a, b)]
            assert names[0] == names[1]
            assert torch.equal(a['img'], b['img'])
            assert all(torch.equal(x, y) for x, y in zip(a['gt_bboxes'], b['gt_bboxes']))
            assert all(torch.equal(x, y) for x, y in zip(a['gt_labels'], b['gt_labels']))


def _tricky_coco() -> dict:
    """A COCO dict whose text tempts a polygon-finding pattern to misfire."""
    return dict(
        images=[dict(id=1, file_name='a", "segmentation": [[1, 2]], "b": "x.jpg', width=64,
                     height=48, segmentation=[[9, 9, 9]]),  # a stray key: parsed as usual
                dict(id=2, file_name='{"segmentation": [[5]]}.jpg', width=64, height=48)],
        annotations=[
            dict(id=1, image_id=1, category_id=1, bbox=[1, 2, 30, 20], area=600, iscrowd=0,
                 segmentation=[[1.5, 2, 3e2, -4.25E-1, 5, 6]]),
            dict(id=2, image_id=1, category_id=1, bbox=[1, 2, 30, 20], area=600, iscrowd=0,
                 segmentation=[[1, float('nan'), 2, 3, 4, 5]]),  # NaN: not a plain number
            dict(id=3, image_id=2, category_id=1, bbox=[1, 2, 30, 20], area=600, iscrowd=1,
                 segmentation=dict(size=[48, 64], counts='0a1b')),
            dict(id=4, image_id=2, category_id=1, bbox=[1, 2, 30, 20], area=600, iscrowd=0,
                 attributes=dict(segmentation=[[7, 8, 9, 10]]),  # nested: parsed as usual
                 **{'a"segmentation': [[3, 4]]},  # a key that ends like it
                 segmentation=[[1, 2, 3, 4, 5, 6], [], [7, 8, 9, 10, 11, 12]])],
        categories=[dict(id=1, name='thing')])


@pytest.mark.parametrize('indent', [None, 2])
def test_polygons_kept_as_text_decode_to_the_file_exactly(tmp_path, indent):
    from detforge.data.coco_api import decode_segmentation_texts, load_coco_json
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(_tricky_coco(), indent=indent))
    plain = json.loads(path.read_text())
    data = load_coco_json(str(path), polygons_as_text=True)
    segm = [a['segmentation'] for a in data['annotations']]
    # the plain polygon lists of the annotations are text; the rest is parsed
    assert [type(s).__name__ for s in segm] == ['str', 'list', 'dict', 'str']
    assert data['images'][0]['segmentation'] == [[9, 9, 9]]
    assert data['annotations'][3]['attributes'] == dict(segmentation=[[7, 8, 9, 10]])
    assert_same(decode_segmentation_texts(data), plain)
    assert_same(load_coco_json(str(path)), plain)


def test_polygons_as_text_keeps_errors_and_files_holding_the_mark(tmp_path):
    from detforge.data.coco_api import load_coco_json
    from detforge.data.errors import DatasetError
    coco = _tricky_coco()
    coco['images'][1]['file_name'] = 'odd\x7f.jpg'  # the mark itself: nothing is kept as text
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(coco))
    data = load_coco_json(str(path), polygons_as_text=True)
    assert_same(data, json.loads(path.read_text()))
    # a malformed file: the message of the plain parse (line and column as in the file)
    path.write_text(json.dumps(_tricky_coco(), indent=1)[:-30])
    with pytest.raises(json.JSONDecodeError) as plain:
        json.loads(path.read_text())
    with pytest.raises(DatasetError) as ours:
        load_coco_json(str(path), polygons_as_text=True)
    assert str(plain.value) in str(ours.value)


def test_coco_masks_come_back_as_in_the_file_and_bad_numbers_fail_on_reading(tmp_path):
    from detforge.data.errors import DatasetError
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(_tricky_coco()))
    ds = CocoDataset(str(path), [], classes=('thing',), test_mode=True)
    plain = json.loads(path.read_text())['annotations']
    assert_same(ds.data_infos[0]['ann']['masks'], [plain[0]['segmentation'],
                                                   plain[1]['segmentation']])
    assert_same(ds.get_ann_info(1)['masks'], [plain[3]['segmentation']])  # crowd: no mask
    # numbers that are not JSON inside a polygon: the load keeps them as text, reading fails
    path.write_text(path.read_text().replace('[[1.5, 2, 300.0', '[[1.5, 2, 300..0'))
    ds = CocoDataset(str(path), [], classes=('thing',), test_mode=True)
    with pytest.raises(DatasetError, match=r'invalid JSON .*300\.\.0'):
        ds.data_infos[0]
