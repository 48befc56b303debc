"""List the model names of ``detforge train --data PATH --model NAME``.

    detforge list-models

Each name is a shipped config. AP, AP50 and speed are the last run of that config recorded
in ``benchmarks/accuracy.md`` (COCO box AP on the config's test set after training from
scratch; seconds per training iteration of 4 images and per test image on the machine named
there, a CPU or a GPU, with the date of the run). A model never run that way says
"not measured".
"""
from __future__ import annotations

NAME = 'list-models'
HELP = 'the model names of `detforge train --data PATH --model NAME`, with recorded AP and speed'


def add_arguments(parser) -> None:
    pass  # no options: the table lists every name


def main(args) -> int:
    from detforge.apis.model_names import MODEL_NAMES, recorded_measurements
    from detforge.evaluation.table import format_table
    measured, caveat = recorded_measurements()
    rows = []
    for model in MODEL_NAMES.values():
        m = measured.get(model.config)
        if m is None:
            rows.append([model.name, 'not measured', '', '', '', '', model.config])
        else:
            rows.append([model.name, m.ap, m.ap50, m.s_per_iter, m.s_per_test_image,
                         f'{m.date} ({m.machine})', model.config])
    print('AP: COCO box AP on the config\'s test set after training from scratch (BCCD test, '
          '72 images; Penn-Fudan test, 50 images, for mask_rcnn_r18); s/iter: one training '
          'iteration of 4 images and s/img: test time per image, on the machine named.')
    print(format_table(rows, headers=['model', 'AP', 'AP50', 's/iter', 's/img',
                                      'measured (machine)', 'config']))
    print('Source: benchmarks/accuracy.md (benchmarks/bench_accuracy.py); the detforge commit '
          'of each run is not recorded there.')
    if caveat:
        print(f'Note from that file: {caveat}')
    print('Train one on your data: detforge train --data PATH --model NAME')
    return 0
