"""PNG plots of a :class:`~detforge.data.data_check.DataReport` (``detforge check-data``):
class counts per split, box sizes and aspect ratios (with the anchors of a config), and the
best anchor IoU of every gt box."""
from __future__ import annotations

import os
import os.path as osp

import numpy as np

__all__ = ['plot_data_report']


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only; no display needed
    import matplotlib.pyplot as plt
    return plt


def plot_data_report(report, out_dir: str) -> list[str]:
    """Write ``class_counts.png``, ``box_sizes.png``, ``aspect_ratios.png`` and (with anchors)
    ``anchor_iou.png`` into ``out_dir``; returns their paths."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    stats, classes = report.stats, list(report.classes)

    def save(fig, name):
        path = osp.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    if stats and classes:
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(classes) + 2), 3.5))
        width = 0.8 / len(stats)
        x = np.arange(len(classes))
        for k, (split, s) in enumerate(stats.items()):
            ax.bar(x + k * width, s['class_counts'], width, label=split)
        ax.set_xticks(x + 0.4 - width / 2, classes, rotation=45 if len(classes) > 6 else 0,
                      ha='right' if len(classes) > 6 else 'center')
        ax.set_ylabel('boxes')
        ax.set_title('boxes per class')
        ax.legend()
        save(fig, 'class_counts.png')

    anchors = report.anchors
    widths = np.concatenate([s['widths'] for s in stats.values()]) if stats else np.zeros(0)
    heights = np.concatenate([s['heights'] for s in stats.values()]) if stats else np.zeros(0)
    if len(widths):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        size = np.sqrt(np.clip(widths * heights, 1e-6, None))
        bins = np.geomspace(max(size.min(), 1), max(size.max(), 2), 40)
        ax.hist(size, bins=bins, alpha=0.7, label='gt boxes (file pixels)')
        if anchors:
            ax.hist(anchors['sizes'], bins=bins, alpha=0.5, label='gt boxes (training scale)')
            for s in anchors['anchor_sizes']:
                ax.axvline(s, color='k', lw=0.6, ls='--')
        ax.set_xscale('log')
        from matplotlib.ticker import NullFormatter, ScalarFormatter
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels overlap
        ax.set_xlabel('sqrt(w * h), px' + ('  (dashed: anchor sizes)' if anchors else ''))
        ax.set_ylabel('boxes')
        ax.legend()
        save(fig, 'box_sizes.png')

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ratio = np.clip(heights, 1e-6, None) / np.clip(widths, 1e-6, None)
        ax.hist(np.log2(ratio), bins=40)
        if anchors:
            for r in anchors['ratios']:
                ax.axvline(np.log2(r), color='k', lw=0.8, ls='--')
        ax.set_xlabel('log2(h / w)' + ('  (dashed: anchor ratios)' if anchors else ''))
        ax.set_ylabel('boxes')
        save(fig, 'aspect_ratios.png')

    if anchors and len(anchors['best_ious']):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(anchors['best_ious'], bins=np.linspace(0, 1, 41))
        ax.axvline(anchors['pos_iou_thr'], color='r', ls='--', label='pos_iou_thr')
        ax.set_xlabel('best IoU of a gt box with any anchor')
        ax.set_ylabel('boxes')
        ax.legend()
        save(fig, 'anchor_iou.png')
    return paths
