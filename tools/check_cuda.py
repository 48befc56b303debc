"""The CUDA paths, checked on a machine with a GPU (CI has none; run this by hand there).

    python tools/check_cuda.py --out OUT_DIR [--budget-s 500]

1. Inference parity CPU vs CUDA (float32, TF32 off): RetinaNet-R18, Faster R-CNN-R18 and
   Mask R-CNN-R18 from the shipped configs, seeded random weights (class logits of RetinaNet
   scaled so there are detections), a batch of two real BCCD images of different sizes
   through ``inference_detector``; max differences of boxes and scores of the detections
   (each CUDA detection paired with the nearest CPU one of its class, since rows of nearly
   equal score may come in another order; classes with a different count are reported).
2. Training through ``detforge train`` on the bundled BCCD, the BCCD-320 RetinaNet recipe
   (``configs/retinanet/retinanet_r18_fpn_12e_bccd320.py``, 12 epochs, evaluated on test)
   with: float32; ``fp16=dict(loss_scale='dynamic')`` (float16 autocast + GradScaler);
   float16 + ``channels_last=True``; ``amp=dict(dtype='bfloat16')``; and float32 under
   ``torchrun --nproc_per_node 1 ... --launcher pytorch`` (the NCCL process group). Each run
   reports its final bbox mAP, the median seconds per iteration and whether every logged
   loss was finite. Runs are skipped (and said so) when ``--budget-s`` would be exceeded.

Writes ``OUT_DIR/summary.json`` and ``OUT_DIR/summary.txt`` (and prints the text).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = 'configs/retinanet/retinanet_r18_fpn_12e_bccd320.py'
IMAGES = ['data/bccd/JPEGImages/BloodImage_00000.jpg', 'data/bccd/JPEGImages/BloodImage_00001.jpg']


def say(lines: list[str], text: str) -> None:
    print(text, flush=True)
    lines.append(text)


# ------------------------------------------------------------------ 1. inference parity
def _detections(model, imgs):
    import numpy as np
    from detforge.apis.inference import inference_detector
    out = inference_detector(model, imgs)
    per_image = []
    for result in out:
        bbox = result[0] if isinstance(result, tuple) else result
        per_image.append([np.asarray(d, dtype=np.float64) for d in bbox])
    return per_image


def inference_parity(lines: list[str], device: str = 'cuda') -> dict:
    import cv2
    import numpy as np
    import torch
    from detforge.apis.inference import init_detector
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    img0 = cv2.imread(str(REPO / IMAGES[0]))
    img1 = cv2.imread(str(REPO / IMAGES[1]))[:411, :533]  # another, odd size
    imgs = [img0, img1]
    results = {}
    for name, config in [('retinanet_r18', RECIPE),
                         ('faster_rcnn_r18', 'configs/faster_rcnn/faster_rcnn_r18_fpn_1x_bccd.py'),
                         ('mask_rcnn_r18', 'configs/mask_rcnn/mask_rcnn_r18_fpn_12e_pennfudan.py')]:
        torch.manual_seed(0)
        model = init_detector(str(REPO / config), None, device='cpu')
        if name == 'retinanet_r18':
            with torch.no_grad():  # the prior bias keeps scores ~0.01: lift it (spread kept)
                model.bbox_head.retina_cls.bias.fill_(-1.0)
                model.bbox_head.retina_cls.weight.mul_(5)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        cpu = _detections(model, imgs)
        model = model.to(device)
        model.load_state_dict(state)
        t0 = time.time()
        gpu = _detections(model, imgs)
        if device == 'cuda':
            torch.cuda.synchronize()
        box_diff = score_diff = 0.0
        n = count_mismatch = 0
        for a_img, b_img in zip(cpu, gpu):
            for a, b in zip(a_img, b_img):
                if len(a) != len(b):
                    count_mismatch += 1
                    continue
                n += len(a)
                if len(a):
                    # rows of (nearly) equal score may come in another order: pair each GPU
                    # row with the nearest CPU row (boxes and score together)
                    dist = (np.abs(b[:, None, :4] - a[None, :, :4]).max(-1)
                            + 1e4 * np.abs(b[:, None, 4] - a[None, :, 4]))
                    nearest = a[dist.argmin(1)]
                    box_diff = max(box_diff, float(np.abs(nearest[:, :4] - b[:, :4]).max()))
                    score_diff = max(score_diff, float(np.abs(nearest[:, 4] - b[:, 4]).max()))
        results[name] = dict(detections=n, classes_with_other_count=count_mismatch,
                             max_box_diff_px=box_diff, max_score_diff=score_diff,
                             gpu_seconds=round(time.time() - t0, 3))
        say(lines, f'parity {name}: {n} detections compared, max |box| {box_diff:.2e} px, '
                   f'max |score| {score_diff:.2e}, classes with a different count: {count_mismatch}')
        del model
        if device == 'cuda':
            torch.cuda.empty_cache()
    return results


# ------------------------------------------------------------------ 2. training runs
OVERRIDES = {
    'fp32': '',
    'fp16': "fp16 = dict(loss_scale='dynamic')\n",
    'fp16_channels_last': "fp16 = dict(loss_scale='dynamic')\nchannels_last = True\n",
    'bf16': "amp = dict(dtype='bfloat16')\n",
    'fp32_torchrun_nccl': '',
}


def _log_summary(work_dir: Path) -> dict:
    logs = sorted(work_dir.glob('*.log.json'))
    if not logs:
        return dict(error='no json log')
    times, losses, maps = [], [], []
    for line in logs[-1].read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get('mode') == 'train':
            if 'time' in rec:
                times.append(rec['time'])
            if 'loss' in rec:
                losses.append(rec['loss'])
        if 'bbox_mAP' in rec:
            maps.append(rec['bbox_mAP'])
    return dict(bbox_mAP=maps[-1] if maps else None,
                median_s_per_iter=statistics.median(times) if times else None,
                losses_logged=len(losses),
                all_losses_finite=all(math.isfinite(v) for v in losses),
                last_loss=losses[-1] if losses else None)


def train_runs(lines: list[str], budget_s: float, started: float, workers: int) -> dict:
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix='detforge_cuda_'))
    for name, extra in OVERRIDES.items():
        spent = time.time() - started
        if spent > budget_s - 90:
            say(lines, f'train {name}: SKIPPED (budget: {spent:.0f} s of {budget_s:.0f} s spent)')
            results[name] = dict(skipped=True)
            continue
        cfg = tmp / f'{name}.py'
        cfg.write_text(f"_base_ = {str(REPO / RECIPE)!r}\n"
                       f"data = dict(workers_per_gpu={workers})\n"
                       "log_config = dict(interval=10)\n" + extra)
        work = tmp / name
        if name.endswith('torchrun_nccl'):
            cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '1',
                   '-m', 'detforge', 'train', str(cfg), '--work-dir', str(work),
                   '--launcher', 'pytorch', '--seed', '0', '--no-progress']
        else:
            cmd = [sys.executable, '-m', 'detforge', 'train', str(cfg), '--work-dir', str(work),
                   '--device', 'cuda', '--seed', '0', '--no-progress']
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.time() - t0
        summary = dict(_log_summary(work), returncode=proc.returncode, wall_s=round(wall, 1))
        if proc.returncode != 0:
            summary['stderr_tail'] = proc.stderr[-3000:]
        if name.endswith('torchrun_nccl'):
            text = ''.join(p.read_text() for p in work.glob('*.log'))
            summary['nccl_in_log'] = 'nccl' in text.lower()
        results[name] = summary
        say(lines, f'train {name}: rc {proc.returncode}, wall {wall:.0f} s, bbox_mAP '
                   f'{summary.get("bbox_mAP")}, median s/iter {summary.get("median_s_per_iter")}, '
                   f'losses finite {summary.get("all_losses_finite")} '
                   f'({summary.get("losses_logged")} logged)')
        if proc.returncode != 0:
            say(lines, proc.stderr[-2000:])
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True)
    parser.add_argument('--budget-s', type=float, default=500)
    parser.add_argument('--workers', type=int, default=6)
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--parity-device', default='cuda',
                        help='the device compared with the CPU (cpu: a smoke run of this script)')
    args = parser.parse_args(argv)
    started = time.time()
    import torch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    if args.parity_device == 'cuda' and not torch.cuda.is_available():
        print('no CUDA GPU here', file=sys.stderr)
        return 2
    commit = os.environ.get('DETFORGE_COMMIT') or subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
        text=True).stdout.strip() or 'unknown'
    say(lines, f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, detforge {commit}, '
               f'torch {torch.__version__}, '
               f'{torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"}, '
               f'{os.cpu_count()} CPUs')
    summary = dict(parity=inference_parity(lines, args.parity_device))
    if not args.skip_train:
        summary['train'] = train_runs(lines, args.budget_s, started, args.workers)
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    (out / 'summary.txt').write_text('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
