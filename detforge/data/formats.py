"""Recognise a folder of labelled images and write the dataset configs that read it.

    >>> found = detect_format('data/raccoon')
    >>> found.format, found.classes, sorted(found.splits)
    ('voc', ('raccoon',), ['train', 'val'])
    >>> train_cfg = dict(found.splits['train'], pipeline=train_pipeline)

Recognised layouts (checked in this order):

- ``roboflow-coco``: Roboflow's COCO export, ``train/ valid/ test/`` each holding
  ``_annotations.coco.json`` with the images beside it (``valid`` becomes ``val``).
  Roboflow adds a placeholder category (the data set's name, the ``supercategory`` of every
  real class, with no annotation): it is not a class.
- ``yolo``: a ``data.yaml`` (the path given, or in the folder) with ``names`` (a list or a
  ``{number: name}`` dict) and ``train``/``val``/``test`` image folders (relative to ``path``
  or to the yaml's folder, as Ultralytics resolves them); labels in the sibling ``labels``
  folder (``.../images/...`` -> ``.../labels/...``). Without a yaml, ``images/SPLIT`` and
  ``labels/SPLIT`` folders with the names in ``classes.txt`` (or darknet's ``obj.names``).
- ``voc``: Pascal VOC XML files in ``Annotations/`` (or ``annotations/``) and images in
  ``JPEGImages/`` (or ``images/``); splits from ``ImageSets/Main/SPLIT.txt`` or ``SPLIT.txt``
  beside them (none: every XML is ``train``). Or XML files beside their images, in the
  folder or in ``train/ valid/ test/`` (Roboflow's Pascal VOC export).
- ``labelme``: LabelMe JSON files (one per image, with ``shapes``) in the folder (one
  ``train`` split), or in ``train/ val/ test/`` sub-folders. Class names from ``labels.txt``
  / ``classes.txt`` (labelme2coco's ``__ignore__``/``_background_`` lines skipped), else the
  sorted labels found.
- ``coco``: COCO JSON files (``images``/``annotations``/``categories``): the JSON file given,
  or the ``*.json`` in ``annotations/`` or in the folder, assigned to splits by the words
  ``train``/``val``/``test`` in their names; the image folder is found by checking where the
  first images' ``file_name``s exist.

Class names: COCO categories in id order; YOLO ``names``; VOC and LabelMe labels sorted by
name. The split configs carry no ``pipeline``: the caller adds it. Every path in them is
absolute, so the config works from any directory.
"""
from __future__ import annotations

import json
import os
import re
import os.path as osp
from dataclasses import dataclass, field

from .errors import DatasetError

__all__ = ['DetectedData', 'detect_format', 'FORMATS', 'IMAGE_EXTENSIONS', 'list_images',
           'read_yolo_names', 'coco_class_names']

FORMATS = ('coco', 'roboflow-coco', 'voc', 'yolo', 'labelme')
# the image types Ultralytics and common tools write (lower case, with the dot)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.mpo')
_SPLIT_WORDS = {'train': ('train', 'trainval'), 'val': ('val', 'valid', 'validation'),
                'test': ('test',)}


@dataclass
class DetectedData:
    """What :func:`detect_format` found.

    Attributes:
        format: one of :data:`FORMATS`.
        root: the absolute path that was recognised (folder or file).
        classes: class names in label order (label ``i`` is ``classes[i]``).
        splits: ``{'train'|'val'|'test': dataset config dict}`` for the splits the data has
            (``type``, ``ann_file``, ``img_prefix``, ``classes``, ...; no ``pipeline``);
            ``val`` and ``test`` are absent when the data has no such split.
        metric: the ``evaluation.metric`` for these dataset types: ``'bbox'`` (COCO box AP),
            which every type returned here evaluates (``XMLDataset`` also takes ``'mAP'``).
        notes: what was guessed (one line each), for the user to check.
        split_classes: ``{split: names}`` for splits whose own class names differ from
            ``classes`` (COCO files with other categories); ``detforge check-data`` reads
            such a split with its own names to report the difference.
    """
    format: str
    root: str
    classes: tuple[str, ...]
    splits: dict[str, dict]
    metric: str = 'bbox'
    notes: list[str] = field(default_factory=list)
    split_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self):
        order = {'train': 0, 'val': 1, 'test': 2}
        self.splits = dict(sorted(self.splits.items(), key=lambda kv: order.get(kv[0], 3)))

    def dataset_cfg(self, split: str, pipeline=None, **overrides) -> dict:
        """A copy of the config of ``split`` with ``pipeline`` and ``overrides`` set."""
        if split not in self.splits:
            raise DatasetError(f'{self.root}: this {self.format} data set has no {split!r} '
                               f'split (it has {sorted(self.splits)})')
        cfg = dict(self.splits[split], **overrides)
        if pipeline is not None:
            cfg['pipeline'] = pipeline
        return cfg


