"""Box helpers of detforge.structures used by the heads."""
import numpy as np
import torch

from detforge.structures import (bbox2result, bbox2roi, bbox_flip, bbox_mapping, bbox_mapping_back,
                                 bbox_rescale, roi2bbox)


def test_bbox2roi_and_back():
    a, b = torch.tensor([[0., 0., 5., 5.]]), torch.tensor([[1., 1., 2., 2.], [3., 3., 4., 4.]])
    rois = bbox2roi([a, b])
    assert rois.tolist() == [[0, 0, 0, 5, 5], [1, 1, 1, 2, 2], [1, 3, 3, 4, 4]]
    back = roi2bbox(rois)
    torch.testing.assert_close(back[0], a)
    torch.testing.assert_close(back[1], b)


def test_bbox2result_splits_by_class():
    dets = torch.tensor([[0., 0., 1., 1., 0.9], [1., 1., 2., 2., 0.8], [2., 2., 3., 3., 0.7]])
    result = bbox2result(dets, torch.tensor([2, 0, 2]), num_classes=3)
    assert [r.shape for r in result] == [(1, 5), (0, 5), (2, 5)]
    assert result[2].dtype == np.float32
    np.testing.assert_allclose(result[2][:, 4], [0.9, 0.7])


def test_flip_directions():
    box = torch.tensor([[10., 20., 30., 50.]])
    assert bbox_flip(box, (100, 200)).tolist() == [[170., 20., 190., 50.]]
    assert bbox_flip(box, (100, 200), 'vertical').tolist() == [[10., 50., 30., 80.]]
    assert bbox_flip(box, (100, 200), 'diagonal').tolist() == [[170., 50., 190., 80.]]


def test_mapping_round_trip_with_scale_and_flip():
    box = torch.tensor([[10., 20., 30., 50.]])
    mapped = bbox_mapping(box, (200, 400), [2., 2., 2., 2.], flip=True)
    assert mapped.tolist() == [[340., 40., 380., 100.]]
    torch.testing.assert_close(bbox_mapping_back(mapped, (200, 400), [2., 2., 2., 2.], flip=True), box)


def test_rescale_about_the_centre():
    torch.testing.assert_close(bbox_rescale(torch.tensor([[0., 0., 10., 20.]]), 2.0),
                               torch.tensor([[-5., -10., 15., 30.]]))
    torch.testing.assert_close(bbox_rescale(torch.tensor([[3., 0., 0., 10., 20.]]), 0.5),
                               torch.tensor([[3., 2.5, 5., 7.5, 15.]]))
