"""Runners, hooks and checkpoints on a toy model: exact resume, atomic saves, logs."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from detforge.apis.train import set_random_seed
from detforge.engine import (EpochBasedRunner, EvalHook, Hook, IterBasedRunner, build_optimizer,
                             find_latest_checkpoint, load_checkpoint)
from detforge.engine.hooks import NumClassCheckHook, check_num_classes
from detforge.registry import BuildError, DetforgeError

from test_engine_toys import ToyDataset, ToyModel, toy_loader

LOGGER = logging.getLogger('detforge.test_engine')


@pytest.fixture(autouse=True)
def restore_determinism():
    """``set_random_seed(deterministic=True)`` flips a global torch flag; put it back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


class Stop(Exception):
    """Raised by :class:`StopAfter` to simulate a run that is interrupted."""


class StopAfter(Hook):
    def __init__(self, epoch=None, iteration=None):
        self.epoch, self.iteration = epoch, iteration

    def after_train_epoch(self, runner):
        if self.epoch is not None and runner.epoch + 1 == self.epoch:
            raise Stop

    def after_train_iter(self, runner):
        if self.iteration is not None and runner.iter + 1 == self.iteration:
            raise Stop


def make_runner(work_dir, runner_type='EpochBasedRunner', length=2, seed=0, lr_config=None,
                checkpoint_config=None, optimizer_config=None, model=None):
    set_random_seed(seed, deterministic=True)
    model = model or ToyModel()
    optimizer = build_optimizer(model, dict(type='SGD', lr=0.02, momentum=0.9,
                                            weight_decay=1e-4))
    kwargs = dict(max_epochs=length) if runner_type == 'EpochBasedRunner' else \
        dict(max_iters=length)
    runner_cls = EpochBasedRunner if runner_type == 'EpochBasedRunner' else IterBasedRunner
    runner = runner_cls(model, optimizer=optimizer, work_dir=str(work_dir), logger=LOGGER,
                        meta=dict(config='toy = 1'), **kwargs)
    runner.timestamp = 'toy'
    by_epoch = runner_type == 'EpochBasedRunner'
    runner.register_training_hooks(
        lr_config or dict(policy='CosineAnnealing', min_lr=1e-4, by_epoch=by_epoch,
                          warmup='linear', warmup_iters=3, warmup_ratio=0.1),
        optimizer_config or dict(grad_clip=dict(max_norm=5)),
        checkpoint_config or dict(interval=1, by_epoch=by_epoch),
        dict(interval=2, hooks=[dict(type='TextLoggerHook', by_epoch=by_epoch)]))
    return runner


def weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_epoch_runner_resume_is_bitwise_exact(tmp_path):
    straight = make_runner(tmp_path / 'straight', length=2)
    straight.run([toy_loader()], [('train', 1)])

    interrupted = make_runner(tmp_path / 'resumed', length=2)
    interrupted.register_hook(StopAfter(epoch=1), priority='LOWEST')
    with pytest.raises(Stop):
        interrupted.run([toy_loader()], [('train', 1)])
    # a new process: other seeds, fresh model and optimizer, then resume
    resumed = make_runner(tmp_path / 'resumed', length=2, seed=123)
    resumed.resume(str(tmp_path / 'resumed' / 'epoch_1.pth'))
    assert (resumed.epoch, resumed.iter) == (1, 6)
    resumed.run([toy_loader()], [('train', 1)])
    assert_bitwise_equal(weights(straight), weights(resumed))
    assert straight.optimizer.param_groups[0]['lr'] == resumed.optimizer.param_groups[0]['lr']