def detect_format(path: str) -> DetectedData:
    """Recognise the data set at ``path`` (a folder, a ``data.yaml`` or a JSON file).

    Returns a :class:`DetectedData`; raises :class:`DatasetError` naming ``path`` and the
    layouts looked for when nothing fits.
    """
    path = osp.abspath(osp.expanduser(str(path)))
    if not osp.exists(path):
        raise DatasetError(f'{path}: no such file or folder')
    if osp.isfile(path):
        if path.endswith(('.yaml', '.yml')):
            return _yolo_from_yaml(path)
        if path.endswith('.json'):
            data = _read_json(path)
            if isinstance(data, dict) and 'shapes' in data:
                return _labelme({'train': osp.dirname(path)}, osp.dirname(path))
            return _coco({'train': path}, path)
        raise DatasetError(f'{path}: expected a folder, a data.yaml (YOLO) or a .json file '
                           f'(COCO, LabelMe)')
    found = _detect_folder(path)
    if found is not None:
        return found
    raise DatasetError(
        f'{path}: not a data set layout detforge recognises; expected one of: Roboflow COCO '
        f'(train/ valid/ test/ with _annotations.coco.json), YOLO (data.yaml, images/ and '
        f'labels/), Pascal VOC (Annotations/*.xml and JPEGImages/), LabelMe (*.json with '
        f'"shapes"), COCO (annotations/*.json)')


def _detect_folder(path: str, depth: int = 2) -> DetectedData | None:
    for detector in (_detect_roboflow, _detect_yolo, _detect_voc, _detect_labelme, _detect_coco):
        found = detector(path)
        if found is not None:
            return found
    # an archive unpacked into one folder (bccd/BCCD, VOCdevkit/VOC2007): look inside it
    subs = [d for d in os.listdir(path) if osp.isdir(osp.join(path, d)) and not d.startswith('.')]
    if depth > 0 and len(subs) == 1:
        found = _detect_folder(osp.join(path, subs[0]), depth - 1)
        if found is not None:
            found.notes.append(f'{path} holds one folder, {subs[0]}: its data set is used')
        return found
    return None


# ----------------------------------------------------------------------------- helpers
def _read_json(path: str):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f'{path} is not a valid JSON file: {e}') from None


def list_images(folder: str) -> list[str]:
    """Image file names (sorted) directly in ``folder``."""
    if not osp.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder)
                  if osp.splitext(f)[1].lower() in IMAGE_EXTENSIONS and not f.startswith('.'))


def _split_of(name: str) -> str | None:
    """'train' / 'val' / 'test' when a file or folder name says so (``instances_val2017``,
    ``valid``, ``trainval`` = train)."""
    words = re.split(r'[^a-z]+', osp.splitext(name.lower())[0])
    for split in ('train', 'val', 'test'):
        if any(w in _SPLIT_WORDS[split] for w in words):
            return split
    return None


