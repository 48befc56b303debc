"""compat_cfg: 1.x-era config keys are rewritten to their current form, one warning per key."""
import warnings

import pytest

from detforge.compat import ConfigDeprecationWarning, compat_cfg
from detforge.config import Config, ConfigError


@pytest.fixture(scope='module')
def old_cfg(shared_data):
    return Config.fromfile(shared_data.parent / 'compat' / 'retinanet_r101_fpn_1x.py')


def upgrade(cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        new = compat_cfg(cfg)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    return new, messages


def warned_about(messages, key):
    return [m for m in messages if f"'{key}'" in m]


def test_every_old_key_of_the_fixture_warns_exactly_once_naming_the_new_form(old_cfg):
    _, messages = upgrade(old_cfg)
    expected = {
        'data.imgs_per_gpu': 'data.samples_per_gpu',
        'total_epochs': "runner=dict(type='EpochBasedRunner', max_epochs=12)",
        'train_cfg': 'model.train_cfg',
        'test_cfg': 'model.test_cfg',
        'octave_base_scale': "anchor_generator=dict(type='AnchorGenerator', octave_base_scale=",
        'scales_per_octave': "anchor_generator=dict(type='AnchorGenerator', scales_per_octave=",
        'anchor_ratios': "anchor_generator=dict(type='AnchorGenerator', ratios=",
        'anchor_strides': "anchor_generator=dict(type='AnchorGenerator', strides=",
        'target_means': "bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=",
        'target_stds': "bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_stds=",
        'iou_thr': 'iou_threshold',
    }
    for old, new in expected.items():
        found = warned_about(messages, old)
        assert len(found) == 1, (old, messages)
        assert new in found[0] and 'retinanet_r101_fpn_1x.py' in found[0]
    background = [m for m in messages if 'background' in m]
    assert len(background) == 1 and 'model.bbox_head.num_classes=81' in background[0]
    assert 'num_classes=80' in background[0]
    assert len(messages) == len(expected) + 1


def test_a_key_found_in_several_places_is_warned_once_with_every_place():
    cfg = Config(dict(model=dict(train_cfg=dict(rpn_proposal=dict(nms=dict(type='nms', iou_thr=0.7))),
                                 test_cfg=dict(rcnn=dict(nms=dict(type='nms', iou_thr=0.5))))))
    _, messages = upgrade(cfg)
    (nms,) = warned_about(messages, 'iou_thr')
    assert 'model.train_cfg.rpn_proposal.nms.iou_thr' in nms and 'model.test_cfg.rcnn.nms.iou_thr' in nms


def test_mmdet_2x_random_flip_flip_ratio_is_current_not_old(old_cfg):
    """``RandomFlip(flip_ratio=...)`` is MMDetection 2.x's own spelling: kept, not warned about."""
    new, messages = upgrade(old_cfg)
    assert not warned_about(messages, 'flip_ratio')
    assert new.data.train.pipeline[3].to_dict() == dict(type='RandomFlip', flip_ratio=0.5)


def test_the_fixture_is_rewritten_to_current_keys(old_cfg):
    new, _ = upgrade(old_cfg)
    head = new.model.bbox_head
    assert head.num_classes == 80
    assert head.anchor_generator.to_dict() == dict(
        type='AnchorGenerator', ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128],
        octave_base_scale=4, scales_per_octave=3)
    assert head.bbox_coder.to_dict() == dict(type='DeltaXYWHBBoxCoder',
                                             target_means=[0.0] * 4, target_stds=[1.0] * 4)
    for old in ('octave_base_scale', 'anchor_ratios', 'anchor_strides', 'target_means'):
        assert old not in head
    assert new.model.train_cfg.assigner.pos_iou_thr == 0.5
    assert new.model.test_cfg.nms.to_dict() == dict(type='nms', iou_threshold=0.5)
    assert 'train_cfg' not in new and 'test_cfg' not in new and 'total_epochs' not in new
    assert new.runner.to_dict() == dict(type='EpochBasedRunner', max_epochs=12)
    assert new.data.samples_per_gpu == 2 and 'imgs_per_gpu' not in new.data
    assert new.data.test.pipeline[1].transforms[1].to_dict() == dict(type='RandomFlip')
    assert new.model.pretrained == 'torchvision://resnet101'  # the backbone resolves it
    assert new.model.bbox_head.loss_bbox.beta == 0.11


