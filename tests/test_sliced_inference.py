"""Sliced inference: the tiles cover the image, boxes come back in image pixels, an object cut
by a tile border is one box after merging; `detforge infer/test --slice` on a tiny model."""
import importlib.util
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from detforge.apis.sliced_inference import (SlicedDetector, merge_detections, sliced_inference,
                                            slice_windows)
from detforge.cli import main as cli
from detforge.registry import DetforgeError


# ----------------------------------------------------------------------------- tiling
def _coverage(windows, height, width):
    count = np.zeros((height, width), np.int64)
    for x1, y1, x2, y2 in windows.tolist():
        count[y1:y2, x1:x2] += 1
    return count


@pytest.mark.parametrize('height, width', [(1001, 777), (512, 512), (513, 1500), (700, 1000)])
def test_tiles_cover_the_image_with_the_stated_overlap(height, width):
    slice_size, overlap = 512, 0.2
    windows = slice_windows(height, width, slice_size, overlap)
    assert (_coverage(windows, height, width) >= 1).all()
    assert (windows[:, :2] >= 0).all() and (windows[:, 2] <= width).all() \
        and (windows[:, 3] <= height).all()
    # every tile is full size when the image is at least one tile large
    assert ((windows[:, 2] - windows[:, 0]) == min(slice_size, width)).all()
    assert ((windows[:, 3] - windows[:, 1]) == min(slice_size, height)).all()
    # neighbours share round(0.2 * 512) = 102 pixels, except the last one, flush with the
    # border, which shares at least that
    for axis, length in ((0, width), (1, height)):
        starts = np.unique(windows[:, axis])
        if len(starts) == 1:
            continue
        shared = slice_size - np.diff(starts)
        assert (shared[:-1] == 102).all() and shared[-1] >= 102
        assert starts[-1] + slice_size == length
    # no more tiles than that needs: ceil((side - 512) / 410) + 1 starts per long side
    for axis, length in ((0, width), (1, height)):
        expected = 1 if length <= slice_size else int(np.ceil((length - slice_size) / 410)) + 1
        assert len(np.unique(windows[:, axis])) == expected


def test_tile_counts_on_a_known_size():
    # 1000 wide: starts 0, 410 and the border-aligned 488; 700 high: 0 and 188
    windows = slice_windows(700, 1000, 512, 0.2)
    assert sorted(set(windows[:, 0].tolist())) == [0, 410, 488]
    assert sorted(set(windows[:, 1].tolist())) == [0, 188]
    assert len(windows) == 6


def test_an_image_smaller_than_a_tile_is_one_tile():
    assert slice_windows(300, 200, 512, 0.2).tolist() == [[0, 0, 200, 300]]
    # one side smaller: one row of full-width tiles that are as high as the image
    windows = slice_windows(100, 1200, 512, 0.25)
    assert (windows[:, 1] == 0).all() and (windows[:, 3] == 100).all()
    assert (_coverage(windows, 100, 1200) >= 1).all()


@pytest.mark.parametrize('size, overlap', [(0, 0.2), (512, 1.0), (512, -0.1)])
def test_bad_slice_settings_are_clear_errors(size, overlap):
    with pytest.raises(DetforgeError, match='slice'):
        slice_windows(100, 100, size, overlap)


# ----------------------------------------------------------------------------- fake detector
class BlobDetector:
    """Finds white blobs on black: per tile, one box per connected component of what the
    tile shows, scored by the visible area (a more complete view is a surer detection), all
    class 0 of 2. Records the tile sizes and batch sizes it was given."""

    def __init__(self):
        self.batches = []

    def __call__(self, tiles):
        self.batches.append([t.shape[:2] for t in tiles])
        results = []
        for tile in tiles:
            mask = (tile[:, :, 0] > 127).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            dets = [[x, y, x + w, y + h, min(1.0, 0.2 + w * h / 20000)]
                    for x, y, w, h, _ in stats[1:n].tolist()]
            results.append([np.array(dets, np.float32).reshape(-1, 5),
                            np.zeros((0, 5), np.float32)])
        return results