# ----------------------------------------------------------------------------- COCO
def coco_class_names(categories: list[dict], used_ids: set | None = None) -> tuple[str, ...]:
    """Class names of COCO ``categories`` in id order, without Roboflow's placeholder: a
    category that is the ``supercategory`` of the others and has no annotation
    (``used_ids``: the category ids annotations use; ``None`` keeps every category)."""
    cats = sorted(categories, key=lambda c: c['id'])
    supers = {c.get('supercategory') for c in cats}
    names = []
    for c in cats:
        placeholder = c['name'] in supers and used_ids is not None and c['id'] not in used_ids
        if not placeholder:
            names.append(c['name'])
    return tuple(names)


def _guess_img_prefix(ann_file: str, file_names: list[str], root: str, split: str) -> str:
    """The folder the ``file_name``s of ``ann_file`` are relative to: the first candidate
    where the first few images exist."""
    here = osp.dirname(ann_file)
    stem = osp.splitext(osp.basename(ann_file))[0]
    candidates = [here, root, osp.join(root, 'images'), osp.join(root, split),
                  osp.join(root, f'{split}2017'), osp.join(root, 'images', split),
                  osp.join(root, stem), osp.join(root, 'images', stem), osp.dirname(here),
                  osp.join(here, 'images')]
    for word in _SPLIT_WORDS[split]:
        candidates.append(osp.join(root, word))
    sample = file_names[:5]
    if not sample:
        return here
    for folder in dict.fromkeys(candidates):
        if all(osp.isfile(osp.join(folder, f)) for f in sample):
            return folder
    raise DatasetError(f'{ann_file}: cannot find its images (e.g. {sample[0]!r}) in any of '
                       f'{list(dict.fromkeys(candidates))}')


def _coco(ann_files: dict[str, str], root: str, fmt: str = 'coco',
          img_prefixes: dict[str, str] | None = None) -> DetectedData:
    """Dataset configs for COCO JSON files ``{split: path}``."""
    notes, splits, names_by_split = [], {}, {}
    datas = {split: _read_json(p) for split, p in ann_files.items()}
    for split, data in datas.items():
        if not (isinstance(data, dict) and isinstance(data.get('images'), list)
                and isinstance(data.get('categories'), list)):
            raise DatasetError(f'{ann_files[split]} is not a COCO annotation file: expected '
                               f'"images", "annotations" and "categories" lists')
    used = {a.get('category_id') for d in datas.values() for a in d.get('annotations', [])}
    for split, data in datas.items():
        names_by_split[split] = coco_class_names(data['categories'], used)
    first = 'train' if 'train' in names_by_split else next(iter(names_by_split))
    classes = names_by_split[first]
    all_names = {c['name'] for d in datas.values() for c in d['categories']}
    dropped = sorted(all_names - {n for ns in names_by_split.values() for n in ns})
    if dropped:
        notes.append(f'categories {dropped} have no annotation and are the supercategory of '
                     f'the others (a Roboflow placeholder): not used as classes')
    for split, names in names_by_split.items():
        if set(names) != set(classes):
            notes.append(f'the {split} split has categories {list(names)}, the {first} split '
                         f'{list(classes)}')
    for split, ann_file in ann_files.items():
        prefix = (img_prefixes or {}).get(split) or _guess_img_prefix(
            ann_file, [im.get('file_name', '') for im in datas[split]['images']],
            root if osp.isdir(root) else osp.dirname(root), split)
        splits[split] = dict(type='CocoDataset', ann_file=ann_file, img_prefix=prefix + os.sep,
                             classes=classes)
    differ = {s: n for s, n in names_by_split.items() if n != classes}
    return DetectedData(fmt, root, classes, splits, 'bbox', notes, differ)


def _detect_roboflow(root: str) -> DetectedData | None:
    name = '_annotations.coco.json'
    if osp.isfile(osp.join(root, name)):  # one split folder of an export
        return _coco({'train': osp.join(root, name)}, root, 'roboflow-coco', {'train': root})
    files, prefixes = {}, {}
    for sub in sorted(os.listdir(root)):
        ann = osp.join(root, sub, name)
        split = _split_of(sub)
        if split and osp.isfile(ann):
            files[split] = ann
            prefixes[split] = osp.join(root, sub)
    if not files:
        return None
    return _coco(files, root, 'roboflow-coco', prefixes)


