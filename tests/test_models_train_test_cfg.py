"""train_cfg / test_cfg become typed records when the model is built: unknown keys, a bad
assigner or an unsupported NMS type fail there, named by the key path the user wrote."""
import copy
import warnings

import pytest

from detforge.config import Config
from detforge.models.builder import build_detector
from detforge.models.train_test_cfg import DenseTestConfig, NMSConfig, RoITestConfig
from detforge.registry import HEADS, BuildError, build_context


@pytest.fixture(scope='module')
def cfgs(repo_root):
    def load(name):
        return Config.fromfile(str(repo_root / 'configs' / name)).model
    return dict(retina=load('retinanet/retinanet_r18_fpn_1x_bccd.py'),
                faster=load('faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py'),
                cascade=load('cascade_rcnn/cascade_rcnn_r18_fpn_1x_bccd.py'),
                rpn=load('rpn/rpn_r18_fpn_1x_bccd.py'))


def _build_error(model_cfg, **top_level) -> str:
    with pytest.raises(BuildError) as info:
        with build_context('model', filename='my_config.py'):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', DeprecationWarning)
                build_detector(model_cfg, **top_level)
    return str(info.value)


def _edit(model_cfg, path, value):
    """A deep copy of the model config with ``path`` (a list of keys) set to ``value``."""
    cfg = copy.deepcopy(model_cfg.to_dict() if hasattr(model_cfg, 'to_dict') else dict(model_cfg))
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


# ---------------------------------------------------------------------- RetinaHead
def test_retina_typo_in_assigner_is_named_where_the_user_wrote_it(cfgs):
    assigner = dict(cfgs['retina'].train_cfg.assigner, pos_iou_th=0.5)
    msg = _build_error(_edit(cfgs['retina'], ['train_cfg', 'assigner'], assigner))
    assert 'pos_iou_th' in msg and 'model.train_cfg.assigner' in msg and 'my_config.py' in msg
    assert 'bbox_head' not in msg


def test_retina_unknown_train_and_test_keys_fail_at_build_with_a_suggestion(cfgs):
    msg = _build_error(_edit(cfgs['retina'], ['train_cfg', 'allowed_boarder'], 0))
    assert 'model.train_cfg.allowed_boarder' in msg and "'allowed_border'" in msg
    msg = _build_error(_edit(cfgs['retina'], ['test_cfg', 'scor_thr'], 0.1))
    assert 'model.test_cfg.scor_thr' in msg and "'score_thr'" in msg


def test_top_level_train_cfg_error_names_the_top_level_key(cfgs):
    model = _edit(cfgs['retina'], ['train_cfg'], None)
    train_cfg = dict(cfgs['retina'].train_cfg, pos_weigth=1)
    msg = _build_error(model, train_cfg=train_cfg)
    assert '(in train_cfg.pos_weigth' in msg, msg


def test_train_cfg_written_in_the_head_is_named_there(cfgs):
    head = dict(cfgs['retina'].bbox_head, train_cfg=dict(cfgs['retina'].train_cfg, debugg=False))
    with pytest.raises(BuildError) as info:
        with build_context('model', 'bbox_head'):
            HEADS.build(head)
    assert 'model.bbox_head.train_cfg.debugg' in str(info.value)


def test_unsupported_nms_type_fails_at_build(cfgs):
    msg = _build_error(_edit(cfgs['retina'], ['test_cfg', 'nms'], dict(type='matrix_nms', iou_threshold=0.5)))
    assert 'matrix_nms' in msg and 'model.test_cfg.nms.type' in msg
    msg = _build_error(_edit(cfgs['retina'], ['test_cfg', 'nms'], dict(type='nms', iou_threshold=0.5, sigma=0.5)))
    assert 'model.test_cfg.nms.sigma' in msg  # a soft_nms key given to hard nms


def test_records_read_by_key_and_refuse_unknown_settings(cfgs):
    det = build_detector(cfgs['retina'])
    cfg = det.bbox_head.test_cfg
    assert isinstance(cfg, DenseTestConfig) and cfg is det.test_cfg
    assert cfg['score_thr'] == cfg.score_thr == cfgs['retina'].test_cfg.score_thr
    assert cfg.get('nms').iou_threshold == 0.5 and 'nms' in cfg and 'nms_thr' not in cfg
    cfg['nms'] = dict(type='soft_nms', iou_threshold=0.3)  # a dict set later is parsed too
    assert isinstance(cfg.nms, NMSConfig) and cfg.nms.type == 'soft_nms'
    with pytest.raises(AttributeError, match='score_thr'):
        cfg.score_thresh = 0.3


