"""VOC mAP: our vectorised eval_map equals a plain per-detection computation (VOC devkit style)."""
from types import SimpleNamespace

import numpy as np
import pytest

from detforge.evaluation.voc_metric import average_precision, eval_map, evaluate_voc
from detforge.registry import METRICS, DetforgeError


def reference_voc_ap(results, annotations, class_id, iou_thr=0.5, mode='area', legacy=False):
    """One class's AP, written out as the VOC devkit's voc_eval: loops, no vectorisation."""
    extra = 1.0 if legacy else 0.0

    def iou(a, b):
        iw = min(a[2], b[2]) - max(a[0], b[0]) + extra
        ih = min(a[3], b[3]) - max(a[1], b[1]) + extra
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        area_a = (a[2] - a[0] + extra) * (a[3] - a[1] + extra)
        area_b = (b[2] - b[0] + extra) * (b[3] - b[1] + extra)
        return inter / (area_a + area_b - inter)

    gts = {}   # image -> list of [box, difficult, used]
    npos = 0
    for img, ann in enumerate(annotations):
        gts[img] = []
        for box, label in zip(ann['bboxes'].tolist(), ann['labels'].tolist()):
            if label == class_id:
                gts[img].append([box, False, False])
                npos += 1
        for box, label in zip(ann['bboxes_ignore'].tolist(), ann['labels_ignore'].tolist()):
            if label == class_id:
                gts[img].append([box, True, False])
    dets = [(img, row[4], row[:4]) for img, per_image in enumerate(results)
            for row in per_image[class_id].tolist()]
    dets.sort(key=lambda d: -d[1])
    tp, fp = [], []
    for img, _, box in dets:
        best, best_gt = -1.0, None
        for gt in gts[img]:
            o = iou(box, gt[0])
            if o > best:
                best, best_gt = o, gt
        if best >= iou_thr:
            if best_gt[1]:
                continue                 # difficult: neither TP nor FP
            if not best_gt[2]:
                best_gt[2] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / max(npos, 1e-12)
    prec = tp / np.maximum(tp + fp, 1e-12)
    if mode == '11points':
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = prec[rec >= t].max() if (rec >= t).any() else 0.0
            ap += p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def synthetic_voc(seed=0, num_images=30, num_classes=3):
    """Random GT (with difficult boxes) and detections near them, distinct scores."""
    rng = np.random.default_rng(seed)
    annotations, results = [], []
    for _ in range(num_images):
        n = rng.integers(0, 8)
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.hstack([xy, xy + rng.uniform(10, 120, (n, 2))])
        labels = rng.integers(0, num_classes, n)
        difficult = rng.random(n) < 0.2
        annotations.append(dict(bboxes=boxes[~difficult].astype(np.float32),
                                labels=labels[~difficult],
                                bboxes_ignore=boxes[difficult].astype(np.float32),
                                labels_ignore=labels[difficult]))
        m = rng.integers(0, 12)
        src = rng.integers(0, max(n, 1), m)
        base = boxes[src] if n else np.hstack([rng.uniform(0, 300, (m, 2))] * 2) + [0, 0, 30, 30]
        det = base + rng.normal(0, 12, (m, 4))
        det_labels = labels[src] if n else rng.integers(0, num_classes, m)
        det_labels = np.where(rng.random(m) < 0.15, rng.integers(0, num_classes, m), det_labels)
        scores = rng.random(m)
        d = np.hstack([det, scores[:, None]]).astype(np.float32)
        results.append([d[det_labels == c] for c in range(num_classes)])
    return results, annotations


@pytest.mark.parametrize('mode', ['area', '11points'])
@pytest.mark.parametrize('legacy', [False, True])
def test_eval_map_equals_plain_computation_with_difficult_ignored(mode, legacy):
    results, annotations = synthetic_voc()
    mean_ap, per_class = eval_map(results, annotations, iou_thr=0.5, eval_mode=mode,
                                  logger='silent', use_legacy_coordinate=legacy)
    expected = [reference_voc_ap(results, annotations, c, 0.5, mode, legacy) for c in range(3)]
    np.testing.assert_allclose([r['ap'] for r in per_class], expected, atol=1e-6)
    assert mean_ap == pytest.approx(np.mean(expected), abs=1e-6)
    assert [r['num_gts'] for r in per_class] == [
        sum(int((a['labels'] == c).sum()) for a in annotations) for c in range(3)]


