"""Loading transforms: image bytes -> BGR uint8 array, annotations -> boxes and labels."""
from __future__ import annotations

import io
import logging
import os.path as osp

import cv2
import numpy as np

from detforge.registry import PIPELINES
from detforge.utils.file_client import check_file_client_args
from ..errors import AnnotationError, ImageLoadError

logger = logging.getLogger('detforge.data')

__all__ = ['LoadImageFromFile', 'LoadAnnotations', 'imdecode', 'decode_tolerant',
           'check_image_size', 'apply_exif_orientation',
           'exif_orientation']

_FLAGS = {
    'color': cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    'grayscale': cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION,
    'unchanged': cv2.IMREAD_UNCHANGED,  # never rotated (as OpenCV's IMREAD_UNCHANGED)
    'color_ignore_orientation': cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    'grayscale_ignore_orientation': cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION,
}


def exif_orientation(buf: bytes) -> int:
    """The EXIF orientation tag (1..8) of an encoded image, 1 when absent or unreadable."""
    if not buf.startswith(b'\xff\xd8') and not buf.startswith((b'II*\x00', b'MM\x00*')):
        return 1  # only JPEG and TIFF carry EXIF orientation in practice
    if buf.startswith(b'\xff\xd8') and buf.find(b'Exif', 0, 65536) < 0:
        return 1  # fast path: no APP1 Exif segment near the start
    from PIL import Image
    try:
        with Image.open(io.BytesIO(buf)) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unreadable
        return 1
    return value if value in range(1, 9) else 1


def apply_exif_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip a decoded ``(H, W[, C])`` image so that it displays upright, as the EXIF
    orientation tag asks (the same result as Pillow's ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        return cv2.flip(img, 1)
    if orientation == 3:
        return cv2.rotate(img, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(img, 0)
    if orientation == 5:  # transpose: mirror about the main diagonal
        return np.ascontiguousarray(np.swapaxes(img, 0, 1))
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:  # transverse: mirror about the anti-diagonal
        return np.ascontiguousarray(np.swapaxes(img, 0, 1)[::-1, ::-1])
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


_JPEG_SOI, _JPEG_EOI = b'\xff\xd8', b'\xff\xd9'
_repaired_logged: set[str] = set()  # files whose repair was logged (once per file and process)


def decode_tolerant(buf: bytes, flag: str = 'color') -> tuple[np.ndarray | None, str | None]:
    """Decode image bytes as tolerantly as common image viewers do.

    Returns ``(img, repair)``: ``img`` is the uint8 image (``None`` when no decoder reads the
    bytes) and ``repair`` is ``None`` for an intact file or a short note of what was
    repaired (e.g. ``'truncated JPEG: decoded as far as its data goes'``). This is the check
    that a ``check-data`` command can report as "truncated but decodable".

    OpenCV's in-memory decoder refuses a JPEG whose last bytes are missing, while
    ``cv2.imread``, Pillow with ``LOAD_TRUNCATED_IMAGES`` and image viewers show it (the
    missing rows grey). libjpeg itself handles a premature end by inserting an end-of-image
    marker; we do the same explicitly (append ``FFD9``) and decode again, so nothing global
    (no Pillow flag) changes. Other formats OpenCV cannot read are tried with Pillow (strict).
    """
    if not buf:
        return None, None
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), _FLAGS[flag])
    if img is not None:
        return img, None
    if buf.startswith(_JPEG_SOI) and not buf.rstrip(b'\x00').endswith(_JPEG_EOI):
        img = cv2.imdecode(np.frombuffer(buf + _JPEG_EOI, np.uint8), _FLAGS[flag])
        if img is not None:
            return img, 'truncated JPEG (no end-of-image marker): decoded as far as its data goes'
    return _decode_with_pillow(buf, flag), None


