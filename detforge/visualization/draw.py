"""Draw detections on an image: a box per detection, a filled label ``name|0.87`` above it."""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from detforge.registry import DetforgeError
from detforge.visualization.palette import get_palette, text_color_for

__all__ = ['imshow_det_bboxes', 'draw_det_result', 'read_image', 'imwrite', 'display_path']


def read_image(path: str) -> np.ndarray:
    """BGR uint8 ``(H, W, 3)`` image from a file; a missing or undecodable file is a
    :class:`DetforgeError` naming the file."""
    if not os.path.isfile(path):
        raise DetforgeError(f'image not found: {display_path(path)}')
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise DetforgeError(f'{display_path(path)}: could not decode the image (not an image '
                            f'file, or corrupt)')
    return img


def display_path(path) -> str:
    """``path`` printable on any terminal: bytes that are not UTF-8 (a file name the file
    system allows but that is no text) shown as ``\\xe9``."""
    return os.fsencode(path).decode('utf-8', 'backslashreplace')


def imwrite(img: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``img`` (BGR uint8) to ``path``, encoded by the file's extension.

    The image is encoded in memory (``cv2.imencode``) and the bytes written by Python, so any
    file name the file system allows works: ``cv2.imwrite`` converts the name itself and
    crashes the process (segmentation fault, OpenCV 5.1) on names that are not UTF-8.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    try:
        ok, data = cv2.imencode(ext or '.png', img)
    except cv2.error:
        ok = False
    if not ok:
        raise DetforgeError(f'could not encode an image for {display_path(path)} (an image '
                            f'extension such as .jpg or .png is needed)')
    with open(path, 'wb') as f:
        f.write(data.tobytes())


def _as_color(color, default):
    if color is None:
        return default
    if isinstance(color, str):
        named = dict(red=(0, 0, 255), green=(0, 255, 0), blue=(255, 0, 0), white=(255, 255, 255),
                     black=(0, 0, 0), yellow=(0, 255, 255), cyan=(255, 255, 0),
                     magenta=(255, 0, 255))
        if color not in named:
            raise DetforgeError(f'unknown colour {color!r}; use one of {sorted(named)} or a BGR '
                                f'tuple')
        return named[color]
    return tuple(int(c) for c in color)


def imshow_det_bboxes(img, bboxes, labels, class_names: Sequence[str] | None = None,
                      score_thr: float = 0, bbox_color=None, text_color=None, thickness: int = 2,
                      font_scale: float = 0.5, show: bool = False, win_name: str = '',
                      wait_time: int = 0, out_file: str | None = None) -> np.ndarray:
    """Draw boxes with class names and scores.

    Args:
        img: BGR uint8 ``(H, W, 3)`` array or an image path (not modified in place).
        bboxes: ``(n, 4)`` xyxy pixels, or ``(n, 5)`` with scores.
        labels: ``(n,)`` 0-based class indices.
        class_names: names for the labels (default: the index).
        score_thr: boxes scoring below it are not drawn (only with ``(n, 5)`` boxes).
        bbox_color, text_color: one colour (BGR tuple or name) for all; default: a fixed
            colour per class and black or white text, whichever reads on it.
        out_file: also write the drawing there (folders created).

    Returns:
        The drawn image, BGR uint8 ``(H, W, 3)``.
    """
    img = read_image(img) if isinstance(img, (str, os.PathLike)) else np.asarray(img)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    img = np.ascontiguousarray(img.astype(np.uint8, copy=True))
    bboxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, np.asarray(bboxes).shape[-1]
                                                          if np.asarray(bboxes).size else 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if bboxes.shape[1] not in (4, 5) or len(bboxes) != len(labels):
        raise DetforgeError(f'imshow_det_bboxes: expected (n, 4) or (n, 5) boxes and (n,) labels, '
                            f'got {bboxes.shape} and {labels.shape}')
    if score_thr > 0 and bboxes.shape[1] == 5:
        keep = bboxes[:, 4] >= score_thr
        bboxes, labels = bboxes[keep], labels[keep]
    num_colors = max(len(class_names) if class_names is not None else 0,
                     int(labels.max()) + 1 if len(labels) else 0, 1)
    palette = get_palette(num_colors)
    h, w = img.shape[:2]
    # boxes clipped to the image so that their edges are visible; integer pixel corners
    corners = np.round(bboxes[:, :4]).astype(np.int64)
    corners[:, 0::2] = np.clip(corners[:, 0::2], 0, w - 1)
    corners[:, 1::2] = np.clip(corners[:, 1::2], 0, h - 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    text_thickness = max(1, int(round(font_scale * 2)))
    for (x1, y1, x2, y2), label, row in zip(corners.tolist(), labels.tolist(), bboxes):
        color = _as_color(bbox_color, palette[label])
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness, lineType=cv2.LINE_8)
        name = class_names[label] if class_names is not None and label < len(class_names) \
            else str(label)
        text = f'{name}|{row[4]:.2f}' if len(row) == 5 else name
        (tw, th), baseline = cv2.getTextSize(text, font, font_scale, text_thickness)
        # label above the box, or inside it when there is no room above
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1
        left = min(x1, max(0, w - tw - 2))
        cv2.rectangle(img, (left, top), (left + tw + 2, top + th + baseline + 2), color, -1)
        cv2.putText(img, text, (left + 1, top + th + 1), font, font_scale,
                    _as_color(text_color, text_color_for(color)), text_thickness, cv2.LINE_AA)
    if out_file is not None:
        folder = os.path.dirname(os.path.abspath(out_file))
        os.makedirs(folder, exist_ok=True)
        imwrite(img, out_file)
    if show:
        cv2.imshow(win_name, img)
        cv2.waitKey(wait_time)
    return img


def draw_det_result(img, result, class_names=None, score_thr: float = 0.3, **kwargs) -> np.ndarray:
    """Draw one image's detector output (a list over classes of ``(n, 5)`` arrays)."""
    per_class = [np.asarray(r, dtype=np.float32).reshape(-1, 5) for r in result]
    bboxes = np.concatenate(per_class) if per_class else np.zeros((0, 5), np.float32)
    labels = np.repeat(np.arange(len(per_class)), [len(r) for r in per_class])
    return imshow_det_bboxes(img, bboxes, labels, class_names=class_names, score_thr=score_thr,
                             **kwargs)
