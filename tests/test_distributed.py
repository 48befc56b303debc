"""Distributed training on torch.distributed (gloo, CPU): DDP and SyncBN give the gradients of
one big batch, SLURM variables start the right ranks, ``torchrun -m detforge train`` writes
one set of artefacts and evaluates like one process, a dead rank stops the others, and bf16
autocast on the CPU.

Two ranks are started once per module (``torch.multiprocessing.spawn``, a free port from a
socket bound to port 0) and run every check that needs a process group; the tests below
assert on what they report.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import data_options

TINY = 'tests/configs/retinanet_r18_tiny_bccd.py'
STEPS = 5
# 96, not 64: at 64 the FPN's P6 is 1x1, and oneDNN's bfloat16 weight gradient of the
# stride-2 conv making P7 from a 1x1 input is garbage on the CPU (docs/distributed.md)
IMG = 96


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def one_thread():
    """The tiny model is far faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- tiny model
def tiny_retinanet_cfg(norm_cfg: dict, norm_eval: bool) -> dict:
    """RetinaNet, ResNet-18 with 8 base channels, FPN and head with 16: runs in milliseconds
    on a 96 x 96 image."""
    return dict(
        type='RetinaNet',
        backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3),
                      frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=norm_eval,
                      init_cfg=None),
        neck=dict(type='FPN', in_channels=[16, 32, 64], out_channels=16, start_level=0,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0, ignore_iof_thr=-1),
                       allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))


VARIANTS = {
    # batch statistics frozen (eval-mode BN): nothing depends on how the batch is split
    'frozen_bn': (dict(type='BN', requires_grad=True), True),
    # batch statistics of the whole distributed batch
    'sync_bn': (dict(type='SyncBN', requires_grad=True), False),
    # frozen BN, weights in NHWC (config channels_last=True): DDP's buckets follow the layout
    'channels_last': (dict(type='BN', requires_grad=True), True),
}


def build_tiny(variant: str):
    from detforge.models import build_detector
    from detforge.utils.setup_env import model_to_device
    torch.manual_seed(0)
    model = build_detector(tiny_retinanet_cfg(*VARIANTS[variant]))
    model.init_weights()
    return model_to_device(model, 'cpu', dict(channels_last=variant == 'channels_last'))


def tiny_batch(indices) -> dict:
    """Images ``indices`` of a fixed set of 2: different pixels and labels, the same box
    layout. RetinaNet normalises its losses by the number of positive anchors of the batch
    on each rank; with equal counts per image the mean over ranks of the per-rank losses
    is exactly the loss of the whole batch, which is what DDP must reproduce."""
    g = torch.Generator().manual_seed(1)
    imgs = torch.randn(2, 3, IMG, IMG, generator=g)
    boxes = torch.tensor([[4., 6., 30., 34.], [28., 20., 60., 58.]])
    labels = [torch.tensor([0, 2]), torch.tensor([1, 1])]
    meta = dict(img_shape=(IMG, IMG, 3), ori_shape=(IMG, IMG, 3), pad_shape=(IMG, IMG, 3),
                batch_input_shape=(IMG, IMG), scale_factor=np.ones(4, np.float32), flip=False)
    return dict(img=imgs[list(indices)], img_metas=[dict(meta) for _ in indices],
                gt_bboxes=[boxes.clone() for _ in indices],
                gt_labels=[labels[i] for i in indices])


