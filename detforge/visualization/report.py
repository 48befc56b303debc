"""One self-contained HTML page about a training run (``detforge report WORK_DIR``).

The page has no external resource: the figures are PNGs embedded as base64 ``data:`` URIs,
the style is one inline ``<style>`` block, there is no JavaScript. It opens from a file,
from an e-mail attachment, offline, years later. Its sections, in page order (each a
``<section id=...>``):

``summary`` (work dir, checkpoint, split, COCO box AP), ``curves`` (loss, its terms, lr and
validation metrics of the ``*.log.json`` logs), ``per-class-ap`` (AP, AP50, AP75 and ground
truth count per class), ``pr-curves`` (COCO precision-recall per class at IoU 0.5, 0.75 and
averaged over 0.5:0.95), ``confusion-matrix``, ``best-worst`` (the images with the highest
and lowest per-image AP, detections drawn in class colours, ground truth in thin white),
``config`` (the config file of the work dir, verbatim) and ``environment``
(:func:`~detforge.commands.collect_env.collect_env`).

:func:`build_report` takes what the command gathered (data set, results, logs, config text)
and returns the HTML; nothing here reads a checkpoint or runs a model.
"""
from __future__ import annotations

import base64
import html
import io
import os
import os.path as osp
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ['ReportInputs', 'build_report', 'write_report', 'png_data_uri', 'REPORT_SECTIONS']

REPORT_SECTIONS = ('summary', 'curves', 'per-class-ap', 'pr-curves', 'confusion-matrix',
                   'best-worst', 'config', 'environment')
_TITLES = {'summary': 'Summary', 'curves': 'Training curves', 'per-class-ap': 'Per-class AP',
           'pr-curves': 'Precision-recall curves', 'confusion-matrix': 'Confusion matrix',
           'best-worst': 'Best and worst images', 'config': 'Config',
           'environment': 'Environment'}

_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0;
       color: #1d1d1f; background: #f5f5f7; }