def test_compat_cfg_does_not_change_its_input_and_is_idempotent(old_cfg):
    before = old_cfg.to_dict()
    new, _ = upgrade(old_cfg)
    assert old_cfg.to_dict() == before and new.filename == old_cfg.filename
    again, messages = upgrade(new)
    assert again == new and messages == []


def test_upgraded_fixture_pretty_text_reloads_equal(old_cfg):
    new, _ = upgrade(old_cfg)
    assert Config.fromstring(new.pretty_text) == new


def test_warnings_are_deprecation_warnings(old_cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        compat_cfg(old_cfg)
    assert caught and all(w.category is ConfigDeprecationWarning for w in caught)
    assert issubclass(ConfigDeprecationWarning, DeprecationWarning)


def test_two_stage_1x_layout_moves_into_roi_head():
    cfg = Config(dict(model=dict(
        type='FasterRCNN',
        rpn_head=dict(type='RPNHead', in_channels=256, anchor_scales=[8],
                      anchor_ratios=[0.5, 1.0, 2.0], anchor_strides=[4, 8, 16, 32, 64],
                      target_means=[0.0] * 4, target_stds=[1.0] * 4),
        bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', out_size=7, sample_num=2),
                                out_channels=256, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(type='SharedFCBBoxHead', num_fcs=2, num_classes=81,
                       target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2])),
        test_cfg=dict(rpn=dict(nms_pre=1000, max_num=1000, nms_thr=0.7))))
    new, messages = upgrade(cfg)
    model = new.model
    assert model.rpn_head.anchor_generator.to_dict() == dict(
        type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])
    assert 'num_classes' not in model.rpn_head
    roi = model.roi_head
    assert roi.type == 'StandardRoIHead' and 'bbox_head' not in model
    assert roi.bbox_roi_extractor.roi_layer.to_dict() == dict(type='RoIAlign', output_size=7,
                                                              sampling_ratio=2)
    assert roi.bbox_head.type == 'Shared2FCBBoxHead' and roi.bbox_head.num_classes == 80
    assert roi.bbox_head.bbox_coder.target_stds == [0.1, 0.1, 0.2, 0.2]
    assert model.test_cfg.rpn.to_dict() == dict(nms_pre=1000, max_per_img=1000,
                                                 nms=dict(type='nms', iou_threshold=0.7))
    for old in ('model.bbox_roi_extractor', 'out_size', 'sample_num', 'nms_thr', 'max_num',
                'SharedFCBBoxHead'):
        assert len(warned_about(messages, old)) == 1, old


def test_cascade_1x_layout_moves_stages_into_cascade_roi_head():
    heads = [dict(type='Shared2FCBBoxHead', num_classes=3) for _ in range(3)]
    cfg = Config(dict(model=dict(
        type='CascadeRCNN', num_stages=3, rpn_head=dict(type='RPNHead'),
        bbox_roi_extractor=dict(type='SingleRoIExtractor'), bbox_head=heads,
        train_cfg=dict(rcnn=[{}, {}, {}], stage_loss_weights=[1, 0.5, 0.25]))))
    new, _ = upgrade(cfg)
    roi = new.model.roi_head
    assert roi.type == 'CascadeRoIHead' and roi.num_stages == 3
    assert roi.stage_loss_weights == [1, 0.5, 0.25] and len(roi.bbox_head) == 3
    assert 'stage_loss_weights' not in new.model.train_cfg and 'num_stages' not in new.model


def test_conflicting_old_and_new_keys_are_errors():
    with pytest.raises(ConfigError, match='total_epochs=12 disagrees with runner.max_epochs=24'):
        compat_cfg(Config(dict(total_epochs=12, runner=dict(type='EpochBasedRunner',
                                                            max_epochs=24))))
    with pytest.raises(ConfigError, match='train_cfg is given both at the top level'):
        compat_cfg(Config(dict(train_cfg=dict(a=1), model=dict(train_cfg=dict(a=2)))))


def test_a_current_config_is_left_alone_without_warnings():
    cfg = Config(dict(model=dict(type='RetinaNet', bbox_head=dict(type='RetinaHead', num_classes=3)),
                      data=dict(samples_per_gpu=2), runner=dict(type='EpochBasedRunner',
                                                                max_epochs=1)))
    new, messages = upgrade(cfg)
    assert new == cfg and messages == []