# ---------------------------------------------------------------------- RPNHead / RoI heads
def test_rpn_unknown_key_fails_with_its_stage_path(cfgs):
    msg = _build_error(_edit(cfgs['faster'], ['train_cfg', 'rpn', 'allowed_boarder'], 0))
    assert 'model.train_cfg.rpn.allowed_boarder' in msg
    msg = _build_error(_edit(cfgs['faster'], ['train_cfg', 'rpn_proposal', 'nms_pree'], 10))
    assert 'model.train_cfg.rpn_proposal.nms_pree' in msg and "'nms_pre'" in msg
    msg = _build_error(_edit(cfgs['rpn'], ['test_cfg', 'rpn', 'max_per_image'], 10))
    assert 'model.test_cfg.rpn.max_per_image' in msg
    msg = _build_error(_edit(cfgs['faster'], ['train_cfg', 'rpn_propsal'], {}))
    assert 'model.train_cfg.rpn_propsal' in msg and "'rpn_proposal'" in msg


def test_standard_roi_head_unknown_keys_fail_with_their_path(cfgs):
    sampler = dict(cfgs['faster'].train_cfg.rcnn.sampler, nmu=3)
    msg = _build_error(_edit(cfgs['faster'], ['train_cfg', 'rcnn', 'sampler'], sampler))
    assert 'nmu' in msg and 'model.train_cfg.rcnn.sampler' in msg and 'roi_head' not in msg
    msg = _build_error(_edit(cfgs['faster'], ['test_cfg', 'rcnn', 'max_per_im'], 10))
    assert 'model.test_cfg.rcnn.max_per_im' in msg


def test_cascade_stage_typo_names_the_stage(cfgs):
    stages = copy.deepcopy([dict(s) for s in cfgs['cascade'].train_cfg.rcnn])
    stages[1]['assigner'] = dict(stages[1]['assigner'], neg_iou_tr=0.3)
    msg = _build_error(_edit(cfgs['cascade'], ['train_cfg', 'rcnn'], stages))
    assert 'neg_iou_tr' in msg and 'model.train_cfg.rcnn.1.assigner' in msg
    stages = copy.deepcopy([dict(s) for s in cfgs['cascade'].train_cfg.rcnn])
    stages[2]['pos_wieght'] = 1
    msg = _build_error(_edit(cfgs['cascade'], ['train_cfg', 'rcnn'], stages))
    assert 'model.train_cfg.rcnn.2.pos_wieght' in msg


def test_two_stage_records_reach_the_heads(cfgs):
    det = build_detector(cfgs['faster'])
    assert det.rpn_head.train_cfg is det.train_cfg.rpn
    assert det.rpn_head.test_cfg.max_per_img == cfgs['faster'].test_cfg.rpn.max_per_img
    assert isinstance(det.roi_head.test_cfg, RoITestConfig)
    assert det.roi_head.bbox_sampler is det.train_cfg.rcnn.sampler
    assert det.train_cfg.rpn_proposal.nms_pre == cfgs['faster'].train_cfg.rpn_proposal.nms_pre


def test_a_head_can_be_built_from_objects(cfgs):
    """Parts given as built objects (records, assigners) instead of dicts."""
    from detforge.models.task_modules import MaxIoUAssigner
    from detforge.models.train_test_cfg import DenseTrainConfig
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)
    head = HEADS.build(dict(cfgs['retina'].bbox_head, num_classes=3,
                            train_cfg=DenseTrainConfig(assigner=assigner),
                            test_cfg=DenseTestConfig(nms=NMSConfig(iou_threshold=0.5))))
    assert head.assigner is assigner and head.test_cfg.max_per_img == 100


def test_top_level_1x_train_cfg_moved_by_compat_is_named_where_written(repo_root, tmp_path):
    """The `detforge train` path: compat_cfg moves a top-level train_cfg into the model; a
    typo in it is still reported at the top level, where the user wrote it."""
    from detforge.compat import compat_cfg
    config = tmp_path / 'old_style.py'
    config.write_text(
        f"_base_ = '{repo_root / 'configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py'}'\n"
        "model = dict(train_cfg=None)\n"
        "train_cfg = dict(rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7,\n"
        "    neg_iou_thr=0.3, min_pos_iou=0.3), sampler=dict(type='RandomSampler', num=256,\n"
        "    pos_fraction=0.5, add_gt_as_proposals=False), allowed_boarder=-1))\n")
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        cfg = compat_cfg(Config.fromfile(str(config)))
    msg = _build_error(cfg.model)
    assert '(in train_cfg.rpn.allowed_boarder of my_config.py)' in msg, msg


