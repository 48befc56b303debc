"""What in a data set would hurt training: the analysis behind ``detforge check-data``.

Every split is read with its own dataset type (test mode, no pipeline), so the check sees the
boxes training would see, and the boxes the dataset drops (its skip counter) are reported
here instead of scrolling past in a log. The findings, by kind:

===================  =======  ==========================================================
kind                 level    what
===================  =======  ==========================================================
annotation_file      error    a split's annotation file cannot be read (the message says
                              why)
missing_image        error    an image file named by the annotations does not exist
unreadable_image     error    no decoder reads the image (training stops on it)
size_mismatch        error    the annotations give another width/height than the file has
                              (the loader refuses the image; boxes would be misplaced)
unnamed_category     error    a COCO category id or YOLO class number with no name: its
                              boxes are dropped
split_only_class     error    a class has boxes in val/test but none in train (misspelt?)
class_names_differ   error    COCO splits whose categories (id -> name) differ
truncated_image      warning  "truncated but decodable": repaired as image viewers do
degenerate_box       warning  x2 <= x1 or y2 <= y1 (or a side < 1 px): dropped
box_outside          warning  a box entirely outside its image (dropped), or reaching more
                              than 1 px past the border (clipped by the transforms)
unknown_label        warning  a label not in ``classes=`` (VOC/LabelMe): dropped
duplicate_image      warning  files with the same bytes (across splits: test leakage)
no_labels            warning  images without any box (left out of training)
class_without_boxes  warning  a class with no box in train
class_imbalance      warning  most / least frequent class in train > ``imbalance`` (20)
anchor_unmatched     warning  (with a config) more than ``anchor_warn`` (5 %) of the gt boxes
                              have no anchor at the assigner's ``pos_iou_thr`` (at 0.5 for an
                              RPN's 0.7: it matches the rest through ``min_pos_iou``)
other skip kinds     warning  strings as coordinates, shapes without an area (points, lines)
===================  =======  ==========================================================

:func:`check_before_training` is the cheap part (annotations only, no image is opened) that
``detforge train`` runs before its first iteration.
"""
from __future__ import annotations

import hashlib
import logging
import os.path as osp
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from detforge.registry import DetforgeError

__all__ = ['Finding', 'DataReport', 'check_data', 'check_datasets', 'check_before_training',
           'load_check_source']

logger = logging.getLogger('detforge.data')
ERROR, WARNING, INFO = 'error', 'warning', 'info'
MAX_EXAMPLES = 5


@dataclass
class Finding:
    """One kind of problem: ``level`` ('error'/'warning'/'info'), ``kind`` (see the module
    docstring), a one-line ``message`` and up to a few ``examples`` (file names)."""
    level: str
    kind: str
    message: str
    examples: list[str] = field(default_factory=list)
    count: int = 0

    def line(self) -> str:
        more = f' ... ({self.count} in all)' if self.count > len(self.examples) else ''
        ex = f': {", ".join(self.examples)}{more}' if self.examples else ''
        return f'{self.level.upper()} [{self.kind}] {self.message}{ex}'


