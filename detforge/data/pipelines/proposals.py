"""LoadProposals: the precomputed proposals of an image (Fast R-CNN) as a box field."""
from __future__ import annotations

import numpy as np

from detforge.registry import PIPELINES

from ..errors import DatasetError

__all__ = ['LoadProposals']


@PIPELINES.register_module()
class LoadProposals:
    """Take ``results['proposals']`` (set by the dataset from its ``proposal_file``: per
    image an ``(n, 4)`` or ``(n, 5)`` array, xyxy px of the original image, scores last and
    sorted high to low), keep the boxes of the first ``num_max_proposals`` and register them
    in ``bbox_fields`` so that ``Resize``, ``RandomFlip`` and ``Pad`` move them with the image.

    An image without proposals gets the single box ``[0, 0, 0, 0]`` (MMDetection 2.x), so
    every image has at least one RoI.

    Args:
        num_max_proposals: keep at most this many (the file's order: best first); ``None``
            keeps all.
    """

    def __init__(self, num_max_proposals: int | None = None):
        if num_max_proposals is not None and int(num_max_proposals) < 1:
            from detforge.registry import BuildError
            raise BuildError(f'LoadProposals num_max_proposals must be >= 1 or None, got '
                             f'{num_max_proposals!r}', key_path=['num_max_proposals'])
        self.num_max_proposals = num_max_proposals

    def __call__(self, results: dict) -> dict:
        if results.get('proposals') is None:
            raise DatasetError(f'LoadProposals: no proposals for image '
                               f'{results.get("img_info", {}).get("filename")}; give the '
                               'dataset a proposal_file (a pickle of per-image (n, 5) arrays, '
                               'e.g. from `detforge test RPN_CONFIG CKPT --out FILE.pkl`)')
        proposals = np.asarray(results['proposals'], dtype=np.float32)
        if proposals.ndim != 2 or proposals.shape[1] not in (4, 5):
            raise DatasetError(f'LoadProposals: proposals of image '
                               f'{results.get("img_info", {}).get("filename")} must be (n, 4) '
                               f'or (n, 5), got shape {proposals.shape} (from '
                               f'{results.get("proposal_file")})')
        proposals = proposals[:, :4]
        if self.num_max_proposals is not None:
            proposals = proposals[:self.num_max_proposals]
        if len(proposals) == 0:
            proposals = np.zeros((1, 4), dtype=np.float32)
        results['proposals'] = proposals
        results.setdefault('bbox_fields', []).append('proposals')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_max_proposals={self.num_max_proposals})'
