"""Fast R-CNN (Girshick, 2015): a two-stage detector whose proposals come precomputed."""
from __future__ import annotations

from detforge.registry import DETECTORS, BuildError, DetforgeError

from .two_stage import TwoStageDetector

__all__ = ['FastRCNN']

_NEEDS_PROPOSALS = ('FastRCNN has no RPN: it needs precomputed proposals, read by the dataset '
                    "from proposal_file and passed on by dict(type='LoadProposals') and "
                    "Collect(keys=[..., 'proposals'])")


@DETECTORS.register_module()
class FastRCNN(TwoStageDetector):
    """A :class:`TwoStageDetector` without ``rpn_head`` (MMDetection 2.x
    ``fast_rcnn_r50_fpn.py``): ``forward_train`` and ``simple_test`` take ``proposals``,
    per image an ``(n, 4)`` (or ``(n, 5)`` with scores, ignored) float tensor of boxes in
    network-input pixels, as ``LoadProposals`` + ``Resize`` leave them. ``train_cfg`` and
    ``test_cfg`` have the ``rcnn`` stage only.

    Proposal files come from an RPN: ``detforge test RPN_CONFIG CKPT --out proposals.pkl``
    writes per image an ``(n, 5)`` array in original-image pixels, the layout the
    dataset's ``proposal_file`` reads (MMDetection's ``tools/test.py --out`` likewise).
    """

    def __init__(self, backbone, roi_head, train_cfg=None, test_cfg=None, neck=None,
                 pretrained=None, init_cfg=None, data_preprocessor=None):
        if roi_head is None:
            raise BuildError('FastRCNN needs roi_head=dict(type=...)', key_path=['roi_head'])
        super().__init__(backbone, neck=neck, rpn_head=None, roi_head=roi_head,
                         train_cfg=train_cfg, test_cfg=test_cfg, pretrained=pretrained,
                         init_cfg=init_cfg, data_preprocessor=data_preprocessor)

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore=None,
                      proposals=None, **kwargs):
        if proposals is None:
            raise DetforgeError(_NEEDS_PROPOSALS)
        return super().forward_train(img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore,
                                     proposals=[p.to(self.device) for p in proposals],
                                     **kwargs)

    def simple_test(self, img, img_metas, proposals=None, rescale=True, **kwargs):
        """Per image, a list over classes of (k, 5) arrays, from its ``proposals``."""
        if proposals is None:
            raise DetforgeError(_NEEDS_PROPOSALS)
        if len(proposals) != len(img_metas):
            raise DetforgeError(f'FastRCNN: {len(proposals)} proposal sets for '
                                f'{len(img_metas)} images')
        proposals = [p.to(self.device) for p in proposals]
        return super().simple_test(img, img_metas, proposals=proposals, rescale=rescale,
                                   **kwargs)