def train_steps(model, indices, steps: int = STEPS) -> dict:
    """``steps`` SGD steps on images ``indices``; the final weights and buffers."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        outputs = model.train_step(tiny_batch(indices), optimizer)
        optimizer.zero_grad()
        outputs['loss'].backward()
        optimizer.step()
    from detforge.engine.dist_utils import unwrap_model
    return {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}


class HookRunner:
    """The runner attributes an optimizer hook uses."""

    def __init__(self, model, lr=0.01, momentum=0.9):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        self.outputs: dict = {}
        self.logged: list[dict] = []
        self.autocast = contextlib.nullcontext

    @property
    def log_buffer(self):
        return self

    def update(self, values, count=1):
        self.logged.append(dict(values))


def amp_train_steps(model, indices, dtype: str, steps: int = 3) -> dict:
    """``steps`` steps through :class:`AmpOptimizerHook` (its autocast and its backward)."""
    from detforge.engine.dist_utils import unwrap_model
    from detforge.engine.hooks.optimizer import AmpOptimizerHook
    hook = AmpOptimizerHook(dtype=dtype)
    runner = HookRunner(model)
    hook.before_run(runner)
    model.train()
    for _ in range(steps):
        with runner.autocast():
            runner.outputs = model.train_step(tiny_batch(indices), runner.optimizer)
        hook.after_train_iter(runner)
    hook.after_run(runner)
    return {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}


# ----------------------------------------------------------------------------- the 2 ranks
def _rank_main(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank: start through SLURM's variables, then run every distributed check."""
    torch.set_num_threads(1)
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        os.environ.pop(key, None)
    os.environ.update(SLURM_PROCID=str(rank), SLURM_NTASKS=str(world_size),
                      SLURM_LOCALID=str(rank), SLURM_NODELIST='localhost')
    from detforge.engine.dist_utils import (all_reduce_dict, get_dist_info, init_dist,
                                            reduce_mean, wrap_distributed)
    init_dist('slurm', backend='gloo', port=port, timeout_s=60)
    report = dict(env={k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK',
                                                  'MASTER_ADDR', 'MASTER_PORT')},
                  dist_info=get_dist_info(), backend=dist.get_backend())
    report['reduce_mean'] = reduce_mean(torch.tensor([float(rank)])).item()
    report['all_reduce_dict'] = all_reduce_dict({'loss': 1.0 + rank, 'acc': 10.0 * rank})

    # SyncBN alone: forward and input gradient against BN over the whole batch
    from detforge.models.layers import build_norm_layer
    torch.manual_seed(0)
    x_all = torch.randn(4, 3, 5, 5) * 3 + 1
    upstream = torch.randn(4, 3, 5, 5)
    _, sync_bn = build_norm_layer(dict(type='SyncBN'), 3)
    _, plain_bn = build_norm_layer(dict(type='BN'), 3)
    x = x_all[2 * rank:2 * rank + 2].clone().requires_grad_()
    y = sync_bn(x)
    (y * upstream[2 * rank:2 * rank + 2]).sum().backward()
    report['syncbn'] = dict(y=y.detach(), grad=x.grad, running_mean=sync_bn.running_mean,
                            running_var=sync_bn.running_var,
                            unsynced_y=plain_bn(x.detach()).detach())

    # 2 ranks x batch 1 for STEPS steps, each variant
    report['weights'] = {}
    for variant in VARIANTS:
        model = wrap_distributed(build_tiny(variant))
        report['weights'][variant] = train_steps(model, [rank])
    # the runner logs the mean over ranks of each rank's loss
    import logging
    from detforge.engine import EpochBasedRunner
    model = wrap_distributed(build_tiny('frozen_bn'))
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.),
                              work_dir=os.path.join(out_dir, f'runner{rank}'),
                              logger=logging.getLogger('detforge.test'), max_epochs=1)
    runner.configure_step(dict())  # a whole step: forward, log, backward (DDP), step
    calls = []
    all_reduce = dist.all_reduce

    def counting_all_reduce(*args, **kwargs):
        calls.append(args[0].numel())
        return all_reduce(*args, **kwargs)
    dist.all_reduce = counting_all_reduce  # DDP's gradient buckets do not go through it
    try:
        runner.run_iter(tiny_batch([rank]), train_mode=True)
    finally:
        dist.all_reduce = all_reduce
    report['log'] = dict(local=runner.outputs['loss'].item(),
                         logged=runner.log_buffer.val_history['loss'][-1],
                         all_reduce_calls=calls)

    # bfloat16 autocast through AmpOptimizerHook, DDP over gloo
    model = wrap_distributed(build_tiny('frozen_bn'))
    try:
        report['bf16'] = amp_train_steps(model, [rank], dtype='bfloat16')
    except RuntimeError as e:  # reported by the test, without failing the other checks
        report['bf16'] = f'{type(e).__name__}: {e}'
    torch.save(report, os.path.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


@pytest.fixture(scope='module')
def two_ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('two_ranks')
    start = time.time()
    mp.spawn(_rank_main, args=(2, free_port(), str(out_dir)), nprocs=2, join=True)
    reports = [torch.load(out_dir / f'rank{r}.pth', weights_only=False) for r in range(2)]
    return reports, time.time() - start


def test_slurm_variables_start_the_right_ranks(two_ranks):
    reports, _ = two_ranks
    for rank, report in enumerate(reports):
        assert report['dist_info'] == (rank, 2)
        assert report['env']['RANK'] == str(rank) and report['env']['WORLD_SIZE'] == '2'
        assert report['env']['LOCAL_RANK'] == str(rank)
        assert report['env']['MASTER_ADDR'] == 'localhost'  # first host of SLURM_NODELIST
        assert report['backend'] == 'gloo'


def test_reduce_mean_and_all_reduce_dict_average_over_ranks(two_ranks):
    reports, _ = two_ranks
    for report in reports:
        assert report['reduce_mean'] == pytest.approx(0.5)
        assert report['all_reduce_dict'] == pytest.approx({'loss': 1.5, 'acc': 5.0})


def test_logged_losses_are_averaged_over_ranks(two_ranks):
    reports, _ = two_ranks
    local = [r['log']['local'] for r in reports]
    assert local[0] != pytest.approx(local[1])  # the ranks saw different images
    for report in reports:
        assert report['log']['logged'] == pytest.approx(sum(local) / 2, rel=1e-6)
        # once per iteration: all the log values in one reduction (_parse_losses), not
        # again in the runner
        assert len(report['log']['all_reduce_calls']) == 1, report['log']['all_reduce_calls']


def test_syncbn_layers_become_torch_syncbn_for_cuda_sharing_weights_and_keys():
    from detforge.models.layers import SyncBatchNorm
    model = build_tiny('sync_bn')
    before = model.state_dict()
    stem = model.backbone.bn1
    assert type(stem) is SyncBatchNorm
    converted = SyncBatchNorm.convert_to_torch(model)
    assert type(converted.backbone.bn1) is torch.nn.SyncBatchNorm
    assert converted.backbone.bn1.weight is stem.weight
    assert converted.backbone.bn1.running_var is stem.running_var
    assert not any(type(m) is SyncBatchNorm for m in converted.modules())
    after = converted.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_syncbn_on_cpu_equals_batch_norm_over_the_whole_batch(two_ranks):
    reports, _ = two_ranks
    from detforge.models.layers import build_norm_layer
    torch.manual_seed(0)
    x_all = (torch.randn(4, 3, 5, 5) * 3 + 1).requires_grad_()
    upstream = torch.randn(4, 3, 5, 5)
    _, bn = build_norm_layer(dict(type='BN'), 3)
    y_all = bn(x_all)
    (y_all * upstream).sum().backward()
    y = torch.cat([r['syncbn']['y'] for r in reports])
    grad = torch.cat([r['syncbn']['grad'] for r in reports])
    torch.testing.assert_close(y, y_all.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, x_all.grad, rtol=1e-5, atol=1e-6)
    for r in reports:  # running statistics of the whole batch, the same on every rank
        torch.testing.assert_close(r['syncbn']['running_mean'], bn.running_mean)
        torch.testing.assert_close(r['syncbn']['running_var'], bn.running_var)
    # the check can fail: BN over each rank's half alone normalises differently
    unsynced = torch.cat([r['syncbn']['unsynced_y'] for r in reports])
    assert not torch.allclose(unsynced, y_all.detach(), atol=1e-3)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_two_ranks_of_batch_1_train_like_one_process_of_batch_2(two_ranks, variant):
    reports, _ = two_ranks
    with one_thread():
        reference = train_steps(build_tiny(variant), [0, 1])
    initial = build_tiny(variant).state_dict()
    for report in reports:
        weights = report['weights'][variant]
        assert weights.keys() == reference.keys()
        for key, value in reference.items():
            if value.is_floating_point():
                torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-7,
                                           msg=lambda m: f'{variant} {key}: {m}')
            else:
                assert torch.equal(weights[key], value), key
    if variant == 'channels_last':  # DDP kept the layout
        conv = reference['backbone.conv1.weight']
        assert weights['backbone.conv1.weight'].stride() == conv.stride() != conv.contiguous().stride()
    # the weights did move (the comparison is not between two initial states)
    moved = max((reference[k] - initial[k]).abs().max().item()
                for k in reference if reference[k].is_floating_point())
    assert moved > 1e-3


