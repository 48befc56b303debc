"""Box structures and operations (xyxy, pixels, 0-based)."""
from .bbox import (bbox2distance, bbox2result, bbox2roi, bbox_area, bbox_clip, bbox_flip,
                   bbox_mapping, bbox_mapping_back, bbox_overlaps, bbox_rescale, distance2bbox,
                   roi2bbox)

__all__ = [
    'bbox_overlaps', 'bbox_area', 'bbox2roi', 'roi2bbox', 'bbox2result', 'bbox_flip',
    'bbox_mapping', 'bbox_mapping_back', 'bbox_rescale', 'bbox_clip', 'distance2bbox',
    'bbox2distance',
]
