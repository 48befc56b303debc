"""``train_cfg`` / ``test_cfg`` as small typed records, checked once when the model is built.

MMDetection 2.x configs give a detector's training and test settings as nested dicts
(``model.train_cfg``, ``model.test_cfg``; per stage ``rpn``, ``rpn_proposal``, ``rcnn``).
The detector parses them here, at the boundary, into frozen dataclasses; the heads read
typed attributes (``cfg.score_thr``), never strings. An unknown key, a wrong NMS type or a
bad assigner fails at build time, naming the key path as the user wrote it
(``model.train_cfg.assigner.pos_iou_th`` rather than a path through the head that the
detector handed the dict to).

Records still read by key (``cfg['score_thr']``, ``cfg.get('nms')``, ``'nms' in cfg``), so
MMDetection 2.x user code that reads a head's ``test_cfg`` keeps working.

Records:
    :class:`NMSConfig` ``nms=dict(type='nms' | 'soft_nms', iou_threshold=, ...)``
    :class:`DenseTrainConfig` a dense head's training settings (RetinaNet, RPN, FCOS, ...)
    :class:`DenseTestConfig` a dense head's post-processing (also RPN proposals)
    :class:`QualityTestConfig` that of a head with a quality score (FCOS, ATSS, GFL, RTMDet)
    :class:`RoITrainConfig` / :class:`RoITestConfig` a second stage's (``rcnn``) settings
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from detforge.registry import BBOX_ASSIGNERS, BBOX_SAMPLERS, BuildError

__all__ = ['NMSConfig', 'DenseTrainConfig', 'DenseTestConfig', 'RoITrainConfig',
           'RoITestConfig', 'parse_stage_cfgs', 'check_keys', 'NMS_TYPES']

NMS_TYPES = ('nms', 'soft_nms')
Path = Sequence[str]


def check_keys(cfg: dict, allowed: Sequence[str], path: Path, what: str) -> None:
    """Refuse a key of ``cfg`` that is not in ``allowed``, naming its path and the closest
    allowed key."""
    for key in cfg:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), list(allowed), n=1)
            raise BuildError(f'unknown key {key!r} in the {what}'
                             + (f' (did you mean {hint[0]!r}?)' if hint else '')
                             + f'; known keys: {", ".join(allowed)}',
                             key_path=[*path, str(key)])


@contextlib.contextmanager
def written_at(cfg: Any, path: Path):
    """Errors about ``cfg`` (parsed as ``path``, relative to the model config) name the place
    the user wrote it: a config moved from the top level of the file (MMDetection 1.x's
    ``train_cfg``) keeps its original path in ``ConfigDict._path``, and the error is then
    rooted there (no ``model.`` prefix)."""
    try:
        yield
    except BuildError as e:
        origin = getattr(cfg, '_path', '') or ''
        if origin and not origin.startswith('model.') and not e.rooted \
                and e.key_path[:len(path)] == list(path):
            e.key_path = origin.split('.') + e.key_path[len(path):]
            e.rooted = True
        raise


def build_part(registry, cfg, path: Path):
    """A part (assigner, sampler, loss, coder) built from its config dict, or taken as it is
    when it is already an object (None stays None); errors name ``path``."""
    if cfg is None or not isinstance(cfg, dict):
        return cfg
    try:
        return registry.build(cfg)
    except BuildError as e:
        raise e.prefix(*path)


def _as_dict(cfg: Any, path: Path, what: str) -> dict:
    if not isinstance(cfg, dict):
        raise BuildError(f'the {what} must be a dict, got {type(cfg).__name__}: {cfg!r}',
                         key_path=list(path))
    return dict(cfg)


class _Record:
    """Access by key, for MMDetection 2.x code (``cfg['score_thr']``, ``cfg.get``,
    ``cfg['score_thr'] = 0.3``). Records stay mutable, as the dicts they replace were (a
    script may lower ``model.test_cfg.rcnn.score_thr`` after building), but only their own
    fields can be set, and an ``nms`` set as a dict is parsed again."""

    def __setattr__(self, key: str, value) -> None:
        if key not in self:
            raise AttributeError(f'{type(self).__name__} has no setting {key!r}; its settings: '
                                 f'{", ".join(self.keys())}')
        if key == 'nms' and value is not None and not isinstance(self, NMSConfig):
            value = NMSConfig.parse(value)
        object.__setattr__(self, key, value)

    def __setitem__(self, key: str, value) -> None:
        if key not in self:
            raise KeyError(key)
        setattr(self, key, value)

    def __getitem__(self, key: str):
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self else default

    def __contains__(self, key) -> bool:
        return key in {f.name for f in dataclasses.fields(self)}

    def keys(self):
        return [f.name for f in dataclasses.fields(self)]


@dataclass
class NMSConfig(_Record):
    """``nms=dict(...)`` of a test config.

    Attributes:
        type: ``'nms'`` (hard suppression) or ``'soft_nms'`` (scores decayed, as MMCV's
            ``soft_nms``).
        iou_threshold: boxes overlapping a kept box more than this are suppressed (nms), or
            decayed (soft_nms ``linear`` / ``naive``).
        sigma: soft_nms ``gaussian`` decay ``exp(-iou^2 / sigma)``.
        min_score: soft_nms drops boxes whose decayed score falls below this.
        method: soft_nms decay: ``'linear'`` (``1 - iou`` above the threshold), ``'gaussian'``
            or ``'naive'`` (0 above the threshold, i.e. hard NMS).
        class_agnostic: suppress across classes too.
        split_thr: MMCV's switch between one batched call and a loop over classes; both
            give the same result, so it is accepted and has no effect.
    """

    type: str = 'nms'
    iou_threshold: float = 0.5
    sigma: float = 0.5
    min_score: float = 1e-3
    method: str = 'linear'
    class_agnostic: bool = False
    split_thr: int = 10000

    _KEYS: ClassVar[dict] = {
        'nms': ('type', 'iou_threshold', 'class_agnostic', 'split_thr', 'iou_thr'),
        'soft_nms': ('type', 'iou_threshold', 'sigma', 'min_score', 'method', 'class_agnostic',
                     'split_thr', 'iou_thr'),
    }

    @classmethod
    def parse(cls, cfg, path: Path = ('nms',)) -> 'NMSConfig':
        """A record from ``dict(type=..., iou_threshold=...)`` (or an ``NMSConfig``).

        The 1.x key ``iou_thr`` is accepted with a DeprecationWarning. ``iou_threshold`` is
        required for ``type='nms'`` (as MMCV's ``nms``); soft_nms defaults to MMCV's 0.3."""
        if isinstance(cfg, NMSConfig):
            return cfg
        cfg = _as_dict(cfg, path, 'nms config')
        kind = cfg.get('type', 'nms')
        if kind not in NMS_TYPES:
            raise BuildError(f'nms type {kind!r} is not supported; use one of '
                             f'{", ".join(map(repr, NMS_TYPES))}', key_path=[*path, 'type'])
        check_keys(cfg, cls._KEYS[kind], path, f'{kind} config')
        if 'iou_thr' in cfg:
            warnings.warn(f"{'.'.join(path)}.iou_thr is deprecated; write "
                          f"nms=dict(type={kind!r}, iou_threshold=...)", DeprecationWarning,
                          stacklevel=4)
            cfg.setdefault('iou_threshold', cfg.pop('iou_thr'))
            cfg.pop('iou_thr', None)
        if kind == 'nms' and 'iou_threshold' not in cfg:
            raise BuildError("nms=dict(type='nms') needs iou_threshold", key_path=list(path))
        cfg.setdefault('iou_threshold', 0.3)
        method = cfg.get('method', 'linear')
        if method not in ('linear', 'gaussian', 'naive'):
            raise BuildError(f"soft_nms method must be 'linear', 'gaussian' or 'naive', got "
                             f'{method!r}', key_path=[*path, 'method'])
        if kind == 'soft_nms' and float(cfg.get('sigma', 0.5)) <= 0:
            raise BuildError('soft_nms sigma must be positive', key_path=[*path, 'sigma'])
        return cls(type=kind, iou_threshold=float(cfg['iou_threshold']),
                   sigma=float(cfg.get('sigma', 0.5)), min_score=float(cfg.get('min_score', 1e-3)),
                   method=method, class_agnostic=bool(cfg.get('class_agnostic', False)),
                   split_thr=int(cfg.get('split_thr', 10000)))


@dataclass
class DenseTrainConfig(_Record):
    """A dense head's ``train_cfg`` (RetinaNet's ``model.train_cfg``, ``train_cfg.rpn``).

    Attributes:
        assigner: the built assigner (e.g. :class:`MaxIoUAssigner`), or None.
        sampler: the built sampler, or None (the head then uses a PseudoSampler).
        allowed_border: anchors reaching further than this (px) outside the image are not
            trained on; ``-1`` keeps all.
        pos_weight: classification weight of positives; ``<= 0`` means 1.
        debug: MMDetection's flag; accepted, no effect.
    """

    assigner: Any = None
    sampler: Any = None
    allowed_border: float = -1
    pos_weight: float = -1
    debug: bool = False

    KEYS: ClassVar[tuple] = ('assigner', 'sampler', 'allowed_border', 'pos_weight', 'debug')

    @classmethod
    def parse(cls, cfg, path: Path = ('train_cfg',)):
        """A record from the config dict (or the record itself; None stays None). The
        assigner and sampler are built here, so their errors carry ``path`` too."""
        if cfg is None or isinstance(cfg, cls):
            return cfg
        cfg = _as_dict(cfg, path, 'train config')
        check_keys(cfg, cls.KEYS, path, 'train config')
        return cls(**cls._parts(cfg, path))

    @staticmethod
    def _parts(cfg: dict, path: Path) -> dict:
        out = dict(cfg)
        out['assigner'] = build_part(BBOX_ASSIGNERS, cfg.get('assigner'), [*path, 'assigner'])
        out['sampler'] = build_part(BBOX_SAMPLERS, cfg.get('sampler'), [*path, 'sampler'])
        return out


@dataclass
class DenseTestConfig(_Record):
    """A dense head's ``test_cfg`` (RetinaNet's ``model.test_cfg``, ``test_cfg.rpn``,
    ``train_cfg.rpn_proposal``).

    Attributes:
        nms_pre: per level, keep the best ``nms_pre`` candidates before NMS (``<= 0``: all).
        score_thr: drop candidates scoring at most this.
        nms: :class:`NMSConfig`, or None (then no NMS: only for ``with_nms=False`` use).
        max_per_img: detections kept per image after NMS (``<= 0``: all).
        min_bbox_size: drop boxes whose width or height is not above this (px, network
            input) before NMS. RPNHead applies it from 0 up (0 drops degenerate boxes, as
            MMDetection 2.x's RPN); RetinaHead and other dense heads only when above 0, so
            that a default ``min_bbox_size=0`` keeps torchvision's detections unchanged.
        clip_rescaled: after NMS and rescaling to the original image, clip the boxes to it
            and drop those left without area (Detectron2's ``detector_postprocess``).
    """

    nms_pre: int = -1
    score_thr: float = 0.0
    nms: NMSConfig | None = None
    max_per_img: int = 100
    min_bbox_size: float = 0.0
    clip_rescaled: bool = False

    KEYS: ClassVar[tuple] = ('nms_pre', 'score_thr', 'nms', 'max_per_img', 'min_bbox_size',
                             'clip_rescaled', 'nms_thr', 'max_num')

    @classmethod
    def parse(cls, cfg, path: Path = ('test_cfg',), max_per_img: int = 100):
        """A record from the config dict (or the record itself; None stays None).

        The 1.x RPN keys ``nms_thr`` and ``max_num`` are accepted with a DeprecationWarning
        (``nms=dict(type='nms', iou_threshold=nms_thr)``, ``max_per_img=max_num``)."""
        if cfg is None or isinstance(cfg, cls):
            return cfg
        cfg = _as_dict(cfg, path, 'test config')
        check_keys(cfg, cls.KEYS, path, 'test config')
        for old, new in (('nms_thr', "nms=dict(type='nms', iou_threshold=...)"),
                         ('max_num', 'max_per_img')):
            if old in cfg:
                warnings.warn(f"{'.'.join(path)}.{old} is deprecated (MMDetection 1.x); write "
                              f'{new}', DeprecationWarning, stacklevel=4)
        if 'nms_thr' in cfg:
            cfg.setdefault('nms', dict(type='nms', iou_threshold=cfg.pop('nms_thr')))
            cfg.pop('nms_thr', None)
        if 'max_num' in cfg:
            cfg.setdefault('max_per_img', cfg.pop('max_num'))
            cfg.pop('max_num', None)
        return cls(**cls._fields(cfg, path, max_per_img))

    @classmethod
    def _fields(cls, cfg: dict, path: Path, max_per_img: int) -> dict:
        nms = cfg.get('nms')
        return dict(nms_pre=int(cfg.get('nms_pre', -1)), score_thr=float(cfg.get('score_thr', 0.)),
                    nms=None if nms is None else NMSConfig.parse(nms, [*path, 'nms']),
                    max_per_img=int(cfg.get('max_per_img', max_per_img)),
                    min_bbox_size=float(cfg.get('min_bbox_size', 0.)),
                    clip_rescaled=bool(cfg.get('clip_rescaled', False)))


SCORE_FACTOR_FUSIONS = ('multiply', 'geometric_mean')


@dataclass
class QualityTestConfig(DenseTestConfig):
    """The ``test_cfg`` of a dense head with a quality score (FCOS's centerness; ATSS, GFL,
    RTMDet): :class:`DenseTestConfig`'s settings, ``nms`` required and of type ``'nms'``,
    and:

    Attributes:
        score_factor_fusion: how the quality score joins the class score: ``'multiply'``
            (MMDetection: threshold and rank the class score, then multiply) or
            ``'geometric_mean'`` (torchvision's FCOS: ``sqrt(class * quality)`` is
            thresholded and ranked).
        deploy_nms_pre: MMDetection's deployment setting; accepted, no effect.

    ``min_bbox_size`` is accepted and not applied (as MMDetection's one-stage heads).
    """

    score_factor_fusion: str = 'multiply'
    deploy_nms_pre: int = -1

    KEYS: ClassVar[tuple] = ('nms_pre', 'score_thr', 'nms', 'max_per_img', 'min_bbox_size',
                             'deploy_nms_pre', 'score_factor_fusion')

    @classmethod
    def _fields(cls, cfg: dict, path: Path, max_per_img: int) -> dict:
        nms = cfg.get('nms')
        if nms is None:
            raise BuildError("the head needs nms=dict(type='nms', iou_threshold=...)",
                             key_path=[*path, 'nms'])
        if isinstance(nms, dict) and nms.get('type', 'nms') != 'nms':
            raise BuildError(f"nms type {nms.get('type')!r} is not supported by this head; use "
                             "type='nms'", key_path=[*path, 'nms', 'type'])
        fusion = cfg.get('score_factor_fusion', 'multiply')
        if fusion not in SCORE_FACTOR_FUSIONS:
            raise BuildError(f'score_factor_fusion must be one of {SCORE_FACTOR_FUSIONS}, got '
                             f'{fusion!r}', key_path=[*path, 'score_factor_fusion'])
        return dict(super()._fields(cfg, path, max_per_img), score_factor_fusion=fusion,
                    deploy_nms_pre=int(cfg.get('deploy_nms_pre', -1)))

    def __setattr__(self, key: str, value) -> None:
        # these heads run hard NMS only: an nms assigned after building is checked too
        if key == 'nms':
            value = None if value is None else NMSConfig.parse(value)
            if value is None or value.type != 'nms':
                raise BuildError(f"this head needs nms=dict(type='nms', iou_threshold=...), got "
                                 f'{value!r}', key_path=['test_cfg', 'nms'])
        super().__setattr__(key, value)

    @property
    def iou_threshold(self) -> float:
        """The NMS IoU threshold (``nms.iou_threshold``)."""
        return self.nms.iou_threshold


@dataclass
class RoITrainConfig(DenseTrainConfig):
    """A second stage's ``train_cfg.rcnn`` (one stage of a cascade): ``assigner``,
    ``sampler``, ``pos_weight``, ``mask_size`` (mask targets, px), ``debug``.

    How mask targets are cut from the gt masks (detforge keys; MMDetection's way is the
    default): ``mask_target_aligned`` (RoIAlign ``aligned=True``; torchvision: False) and
    ``mask_target_binarize`` (targets ``>= 0.5``; torchvision keeps the soft values)."""

    mask_size: int = 28
    mask_target_aligned: bool = True
    mask_target_binarize: bool = True

    KEYS: ClassVar[tuple] = ('assigner', 'sampler', 'pos_weight', 'mask_size',
                             'mask_target_aligned', 'mask_target_binarize', 'debug')


@dataclass
class RoITestConfig(_Record):
    """A second stage's ``test_cfg.rcnn``.

    Attributes:
        score_thr: drop (box, class) pairs scoring at most this.
        nms: :class:`NMSConfig` (class-aware).
        max_per_img: detections kept per image (``<= 0``: all).
        min_bbox_size: drop boxes not wider and taller than this (px).
        mask_thr_binary: mask heads binarise their probabilities at this.
        clip_rescaled: after rescaling to the original image, clip the boxes to it and drop
            those left without area (Detectron2's ``detector_postprocess``).
    """

    score_thr: float = 0.05
    nms: NMSConfig | None = None
    max_per_img: int = 100
    min_bbox_size: float = 0.0
    mask_thr_binary: float = 0.5
    clip_rescaled: bool = False

    KEYS: ClassVar[tuple] = ('score_thr', 'nms', 'max_per_img', 'min_bbox_size',
                             'mask_thr_binary', 'clip_rescaled')

    @classmethod
    def parse(cls, cfg, path: Path = ('test_cfg',)):
        if cfg is None or isinstance(cfg, cls):
            return cfg
        cfg = _as_dict(cfg, path, 'test config')
        check_keys(cfg, cls.KEYS, path, 'test config')
        nms = cfg.get('nms')
        return cls(score_thr=float(cfg.get('score_thr', 0.05)),
                   nms=None if nms is None else NMSConfig.parse(nms, [*path, 'nms']),
                   max_per_img=int(cfg.get('max_per_img', 100)),
                   min_bbox_size=float(cfg.get('min_bbox_size', 0.)),
                   mask_thr_binary=float(cfg.get('mask_thr_binary', 0.5)),
                   clip_rescaled=bool(cfg.get('clip_rescaled', False)))


def parse_stage_cfgs(cfg, allowed: Sequence[str], path: Path, what: str) -> dict:
    """A two-stage detector's ``train_cfg`` / ``test_cfg``: a dict of stages (``rpn``,
    ``rpn_proposal``, ``rcnn``); unknown stage names are refused. Returns the dict (stages
    not parsed yet); ``{}`` for None."""
    if cfg is None:
        return {}
    if not isinstance(cfg, dict) and dataclasses.is_dataclass(cfg):
        return {k: getattr(cfg, k) for k in allowed}
    cfg = _as_dict(cfg, path, what)
    check_keys(cfg, allowed, path, what)
    return cfg


@dataclass
class TwoStageTrainConfig(_Record):
    """A two-stage detector's parsed ``train_cfg``: ``rpn`` (:class:`DenseTrainConfig`),
    ``rpn_proposal`` (:class:`DenseTestConfig`) and ``rcnn`` (:class:`RoITrainConfig`, or a
    list of them for a cascade)."""

    rpn: Any = None
    rpn_proposal: Any = None
    rcnn: Any = None


@dataclass
class TwoStageTestConfig(_Record):
    """A two-stage detector's parsed ``test_cfg``: ``rpn`` (:class:`DenseTestConfig`) and
    ``rcnn`` (:class:`RoITestConfig`)."""

    rpn: Any = None
    rcnn: Any = None


__all__ += ['TwoStageTrainConfig', 'TwoStageTestConfig']


def parse_for_head(head: Any, cfg: Any, path: Path, kind: str):
    """``cfg`` parsed by the head class that ``head`` (a config dict, a class or a built
    head) names: its ``parse_train_cfg`` / ``parse_test_cfg`` classmethod (``kind`` is
    ``'train'`` or ``'test'``). A head class without one (e.g. written for MMDetection 2.x
    outside detforge) gets the config as it is."""
    from detforge.registry import HEADS
    cls = head.get('type') if isinstance(head, dict) else head
    if isinstance(cls, str):
        cls = HEADS.get(cls)
    elif cls is not None and not isinstance(cls, type):
        cls = type(cls)
    parser = getattr(cls, f'parse_{kind}_cfg', None)
    return cfg if parser is None else parser(cfg, path)


__all__ += ['parse_for_head', 'written_at', 'build_part', 'QualityTestConfig', 'SCORE_FACTOR_FUSIONS']