@dataclass
class DataReport:
    """The findings and the numbers behind them (``stats[split]``: images, boxes, per-class
    counts, box widths/heights in pixels; ``anchors``: the anchor fit, with a config)."""
    source: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    classes: tuple = ()
    anchors: dict | None = None
    notes: list = field(default_factory=list)

    def add(self, level, kind, message, examples=(), count=None) -> None:
        examples = list(examples)
        self.findings.append(Finding(level, kind, message, examples[:MAX_EXAMPLES],
                                     len(examples) if count is None else count))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    def kinds(self, level: str | None = None) -> set[str]:
        return {f.kind for f in self.findings if level is None or f.level == level}

    @property
    def exit_status(self) -> int:
        """1 when there is an error, 0 otherwise (warnings only)."""
        return 1 if self.errors else 0

    def to_dict(self) -> dict:
        """The report as plain JSON data (findings, per-split counts, anchor fit numbers)."""
        stats = {split: dict(images=st['images'], boxes=st['boxes'],
                             class_counts=dict(zip(self.classes, st['class_counts'])))
                 for split, st in self.stats.items()}
        anchors = None
        if self.anchors:
            anchors = {k: v for k, v in self.anchors.items()
                       if k not in ('best_ious', 'sizes')}
        return dict(source=self.source, notes=list(self.notes), classes=list(self.classes),
                    exit_status=self.exit_status, stats=stats, anchors=anchors,
                    findings=[dict(level=f.level, kind=f.kind, message=f.message,
                                   examples=f.examples, count=f.count)
                              for f in self.findings])

    def summary(self) -> str:
        lines = [f'check-data {self.source}'] + [f'note: {n}' for n in self.notes]
        lines.append(f'classes: {list(self.classes)}')
        for split, s in self.stats.items():
            per_class = ', '.join(f'{n} {c}' for n, c in zip(self.classes, s['class_counts']))
            lines.append(f'{split}: {s["images"]} images, {s["boxes"]} boxes ({per_class})')
        if self.anchors:
            a = self.anchors
            poor = (f', {a["poor"]} ({100 * a["poor_fraction"]:.1f} %) none with IoU >= '
                    f'{a["warn_iou"]}' if a['warn_iou'] != a['pos_iou_thr'] else '')
            lines.append(f'anchors ({a["scale_note"]}): {a["unmatched"]} of {a["boxes"]} train '
                         f'boxes ({100 * a["unmatched_fraction"]:.1f} %) have no anchor with IoU '
                         f'>= {a["pos_iou_thr"]}{poor}; median best IoU {a["median_iou"]:.2f}')
        order = {ERROR: 0, WARNING: 1, INFO: 2}
        for f in sorted(self.findings, key=lambda f: order[f.level]):
            lines.append(f.line())
        lines.append(f'{len(self.errors)} error(s), {len(self.warnings)} warning(s)')
        return '\n'.join(lines)


# ----------------------------------------------------------------------------- sources
def _unwrap(cfg: dict) -> list[dict]:
    """The plain dataset configs inside wrappers (RepeatDataset, ConcatDataset, ...)."""
    if 'datasets' in cfg:
        return [d for c in cfg['datasets'] for d in _unwrap(c)]
    if 'dataset' in cfg:
        return _unwrap(cfg['dataset'])
    return [cfg]


def load_check_source(source: str, cfg_options: dict | None = None):
    """``(format name, notes, {split: dataset config}, cfg or None)`` for a data set path or
    a config file (``.py``); dataset configs come without pipeline, in test mode; ``notes``:
    what :func:`~detforge.data.formats.detect_format` guessed."""
    if source.endswith('.py'):
        from detforge.compat import load_config
        cfg = load_config(source, cfg_options)
        data = cfg.get('data', None)
        if data is None:
            raise DetforgeError(f'{source}: no "data" section to check')
        splits = {}
        for split in ('train', 'val', 'test'):
            if data.get(split) is None:
                continue
            parts = _unwrap(dict(data[split]))
            for i, part in enumerate(parts):
                name = split if len(parts) == 1 else f'{split}[{i}]'
                splits[name] = dict(part, pipeline=[], test_mode=True)
        return 'config', [], splits, cfg
    from .formats import detect_format
    found = detect_format(source)
    splits = {s: found.dataset_cfg(s, pipeline=[], test_mode=True) for s in found.splits}
    for s, names in found.split_classes.items():  # read with its own names, to compare them
        splits[s]['classes'] = names
    notes = [f'{found.format} data at {found.root}'] + list(found.notes)
    return found.format, notes, splits, None


