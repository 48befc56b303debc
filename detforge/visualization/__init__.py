"""Drawing detections, colour palettes and training-curve plots.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .curves import load_json_log, plot_curves
from .draw import imshow_det_bboxes, draw_det_result, read_image, imwrite, display_path
from .palette import get_palette, text_color_for

__all__ = ['load_json_log', 'plot_curves', 'imshow_det_bboxes', 'draw_det_result', 'read_image',
           'imwrite', 'display_path', 'get_palette', 'text_color_for']