def _canvas(height, width, boxes):
    img = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = 255
    return img


def test_boxes_come_back_in_image_pixels():
    # an object wholly inside the bottom-right tile only
    img = _canvas(700, 1000, [(940, 600, 990, 640)])
    result = sliced_inference(None, img, 512, 0.2, detect=BlobDetector())
    assert len(result) == 2 and len(result[1]) == 0
    assert result[0][:, :4].tolist() == [[940, 600, 990, 640]]


def test_an_object_cut_by_tile_borders_is_one_box_after_merging():
    # x 380..560 crosses the tile borders at 410, 488 and 512: no tile sees it whole
    obj = (380, 250, 560, 300)
    img = _canvas(700, 1000, [obj])
    merged = sliced_inference(None, img, 512, 0.2, merge='merge', detect=BlobDetector())
    assert merged[0][:, :4].tolist() == [list(obj)]
    # NMS keeps the parts that overlap little by IoU (the reason for --slice-merge merge)
    nms = sliced_inference(None, img, 512, 0.2, merge='nms', detect=BlobDetector())
    assert len(nms[0]) > 1


def test_an_object_in_the_overlap_is_one_box_with_nms():
    # x 420..480 lies in tiles 0, 1 and 2 whole: the copies are identical, NMS keeps one
    img = _canvas(700, 1000, [(420, 250, 480, 300), (50, 50, 70, 60)])
    result = sliced_inference(None, img, 512, 0.2, merge='nms', detect=BlobDetector())
    assert sorted(result[0][:, :4].tolist()) == [[50, 50, 70, 60], [420, 250, 480, 300]]
    assert np.all(np.diff(result[0][:, 4]) <= 0)  # by score


def test_tiles_go_in_batches_and_the_full_image_pass_is_added():
    detector = BlobDetector()
    img = _canvas(700, 1000, [(100, 100, 130, 130)])
    sliced_inference(None, img, 512, 0.2, batch_size=4, full_image=True, detect=detector)
    assert [len(b) for b in detector.batches] == [4, 2, 1]
    assert all(shape == (512, 512) for b in detector.batches[:2] for shape in b)
    assert detector.batches[-1] == [(700, 1000)]


def test_merge_is_class_wise():
    dets = np.array([[0, 0, 10, 10, 0.9], [0, 0, 10, 10, 0.8], [0, 0, 10, 10, 0.7]], np.float32)
    labels = np.array([0, 1, 0])
    for mode in ('nms', 'merge'):
        out = merge_detections(dets, labels, 3, mode)
        assert [len(r) for r in out] == [1, 1, 0]
        assert out[0][0, 4] == pytest.approx(0.9) and out[1][0, 4] == pytest.approx(0.8)
    with pytest.raises(DetforgeError, match='merge mode'):
        merge_detections(dets, labels, 3, 'wbf')


def test_a_mask_detector_is_refused_clearly():
    def masks(tiles):
        return [([np.zeros((0, 5), np.float32)], [[]]) for _ in tiles]
    with pytest.raises(DetforgeError, match='box detectors'):
        sliced_inference(None, np.zeros((600, 600, 3), np.uint8), 512, 0.2, detect=masks)


def test_sliced_detector_checks_its_settings_at_once():
    with pytest.raises(DetforgeError, match='batch size'):
        SlicedDetector(None, 512, 0.2, batch_size=0)


# ----------------------------------------------------------------------------- the commands
def _tiny_setup(folder, repo_root):
    path = Path(__file__).with_name('test_inference_api.py')
    spec = importlib.util.spec_from_file_location('_tiny_detector_setup', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_setup(folder, repo_root, num_images=2)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, repo_root):
    cfg, ckpt, images = _tiny_setup(tmp_path_factory.mktemp('sliced'), repo_root)
    return str(cfg), str(ckpt), images