def check_data(source: str, *, images: bool = True, cfg_options: dict | None = None,
               imbalance: float = 20.0, anchor_warn: float = 0.05) -> DataReport:
    """Check a data set folder or a config's data (see the module docstring)."""
    from .builder import build_dataset
    _, notes, split_cfgs, cfg = load_check_source(source, cfg_options)
    report = DataReport(source, notes=notes)
    datasets = {}
    data_logger = logging.getLogger('detforge.data')
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)  # the datasets' skip warnings are in the report
    try:
        for split, dcfg in split_cfgs.items():
            try:
                datasets[split] = build_dataset(dcfg)
            except DetforgeError as e:
                report.add(ERROR, 'annotation_file', f'{split}: {e}')
    finally:
        data_logger.setLevel(level)
    if not datasets:
        return report
    check_datasets(datasets, report, imbalance=imbalance)
    if images:
        check_images(datasets, report)
    if cfg is not None and 'train' in datasets:
        from .anchor_fit import anchor_fit
        try:
            report.anchors = anchor_fit(cfg, datasets['train'])
        except DetforgeError as e:
            report.add(INFO, 'anchor_fit', f'no anchor check: {e}')
        if report.anchors and report.anchors['poor_fraction'] > anchor_warn:
            a = report.anchors
            report.add(WARNING, 'anchor_unmatched',
                       f'{a["poor"]} of {a["boxes"]} train boxes '
                       f'({100 * a["poor_fraction"]:.1f} %) match no anchor at IoU >= '
                       f'{a["warn_iou"]} ({a["scale_note"]}); they only get their best '
                       f'anchor (min_pos_iou={a["min_pos_iou"]}); consider other anchor sizes, '
                       f'ratios or image scale', a['examples'], a['poor'])
    return report


# ----------------------------------------------------------------------------- annotations
def _unknown_is_unnamed(dataset) -> bool:
    """COCO category ids and YOLO class numbers not in the name table have no name at all;
    VOC/LabelMe labels outside ``classes=`` are names left out on purpose (a subset)."""
    from .coco import CocoDataset
    from .yolo import YOLODataset
    return isinstance(dataset, (CocoDataset, YOLODataset))


def _skips(dataset, report: DataReport, split: str) -> None:
    """The boxes the dataset dropped while reading, as findings."""
    skipped = getattr(dataset, 'skipped', None)
    if skipped is None:
        return
    for kind, items in skipped.items.items():
        examples = [f'{f} {w}'.strip() for f, w in items]
        n = len(items)
        if kind == 'degenerate':
            report.add(WARNING, 'degenerate_box', f'{split}: {n} degenerate boxes (x2 <= x1 or '
                       f'y2 <= y1, or a side < 1 px), dropped', examples)
        elif kind == 'outside':
            report.add(WARNING, 'box_outside', f'{split}: {n} boxes entirely outside their '
                       f'image, dropped', examples)
        elif kind == 'unknown_class' and _unknown_is_unnamed(dataset):
            report.add(ERROR, 'unnamed_category', f'{split}: {n} boxes have a category id / '
                       f'class number with no name (not in the categories / names list); '
                       f'they are dropped', examples)
        elif kind == 'unknown_class':
            report.add(WARNING, 'unknown_label', f'{split}: {n} boxes have a label not in '
                       f'classes {list(dataset.CLASSES)}, dropped', examples)
        elif kind == 'small':
            report.add(INFO, 'small_box', f'{split}: {n} boxes below min_size, ignored', examples)
        else:
            from .errors import _KINDS
            what, done, why = _KINDS.get(kind, (kind, 'skipped', ''))
            report.add(WARNING, kind, f'{split}: {n} {what} {done} ({why})', examples)


def _split_stats(dataset, num_classes: int) -> dict:
    counts = np.zeros(num_classes, np.int64)
    widths, heights, empty, over = [], [], [], []
    for info in dataset.data_infos:
        ann = info['ann']
        boxes = np.asarray(ann['bboxes'], np.float64).reshape(-1, 4)
        labels = np.asarray(ann['labels'], np.int64).reshape(-1)
        counts += np.bincount(labels[(labels >= 0) & (labels < num_classes)],
                              minlength=num_classes)[:num_classes]
        widths.append(boxes[:, 2] - boxes[:, 0])
        heights.append(boxes[:, 3] - boxes[:, 1])
        if len(boxes) + len(ann.get('bboxes_ignore', ())) == 0:
            empty.append(str(info['filename']))
        w, h = info.get('width'), info.get('height')
        if w and h and len(boxes):
            # more than 1 px past the border: the transforms clip it, the box changes
            past = ((boxes[:, :2] < -1).any(1) | (boxes[:, 2] > w + 1) | (boxes[:, 3] > h + 1))
            over += [f'{info["filename"]} box {i}' for i in np.flatnonzero(past)]
    return dict(images=len(dataset.data_infos), boxes=int(counts.sum()),
                class_counts=counts.tolist(), widths=np.concatenate(widths or [np.zeros(0)]),
                heights=np.concatenate(heights or [np.zeros(0)]), empty=empty, past_border=over)