def _decode_with_pillow(buf: bytes, flag: str) -> np.ndarray | None:
    """Pillow's strict decode as the last resort (formats OpenCV was built without)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(buf)) as im:
            if flag.startswith('grayscale'):
                return np.asarray(im.convert('L'))
            if flag == 'unchanged' and im.mode in ('L', 'RGBA'):
                arr = np.asarray(im)
                return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA) if arr.ndim == 3 else arr
            return np.ascontiguousarray(np.asarray(im.convert('RGB'))[:, :, ::-1])
    except Exception:  # noqa: BLE001 - any failure means "no decoder reads it"
        return None


def imdecode(buf: bytes, flag: str = 'color', filename: str = '<bytes>',
             exif: bool = True) -> np.ndarray:
    """Decode image bytes to uint8 ``(H, W, 3)`` BGR (or ``(H, W)`` grayscale).

    A truncated JPEG is repaired as image viewers do (see :func:`decode_tolerant`) and the
    repair is logged once per file; only bytes that no decoder reads raise
    :class:`ImageLoadError`. EXIF orientation is applied here, explicitly (OpenCV's own
    handling is switched off so the result does not depend on its version); ``exif=False``
    or a ``*_ignore_orientation`` flag keeps the stored pixel order.
    """
    if flag not in _FLAGS:
        raise ValueError(f'color_type must be one of {sorted(_FLAGS)}, got {flag!r}')
    img, repair = decode_tolerant(buf, flag)
    if img is None:
        raise ImageLoadError(f'cannot decode image {filename} ({len(buf)} bytes): the file is '
                             f'empty, truncated or not an image format OpenCV or Pillow reads')
    if repair is not None and filename not in _repaired_logged:
        _repaired_logged.add(filename)
        logger.warning('%s: %s (repaired, as image viewers do)', filename, repair)
    if exif and flag in ('color', 'grayscale'):
        img = apply_exif_orientation(img, exif_orientation(buf))
    return img


def check_image_size(results: dict, img: np.ndarray, filename: str) -> None:
    """The decoded image must have the size its annotation records (Detectron2's
    ``check_image_size``): boxes are in those pixels, so a wrong size misplaces them."""
    info = results.get('img_info') or {}
    width, height = info.get('width'), info.get('height')
    if width is None or height is None:
        return
    h, w = img.shape[:2]
    if (int(width), int(height)) == (w, h):
        return
    hint = (' (width and height swapped: an EXIF rotation the annotation tool did not apply? '
            'LoadImageFromFile(ignore_exif=True) keeps the stored pixel order)'
            if (int(width), int(height)) == (h, w) else '')
    raise AnnotationError(f'{filename}: the annotations give its size as {width}x{height} '
                          f'(width x height) but the image is {w}x{h}{hint}; fix the '
                          f'width/height of this image in the annotation file')


@PIPELINES.register_module()
class LoadImageFromFile:
    """Read ``results['img_info']['filename']`` (under ``results['img_prefix']``).

    Adds ``filename``, ``ori_filename``, ``img`` (uint8 BGR ``(H, W, 3)``, float32 with
    ``to_float32=True``), ``img_shape``, ``ori_shape`` and ``img_fields``.

    Args:
        to_float32: convert the image to float32 (MMDetection 2.x habit; not needed here).
        color_type: 'color', 'grayscale', 'unchanged', 'color_ignore_orientation'.
        channel_order: 'bgr' (OpenCV's, the default) or 'rgb'.
        ignore_exif: keep the stored pixel order even if EXIF says the photo is rotated.
    """

    def __init__(self, to_float32: bool = False, color_type: str = 'color',
                 channel_order: str = 'bgr', ignore_exif: bool = False,
                 file_client_args: dict | None = None):
        if color_type not in _FLAGS:
            raise ValueError(f'color_type must be one of {sorted(_FLAGS)}, got {color_type!r}')
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        self.to_float32 = to_float32
        self.color_type = color_type
        self.channel_order = channel_order
        self.ignore_exif = ignore_exif
        check_file_client_args(file_client_args, 'LoadImageFromFile')
        self.file_client_args = file_client_args

    def __call__(self, results: dict) -> dict:
        prefix = results.get('img_prefix')
        name = results['img_info']['filename']
        filename = osp.join(prefix, name) if prefix else name
        try:
            with open(filename, 'rb') as f:
                buf = f.read()
        except FileNotFoundError:
            raise ImageLoadError(f'image file not found: {filename}') from None
        except IsADirectoryError:
            raise ImageLoadError(f'image path is a folder, not a file: {filename}') from None
        img = imdecode(buf, self.color_type, filename, exif=not self.ignore_exif)
        check_image_size(results, img, filename)
        if self.channel_order == 'rgb' and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if self.to_float32:
            img = img.astype(np.float32)
        results['filename'] = filename
        results['ori_filename'] = name
        results['img'] = img
        results['img_shape'] = img.shape
        results['ori_shape'] = img.shape
        results['img_fields'] = ['img']
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(to_float32={self.to_float32}, color_type={self.color_type!r}, '
                f'channel_order={self.channel_order!r}, ignore_exif={self.ignore_exif})')


@PIPELINES.register_module()
class LoadAnnotations:
    """Copy boxes and labels of ``results['ann_info']`` into the results dict.

    Adds ``gt_bboxes`` float32 ``(n, 4)``, ``gt_labels`` int64 ``(n,)``, ``gt_bboxes_ignore``
    (when the annotation has ignore boxes) and appends the box keys to ``bbox_fields``.
    Masks and segmentation maps are not supported (detection only).
    """

    def __init__(self, with_bbox: bool = True, with_label: bool = True, with_mask: bool = False,
                 with_seg: bool = False, poly2mask: bool = True, denorm_bbox: bool = False,
                 file_client_args: dict | None = None):
        if with_mask or with_seg:
            from detforge.registry import BuildError
            raise BuildError('LoadAnnotations: masks and segmentation maps are not supported by '
                             'detforge (detection only); set with_mask=False, with_seg=False')
        check_file_client_args(file_client_args, 'LoadAnnotations')
        self.with_bbox = with_bbox
        self.with_label = with_label
        self.denorm_bbox = denorm_bbox

    def __call__(self, results: dict) -> dict:
        ann = results['ann_info']
        results.setdefault('bbox_fields', [])
        if self.with_bbox:
            boxes = np.array(ann['bboxes'], dtype=np.float32).reshape(-1, 4)
            if self.denorm_bbox:
                h, w = results['img_shape'][:2]
                boxes *= np.array([w, h, w, h], dtype=np.float32)
            results['gt_bboxes'] = boxes
            results['bbox_fields'].append('gt_bboxes')
            ignore = ann.get('bboxes_ignore')
            if ignore is not None:
                results['gt_bboxes_ignore'] = np.array(ignore, dtype=np.float32).reshape(-1, 4)
                results['bbox_fields'].append('gt_bboxes_ignore')
        if self.with_label:
            results['gt_labels'] = np.array(ann['labels'], dtype=np.int64).reshape(-1)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(with_bbox={self.with_bbox}, with_label={self.with_label})'