def test_iter_runner_resume_mid_epoch_is_bitwise_exact(tmp_path):
    # 6 batches per epoch; the checkpoint at iteration 8 is in the middle of epoch 2
    straight = make_runner(tmp_path / 'straight', 'IterBasedRunner', length=11)
    straight.run([toy_loader()], [('train', 1)])
    interrupted = make_runner(tmp_path / 'resumed', 'IterBasedRunner', length=11,
                              checkpoint_config=dict(interval=4, by_epoch=False))
    interrupted.register_hook(StopAfter(iteration=9), priority='LOWEST')
    with pytest.raises(Stop):
        interrupted.run([toy_loader()], [('train', 1)])
    ckpt = torch.load(tmp_path / 'resumed' / 'iter_8.pth', weights_only=True)
    assert ckpt['loader_state'] == {'epoch': 1, 'pos': 2}
    resumed = make_runner(tmp_path / 'resumed', 'IterBasedRunner', length=11, seed=7,
                          checkpoint_config=dict(interval=4, by_epoch=False))
    resumed.resume(str(tmp_path / 'resumed' / 'iter_8.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    assert resumed.iter == 11
    assert_bitwise_equal(weights(straight), weights(resumed))


def test_epoch_runner_resume_from_iteration_checkpoint_mid_epoch(tmp_path):
    straight = make_runner(tmp_path / 'a', length=2)
    straight.run([toy_loader()], [('train', 1)])
    interrupted = make_runner(tmp_path / 'b', length=2,
                              checkpoint_config=dict(interval=4, by_epoch=False))
    interrupted.register_hook(StopAfter(iteration=5), priority='LOWEST')
    with pytest.raises(Stop):
        interrupted.run([toy_loader()], [('train', 1)])
    resumed = make_runner(tmp_path / 'b', length=2, seed=5,
                          checkpoint_config=dict(interval=4, by_epoch=False))
    resumed.resume(str(tmp_path / 'b' / 'iter_4.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    assert_bitwise_equal(weights(straight), weights(resumed))


def test_evaluation_during_training_does_not_change_the_training(tmp_path):
    plain = make_runner(tmp_path / 'plain', length=2)
    plain.run([toy_loader()], [('train', 1)])
    evaluated = make_runner(tmp_path / 'eval', length=2)

    def noisy_test(model, loader, show=False):  # inference that draws random numbers
        torch.rand(100), __import__('numpy').random.rand(10)
        return [0] * len(loader.dataset)
    evaluated.register_hook(EvalHook(toy_loader(), test_fn=noisy_test, save_best='auto'),
                            priority='LOW')
    evaluated.run([toy_loader()], [('train', 1)])
    assert_bitwise_equal(weights(plain), weights(evaluated))
    best = sorted(p.name for p in (tmp_path / 'eval').glob('best_*.pth'))
    assert best == ['best_toy_mAP_epoch_1.pth']  # equal later scores are not "better"


def test_checkpoint_contents_load_with_weights_only(tmp_path):
    runner = make_runner(tmp_path, length=1)
    runner.run([toy_loader()], [('train', 1)])
    ckpt = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    assert ckpt['meta']['epoch'] == 1 and ckpt['meta']['iter'] == 6
    assert ckpt['meta']['config'] == 'toy = 1'
    assert set(ckpt['rng_state']) >= {'torch', 'numpy', 'python'}
    assert 'state' in ckpt['optimizer'] and ckpt['state_dict'].keys() == \
        runner.model.state_dict().keys()
    assert os.path.realpath(tmp_path / 'latest.pth') == str(tmp_path / 'epoch_1.pth')


def test_max_keep_ckpts_deletes_the_oldest(tmp_path):
    runner = make_runner(tmp_path, length=3, checkpoint_config=dict(interval=1,
                                                                    max_keep_ckpts=2))
    runner.run([toy_loader()], [('train', 1)])
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == [
        'epoch_2.pth', 'epoch_3.pth', 'latest.pth']
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / 'epoch_3.pth')


KILLED_SAVE = '''
import os, sys, time, logging, torch
sys.path.insert(0, {tests!r})
from test_engine_runner import make_runner
from test_engine_toys import toy_loader
real_save = torch.save

def slow_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get('meta', {{}}).get('epoch') == 2:
        f.write(b'half a checkpoint' * 1000)
        f.flush()
        open({marker!r}, 'w').close()
        time.sleep(120)  # killed here
    return real_save(obj, f, *args, **kwargs)

torch.save = slow_save
runner = make_runner({work_dir!r}, length=3)
runner.run([toy_loader()], [('train', 1)])
'''


def test_sigkill_while_saving_leaves_previous_checkpoint_and_auto_resume_continues(tmp_path):
    work_dir = tmp_path / 'run'
    marker = tmp_path / 'writing'
    script = tmp_path / 'train.py'
    script.write_text(KILLED_SAVE.format(tests=str(Path(__file__).parent),
                                         marker=str(marker), work_dir=str(work_dir)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, 'the training never reached the second checkpoint'
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    assert not (work_dir / 'epoch_2.pth').exists()
    assert list(work_dir.glob('.epoch_2.pth.*.tmp'))  # the half-written temporary file
    latest = find_latest_checkpoint(work_dir)
    assert latest == str(work_dir / 'epoch_1.pth')
    assert torch.load(latest, weights_only=True)['meta']['epoch'] == 1

    straight = make_runner(tmp_path / 'straight', length=3)
    straight.run([toy_loader()], [('train', 1)])
    resumed = make_runner(work_dir, length=3, seed=99)
    resumed.resume(latest)
    resumed.run([toy_loader()], [('train', 1)])
    assert_bitwise_equal(weights(straight), weights(resumed))


def test_find_latest_checkpoint_skips_a_corrupt_file(tmp_path):
    runner = make_runner(tmp_path, length=2)
    runner.run([toy_loader()], [('train', 1)])
    (tmp_path / 'epoch_2.pth').write_bytes(b'not a checkpoint')
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / 'epoch_1.pth')
    assert find_latest_checkpoint(tmp_path / 'missing') is None


class TwoHeads(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.backbone = nn.Linear(4, 8)
        self.head = nn.Linear(8, num_classes)


def test_load_checkpoint_skips_and_reports_shape_mismatch(tmp_path):
    from detforge.engine import save_checkpoint
    save_checkpoint(TwoHeads(80), tmp_path / 'coco.pth')
    model = TwoHeads(3)
    ckpt = load_checkpoint(model, tmp_path / 'coco.pth')
    report = ckpt['load_report']
    assert [k for k, _, _ in report.mismatched] == ['head.weight', 'head.bias']
    assert sorted(report.loaded) == ['backbone.bias', 'backbone.weight']
    assert 'head.weight checkpoint (80, 8) vs model (3, 8)' in str(report)
    assert torch.equal(model.backbone.weight, torch.load(
        tmp_path / 'coco.pth', weights_only=True)['state_dict']['backbone.weight'])


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    from detforge.engine import save_checkpoint
    save_checkpoint(ToyModel(), tmp_path / 'toy.pth')
    with pytest.raises(DetforgeError, match='another architecture'):
        load_checkpoint(TwoHeads(3), tmp_path / 'toy.pth')
    (tmp_path / 'broken.pth').write_bytes(b'garbage')
    with pytest.raises(DetforgeError, match='broken.pth cannot be read'):
        load_checkpoint(TwoHeads(3), tmp_path / 'broken.pth')


def test_resume_with_a_checkpoint_of_another_model_fails_clearly(tmp_path):
    from detforge.engine import save_checkpoint
    save_checkpoint(ToyModel(), tmp_path / 'toy.pth')
    runner = make_runner(tmp_path / 'w', length=1, model=ToyModel(norm=True))
    with pytest.raises(DetforgeError, match='cannot resume'):
        runner.resume(str(tmp_path / 'toy.pth'))


class Order(Hook):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def before_run(self, runner):
        self.log.append(self.name)


def test_hooks_run_in_priority_order_and_stable_within_a_priority(tmp_path):
    runner = make_runner(tmp_path, length=1)
    log = []
    runner.register_hook(Order('low', log), 'LOW')
    runner.register_hook(Order('first', log), 'HIGHEST')
    runner.register_hook(Order('normal-1', log), 'NORMAL')
    runner.register_hook(Order('normal-2', log), 50)
    runner.call_hook('before_run')
    assert log == ['first', 'normal-1', 'normal-2', 'low']
    names = [type(h).__name__ for h in runner.hooks]
    # backward and step are the runner's run_step, not a hook (detforge's OptimizerHook
    # config is translated into the step; tests/test_engine_step.py)
    assert 'OptimizerHook' not in names
    assert names.index('CosineAnnealingLrUpdaterHook') < names.index('CheckpointHook') < \
        names.index('IterTimerHook') < names.index('TextLoggerHook')


def test_unknown_custom_hook_type_names_the_config_path(tmp_path):
    runner = make_runner(tmp_path, length=1)
    with pytest.raises(BuildError, match=r"'EMAHok' is not in the HOOKS registry; did you mean "
                                         r"'EMAHook'.*custom_hooks\.0"):
        runner.register_training_hooks(None, custom_hooks_config=[dict(type='EMAHok')])


class Counting(ToyModel):
    steps = 0
    num_classes = 80

    def train_step(self, data, optimizer=None):
        Counting.steps += 1
        return super().train_step(data, optimizer)


def test_num_class_mismatch_stops_before_the_first_iteration(tmp_path):
    runner = make_runner(tmp_path, length=1, model=Counting())
    runner.register_hook(NumClassCheckHook())
    with pytest.raises(DetforgeError, match=r'has 2 classes \(a, b\) but model\.num_classes '
                                            r'is 80'):
        runner.run([toy_loader()], [('train', 1)])
    assert Counting.steps == 0
    with pytest.raises(DetforgeError, match='2 classes'):
        check_num_classes(Counting(), ToyDataset())


def test_text_logger_writes_human_lines_and_json_lines(tmp_path, caplog):
    runner = make_runner(tmp_path, length=2)
    with caplog.at_level(logging.INFO, logger='detforge.test_engine'):
        runner.run([toy_loader()], [('train', 1)])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Epoch [')]
    assert len(lines) == 6  # 6 iterations per epoch, a line every 2
    assert all(k in lines[0] for k in ('lr: ', 'eta: ', 'time: ', 'data_time: ', 'memory: ',
                                       'loss: ', 'grad_norm: '))
    records = [json.loads(line) for line in (tmp_path / 'toy.log.json').read_text().splitlines()]
    train = [r for r in records if r.get('mode') == 'train']
    assert [(r['epoch'], r['iter']) for r in train] == [(1, 2), (1, 4), (1, 6), (2, 2), (2, 4),
                                                        (2, 6)]
    assert {'lr', 'time', 'data_time', 'memory', 'loss'} <= set(train[0])
    assert train[0]['memory'] > 0  # max RSS in MB on the CPU


def test_val_workflow_logs_val_losses(tmp_path):
    runner = make_runner(tmp_path, length=1)
    runner.run([toy_loader(), toy_loader()], [('train', 1), ('val', 1)])
    records = [json.loads(line) for line in (tmp_path / 'toy.log.json').read_text().splitlines()]
    val = [r for r in records if r.get('mode') == 'val']
    assert len(val) == 1 and 'loss' in val[0]


def test_workflow_and_loaders_must_match(tmp_path):
    runner = make_runner(tmp_path, length=1)
    with pytest.raises(DetforgeError, match='2 phases but 1 data loaders'):
        runner.run([toy_loader()], [('train', 1), ('val', 1)])


def test_work_dir_that_is_not_writable_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = '/proc/detforge_work_dir'  # even root cannot create folders there
    else:
        locked = tmp_path / 'locked'
        locked.mkdir()
        locked.chmod(0o500)
        target = str(locked / 'run')
    with pytest.raises(DetforgeError, match='work dir'):
        EpochBasedRunner(ToyModel(), optimizer=None, work_dir=target, max_epochs=1)


def test_ema_hook_resume_is_exact(tmp_path):
    ema = dict(type='EMAHook', momentum=0.1, warm_up=1, priority='ABOVE_NORMAL')

    def build(work_dir, seed=0):
        runner = make_runner(work_dir, length=2, seed=seed)
        runner.register_training_hooks(None, custom_hooks_config=[dict(ema)])
        return runner
    straight = build(tmp_path / 'a')
    straight.run([toy_loader()], [('train', 1)])
    interrupted = build(tmp_path / 'b')
    interrupted.register_hook(StopAfter(epoch=1), priority='LOWEST')
    with pytest.raises(Stop):
        interrupted.run([toy_loader()], [('train', 1)])
    resumed = build(tmp_path / 'b', seed=3)
    resumed.resume(str(tmp_path / 'b' / 'epoch_1.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    assert_bitwise_equal(weights(straight), weights(resumed))
    # the model ends with the EMA weights swapped in, which differ from the raw ones
    ema_hook = [h for h in straight.hooks if type(h).__name__ == 'EMAHook'][0]
    assert not torch.equal(ema_hook.ema['linear.weight'], straight.model.linear.weight)


def test_ema_hook_resume_under_iter_runner_is_exact(tmp_path):
    """IterBasedRunner + EMAHook: the checkpoint of iteration 4 holds the EMA weights swapped
    in (and the trained ones in the hook's state); resuming from it ends bitwise equal to an
    uninterrupted run, EMA included."""
    ema = dict(type='EMAHook', momentum=0.1, warm_up=1, priority='ABOVE_NORMAL')

    def build(work_dir, seed=0):
        runner = make_runner(work_dir, 'IterBasedRunner', length=7, seed=seed,
                             checkpoint_config=dict(interval=4, by_epoch=False))
        runner.register_training_hooks(None, custom_hooks_config=[dict(ema)])
        return runner

    def ema_of(runner):
        return [h for h in runner.hooks if type(h).__name__ == 'EMAHook'][0]
    straight = build(tmp_path / 'a')
    straight.run([toy_loader()], [('train', 1)])
    interrupted = build(tmp_path / 'b')
    interrupted.register_hook(StopAfter(iteration=5), priority='LOWEST')
    with pytest.raises(Stop):
        interrupted.run([toy_loader()], [('train', 1)])
    resumed = build(tmp_path / 'b', seed=3)
    resumed.resume(str(tmp_path / 'b' / 'iter_4.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    assert_bitwise_equal(weights(straight), weights(resumed))
    assert_bitwise_equal(ema_of(straight).ema, ema_of(resumed).ema)
    assert ema_of(straight).swapped and ema_of(resumed).swapped
    assert not torch.equal(ema_of(straight).ema['linear.weight'], straight.model.linear.weight)


def test_multi_gpu_results_are_gathered_in_dataset_order_without_padding():
    from detforge.apis.test import _interleave
    # 5 images over 2 ranks, padded to 6: rank 0 has 0, 2, 4; rank 1 has 1, 3, 0 (padding)
    assert _interleave([['r0', 'r2', 'r4'], ['r1', 'r3', 'r0']], 5) == \
        ['r0', 'r1', 'r2', 'r3', 'r4']


def test_ddp_wrapper_trains_through_ddp_and_saves_plain_keys(tmp_path, monkeypatch):
    import torch.distributed as dist
    from detforge.engine import wrap_distributed
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(29500 + os.getpid() % 1000))
    dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        set_random_seed(0)
        model = wrap_distributed(ToyModel())
        optimizer = build_optimizer(model, dict(type='SGD', lr=0.01))
        runner = EpochBasedRunner(model, optimizer=optimizer, work_dir=str(tmp_path),
                                  logger=LOGGER, max_epochs=1)
        runner.register_training_hooks(None, dict(), dict(interval=1))
        before = model.module.linear.weight.detach().clone()
        runner.run([toy_loader()], [('train', 1)])
        assert not torch.equal(before, model.module.linear.weight)
        keys = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)['state_dict'].keys()
        assert sorted(keys) == ['linear.bias', 'linear.weight']
    finally:
        dist.destroy_process_group()


def test_curves_are_plotted_from_the_json_log_with_steps_across_epochs(tmp_path):
    from detforge.engine.hooks import PlotCurvesHook
    from detforge.visualization.curves import load_json_log
    runner = make_runner(tmp_path, length=2)
    runner.register_hook(PlotCurvesHook(), priority='LOWEST')
    runner.run([toy_loader()], [('train', 1)])
    series = load_json_log(tmp_path / 'toy.log.json')
    assert [step for step, _ in series['loss']] == [2, 4, 6, 8, 10, 12]
    png = tmp_path / 'toy_curves.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_tensorboard_logger_writes_event_files(tmp_path):
    runner = make_runner(tmp_path, length=1)
    runner.register_training_hooks(None, log_config=dict(
        interval=2, hooks=[dict(type='TensorboardLoggerHook')]))
    runner.run([toy_loader()], [('train', 1)])
    assert list((tmp_path / 'tf_logs').glob('events.out.tfevents.*'))