def _coco_categories(dataset) -> dict | None:
    coco = getattr(dataset, 'coco', None)
    if coco is None or not isinstance(getattr(coco, 'dataset', None), dict):
        return None
    return {c['id']: c['name'] for c in coco.dataset.get('categories', [])}


def check_datasets(datasets: dict, report: DataReport | None = None, *,
                   imbalance: float = 20.0) -> DataReport:
    """The annotation checks (no image opened) of built datasets ``{split: dataset}``."""
    report = report or DataReport('datasets')
    first = datasets.get('train') or next(iter(datasets.values()))
    classes = tuple(first.CLASSES or ())
    report.classes = classes
    for split, ds in datasets.items():
        _skips(ds, report, split)
        if tuple(ds.CLASSES or ()) != classes:
            report.add(ERROR, 'class_names_differ', f'{split} reads classes '
                       f'{list(ds.CLASSES or ())}, train {list(classes)}')
            continue
        stats = _split_stats(ds, len(classes))
        report.stats[split] = stats
        if stats['empty']:
            report.add(WARNING, 'no_labels', f'{split}: {len(stats["empty"])} of '
                       f'{stats["images"]} images have no box (left out of training with '
                       f'filter_empty_gt=True)', stats['empty'])
        if stats['past_border']:
            report.add(WARNING, 'box_outside', f'{split}: {len(stats["past_border"])} boxes '
                       f'reach more than 1 px past the image border (clipped in training)',
                       stats['past_border'])
    _check_categories(datasets, report)
    _check_class_presence(report, imbalance)
    return report


def _check_categories(datasets: dict, report: DataReport) -> None:
    tables = {s: _coco_categories(ds) for s, ds in datasets.items()}
    tables = {s: t for s, t in tables.items() if t is not None}
    if len(tables) < 2:
        return
    ref_split, ref = next(iter(tables.items()))
    for split, table in tables.items():
        if table == ref:
            continue
        diff = [f'id {i}: {ref.get(i)!r} vs {table.get(i)!r}'
                for i in sorted(set(ref) | set(table), key=str) if ref.get(i) != table.get(i)]
        report.add(ERROR, 'class_names_differ', f'the categories of {split} differ from '
                   f'those of {ref_split} ({ref_split} vs {split})', diff)


def _check_class_presence(report: DataReport, imbalance: float) -> None:
    classes, stats = report.classes, report.stats
    train = stats.get('train')
    if train is None:
        return
    counts = np.asarray(train['class_counts'])
    for split, s in stats.items():
        if split == 'train':
            continue
        only = [classes[i] for i, c in enumerate(s['class_counts']) if c and not counts[i]]
        if only:
            report.add(ERROR, 'split_only_class', f'classes {only} have boxes in {split} but '
                       f'none in train (misspelt label? nothing can learn them)')
    missing = [classes[i] for i in np.flatnonzero(counts == 0)]
    if missing:
        report.add(WARNING, 'class_without_boxes', f'classes {missing} have no box in train')
    present = counts[counts > 0]
    if len(present) > 1 and present.max() / present.min() > imbalance:
        i = int(np.argmax(counts))
        j = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))  # least, but present
        report.add(WARNING, 'class_imbalance', f'train: {classes[i]} has {counts[i]} boxes, '
                   f'{classes[j]} {counts[j]} ({counts[i] / counts[j]:.0f}x, more than '
                   f'{imbalance:g}x); consider ClassBalancedDataset or more {classes[j]} images')


