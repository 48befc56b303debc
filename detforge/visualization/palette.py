"""Fixed colour palette for drawing classes: distinct, readable, the same in every run."""
from __future__ import annotations

import numpy as np

__all__ = ['get_palette', 'text_color_for']

# BGR. Tableau-like hues first (well separated, readable on photos and microscopy), then
# more from a golden-ratio walk around the hue circle for data sets with many classes.
_BASE_BGR = [
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (34, 189, 188), (207, 190, 23), (127, 127, 127),
    (232, 199, 174), (120, 187, 255), (138, 223, 152), (150, 152, 255), (213, 176, 197),
]


def _hsv_to_bgr(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(b * 255), int(g * 255), int(r * 255)


def get_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """``num_classes`` BGR colours; the first 15 are fixed, later ones walk the hue circle."""
    colors = list(_BASE_BGR[:num_classes])
    golden = 0.618033988749895
    k = 0
    while len(colors) < num_classes:
        k += 1
        colors.append(_hsv_to_bgr((0.1 + k * golden) % 1.0, 0.75, 0.95))
    return colors


def text_color_for(bgr) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``bgr`` (by perceived luminance)."""
    b, g, r = [float(c) for c in np.asarray(bgr).reshape(3)]
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)