def test_infer_with_slices_writes_the_same_json(tiny, tmp_path):
    cfg, ckpt, images = tiny
    out = tmp_path / 'out'
    assert cli(['infer', cfg, ckpt, str(images[0]), '--out', str(out), '--score-thr', '0',
                '--slice', '320', '--overlap', '0.25', '--slice-merge', 'merge']) == 0
    report = json.loads((out / 'detections.json').read_text())
    dets = report['detections'][images[0].name]
    assert report['classes'] == ['RBC', 'WBC', 'Platelets'] and len(dets) > 0
    assert {'bbox', 'score', 'label', 'class'} <= set(dets[0])
    boxes = np.array([d['bbox'] for d in dets])
    # boxes of the right-hand tiles are shifted back: beyond the first 320x320 tile
    assert boxes[:, 2].max() > 320 and boxes[:, 3].max() > 320
    assert boxes[:, 2].max() <= 640 + 1e-3 and boxes[:, 3].max() <= 480 + 1e-3
    assert len(boxes) > 20  # more than max_per_img of one pass: the tiles' boxes, merged
    assert (out / images[0].name).is_file()


def test_test_with_slices_evaluates(tiny, tmp_path, capsys):
    cfg, ckpt, _ = tiny
    out = tmp_path / 'results.pkl'
    assert cli(['test', cfg, ckpt, '--eval', 'bbox', '--out', str(out), '--device', 'cpu',
                '--slice', '320', '--slice-full-image']) == 0
    assert 'bbox_mAP' in capsys.readouterr().out
    results = pickle.loads(out.read_bytes())
    assert len(results) == 2 and len(results[0]) == 3 and results[0][0].shape[1] == 5
    assert sum(len(r) for r in results[0]) > 20  # more than max_per_img of one pass


def test_bad_slice_arguments_are_one_line(tiny, tmp_path, capsys):
    cfg, ckpt, images = tiny
    assert cli(['infer', cfg, ckpt, str(images[0]), '--out', str(tmp_path / 'o'),
                '--slice', '320', '--overlap', '1.5']) == 2
    assert '--overlap 1.5' in capsys.readouterr().err


def test_the_benchmark_upscales_images_and_boxes_alike(repo_root, tmp_path):
    spec = importlib.util.spec_from_file_location(
        'bench_sliced', repo_root / 'benchmarks' / 'bench_sliced.py')
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    source = repo_root / 'data' / 'bccd' / 'annotations' / 'test.json'
    path = bench.upscale_coco(str(source), str(repo_root / 'data' / 'bccd'), str(tmp_path), 3, 1)
    big = json.loads(Path(path).read_text())
    small = json.loads(source.read_text())
    image = big['images'][0]
    assert len(big['images']) == 1 and (image['width'], image['height']) == (1920, 1440)
    assert cv2.imread(str(tmp_path / image['file_name'])).shape == (1440, 1920, 3)
    first = [a for a in small['annotations'] if a['image_id'] == image['id']]
    assert [a['bbox'] for a in big['annotations']] == [[v * 3 for v in a['bbox']] for a in first]


def test_infer_with_slices_on_a_video(tiny, tmp_path):
    cfg, ckpt, images = tiny
    video = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 5, (320, 240))
    for _ in range(2):
        writer.write(cv2.resize(cv2.imread(str(images[0])), (320, 240)))
    writer.release()
    out = tmp_path / 'out'
    assert cli(['infer', cfg, ckpt, str(video), '--out', str(out), '--score-thr', '0',
                '--slice', '160']) == 0
    frames = json.loads((out / 'detections.json').read_text())['detections']
    assert len(frames) == 2 and all(len(dets) > 0 for dets in frames.values())
    boxes = np.array([d['bbox'] for d in frames['frame_000000']])
    assert boxes[:, 2].max() > 160 and boxes[:, 2].max() <= 320 + 1e-3
    assert len(boxes) > 20  # more than max_per_img of one pass: the tiles' boxes, merged