# ----------------------------------------------------------------------------- images
def check_images(datasets: dict, report: DataReport) -> None:
    """Open every image once: missing, unreadable, truncated, size mismatch, duplicates."""
    from .pipelines.loading import decode_tolerant, exif_orientation
    missing, unreadable, truncated, mismatch = [], [], [], []
    by_hash = defaultdict(list)
    seen = {}  # path -> its hash key
    import sys

    from tqdm import tqdm
    bar = tqdm(total=sum(len(ds.data_infos) for ds in datasets.values()), desc='images',
               unit='img', file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)
    for split, ds in datasets.items():
        for info in ds.data_infos:
            bar.update()
            path = osp.join(ds.img_prefix, info['filename']) if ds.img_prefix else info['filename']
            path = osp.normpath(path)
            if path in seen:  # the same file in two splits' records: read it once
                by_hash[seen[path]].append(f'{split}:{info["filename"]}')
                continue
            try:
                with open(path, 'rb') as f:
                    buf = f.read()
            except (FileNotFoundError, IsADirectoryError):
                missing.append(path)
                continue
            seen[path] = hashlib.sha1(buf).hexdigest()
            by_hash[seen[path]].append(f'{split}:{info["filename"]}')
            img, repair = decode_tolerant(buf)
            if img is None:
                unreadable.append(path)
                continue
            if repair is not None or (buf.startswith(b'\xff\xd8')
                                      and not buf.rstrip(b'\x00').endswith(b'\xff\xd9')):
                truncated.append(path)  # (an OpenCV that decodes it silently: no EOI marker)
            h, w = img.shape[:2]
            if exif_orientation(buf) in (5, 6, 7, 8):
                w, h = h, w
            aw, ah = info.get('width'), info.get('height')
            if aw is not None and ah is not None and (int(aw), int(ah)) != (w, h):
                mismatch.append(f'{path} (annotations {aw}x{ah}, file {w}x{h})')
    bar.close()
    if missing:
        report.add(ERROR, 'missing_image', f'{len(missing)} image files not found', missing)
    if unreadable:
        report.add(ERROR, 'unreadable_image', f'{len(unreadable)} images no decoder reads '
                   f'(empty, cut short before any pixel, or not an image)', unreadable)
    if truncated:
        report.add(WARNING, 'truncated_image', f'{len(truncated)} images truncated but '
                   f'decodable (their last bytes are missing; repaired as image viewers do, '
                   f'the missing rows grey)', truncated)
    if mismatch:
        report.add(ERROR, 'size_mismatch', f'{len(mismatch)} images whose size in the '
                   f'annotations differs from the file (width x height)', mismatch)
    # a val set that is also the test set (one file for both) is common and harmless; the
    # same bytes twice within a split, or in train and in val/test, are not
    dups = [names for names in by_hash.values()
            if len(names) > 1 and (len({n.split(':', 1)[0] for n in names}) < len(names)
                                   or any(n.startswith('train') for n in names))]
    if dups:
        cross = [n for n in dups if len({x.split(':', 1)[0] for x in n}) > 1]
        leak = f'; {len(cross)} of them across splits (evaluation sees training images)' \
            if cross else ''
        report.add(WARNING, 'duplicate_image', f'{len(dups)} groups of identical image files '
                   f'({sum(len(n) for n in dups)} files){leak}', [' = '.join(n) for n in dups])


# ----------------------------------------------------------------------------- training
def check_before_training(datasets: list, cfg=None, log: logging.Logger | None = None) -> None:
    """The cheap part of check-data, on the datasets ``detforge train`` built (annotations
    only, no image opened): warnings are logged, errors stop the run with one
    :class:`DetforgeError` listing them. ``check_data=False`` in the config skips it."""
    if cfg is not None and cfg.get('check_data', True) is False:
        return
    log = log or logger
    names = ['train', 'val'][:len(datasets)]
    plain = {}
    for name, ds in zip(names, datasets):
        inner = ds
        while not hasattr(inner, 'data_infos') and hasattr(inner, 'dataset'):
            inner = inner.dataset  # RepeatDataset, ClassBalancedDataset, ...
        if hasattr(inner, 'data_infos') and hasattr(inner, 'CLASSES'):
            plain[name] = inner
    if not plain:
        return
    report = check_datasets(plain)
    for f in report.findings:
        # dropped boxes and left-out images were logged by the dataset already
        if f.level == WARNING and f.kind not in ('degenerate_box', 'no_labels', 'unknown_label'):
            log.warning('data check: %s', f.line())
    if report.errors:
        raise DetforgeError('the training data has errors (fix them, or set check_data=False '
                            'in the config to train anyway):\n' +
                            '\n'.join(f.line() for f in report.errors))
