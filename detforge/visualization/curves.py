"""Plot training curves (loss, lr, mAP ...) from the JSON-lines logs of runs."""
from __future__ import annotations

import json
import os
import os.path as osp
from collections import defaultdict

__all__ = ['load_json_log', 'plot_curves']


def load_json_log(path: str | os.PathLike,
                  val_prefix: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` from a ``*.log.json`` file.

    ``step`` counts training iterations over the whole run (train lines give ``iter``
    within their epoch; the epoch length is learnt from the lines themselves), and a val
    line takes the step of the last train line before it. With ``val_prefix`` (e.g.
    ``'val_'``) the loss keys of val lines (``loss``, ``loss_cls``, ... of a
    ``('val', 1)`` workflow phase) are stored under ``val_prefix + key``, apart from the
    training losses of the same name.
    """
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    epoch_len: dict[int, int] = {}
    last_step = 0
    lines = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and 'mode' in record:
                lines.append(record)
                if record['mode'] == 'train' and 'epoch' in record:
                    epoch_len[record['epoch']] = max(epoch_len.get(record['epoch'], 0),
                                                     record.get('iter', 0))
    by_epoch = any(r.get('iter', 0) < last for r, last in zip(
        [r for r in lines if r['mode'] == 'train'][1:],
        [r.get('iter', 0) for r in lines if r['mode'] == 'train']))
    for record in lines:
        if record['mode'] == 'train':
            step = record.get('iter', 0)
            if by_epoch:
                step += sum(n for e, n in epoch_len.items() if e < record.get('epoch', 1))
            last_step = step
        else:
            step = last_step
        for key, value in record.items():
            if key in ('mode', 'epoch', 'iter') or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                if val_prefix and record['mode'] != 'train' and key.startswith('loss'):
                    key = val_prefix + key
                series[key].append((step, float(value)))
    return dict(series)


def plot_curves(json_logs: list, keys: list[str], out_file: str | os.PathLike,
                title: str | None = None, legend: list[str] | None = None) -> str:
    """One panel per key (e.g. ``['loss', 'lr', 'bbox_mAP']``), one line per log file;
    written as PNG to ``out_file`` (matplotlib's Agg backend, no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if isinstance(json_logs, (str, os.PathLike)):
        json_logs = [json_logs]
    logs = [load_json_log(p) for p in json_logs]
    legend = legend or [osp.basename(os.fspath(p)).replace('.log.json', '') for p in json_logs]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.6 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        for log, name in zip(logs, legend):
            points = log.get(key, [])
            if not points:
                continue
            steps, values = zip(*points)
            ax.plot(steps, values, marker='o' if len(points) < 20 else None, markersize=3,
                    label=name)
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if key == 'lr':
            ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
    axes[-1, 0].set_xlabel('iteration')
    if len(logs) > 1:
        axes[0, 0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_file = os.fspath(out_file)
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    return out_file
