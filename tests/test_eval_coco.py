"""COCO evaluation: our metric gives the numbers of pycocotools run directly."""
import contextlib
import copy
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detforge.evaluation.coco_metric import evaluate_coco, results2json, xyxy2xywh
from detforge.registry import METRICS, DetforgeError

STAT_KEYS = ['bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l']


def _dataset_from_coco_dict(data, classes):
    """A minimal stand-in with the attributes a CocoDataset gives the metric."""
    cat_ids = [c['id'] for c in data['categories']]
    return SimpleNamespace(coco=SimpleNamespace(dataset=data), CLASSES=tuple(classes),
                           img_ids=[im['id'] for im in data['images']], cat_ids=cat_ids,
                           data_infos=[dict(im, filename=im['file_name']) for im in data['images']])


def _pycocotools_stats(gt_data, detections_json, use_cats=True):
    """The reference: pycocotools' own COCO, loadRes and COCOeval, default parameters."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_data)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(detections_json))
        coco_eval = COCOeval(gt, dt, 'bbox')
        coco_eval.params.useCats = int(use_cats)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def _to_json(dataset, results):
    out = []
    for img_id, per_image in zip(dataset.img_ids, results):
        for label, dets in enumerate(per_image):
            for x1, y1, x2, y2, s in np.asarray(dets, dtype=np.float64).tolist():
                out.append(dict(image_id=img_id, category_id=dataset.cat_ids[label],
                                bbox=[x1, y1, x2 - x1, y2 - y1], score=s))
    return out


@pytest.fixture()
def hand_built():
    """Two images, two classes; detections with a miss, a duplicate and a wrong class."""
    data = dict(
        images=[dict(id=10, file_name='a.jpg', width=200, height=100),
                dict(id=11, file_name='b.jpg', width=200, height=100)],
        categories=[dict(id=1, name='cat'), dict(id=3, name='dog')],
        annotations=[
            dict(id=1, image_id=10, category_id=1, bbox=[10, 10, 40, 30], area=1200, iscrowd=0),
            dict(id=2, image_id=10, category_id=3, bbox=[100, 20, 60, 60], area=3600, iscrowd=0),
            dict(id=3, image_id=11, category_id=1, bbox=[5, 5, 20, 20], area=400, iscrowd=0),
            dict(id=4, image_id=11, category_id=3, bbox=[50, 10, 120, 80], area=9600, iscrowd=0),
        ])
    results = [
        [np.array([[11, 10, 50, 41, 0.9], [12, 12, 50, 40, 0.8]], np.float32),   # hit + duplicate
         np.array([[100, 22, 158, 80, 0.7]], np.float32)],
        [np.array([[60, 10, 170, 90, 0.95]], np.float32),                        # wrong class
         np.array([[52, 12, 170, 88, 0.6], [0, 0, 30, 30, 0.3]], np.float32)],
    ]
    return _dataset_from_coco_dict(data, ['cat', 'dog']), results


@pytest.mark.parametrize('backend', ['faster_coco_eval', 'pycocotools'])
def test_hand_built_case_matches_pycocotools(hand_built, backend):
    dataset, results = hand_built
    ours = evaluate_coco(dataset, results, logger='silent', backend=backend)
    ref = _pycocotools_stats(dataset.coco.dataset, _to_json(dataset, results))
    assert list(ours)[:6] == STAT_KEYS
    np.testing.assert_allclose([ours[k] for k in STAT_KEYS], ref[:6], atol=1e-9)
    assert ours['bbox_mAP_copypaste'] == ' '.join(f'{v:.3f}' for v in ref[:6])


def test_perfect_detections_give_ap_one(hand_built):
    dataset, _ = hand_built
    anns = dataset.coco.dataset['annotations']
    results = [[np.zeros((0, 5), np.float32) for _ in range(2)] for _ in range(2)]
    for ann in anns:
        img = dataset.img_ids.index(ann['image_id'])
        label = dataset.cat_ids.index(ann['category_id'])
        x, y, w, h = ann['bbox']
        results[img][label] = np.vstack([results[img][label], [[x, y, x + w, y + h, 0.5]]])
    ours = evaluate_coco(dataset, results, logger='silent')
    assert ours['bbox_mAP'] == pytest.approx(1.0)
    assert ours['bbox_mAP_50'] == pytest.approx(1.0)


@pytest.fixture(scope='module')
def bccd_coco_test(repo_root):
    from detforge.data.coco import CocoDataset
    ann = repo_root / 'data' / 'bccd' / 'annotations' / 'test.json'
    return CocoDataset(str(ann), pipeline=[], classes=('RBC', 'WBC', 'Platelets'),
                       img_prefix=str(repo_root / 'data' / 'bccd'), test_mode=True)


def jittered_predictions(dataset, seed=0):
    """Plausible detections: every GT box moved by a few pixels, some dropped, plus false
    positives; scores higher for the better boxes."""
    rng = np.random.default_rng(seed)
    results = []
    for i in range(len(dataset.data_infos)):
        ann = dataset.get_ann_info(i)
        boxes, labels = ann['bboxes'].astype(np.float64), ann['labels']
        keep = rng.random(len(boxes)) > 0.1
        boxes, labels = boxes[keep], labels[keep]
        noise = rng.normal(0, 4, boxes.shape)
        boxes = boxes + noise
        scores = np.clip(0.95 - np.abs(noise).mean(1) / 10 + rng.normal(0, 0.05, len(boxes)),
                         0.01, 1)
        fp = rng.uniform(0, 400, (3, 2))
        fp_boxes = np.hstack([fp, fp + rng.uniform(20, 150, (3, 2))])
        boxes = np.vstack([boxes, fp_boxes])
        labels = np.concatenate([labels, rng.integers(0, len(dataset.CLASSES), 3)])
        scores = np.concatenate([scores, rng.uniform(0.05, 0.6, 3)])
        dets = np.hstack([boxes, scores[:, None]]).astype(np.float32)
        results.append([dets[labels == c] for c in range(len(dataset.CLASSES))])
    return results


@pytest.mark.parametrize('backend', ['faster_coco_eval', 'pycocotools'])
def test_bccd_predictions_match_pycocotools(bccd_coco_test, backend, tmp_path):
    results = jittered_predictions(bccd_coco_test)
    ours = evaluate_coco(bccd_coco_test, results, logger='silent', backend=backend,
                         jsonfile_prefix=str(tmp_path / 'res'))
    # the reference reads the exported JSON, as a user would hand it to pycocotools
    with open(tmp_path / 'res.bbox.json') as f:
        exported = json.load(f)
    ref = _pycocotools_stats(bccd_coco_test.coco.dataset, exported)
    np.testing.assert_allclose([ours[k] for k in STAT_KEYS], ref[:6], atol=1e-9)
    assert 0.3 < ours['bbox_mAP'] < 0.95  # the jittered boxes are plausible, not perfect


def test_results2json_writes_xywh_without_plus_one(hand_built, tmp_path):
    dataset, results = hand_built
    files = results2json(dataset, results, str(tmp_path / 'out'))
    with open(files['bbox']) as f:
        records = json.load(f)
    assert len(records) == 6
    first = records[0]
    assert first == dict(image_id=10, bbox=[11.0, 10.0, 39.0, 31.0],
                         score=pytest.approx(0.9), category_id=1)
    dog = [r for r in records if r['category_id'] == 3 and r['image_id'] == 10]
    assert dog[0]['bbox'] == [100.0, 22.0, 58.0, 58.0]
    np.testing.assert_array_equal(xyxy2xywh(np.array([[1, 2, 4, 8, 0.5]])), [[1, 2, 3, 6]])


def test_proposal_metric_matches_pycocotools_class_agnostic(hand_built):
    dataset, results = hand_built
    proposals = [np.vstack(r) for r in results]
    ours = evaluate_coco(dataset, proposals, metric='proposal', logger='silent',
                         proposal_nums=(1, 10, 100))
    json_dets = [dict(image_id=img_id, category_id=1, bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]],
                      score=float(b[4])) for img_id, p in zip(dataset.img_ids, proposals)
                 for b in p.astype(np.float64).tolist()]
    ref = _pycocotools_stats(dataset.coco.dataset, json_dets, use_cats=False)
    assert list(ours) == ['AR@100', 'AR@300', 'AR@1000', 'AR_s@1000', 'AR_m@1000', 'AR_l@1000']
    np.testing.assert_allclose(list(ours.values()), ref[6:12], atol=1e-9)


def test_classwise_prints_a_table_with_class_names(hand_built, capsys):
    dataset, results = hand_built
    evaluate_coco(dataset, results, classwise=True)
    out = capsys.readouterr().out
    assert '| category' in out and '| cat ' in out and '| dog ' in out
    assert '+----' in out


def test_classwise_table_by_default_for_a_few_classes(hand_built, capsys, monkeypatch):
    from detforge.evaluation import coco_metric
    dataset, results = hand_built
    plain = evaluate_coco(dataset, results)  # classwise=None: 2 classes <= 20, shown
    assert '| category' in capsys.readouterr().out
    assert plain == evaluate_coco(dataset, results, classwise=False)  # printing only
    assert '| category' not in capsys.readouterr().out
    monkeypatch.setattr(coco_metric, 'CLASSWISE_AUTO_MAX_CLASSES', 1)  # "many" classes
    evaluate_coco(dataset, results)
    assert '| category' not in capsys.readouterr().out


def test_results_from_another_dataset_are_rejected(hand_built):
    dataset, results = hand_built
    with pytest.raises(DetforgeError, match='results hold 1 images but the dataset has 2'):
        evaluate_coco(dataset, results[:1], logger='silent')
    three_classes = [r + [np.zeros((0, 5), np.float32)] for r in results]
    with pytest.raises(DetforgeError, match='3 per-class arrays but the dataset has 2 classes'):
        evaluate_coco(dataset, three_classes, logger='silent')


def test_unknown_metric_and_backend_are_clear_errors(hand_built):
    dataset, results = hand_built
    with pytest.raises(DetforgeError, match="metric 'keypoints' is not supported"):
        evaluate_coco(dataset, results, metric='keypoints')
    # segm is supported (issue 20), but box-only results are refused clearly
    with pytest.raises(DetforgeError, match="metric 'segm' needs mask results"):
        evaluate_coco(dataset, results, metric='segm')
    with pytest.raises(DetforgeError, match='unknown COCO evaluation backend'):
        evaluate_coco(dataset, results, backend='nope')


def test_coco_metric_builds_from_config(hand_built):
    dataset, results = hand_built
    metric = METRICS.build(dict(type='CocoMetric', metric='bbox', backend='pycocotools'))
    assert metric(dataset, results, logger='silent')['bbox_mAP'] == pytest.approx(
        evaluate_coco(dataset, results, logger='silent')['bbox_mAP'])


def test_voc_style_dataset_can_be_evaluated_with_coco_metric(hand_built):
    """A dataset without a COCO object (VOC) gets its GT from get_ann_info."""
    coco_ds, results = hand_built
    anns = coco_ds.coco.dataset['annotations']

    def get_ann_info(i):
        mine = [a for a in anns if a['image_id'] == coco_ds.img_ids[i]]
        boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                           a['bbox'][1] + a['bbox'][3]] for a in mine], np.float32)
        labels = np.array([coco_ds.cat_ids.index(a['category_id']) for a in mine])
        return dict(bboxes=boxes, labels=labels, bboxes_ignore=np.zeros((0, 4), np.float32))

    voc_ds = SimpleNamespace(CLASSES=coco_ds.CLASSES, get_ann_info=get_ann_info,
                             data_infos=[dict(id=f'img{i}', width=200, height=100, filename='x')
                                         for i in range(2)])
    ours = evaluate_coco(voc_ds, results, logger='silent')
    ref = evaluate_coco(coco_ds, results, logger='silent')
    assert [ours[k] for k in STAT_KEYS] == pytest.approx([ref[k] for k in STAT_KEYS])


def test_proposal_fast_gives_average_recall_per_proposal_number(hand_built):
    from detforge.evaluation.recalls import eval_recalls
    dataset, results = hand_built
    proposals = [np.vstack(r) for r in results]
    ours = evaluate_coco(dataset, proposals, metric='proposal_fast', proposal_nums=(1, 3),
                         logger='silent')
    gts = [np.array([[10, 10, 50, 40], [100, 20, 160, 80]], np.float32),
           np.array([[5, 5, 25, 25], [50, 10, 170, 90]], np.float32)]
    iou_thrs = np.linspace(.5, 0.95, 10)
    expected = eval_recalls(gts, proposals, [1, 3], iou_thrs, logger='silent').mean(axis=1)
    assert list(ours) == ['AR@1', 'AR@3']
    np.testing.assert_allclose(list(ours.values()), expected)
    assert ours['AR@3'] > ours['AR@1'] > 0
