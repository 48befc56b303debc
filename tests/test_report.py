"""`detforge report WORK_DIR`: one self-contained HTML page about a real (tiny) training run.

The rendering in a real browser is checked by hand (tools/check_report_in_browser.sh:
headless Chromium screenshot), not here.
"""
from __future__ import annotations

import base64
import logging
import re
import sys
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from detforge.cli import main as _cli
from detforge.visualization.report import REPORT_SECTIONS

from conftest import data_options

pytestmark = pytest.mark.slow  # trains for 2 iterations
TINY = 'tests/configs/retinanet_r18_tiny_bccd.py'


def cli(argv):
    for handler in logging.getLogger('detforge').handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr  # pytest swaps stderr per test
    return _cli(argv)


@pytest.fixture(scope='module')
def work_dir(repo_root, bccd_subset, tmp_path_factory):
    """Two iterations of the tiny RetinaNet on 2 BCCD images (1 per batch), evaluated at
    the end: a work dir with a config, a log, checkpoints; its test split is those 2 images."""
    work = tmp_path_factory.mktemp('report_run')
    assert cli(['train', str(repo_root / TINY), '--work-dir', str(work), '--seed', '0',
                '--cfg-options', *data_options(repo_root, bccd_subset(2)),
                'data.samples_per_gpu=1']) == 0
    return work