def test_bf16_autocast_trains_retinanet_under_ddp_on_the_cpu(two_ranks):
    reports, _ = two_ranks
    bf16 = [r['bf16'] for r in reports]
    assert not isinstance(bf16[0], str), bf16[0]
    with one_thread():
        fp32 = train_steps(build_tiny('frozen_bn'), [0, 1], steps=3)
    for key, value in fp32.items():
        # DDP keeps the ranks bitwise in step; the fp32 master weights stay fp32
        assert torch.equal(bf16[0][key], bf16[1][key]), key
        assert bf16[0][key].dtype == value.dtype
    float_keys = [k for k in fp32 if fp32[k].is_floating_point()]
    differences = [(bf16[0][k] - fp32[k]).abs().max().item() for k in float_keys]
    assert max(differences) > 0  # the forward did run in bfloat16
    assert max(differences) < 5e-3  # and trained like float32


@pytest.mark.parametrize('loss_scale, scale_after_overflow', [('dynamic', 2. ** 15),
                                                               (512., 512.)])
def test_fp16_scaler_unscales_gradients_and_skips_overflowing_steps(loss_scale,
                                                                    scale_after_overflow):
    from detforge.engine.hooks.optimizer import AmpOptimizerHook
    hook = AmpOptimizerHook(dtype='float16', loss_scale=loss_scale)
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1., 2.]]))
    runner = HookRunner(model, lr=0.1, momentum=0.)
    hook.before_run(runner)  # a CPU GradScaler: no GPU needed
    assert hook.scaler is not None
    initial_scale = hook.scaler.get_scale()
    assert initial_scale == (2. ** 16 if loss_scale == 'dynamic' else 512.)
    x = torch.tensor([[1., 3.]])
    runner.outputs = dict(loss=model(x).sum())
    hook.after_train_iter(runner)
    # the step used the true gradient x, not the scaled one
    torch.testing.assert_close(model.weight, torch.tensor([[1. - 0.1, 2. - 0.3]]))
    assert model.weight.grad.abs().max() == 3.  # unscaled in place
    before = model.weight.detach().clone()
    runner.outputs = dict(loss=model(x).sum() * float('inf'))
    hook.after_train_iter(runner)
    assert torch.equal(model.weight, before)  # an overflowing step is skipped
    assert hook.scaler.get_scale() == scale_after_overflow  # dynamic: halved; fixed: kept
    assert runner.logged[-1]['loss_scale'] == scale_after_overflow
    assert hook.state_dict()['scaler']['scale'] == scale_after_overflow


