"""The analysis commands run on a tiny BCCD model and write the files they promise."""
import importlib.util
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from detforge.cli import main as cli


def _load_helper():
    # the tiny-model builder lives in test_inference_api.py; load it by path so that this
    # works whatever pytest's import mode
    path = Path(__file__).with_name('test_inference_api.py')
    spec = importlib.util.spec_from_file_location('_tiny_detector_setup', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_setup


@pytest.fixture(scope='module')
def setup(tmp_path_factory, repo_root):
    folder = tmp_path_factory.mktemp('cli')
    cfg, ckpt, images = _load_helper()(folder, repo_root)
    return dict(folder=folder, cfg=str(cfg), ckpt=str(ckpt), images=images)


@pytest.fixture(scope='module')
def dataset(setup):
    from detforge.commands._analysis_common import build_test_dataset, load_config
    return build_test_dataset(load_config(setup['cfg']))


def _png_ok(path: Path):
    img = cv2.imread(str(path))
    assert img is not None, f'{path} does not open'
    assert img.shape[0] > 50 and img.shape[1] > 50
    assert img.std() > 1, f'{path} is one flat colour'
    return img


def graded_results(dataset):
    """Image 0: every GT box exactly; image 1: shifted boxes; others: boxes far from any GT."""
    results = []
    for i in range(len(dataset.data_infos)):
        ann = dataset.get_ann_info(i)
        boxes = ann['bboxes'].astype(np.float32)
        if i == 1:
            boxes = boxes + np.float32(6)
        elif i >= 2:
            boxes = np.tile(np.array([[600, 440, 630, 470]], np.float32), (len(boxes), 1))
        dets = np.hstack([boxes, np.full((len(boxes), 1), 0.9, np.float32)])
        results.append([dets[ann['labels'] == c] for c in range(len(dataset.CLASSES))])
    return results


@pytest.fixture(scope='module')
def results_pkl(setup, dataset):
    path = setup['folder'] / 'results.pkl'
    with open(path, 'wb') as f:
        pickle.dump(graded_results(dataset), f)
    return str(path)


def test_infer_on_an_image_writes_a_drawing_and_json(setup, tmp_path):
    out = tmp_path / 'out'
    image = setup['images'][0]
    assert cli(['infer', setup['cfg'], setup['ckpt'], str(image), '--out', str(out),
                '--score-thr', '0']) == 0
    drawn = _png_ok(out / image.name)
    assert np.abs(drawn.astype(int) - cv2.imread(str(image)).astype(int)).max() > 100
    report = json.loads((out / 'detections.json').read_text())
    dets = report['detections'][image.name]
    assert report['classes'] == ['RBC', 'WBC', 'Platelets'] and len(dets) > 0
    assert {'bbox', 'score', 'label', 'class'} <= set(dets[0])


def test_infer_on_a_folder_in_batches(setup, tmp_path):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    for p in setup['images'][:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / 'out'
    assert cli(['infer', setup['cfg'], setup['ckpt'], str(folder), '--out', str(out),
                '--score-thr', '0', '--batch-size', '2']) == 0
    for p in setup['images'][:2]:
        _png_ok(out / p.name)
    assert len(json.loads((out / 'detections.json').read_text())['detections']) == 2


def test_infer_on_a_video_writes_a_video(setup, tmp_path):
    video = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 5, (160, 120))
    frame = cv2.resize(cv2.imread(str(setup['images'][0])), (160, 120))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    out = tmp_path / 'out'
    assert cli(['infer', setup['cfg'], setup['ckpt'], str(video), '--out', str(out),
                '--score-thr', '0']) == 0
    capture = cv2.VideoCapture(str(out / 'clip.mp4'))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 3
    assert len(json.loads((out / 'detections.json').read_text())['detections']) == 3


def test_infer_bad_inputs_are_clear_errors(setup, tmp_path, capsys):
    assert cli(['infer', setup['cfg'], setup['ckpt'], str(tmp_path / 'nope.mp4')]) == 2
    assert 'video not found' in capsys.readouterr().err
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not an image')
    assert cli(['infer', setup['cfg'], setup['ckpt'], str(broken), '--out',
                str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'broken.jpg' in err and 'decode' in err


def test_confusion_matrix_counts_and_pngs(setup, results_pkl, dataset, tmp_path):
    out = tmp_path / 'cm'
    assert cli(['confusion-matrix', setup['cfg'], results_pkl, str(out), '--score-thr', '0.5']) == 0
    _png_ok(out / 'confusion_matrix.png')
    for name in ('RBC', 'WBC', 'Platelets'):
        _png_ok(out / f'pr_curve_{name}.png')
    matrix = np.array(json.loads((out / 'confusion_matrix.json').read_text())['matrix'])
    # images 0 and 1 are found with their true classes; the boxes of images 2, 3 overlap no GT
    labels_01 = np.concatenate([dataset.get_ann_info(i)['labels'] for i in (0, 1)])
    labels_23 = np.concatenate([dataset.get_ann_info(i)['labels'] for i in (2, 3)])
    assert np.trace(matrix[:3, :3]) >= len(labels_01)
    assert matrix[3, :3].sum() == len(labels_23)          # background row: false positives
    assert matrix[:3, 3].sum() >= len(labels_23)          # background column: misses


def test_analyze_results_ranks_images_by_ap(setup, results_pkl, dataset, tmp_path):
    out = tmp_path / 'ar'
    assert cli(['analyze-results', setup['cfg'], results_pkl, str(out), '--topk', '2']) == 0
    good = sorted((out / 'good').iterdir())
    bad = sorted((out / 'bad').iterdir())
    assert len(good) == 2 and len(bad) == 2
    first = Path(dataset.data_infos[0]['filename']).name
    assert good[0].name == f'00_1.000_{first}'
    assert all('_0.000_' in p.name for p in bad)
    _png_ok(good[0])


def test_results_from_another_dataset_are_rejected(setup, dataset, tmp_path, capsys):
    extra = graded_results(dataset) + [graded_results(dataset)[0]]
    path = tmp_path / 'other.pkl'
    path.write_bytes(pickle.dumps(extra))
    assert cli(['confusion-matrix', setup['cfg'], str(path), str(tmp_path / 'o')]) == 2
    assert 'hold 5 images but the test data set has 4' in capsys.readouterr().err
    two_classes = [r[:2] for r in graded_results(dataset)]
    path.write_bytes(pickle.dumps(two_classes))
    assert cli(['analyze-results', setup['cfg'], str(path), str(tmp_path / 'o')]) == 2
    assert 'has 2 classes but the data set has 3 classes' in capsys.readouterr().err


def test_results_pickle_that_runs_code_is_refused(setup, tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ('this must not run',))
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps([Evil()]))
    assert cli(['confusion-matrix', setup['cfg'], str(path), str(tmp_path / 'o')]) == 2
    captured = capsys.readouterr()
    assert 'refusing to load builtins.print' in captured.err
    assert 'this must not run' not in captured.out


def test_benchmark_prints_images_per_second(setup, capsys):
    assert cli(['benchmark', setup['cfg'], setup['ckpt'], '--num-images', '2',
                '--warmup', '1', '--no-memory']) == 0
    out = capsys.readouterr().out
    assert '| backend | ms/img p50 | ms/img p90 | img/s batch 1 |' in out
    row = next(line for line in out.splitlines() if line.startswith('| pytorch |'))
    assert float(row.split('|')[4]) > 0  # images per second at batch 1
    assert '2 timed images (1 warm-up excluded)' in out


def test_collect_env_lists_versions(capsys):
    import torch
    assert cli(['collect-env']) == 0
    out = capsys.readouterr().out
    assert f'PyTorch: {torch.__version__}' in out
    for key in ('Python:', 'CUDA available:', 'NumPy:', 'OpenCV:', 'pycocotools:',
                'faster-coco-eval:', 'detforge:', 'TorchVision:', 'CPU:'):
        assert key in out


def test_plot_curves_writes_a_png(tmp_path):
    import detforge.visualization.curves  # noqa: F401  (must import: a failure is a bug)
    log = tmp_path / '20260101_000000.log.json'
    lines = [dict(env_info='x')]
    for epoch in (1, 2):
        for it in (10, 20):
            lines.append(dict(mode='train', epoch=epoch, iter=it, lr=0.01, time=0.1,
                              loss_cls=1.0 / (epoch * it), loss_bbox=0.5 / epoch, loss=1.5))
        lines.append(dict(mode='val', epoch=epoch, iter=20, lr=0.01, bbox_mAP=0.1 * epoch))
    log.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    out = tmp_path / 'curves.png'
    assert cli(['plot-curves', str(log), '--keys', 'loss_cls', 'loss_bbox', 'bbox_mAP',
                '--out', str(out)]) == 0
    _png_ok(out)


def test_plot_curves_missing_log_is_a_clear_error(tmp_path, capsys):
    assert cli(['plot-curves', str(tmp_path / 'none.log.json'), '--out',
                str(tmp_path / 'c.png')]) == 2
    assert 'log file not found' in capsys.readouterr().err