def test_difficult_boxes_neither_count_as_misses_nor_hits():
    gt = dict(bboxes=np.array([[0, 0, 10, 10]], np.float32), labels=np.array([0]),
              bboxes_ignore=np.array([[50, 50, 60, 60]], np.float32), labels_ignore=np.array([0]))
    dets = [[np.array([[50, 50, 60, 60, 0.9], [0, 0, 10, 10, 0.8]], np.float32)]]
    mean_ap, _ = eval_map(dets, [gt], logger='silent')
    assert mean_ap == pytest.approx(1.0)


def test_average_precision_modes_on_a_known_curve():
    # one TP then one FP then one TP, 2 GTs: recall .5, .5, 1; precision 1, .5, .667
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    assert average_precision(rec, prec, 'area') == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(rec, prec, '11points') == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


@pytest.fixture(scope='module')
def bccd_voc_test(repo_root):
    from detforge.data.voc import XMLDataset
    root = repo_root / 'data' / 'bccd'
    return XMLDataset(str(root / 'ImageSets' / 'Main' / 'test.txt'), pipeline=[],
                      classes=('RBC', 'WBC', 'Platelets'), img_prefix=str(root), test_mode=True)


def jittered_predictions(dataset, seed=0):
    """Every GT box moved by a few pixels (10% dropped) plus a few false positives."""
    rng = np.random.default_rng(seed)
    results = []
    for i in range(len(dataset.data_infos)):
        ann = dataset.get_ann_info(i)
        keep = rng.random(len(ann['bboxes'])) > 0.1
        boxes = ann['bboxes'][keep].astype(np.float64) + rng.normal(0, 4, (keep.sum(), 4))
        fp = rng.uniform(0, 400, (3, 2))
        boxes = np.vstack([boxes, np.hstack([fp, fp + rng.uniform(20, 150, (3, 2))])])
        labels = np.concatenate([ann['labels'][keep], rng.integers(0, 3, 3)])
        scores = rng.permutation(len(boxes)) / len(boxes) + 0.01  # distinct scores
        dets = np.hstack([boxes, scores[:, None]]).astype(np.float32)
        results.append([dets[labels == c] for c in range(3)])
    return results


@pytest.mark.parametrize('mode', ['area', '11points'])
def test_bccd_voc_map_equals_plain_computation(bccd_voc_test, mode):
    results = jittered_predictions(bccd_voc_test, seed=1)
    ours = evaluate_voc(bccd_voc_test, results, eval_mode=mode, logger='silent')
    annotations = [bccd_voc_test.get_ann_info(i) for i in range(len(results))]
    for a in annotations:
        a.setdefault('labels_ignore', np.zeros(len(a['bboxes_ignore']), np.int64))
    expected = np.mean([reference_voc_ap(results, annotations, c, 0.5, mode, legacy=True)
                        for c in range(3)])
    assert list(ours) == ['mAP', 'AP50']
    assert ours['mAP'] == pytest.approx(expected, abs=1e-6)
    assert 0.3 < ours['mAP'] < 1.0


def test_per_class_table_is_printed(capsys):
    results, annotations = synthetic_voc(num_images=5)
    eval_map(results, annotations, dataset=('RBC', 'WBC', 'Platelets'))
    out = capsys.readouterr().out
    assert '| class' in out and '| Platelets' in out and '| mAP' in out


def test_results_from_another_dataset_are_rejected():
    results, annotations = synthetic_voc(num_images=4)
    dataset = SimpleNamespace(CLASSES=('a', 'b', 'c'), data_infos=[{}] * 4,
                              get_ann_info=lambda i: annotations[i])
    with pytest.raises(DetforgeError, match='3 images but the dataset has 4'):
        evaluate_voc(dataset, results[:3], logger='silent')
    two_classes = SimpleNamespace(CLASSES=('a', 'b'), data_infos=[{}] * 4,
                                  get_ann_info=lambda i: annotations[i])
    with pytest.raises(DetforgeError, match='2 per-class arrays'):
        evaluate_voc(two_classes, results, logger='silent')


def test_voc_metric_builds_from_config_and_checks_mode():
    metric = METRICS.build(dict(type='VOCMetric', eval_mode='11points'))
    results, annotations = synthetic_voc(num_images=6)
    dataset = SimpleNamespace(CLASSES=('a', 'b', 'c'), data_infos=[{}] * 6,
                              get_ann_info=lambda i: annotations[i])
    out = metric(dataset, results, logger='silent')
    expected = np.mean([reference_voc_ap(results, annotations, c, 0.5, '11points', True)
                        for c in range(3) if any((a['labels'] == c).any() for a in annotations)])
    assert out['mAP'] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(DetforgeError, match="'area' or '11points'"):
        METRICS.build(dict(type='VOCMetric', eval_mode='12points'))