# ----------------------------------------------------------------------------- real CLI runs
def one_thread_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        env.pop(key, None)
    return env


def dist_script(repo_root, script, *args, timeout=240):
    """``tools/SCRIPT ARGS`` (``torchrun`` with 2 processes on a free port); the completed
    process."""
    env = one_thread_env()
    env['PORT'] = str(free_port())
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    return subprocess.run(['bash', f'tools/{script}', *args], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def torchrun_train(repo_root, bccd_subset, tmp_path_factory):
    """``tools/dist_train.sh`` = ``torchrun --nproc_per_node 2 -m detforge train TINY
    --launcher pytorch``: 2 ranks x 1 image for one epoch on 3 images (the sampler pads
    rank 1's share), then the distributed evaluation of the end of training."""
    work_dir = tmp_path_factory.mktemp('torchrun_train')
    start = time.time()
    proc = dist_script(repo_root, 'dist_train.sh', TINY, '2', '--work-dir', str(work_dir),
                       '--seed', '0', '--cfg-options', *data_options(repo_root, bccd_subset(3)),
                       'data.samples_per_gpu=1')
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work_dir, proc, time.time() - start


@pytest.mark.slow
def test_torchrun_train_writes_one_set_of_artefacts(torchrun_train):
    work_dir, proc, _ = torchrun_train
    names = sorted(p.name for p in work_dir.iterdir())
    logs = [n for n in names if n.endswith('.log')]
    assert len(logs) == 1
    stamp = logs[0][:-len('.log')]
    assert names == sorted([f'{stamp}.log', f'{stamp}.log.json', f'{stamp}_curves.png',
                            'epoch_1.pth', 'latest.pth', 'retinanet_r18_tiny_bccd.py',
                            '.last_evaluation.json'])  # the evaluation hook's "done" record
    records = [json.loads(line) for line in (work_dir / f'{stamp}.log.json').read_text()
               .splitlines()]
    train = [r for r in records if r.get('mode') == 'train']
    # ceil(3 images / 2 ranks) = 2 iterations of 1 image per rank, logged once
    assert [r['iter'] for r in train] == [1, 2]
    assert [r.get('mode') for r in records].count('val') == 1
    console = proc.stdout + proc.stderr
    assert console.count('Epoch [1][2/2]') == 1  # rank 1 prints no copy of the log
    assert 'Distributed training: True' in console


def cli(argv):
    """``detforge ARGV`` in this process, on one thread."""
    import logging
    from detforge.cli import main
    for handler in logging.getLogger('detforge').handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr  # pytest swaps stderr per test
    with one_thread():
        return main(argv)


@pytest.mark.slow
def test_distributed_evaluation_equals_one_process(repo_root, torchrun_train, bccd_subset,
                                                   tmp_path):
    work_dir, _, _ = torchrun_train
    stamp = next(work_dir.glob('*.log.json'))
    val = [json.loads(line) for line in stamp.read_text().splitlines()
           if json.loads(line).get('mode') == 'val'][0]
    # the same checkpoint, one process
    single_out, eval_dir = tmp_path / 'single.pkl', tmp_path / 'eval'
    options = ['--cfg-options', *data_options(repo_root, bccd_subset(3))]
    assert cli(['test', str(repo_root / TINY), str(work_dir / 'epoch_1.pth'), '--eval', 'bbox',
                '--out', str(single_out), '--work-dir', str(eval_dir), *options]) == 0
    metric = json.loads(next(eval_dir.glob('eval_*.json')).read_text())['metric']
    ap_keys = [k for k in metric if k.startswith('bbox_mAP') and k != 'bbox_mAP_copypaste']
    assert ap_keys and {k: val[k] for k in ap_keys} == {k: metric[k] for k in ap_keys}
    # detforge test on 2 ranks gathers the detections in dataset order, without the
    # duplicate that pads rank 1's share: exactly the single-process results
    dist_out = tmp_path / 'dist.pkl'
    proc = dist_script(repo_root, 'dist_test.sh', TINY, str(work_dir / 'epoch_1.pth'), '2',
                       '--out', str(dist_out), *options)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = pickle.loads(single_out.read_bytes())
    gathered = pickle.loads(dist_out.read_bytes())
    assert len(single) == len(gathered) == 3
    assert sum(len(cls) for img in single for cls in img) > 0  # there are detections
    for a, b in zip(single, gathered):
        assert len(a) == len(b) == 3
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('failure', ['killed', 'hung'])
def test_a_dead_or_hung_rank_stops_the_other_with_a_clear_message(repo_root, bccd_subset,
                                                                   tmp_path, failure):
    """Two ranks started by hand (no torchrun agent to tear them down): rank 1 is killed
    (SIGKILL) or frozen (SIGSTOP) mid-training; rank 0 must exit by itself with one clear
    line, at the latest ``dist_params.timeout`` after its next collective started."""
    timeout_s = 5
    port = free_port()
    args = [sys.executable, '-m', 'detforge', 'train', TINY, '--launcher', 'pytorch',
            '--work-dir', str(tmp_path / 'work'), '--seed', '0', '--no-validate',
            '--cfg-options', *data_options(repo_root, bccd_subset(2)), 'data.samples_per_gpu=1',
            'runner.max_epochs=100', 'checkpoint_config.interval=1000',
            f'dist_params.timeout={timeout_s}']
    procs, logs = [], []
    try:
        for rank in range(2):
            env = dict(one_thread_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
                       MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
            log = open(tmp_path / f'rank{rank}.txt', 'w+')
            logs.append(log)
            procs.append(subprocess.Popen(args, cwd=repo_root, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
        deadline = time.time() + 120
        while 'Epoch [1][1/1]' not in (tmp_path / 'rank0.txt').read_text():
            assert procs[0].poll() is None and time.time() < deadline, \
                (tmp_path / 'rank0.txt').read_text()[-3000:]
            time.sleep(0.2)
        stopped = time.time()
        os.kill(procs[1].pid, signal.SIGKILL if failure == 'killed' else signal.SIGSTOP)
        rc = procs[0].wait(timeout=timeout_s + 30)
        waited = time.time() - stopped
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    output = (tmp_path / 'rank0.txt').read_text()
    assert rc == 2, output[-3000:]
    assert 'Traceback' not in output
    errors = [line for line in output.splitlines() if 'error:' in line]
    assert len(errors) == 1 and 'rank 0 of 2: a collective operation failed' in errors[0]
    assert f'dist_params.timeout={timeout_s} s' in errors[0]
    if failure == 'hung':
        # nothing tells rank 0 that rank 1 is frozen: only the timeout ends the wait
        assert timeout_s - 1 < waited < timeout_s + 25
    else:
        assert waited < timeout_s + 25


@pytest.mark.slow
def test_a_rank_that_never_starts_stops_the_other_after_the_timeout(repo_root, tmp_path):
    timeout_s = 3
    env = dict(one_thread_env(), RANK='0', LOCAL_RANK='0', WORLD_SIZE='2',
               MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()))
    start = time.time()
    proc = subprocess.run([sys.executable, '-m', 'detforge', 'train', TINY, '--launcher',
                           'pytorch', '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                           f'dist_params.timeout={timeout_s}'], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert time.time() - start < timeout_s + 60
    assert 'Traceback' not in proc.stderr
    assert ('rank 0 of 2: could not join the process group at 127.0.0.1:'
            in proc.stderr) and f'dist_params.timeout={timeout_s} s' in proc.stderr


# ----------------------------------------------------------------------------- launchers
@pytest.fixture
def captured_init(monkeypatch, tmp_path):
    """``init_process_group`` recorded instead of called; no ``scontrol`` on the PATH and
    no launcher variables left from the environment."""
    from detforge.engine import dist_utils
    calls = []
    monkeypatch.setattr(dist_utils.dist, 'init_process_group',
                        lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv('PATH', str(tmp_path))
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT',
                'SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST', 'SLURM_LOCALID'):
        monkeypatch.setenv(key, '')  # recorded, so what init_dist sets is undone afterwards
        monkeypatch.delenv(key)
    return calls


def test_slurm_variables_of_a_multi_node_job_give_rank_world_size_and_master(
        monkeypatch, captured_init):
    from detforge.engine.dist_utils import init_dist
    monkeypatch.setenv('SLURM_PROCID', '5')
    monkeypatch.setenv('SLURM_NTASKS', '8')
    monkeypatch.setenv('SLURM_NODELIST', 'node[01-04]')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    init_dist('slurm', port=29123, timeout_s=42)
    assert {k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                                       'MASTER_PORT')} == dict(
        RANK='5', WORLD_SIZE='8', LOCAL_RANK='1', MASTER_ADDR='node01', MASTER_PORT='29123')
    (call,) = captured_init
    assert call['backend'] == ('nccl' if torch.cuda.is_available() else 'gloo')
    assert call['timeout'].total_seconds() == 42


@pytest.mark.parametrize('node_list, first', [
    ('node[01-04]', 'node01'), ('gpu-a[003-005,007],gpu-b01', 'gpu-a003'),
    ('host1,host2', 'host1'), ('single', 'single'), ('rack[7,9]', 'rack7')])
def test_first_host_of_a_slurm_node_list(node_list, first):
    from detforge.engine.dist_utils import _parse_first_slurm_host
    assert _parse_first_slurm_host(node_list) == first


def test_launchers_without_their_variables_say_what_is_missing(monkeypatch, captured_init):
    from detforge.engine.dist_utils import init_dist
    from detforge.registry import DetforgeError
    with pytest.raises(DetforgeError, match='missing RANK, WORLD_SIZE.*torchrun'):
        init_dist('pytorch')
    with pytest.raises(DetforgeError, match='SLURM_PROCID'):
        init_dist('slurm')
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    with pytest.raises(DetforgeError, match='dist_params.timeout must be a positive'):
        init_dist('pytorch', timeout_s=0)
    assert not captured_init