header { background: #1d2b3a; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; color: #c7d0d9; font-size: 13px; }
nav { background: #fff; border-bottom: 1px solid #ddd; padding: 8px 32px; font-size: 14px; }
nav a { margin-right: 16px; color: #0a58ca; text-decoration: none; }
main { padding: 8px 32px 40px 32px; max-width: 1200px; }
section { background: #fff; border: 1px solid #e0e0e0; border-radius: 6px; margin: 16px 0;
          padding: 12px 20px 18px 20px; }
h2 { font-size: 18px; margin: 6px 0 12px 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th { background: #f0f2f5; }
td.name, th.name { text-align: left; }
img.figure { max-width: 100%; height: auto; display: block; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #e0e0e0; border-radius: 4px; padding: 6px; width: 470px; }
.card img { width: 100%; height: auto; display: block; }
.card p { margin: 4px 0 0 0; font-size: 12px; word-break: break-all; }
pre { background: #f6f8fa; border: 1px solid #e0e0e0; padding: 10px; font-size: 12px;
      overflow-x: auto; white-space: pre; max-height: 600px; }
.note { color: #666; font-size: 13px; }
.bar { display: inline-block; height: 10px; background: #4c8bf5; vertical-align: middle; }
"""


@dataclass
class ReportInputs:
    """What the page is made of.

    ``dataset`` and ``results`` (per image, per class ``(n, 5)`` arrays, dataset order) may
    be ``None`` (no evaluation: the page says so); ``json_logs`` are ``*.log.json`` paths.
    """
    work_dir: str
    config_path: str | None
    config_text: str
    checkpoint: str | None = None
    split: str = 'test'
    dataset: object = None
    results: list | None = None
    json_logs: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    score_thr: float = 0.3
    iou_thr: float = 0.5
    topk: int = 4
    notes: list = field(default_factory=list)


# ----------------------------------------------------------------------------- PNG helpers
def png_data_uri(png: bytes) -> str:
    return 'data:image/png;base64,' + base64.b64encode(png).decode('ascii')


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _image_png(bgr: np.ndarray, max_side: int = 720) -> bytes:
    import cv2
    scale = max_side / max(bgr.shape[:2])
    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode('.png', bgr)
    if not ok:
        raise ValueError('could not encode an image as PNG')
    return buf.tobytes()


def _img_tag(png: bytes, alt: str, css: str = 'figure') -> str:
    return f'<img class="{css}" alt="{html.escape(alt)}" src="{png_data_uri(png)}">'


def _bbox_results(results):
    """Box part of each image's result (a mask detector's are ``(boxes, masks)``)."""
    return [r[0] if isinstance(r, tuple) else r for r in results]


# ----------------------------------------------------------------------------- sections
def _curve_panels(logs: list[dict]) -> list[list[str]]:
    """The panels, each a list of keys drawn together: total loss, up to 4 of its terms
    (each with its validation counterpart ``val_loss...`` when the run had a val phase), lr,
    then up to 4 validation metrics (AP-like keys)."""
    present = set().union(*[set(log) for log in logs]) if logs else set()
    losses = [k for k in ('loss',) if k in present]
    losses += sorted(k for k in present if k.startswith('loss_'))[:4]
    panels = [[k] + [v for v in ('val_' + k,) if v in present] for k in losses]
    panels += [['lr']] if 'lr' in present else []
    metrics = sorted(k for k in present if k.endswith(('_mAP', '_mAP_50', 'mAP')) or k == 'AR@100')
    panels += [[k] for k in metrics[:4]]
    return panels


def curves_figure(logs: dict[str, dict], panels: list[list[str]]) -> bytes:
    """A grid of panels (each a list of keys), one line per log and key
    (``logs``: ``{name: load_json_log(..., val_prefix='val_')}``)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis('off')
    steps_seen = [s for log in logs.values() for keys in panels for key in keys
                  for s, _ in log.get(key, [])]
    for ax, keys in zip(axes.flat, panels):
        for name, log in logs.items():
            for key in keys:
                points = log.get(key, [])
                if not points:
                    continue
                steps, values = zip(*points)
                label = name if len(keys) == 1 else (
                    f'{name}: {key}' if len(logs) > 1 else
                    ('validation' if key.startswith('val_') else 'training'))
                ax.plot(steps, values, marker='o' if len(points) < 20 else None,
                        markersize=3, lw=1.3, label=label,
                        ls='--' if key.startswith('val_') else '-')
        ax.set_title(keys[0], fontsize=10)
        ax.set_xlabel('iteration', fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.ticklabel_format(axis='y', style='sci', scilimits=(-4, 4), useOffset=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if steps_seen:  # one iteration axis for all panels: metrics line up with losses
            pad = max(1, (max(steps_seen) - min(steps_seen)) * 0.03)
            ax.set_xlim(min(steps_seen) - pad, max(steps_seen) + pad)
        if len(logs) > 1 or len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _figure_png(fig)


def curves_section(inp: ReportInputs) -> str:
    from detforge.visualization.curves import load_json_log
    paths = [p for p in inp.json_logs if osp.isfile(p)]
    if not paths:
        return '<p class="note">No <code>*.log.json</code> training log in the work dir.</p>'
    logs = {osp.basename(p).replace('.log.json', ''): load_json_log(p, val_prefix='val_')
            for p in paths}
    panels = _curve_panels(list(logs.values()))
    if not panels:
        return '<p class="note">The training logs have no loss, lr or metric values.</p>'
    names = ', '.join(html.escape(osp.basename(p)) for p in paths)
    return (_img_tag(curves_figure(logs, panels), 'training curves') +
            f'<p class="note">From {names}. Validation values are drawn at the training '
            'iteration they followed.</p>')


def _fmt(v) -> str:
    return 'n/a' if v is None or (isinstance(v, float) and np.isnan(v)) or v < 0 else f'{v:.3f}'


def per_class_ap_section(pr) -> str:
    rows = []
    for name, (ap, ap50, ap75), n in zip(pr.class_names, pr.per_class_ap, pr.num_gts):
        width = 0 if np.isnan(ap) else int(round(ap * 120))
        rows.append(f'<tr><td class="name">{html.escape(str(name))}</td><td>{_fmt(ap)}</td>'
                    f'<td>{_fmt(ap50)}</td><td>{_fmt(ap75)}</td><td>{int(n)}</td>'
                    f'<td class="name"><span class="bar" style="width:{width}px"></span></td>'
                    '</tr>')
    return ('<table><tr><th class="name">class</th><th>AP</th><th>AP50</th><th>AP75</th>'
            '<th>GT boxes</th><th class="name">AP</th></tr>' + ''.join(rows) + '</table>'
            '<p class="note">COCO box AP (IoU 0.50:0.95, area all, up to 1000 detections per '
            'image, as MMDetection 2.x); n/a: no ground truth of that class.</p>')


def pr_curves_figure(pr) -> bytes:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    k = len(pr.class_names)
    cols = min(4, max(k, 1))
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[k:]:
        ax.axis('off')
    for c, (ax, name) in enumerate(zip(axes.flat, pr.class_names)):
        for iou, style, label in ((0.5, '-', 'IoU 0.50'), (0.75, '--', 'IoU 0.75'),
                                  (None, ':', 'IoU 0.50:0.95')):
            ax.plot(pr.recall_points, pr.curve(c, iou), style, lw=1.5, label=label)
        ap = pr.per_class_ap[c, 0]
        ax.set_title(f'{name} (AP {_fmt(ap)})', fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_xlabel('recall', fontsize=9)
        ax.set_ylabel('precision', fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.06 if rows == 1 else 0.03, 1, 1))
    fig.legend(handles, labels, loc='lower center', ncol=3, fontsize=9, frameon=False)
    return _figure_png(fig)


def confusion_matrix_figure(dataset, results, score_thr, iou_thr) -> bytes:
    from detforge.commands.confusion_matrix import (calculate_confusion_matrix,
                                                    plot_confusion_matrix)
    matrix = calculate_confusion_matrix(dataset, results, score_thr, iou_thr)
    buf = io.BytesIO()
    plot_confusion_matrix(matrix, list(dataset.CLASSES) + ['background'], buf)
    return buf.getvalue()


def best_worst_section(inp: ReportInputs, results) -> str:
    from detforge.commands.analyze_results import draw_result_with_gt, per_image_ap
    dataset = inp.dataset
    aps = per_image_ap(dataset, results)
    order = np.argsort(-aps, kind='stable')
    k = min(inp.topk, (len(order) + 1) // 2)
    parts = []
    for title, indices in (('Best', order[:k]), ('Worst', order[::-1][:k])):
        cards = []
        for i in indices.tolist():
            name = osp.basename(dataset.data_infos[i]['filename'])
            ann = dataset.get_ann_info(i)
            num_gt = len(np.asarray(ann['bboxes']).reshape(-1, 4))
            num_det = int(sum((np.asarray(r).reshape(-1, 5)[:, 4] >= inp.score_thr).sum()
                              for r in results[i]))
            png = _image_png(draw_result_with_gt(dataset, i, results[i], inp.score_thr))
            cards.append(f'<div class="card">{_img_tag(png, name, "thumb")}<p><b>AP '
                         f'{aps[i]:.3f}</b> &middot; {num_det} detections &middot; {num_gt} '
                         f'GT &middot; {html.escape(name)}</p></div>')
        parts.append(f'<h3>{title} {len(cards)} of {len(order)} images</h3>'
                     f'<div class="grid">{"".join(cards)}</div>')
    return ''.join(parts) + (
        f'<p class="note">Per-image AP: VOC matching averaged over IoU 0.50:0.95 (as '
        f'<code>detforge analyze-results</code>); drawn: detections with score &ge; '
        f'{inp.score_thr} in class colours, ground truth in thin white.</p>')


def _summary_section(inp: ReportInputs, pr) -> str:
    rows = [('work dir', inp.work_dir), ('config', inp.config_path or 'n/a'),
            ('checkpoint', inp.checkpoint or 'n/a'), ('evaluated on', inp.split)]
    if inp.results is not None:
        rows.append(('images', str(len(inp.results))))
    out = '<table>' + ''.join(f'<tr><th class="name">{html.escape(k)}</th><td class="name">'
                              f'{html.escape(str(v))}</td></tr>' for k, v in rows) + '</table>'
    if pr is not None:
        out += ('<h3>COCO box AP</h3><table><tr>' +
                ''.join(f'<th>bbox_{k}</th>' for k in pr.stats) + '</tr><tr>' +
                ''.join(f'<td>{_fmt(v)}</td>' for v in pr.stats.values()) + '</tr></table>')
    for note in inp.notes:
        out += f'<p class="note">{html.escape(note)}</p>'
    return out


def _env_section(env: dict) -> str:
    return '<table>' + ''.join(f'<tr><th class="name">{html.escape(str(k))}</th>'
                               f'<td class="name">{html.escape(str(v))}</td></tr>'
                               for k, v in env.items()) + '</table>'


# ----------------------------------------------------------------------------- the page
def build_report(inp: ReportInputs) -> str:
    """The HTML page (a string) of :class:`ReportInputs`."""
    import matplotlib
    matplotlib.use('Agg')
    from detforge import __version__
    body: dict[str, str] = {}
    pr = None
    no_eval = '<p class="note">No evaluation: no data set or results.</p>'
    if inp.dataset is not None and inp.results is not None:
        from detforge.evaluation.precision_recall import coco_precision_recall
        results = _bbox_results(inp.results)
        pr = coco_precision_recall(inp.dataset, results)
        body['per-class-ap'] = per_class_ap_section(pr)
        body['pr-curves'] = (_img_tag(pr_curves_figure(pr), 'precision-recall curves') +
                             '<p class="note">COCO interpolated precision at 101 recall '
                             'points (the curves AP averages), area all.</p>')
        body['confusion-matrix'] = (
            _img_tag(confusion_matrix_figure(inp.dataset, results, inp.score_thr,
                                             inp.iou_thr), 'confusion matrix') +
            f'<p class="note">Rows: true class; columns: predicted class; background: '
            f'detections matching no box / boxes no detection of their class found. '
            f'Detections with score &ge; {inp.score_thr}, IoU &ge; {inp.iou_thr}; cells: '
            f'% of the row (count).</p>')
        body['best-worst'] = best_worst_section(inp, results)
    body['summary'] = _summary_section(inp, pr)
    body['curves'] = curves_section(inp)
    body['config'] = f'<pre>{html.escape(inp.config_text)}</pre>'
    body['environment'] = _env_section(inp.env)
    nav = ''.join(f'<a href="#{s}">{_TITLES[s]}</a>' for s in REPORT_SECTIONS)
    sections = ''.join(f'<section id="{s}"><h2>{_TITLES[s]}</h2>{body.get(s, no_eval)}'
                       '</section>' for s in REPORT_SECTIONS)
    title = f'detforge report: {osp.basename(osp.normpath(inp.work_dir))}'
    stamp = time.strftime('%Y-%m-%d %H:%M:%S %Z')
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>'
            f'<header><h1>{html.escape(title)}</h1><p>written {stamp} by detforge '
            f'{html.escape(__version__)}</p></header><nav>{nav}</nav><main>{sections}</main>'
            '</body></html>\n')


def write_report(inp: ReportInputs, out_file: str) -> str:
    page = build_report(inp)
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    with open(out_file, 'w', encoding='utf-8') as f:
        f.write(page)
    return out_file