def _is_coco_file(path: str) -> bool:
    try:
        with open(path, encoding='utf-8') as f:
            head = f.read(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    return '"images"' in head or '"categories"' in head or '"annotations"' in head


def _detect_coco(root: str) -> DetectedData | None:
    for folder in (osp.join(root, 'annotations'), root):
        if not osp.isdir(folder):
            continue
        jsons = [osp.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith('.json')]
        jsons = [p for p in jsons if _is_coco_file(p)]
        # COCO's own folder holds captions/keypoints files too: prefer instances_*
        if any(osp.basename(p).startswith('instances_') for p in jsons):
            jsons = [p for p in jsons if osp.basename(p).startswith('instances_')]
        files = {}
        for p in jsons:
            split = _split_of(osp.basename(p))
            if split and split not in files:
                files[split] = p
        if not files and len(jsons) == 1:
            files = {'train': jsons[0]}
        if files:
            return _coco(files, root)
    return None


# ----------------------------------------------------------------------------- YOLO
def read_yolo_names(names, where: str) -> tuple[str, ...]:
    """YOLO ``names``: a list, or a dict ``{0: name, 1: name, ...}`` (numbers 0..K-1)."""
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DatasetError(f'{where}: names must map class numbers to names, got keys '
                               f'{list(names)}') from None
        if keys != list(range(len(keys))):
            raise DatasetError(f'{where}: names must number the classes 0..{len(keys) - 1} '
                               f'without gaps, got {keys}')
        by_int = {int(k): v for k, v in names.items()}
        names = [by_int[k] for k in keys]
    if not isinstance(names, (list, tuple)) or not names:
        raise DatasetError(f'{where}: names must be a non-empty list of class names or a dict '
                           f'{{0: name, ...}}, got {names!r}')
    return tuple(str(n) for n in names)


def _labels_dir(img_dir: str) -> str:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``."""
    parts = img_dir.rstrip(os.sep).split(os.sep)
    if 'images' in parts:
        i = len(parts) - 1 - parts[::-1].index('images')
        parts[i] = 'labels'
        return os.sep.join(parts)
    return osp.join(img_dir, 'labels')


def _resolve_split_dir(value, base: str, yaml_dir: str, where: str) -> str:
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise DatasetError(f'{where}: several image folders per split ({value}) are not '
                               f'supported; merge them into one folder')
        value = value[0]
    value = str(value)
    tries = [osp.join(base, value), osp.join(yaml_dir, value)]
    if value.startswith('../'):  # Roboflow writes ../train/images beside the yaml
        tries += [osp.join(base, value[3:]), osp.join(yaml_dir, value[3:])]
    for p in tries:
        p = osp.normpath(p)
        if osp.isdir(p):
            if not list_images(p) and osp.isdir(osp.join(p, 'images')):
                p = osp.join(p, 'images')
            return p
        if osp.isfile(p) and p.endswith('.txt'):
            raise DatasetError(f'{where}: {value!r} is a list of image files; detforge reads '
                               f'YOLO splits given as image folders')
    raise DatasetError(f'{where}: image folder {value!r} not found (tried '
                       f'{[osp.normpath(t) for t in dict.fromkeys(tries)]})')


def _yolo_from_yaml(yaml_path: str) -> DetectedData:
    import yaml
    try:
        with open(yaml_path, encoding='utf-8') as f:
            meta = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise DatasetError(f'{yaml_path} is not valid YAML: {e}') from None
    if not isinstance(meta, dict) or 'names' not in meta:
        raise DatasetError(f'{yaml_path}: expected a YOLO data.yaml with "names" and '
                           f'"train"/"val" image folders')
    classes = read_yolo_names(meta['names'], f'{yaml_path}: names')
    yaml_dir = osp.dirname(yaml_path)
    base = meta.get('path') or yaml_dir
    base = base if osp.isabs(base) else osp.normpath(osp.join(yaml_dir, base))
    notes = []
    if 'nc' in meta and meta['nc'] != len(classes):
        notes.append(f'{yaml_path}: nc={meta["nc"]} but names lists {len(classes)} classes '
                     f'(names used)')
    splits = {}
    for key, split in (('train', 'train'), ('val', 'val'), ('valid', 'val'), ('test', 'test')):
        if meta.get(key) and split not in splits:
            img_dir = _resolve_split_dir(meta[key], base, yaml_dir, f'{yaml_path}: {key}')
            splits[split] = _yolo_cfg(img_dir, classes)
    if 'train' not in splits:
        raise DatasetError(f'{yaml_path}: no "train" image folder')
    return DetectedData('yolo', yaml_path, classes, splits, 'bbox', notes)


def _yolo_cfg(img_dir: str, classes) -> dict:
    return dict(type='YOLODataset', ann_file=_labels_dir(img_dir), img_prefix=img_dir + os.sep,
                classes=tuple(classes))


def _detect_yolo(root: str) -> DetectedData | None:
    for name in ('data.yaml', 'data.yml', 'dataset.yaml'):
        if osp.isfile(osp.join(root, name)):
            return _yolo_from_yaml(osp.join(root, name))
    if not (osp.isdir(osp.join(root, 'images')) and osp.isdir(osp.join(root, 'labels'))):
        return None
    if not any(f.endswith('.txt') for _, _, fs in os.walk(osp.join(root, 'labels')) for f in fs):
        return None
    names_file = next((osp.join(root, n) for n in ('classes.txt', 'obj.names', 'classes.names')
                       if osp.isfile(osp.join(root, n))), None)
    if names_file is None:
        raise DatasetError(f'{root}: YOLO labels hold class numbers; put the class names in '
                           f'{osp.join(root, "data.yaml")} (names: [a, b, ...]) or classes.txt')
    with open(names_file, encoding='utf-8') as f:
        classes = tuple(line.strip() for line in f if line.strip())
    splits = {}
    for sub in sorted(os.listdir(osp.join(root, 'images'))):
        split = _split_of(sub)
        if split and split not in splits and osp.isdir(osp.join(root, 'images', sub)):
            splits[split] = _yolo_cfg(osp.join(root, 'images', sub), classes)
    if not splits:
        splits['train'] = _yolo_cfg(osp.join(root, 'images'), classes)
    return DetectedData('yolo', root, classes, splits, 'bbox', [f'class names from {names_file}'])


# ----------------------------------------------------------------------------- VOC
def _voc_names(ann_dir: str) -> tuple[str, ...]:
    import xml.etree.ElementTree as ET
    names = set()
    for f in os.listdir(ann_dir):
        if f.endswith('.xml'):
            try:
                root = ET.parse(osp.join(ann_dir, f)).getroot()
            except ET.ParseError as e:
                raise DatasetError(f'{osp.join(ann_dir, f)} is not a valid XML file: {e}') from None
            names.update((o.findtext('name') or '').strip() for o in root.findall('object'))
    names.discard('')
    return tuple(sorted(names))


def _has_xml_and_images(folder: str) -> bool:
    return (osp.isdir(folder) and any(f.endswith('.xml') for f in os.listdir(folder))
            and bool(list_images(folder)))


def _detect_voc_side_by_side(root: str) -> DetectedData | None:
    """XML files beside their images: in the folder (one train split), or in
    ``train/ valid/ test/`` (Roboflow's Pascal VOC export)."""
    split_dirs = {}
    if _has_xml_and_images(root):
        split_dirs['train'] = root
    else:
        for sub in sorted(os.listdir(root)):
            split = _split_of(sub)
            if split and split not in split_dirs and _has_xml_and_images(osp.join(root, sub)):
                split_dirs[split] = osp.join(root, sub)
    if not split_dirs:
        return None
    names, exts = set(), []
    for d in split_dirs.values():
        names.update(_voc_names(d))
        exts += [osp.splitext(f)[1] for f in list_images(d)]
    suffix = max(set(exts), key=exts.count)
    classes = tuple(sorted(names))
    splits = {s: dict(type='XMLDataset', ann_file=None, img_prefix=d + os.sep, img_subdir='',
                      ann_subdir='', img_suffix=suffix, classes=classes)
              for s, d in split_dirs.items()}
    return DetectedData('voc', root, classes, splits, 'bbox',
                        ['XML files beside their images: every XML of a folder is one split'])


def _detect_voc(root: str) -> DetectedData | None:
    ann_sub = next((s for s in ('Annotations', 'annotations') if osp.isdir(osp.join(root, s))
                    and any(f.endswith('.xml') for f in os.listdir(osp.join(root, s)))), None)
    img_sub = next((s for s in ('JPEGImages', 'images', 'Images') if osp.isdir(osp.join(root, s))),
                   None)
    if ann_sub is None or img_sub is None:
        return _detect_voc_side_by_side(root)
    exts = [osp.splitext(f)[1] for f in list_images(osp.join(root, img_sub))]
    if not exts:
        raise DatasetError(f'{osp.join(root, img_sub)}: no images')
    suffix = max(set(exts), key=exts.count)
    notes = []
    if len(set(exts)) > 1:
        notes.append(f'images have several extensions {sorted(set(exts))}; {suffix} used '
                     f'(XMLDataset reads one)')
    classes = _voc_names(osp.join(root, ann_sub))
    base = dict(type='XMLDataset', img_prefix=root + os.sep, img_subdir=img_sub,
                ann_subdir=ann_sub, img_suffix=suffix, classes=classes)
    split_files = {}
    for folder in (osp.join(root, 'ImageSets', 'Main'), root):
        for split, names in (('train', ('train', 'trainval')), ('val', ('val', 'valid')),
                             ('test', ('test',))):
            for name in names:
                p = osp.join(folder, f'{name}.txt')
                if split not in split_files and osp.isfile(p):
                    split_files[split] = p
    if split_files:
        splits = {s: dict(base, ann_file=p) for s, p in split_files.items()}
        if 'train' not in splits:
            raise DatasetError(f'{root}: split files {sorted(split_files.values())} but no '
                               f'train.txt')
    else:
        splits = {'train': dict(base, ann_file=None)}
        notes.append('no split files (ImageSets/Main/train.txt or train.txt): every XML is '
                     'in the train split')
    return DetectedData('voc', root, classes, splits, 'bbox', notes)


# ----------------------------------------------------------------------------- LabelMe
def _is_labelme_dir(folder: str) -> bool:
    for f in sorted(os.listdir(folder)):
        if f.endswith('.json'):
            try:
                with open(osp.join(folder, f), encoding='utf-8') as fh:
                    return '"shapes"' in fh.read(1 << 20)
            except (OSError, UnicodeDecodeError):
                return False
    return False


def labelme_names_file(folder: str) -> str | None:
    return next((osp.join(folder, n) for n in ('labels.txt', 'classes.txt')
                 if osp.isfile(osp.join(folder, n))), None)


def _labelme(split_dirs: dict[str, str], root: str) -> DetectedData:
    from .labelme import read_labelme_names
    names_file = labelme_names_file(root)
    notes = []
    if names_file:
        with open(names_file, encoding='utf-8') as f:
            classes = tuple(n for n in (line.strip() for line in f)
                            if n and n not in ('__ignore__', '_background_'))
        notes.append(f'class names from {names_file}')
    else:
        classes = tuple(sorted(set().union(*(read_labelme_names(d) for d in split_dirs.values()))))
    splits = {s: dict(type='LabelMeDataset', ann_file=d + os.sep, img_prefix=d + os.sep,
                      classes=classes) for s, d in split_dirs.items()}
    return DetectedData('labelme', root, classes, splits, 'bbox', notes)


def _detect_labelme(root: str) -> DetectedData | None:
    if _is_labelme_dir(root):
        return _labelme({'train': root}, root)
    split_dirs = {}
    for sub in sorted(os.listdir(root)):
        split = _split_of(sub)
        d = osp.join(root, sub)
        if split and split not in split_dirs and osp.isdir(d) and _is_labelme_dir(d):
            split_dirs[split] = d
    return _labelme(split_dirs, root) if split_dirs else None