def test_a_detector_can_be_built_from_parts_given_as_objects(cfgs):
    """Detectron2's way beside the config dicts: parts built in Python, passed in."""
    from detforge.models.detectors import RetinaNet
    from detforge.models.losses import FocalLoss
    from detforge.registry import BACKBONES, NECKS, PRIOR_GENERATORS
    model = cfgs['retina']
    backbone = BACKBONES.build(dict(model.backbone, init_cfg=None))
    neck = NECKS.build(model.neck)
    anchors = PRIOR_GENERATORS.build(model.bbox_head.anchor_generator)
    focal = FocalLoss(gamma=2.0, alpha=0.25)
    head = dict(model.bbox_head, loss_cls=focal, anchor_generator=anchors)
    det = RetinaNet(backbone=backbone, neck=neck, bbox_head=head, train_cfg=model.train_cfg,
                    test_cfg=model.test_cfg)
    assert det.backbone is backbone and det.neck is neck
    assert det.bbox_head.loss_cls is focal and det.bbox_head.anchor_generator is anchors
    assert det.bbox_head.use_sigmoid_cls and not det.bbox_head.sampling
    reference = build_detector(model)
    assert set(det.state_dict()) == set(reference.state_dict())


# ------------------------------------------------- FCOS / ATSS / GFL / RTMDet (ConvTowerHead)
@pytest.mark.parametrize('config', ['fcos/fcos_r18_fpn_gn-head_center-normbbox-centeronreg-giou_ms_9e_bccd320.py',
                                    'atss/atss_r18_fpn_gn-head_ms_9e_bccd320.py',
                                    'gfl/gfl_r18_fpn_gn-head_ms_9e_bccd320.py',
                                    'rtmdet/rtmdet_tiny_bccd320.py'])
def test_quality_heads_parse_typed_records_and_refuse_unknown_keys_at_build(repo_root, config):
    """The heads with a quality score take the typed records too (parsed by the detector):
    unknown keys fail at build with the path as written, a typo in the assigner too."""
    from detforge.models.train_test_cfg import DenseTrainConfig, QualityTestConfig
    model_cfg = Config.fromfile(str(repo_root / 'configs' / config)).model
    model_cfg.backbone.init_cfg = None
    if model_cfg.get('train_cfg') is None:  # FCOS's configs leave it out (FCOS assigns by itself)
        model_cfg.train_cfg = dict(allowed_border=-1, pos_weight=-1, debug=False)
    msg = _build_error(_edit(model_cfg, ['train_cfg', 'allowed_boarder'], 0))
    assert 'model.train_cfg.allowed_boarder' in msg and "'allowed_border'" in msg
    msg = _build_error(_edit(model_cfg, ['test_cfg', 'scor_thr'], 0.1))
    assert 'model.test_cfg.scor_thr' in msg and "'score_thr'" in msg
    if 'assigner' in model_cfg.train_cfg:
        assigner = dict(model_cfg.train_cfg.assigner, topkk=3)
        msg = _build_error(_edit(model_cfg, ['train_cfg', 'assigner'], assigner))
        assert 'topkk' in msg and 'model.train_cfg.assigner' in msg
    msg = _build_error(_edit(model_cfg, ['test_cfg', 'nms'], dict(type='soft_nms', iou_threshold=0.5)))
    assert "'soft_nms' is not supported" in msg and 'model.test_cfg.nms.type' in msg
    head = build_detector(model_cfg).bbox_head
    assert isinstance(head.train_cfg, DenseTrainConfig) and isinstance(head.test_cfg, QualityTestConfig)
    assert head.test_cfg['score_thr'] == model_cfg.test_cfg.score_thr  # read by key (MMDetection 2.x)
    assert head.test_settings is head.test_cfg and head.test_cfg.iou_threshold == model_cfg.test_cfg.nms.iou_threshold
    with pytest.raises(BuildError, match='soft_nms'):  # set after building: checked too
        head.test_cfg.nms = dict(type='soft_nms', iou_threshold=0.5)
    head.test_cfg['nms'] = dict(type='nms', iou_threshold=0.3)
    assert head.test_cfg.iou_threshold == 0.3
