"""Drawing detections: colours where the boxes are, nothing elsewhere, labels, clipping."""
import cv2
import numpy as np
import pytest

from detforge.registry import DetforgeError
from detforge.visualization.draw import imshow_det_bboxes, read_image
from detforge.visualization.palette import get_palette, text_color_for


def _blank(h=200, w=300):
    return np.zeros((h, w, 3), np.uint8)


def test_box_colour_is_on_the_edges_and_nowhere_else():
    img = imshow_det_bboxes(_blank(), np.array([[50, 80, 150, 160, 0.9]]), np.array([1]),
                            class_names=['a', 'b'], thickness=1)
    color = np.array(get_palette(2)[1], np.uint8)
    on_color = np.all(img == color, axis=-1)
    # all four edges carry the class colour
    assert on_color[80:161, 50].all() and on_color[80:161, 150].all()
    assert on_color[160, 50:151].all()
    assert on_color[80, 50:151].all()
    # inside the box and far from it: untouched
    assert not img[90:155, 55:145].any()
    assert not img[170:, :].any() and not img[:, 160:].any()


def test_label_background_and_text_sit_above_the_box():
    img = imshow_det_bboxes(_blank(), np.array([[50, 80, 150, 160, 0.87]]), np.array([0]),
                            class_names=['RBC'], thickness=1)
    color = np.array(get_palette(1)[0], np.uint8)
    above = img[55:80, 50:120]
    filled = np.all(above == color, axis=-1).mean()
    text = np.all(above == np.array(text_color_for(color), np.uint8), axis=-1).mean()
    assert filled > 0.4          # a filled label background in the class colour
    assert text > 0.02           # with readable text on it


def test_distinct_classes_get_distinct_colours():
    colors = get_palette(20)
    assert len(set(colors)) == 20
    img = imshow_det_bboxes(_blank(), np.array([[10, 40, 60, 90], [150, 40, 250, 120]]),
                            np.array([0, 2]), thickness=1)
    assert tuple(img[90, 30]) == get_palette(3)[0]
    assert tuple(img[120, 200]) == get_palette(3)[2]


def test_score_threshold_hides_low_scores():
    boxes = np.array([[10, 40, 60, 90, 0.2], [150, 40, 250, 120, 0.9]])
    img = imshow_det_bboxes(_blank(), boxes, np.array([0, 0]), score_thr=0.5, thickness=1)
    assert not img[40:100, 0:100].any()
    assert img[120, 200].any()


def test_boxes_outside_the_image_are_clipped_to_its_border():
    img = imshow_det_bboxes(_blank(100, 100), np.array([[-20, 10, 150, 60]]), np.array([0]),
                            thickness=1)
    color = np.array(get_palette(1)[0], np.uint8)
    assert np.all(img[10:61, 0] == color) and np.all(img[10:61, 99] == color)


def test_input_is_not_modified_and_output_is_bgr_uint8(tmp_path):
    src = _blank()
    out_file = tmp_path / 'sub' / 'drawn.png'
    img = imshow_det_bboxes(src, np.array([[10, 10, 50, 50, 1.0]]), np.array([0]),
                            out_file=str(out_file))
    assert not src.any()
    assert img.dtype == np.uint8 and img.shape == (200, 300, 3)
    written = cv2.imread(str(out_file))
    np.testing.assert_array_equal(written, img)


def test_an_image_that_does_not_decode_is_a_clear_error(tmp_path):
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'this is not a jpeg')
    with pytest.raises(DetforgeError, match='could not decode'):
        read_image(str(bad))
    with pytest.raises(DetforgeError, match='image not found'):
        imshow_det_bboxes(str(tmp_path / 'missing.jpg'), np.zeros((0, 5)), np.zeros(0))