class _Page(HTMLParser):
    """Every tag and attribute of a page, and the text of each section by id."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.section_ids = [], [], []
        self.text: dict[str, list[str]] = {}
        self._section = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, k, v or '') for k, v in attrs)
        if tag == 'section':
            self._section = dict(attrs).get('id')
            self.section_ids.append(self._section)

    def handle_data(self, data):
        if self._section:
            self.text.setdefault(self._section, []).append(data)


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding='utf-8'))
    return page


@pytest.fixture(scope='module')
def report(work_dir):
    assert cli(['report', str(work_dir)]) == 0
    return work_dir / 'report.html'


def test_the_page_is_self_contained(report):
    page = _parse(report)
    text = report.read_text(encoding='utf-8')
    links = [(tag, key, value) for tag, key, value in page.attrs
             if key in ('src', 'href', 'srcset', 'data', 'action')]
    external = [v for _, _, v in links if not (v.startswith('data:') or v.startswith('#'))]
    assert external == []
    assert not re.search(r'https?://', text.replace('http://www.w3.org', ''))
    assert 'script' not in page.tags and 'link' not in page.tags and 'iframe' not in page.tags
    assert 'url(' not in text  # no CSS fetch either


def test_every_embedded_image_is_a_valid_png(report):
    page = _parse(report)
    sources = [v for tag, key, v in page.attrs if tag == 'img' and key == 'src']
    # curves, PR curves, confusion matrix, 2 best + 2 worst... of 2 images: 1 + 1
    assert len(sources) >= 5
    for src in sources:
        assert src.startswith('data:image/png;base64,')
        png = base64.b64decode(src.split(',', 1)[1], validate=True)
        assert png[:8] == b'\x89PNG\r\n\x1a\n'
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and min(img.shape[:2]) > 50 and img.std() > 1


def test_every_section_is_there_with_its_content(report, work_dir):
    page = _parse(report)
    assert page.section_ids == list(REPORT_SECTIONS)
    text = {k: ' '.join(v) for k, v in page.text.items()}
    assert 'bbox_mAP' in text['summary']
    assert any(name in text['summary'] for name in ('latest.pth', 'epoch_1.pth'))
    assert all(name in text['per-class-ap'] for name in ('RBC', 'WBC', 'Platelets'))
    assert 'Best 1 of 2 images' in text['best-worst'] and 'Worst 1' in text['best-worst']
    assert 'BloodImage_' in text['best-worst']
    config = next(work_dir.glob('*.py')).read_text()
    assert "type='RetinaNet'" in config and "type='RetinaNet'" in text['config']
    assert 'PyTorch' in text['environment'] and 'Python' in text['environment']
    # the training curves panel and the PR/confusion figures are images in their sections
    html = report.read_text(encoding='utf-8')
    for section in ('curves', 'pr-curves', 'confusion-matrix'):
        body = html.split(f'<section id="{section}">', 1)[1].split('</section>', 1)[0]
        assert 'data:image/png;base64,' in body, section


def test_detections_are_kept_and_reused(report, work_dir, capsys):
    cache = list(work_dir.glob('report_*_test_*.pkl'))
    assert len(cache) == 1
    out = work_dir / 'again.html'
    assert cli(['report', str(work_dir), '--out', str(out), '--no-eval']) == 0
    page = _parse(out)
    assert 'No evaluation' in ' '.join(page.text['per-class-ap'])
    assert cli(['report', str(work_dir), '--out', str(out), '--split', 'val']) == 0
    assert 'detections read from' not in ' '.join(_parse(out).text['summary'])
    assert cli(['report', str(work_dir), '--out', str(out)]) == 0
    assert 'detections read from' in ' '.join(_parse(out).text['summary'])
    # other test settings of the model: other detections, not the kept ones
    assert cli(['report', str(work_dir), '--out', str(out), '--cfg-options',
                'model.test_cfg.max_per_img=5']) == 0
    assert 'detections read from' not in ' '.join(_parse(out).text['summary'])
    assert len(list(work_dir.glob('report_*_test_*.pkl'))) == 2


def test_bad_work_dirs_are_one_line(tmp_path, capsys):
    assert cli(['report', str(tmp_path / 'nope')]) == 2
    assert 'work dir not found' in capsys.readouterr().err
    assert cli(['report', str(tmp_path)]) == 2
    assert 'no config' in capsys.readouterr().err


def test_pr_curves_average_to_the_ap_table(bccd_subset, repo_root):
    """The curves are what AP averages: mean over recall (and IoU) of the curve = AP; and
    a perfect result is precision 1 at every recall."""
    from detforge.data import build_dataset
    from detforge.evaluation.precision_recall import coco_precision_recall
    dataset = build_dataset(dict(type='CocoDataset', ann_file=bccd_subset(3), pipeline=[],
                                 img_prefix=str(repo_root / 'data' / 'bccd') + '/',
                                 classes=('RBC', 'WBC', 'Platelets'), test_mode=True))
    # graded detections: GT boxes shifted by 0..12 pixels (so AP falls with the IoU
    # threshold), scores falling with the shift, and a confident false positive per image
    rng = np.random.default_rng(0)
    results = []
    for i in range(len(dataset.data_infos)):
        ann = dataset.get_ann_info(i)
        shift = rng.integers(0, 13, len(ann['bboxes'])).astype(np.float32)
        boxes = ann['bboxes'] + shift[:, None]
        dets = np.hstack([boxes, (1 - shift / 20)[:, None]]).astype(np.float32)
        per_class = [dets[ann['labels'] == c] for c in range(3)]
        per_class[0] = np.vstack([per_class[0], [[600, 440, 630, 470, 0.95]]]).astype(np.float32)
        results.append(per_class)
    pr = coco_precision_recall(dataset, results)
    assert pr.per_class_ap[0, 1] > pr.per_class_ap[0, 0] + 0.05  # AP50 > AP: a real test
    for k in range(3):
        if pr.num_gts[k]:
            assert np.nanmean(pr.curve(k)) == pytest.approx(pr.per_class_ap[k, 0], abs=1e-6)
            assert np.nanmean(pr.curve(k, 0.5)) == pytest.approx(pr.per_class_ap[k, 1],
                                                                 abs=1e-6)
            assert np.nanmean(pr.curve(k, 0.75)) == pytest.approx(pr.per_class_ap[k, 2],
                                                                  abs=1e-6)
    perfect = []
    for i in range(len(dataset.data_infos)):
        ann = dataset.get_ann_info(i)
        dets = np.hstack([ann['bboxes'], np.ones((len(ann['bboxes']), 1))]).astype(np.float32)
        perfect.append([dets[ann['labels'] == c] for c in range(3)])
    pr = coco_precision_recall(dataset, perfect)
    has_gt = pr.num_gts > 0
    assert pr.num_gts.sum() == sum(len(dataset.get_ann_info(i)['bboxes'])
                                   for i in range(len(dataset.data_infos)))
    assert np.allclose(pr.per_class_ap[has_gt], 1.0) and pr.stats['mAP'] == pytest.approx(1)
    assert all(np.allclose(pr.curve(k), 1.0) for k in np.flatnonzero(has_gt))


def test_validation_losses_are_drawn_apart_from_training_losses(tmp_path):
    """A ('val', 1) workflow phase logs `loss` in val lines: the report keeps it as
    `val_loss`, drawn dashed in the training loss's panel, never merged into that series."""
    import json
    from detforge.visualization.curves import load_json_log
    from detforge.visualization.report import _curve_panels, curves_figure
    lines = [dict(mode='train', epoch=e, iter=i, lr=0.01, loss=2.0 - 0.1 * (2 * e + i),
                  loss_cls=1.0, loss_bbox=0.5) for e in (1, 2) for i in (1, 2)]
    lines.insert(2, dict(mode='val', epoch=1, iter=3, loss=9.0, loss_cls=5.0))
    lines.append(dict(mode='val', epoch=2, iter=3, loss=8.0, loss_cls=4.0))
    lines.append(dict(mode='val', epoch=2, iter=3, bbox_mAP=0.25))
    path = tmp_path / 'run.log.json'
    path.write_text('\n'.join(json.dumps(r) for r in lines))
    log = load_json_log(path, val_prefix='val_')
    assert [v for _, v in log['loss']] == pytest.approx([1.7, 1.6, 1.5, 1.4])
    assert log['val_loss'] == [(2, 9.0), (4, 8.0)] and 'val_loss_bbox' not in log
    assert [v for _, v in load_json_log(path)['loss']][2] == 9.0  # the default: unchanged
    panels = _curve_panels([log])
    assert panels == [['loss', 'val_loss'], ['loss_bbox'], ['loss_cls', 'val_loss_cls'],
                      ['lr'], ['bbox_mAP']]
    png = curves_figure({'run': log}, panels)
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape[1] > 800
