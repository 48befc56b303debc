"""The training step (``BaseRunner.run_step``): its order, the translation of MMDetection 2.x's
``optimizer_config`` / ``fp16`` / ``amp``, a user's own ``OptimizerHook`` subclass, and the
iteration-based runner's hooks (checkpoints, evaluation) counting iterations."""
from __future__ import annotations

import json
import logging
import sys
import textwrap

import pytest
import torch

from detforge.apis.train import build_train_hooks_cfg
from detforge.config import Config
from detforge.engine import EpochBasedRunner, Hook, IterBasedRunner
from detforge.engine.hooks import EvalHook, OptimizerHook
from detforge.registry import HOOKS, BuildError

from test_engine_toys import ToyModel, toy_loader

LOGGER = logging.getLogger('detforge.test_engine_step')

# An MMDetection 2.x-style user hook: written against mmcv's OptimizerHook protocol (it
# overrides after_train_iter and does backward and step itself). Imported by the configs
# below through custom_imports.
USER_HOOK_MODULE = '''
from detforge.engine.hooks import OptimizerHook
from detforge.registry import HOOKS


@HOOKS.register_module()
class AccumulateTwiceOptimizerHook(OptimizerHook):
    """Sum the gradients of ``every`` iterations, then step (the mean gradient)."""
    stepped_at = []  # 0-based iterations after which it stepped

    def __init__(self, every=2, **kwargs):
        super().__init__(**kwargs)
        self.every = every

    def after_train_iter(self, runner):
        (runner.outputs['loss'] / self.every).backward()
        if self.every_n_iters(runner, self.every):
            if self.grad_clip is not None:
                self.clip_grads(runner.model.parameters())
            runner.optimizer.step()
            runner.optimizer.zero_grad()
            type(self).stepped_at.append(runner.iter)
'''


@pytest.fixture(scope='module', autouse=True)
def unregister_test_hooks():
    """The hooks this module registers leave HOOKS when it is done (they would otherwise
    appear in other modules' did-you-mean suggestions)."""
    yield
    for name in ('CountingOptimizerHook', 'AccumulateTwiceOptimizerHook'):
        HOOKS.module_dict.pop(name, None)
    sys.modules.pop('df_user_optimizer_hook', None)


@pytest.fixture(scope='module')
def user_hook(tmp_path_factory):
    """The user's hook module, importable as ``df_user_optimizer_hook``."""
    folder = tmp_path_factory.mktemp('user_code')
    (folder / 'df_user_optimizer_hook.py').write_text(USER_HOOK_MODULE)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


class Recorder(Hook):
    """Writes the hook stages into ``events`` and keeps the weights after each iteration."""

    def __init__(self, events):
        self.events, self.weights = events, []

    def before_train_iter(self, runner):
        self.events.append('before_train_iter')

    def after_train_iter(self, runner):
        self.events.append('after_train_iter')
        self.weights.append(runner.model.linear.weight.detach().clone())


class RecordingSGD(torch.optim.SGD):
    def __init__(self, params, events, **kwargs):
        super().__init__(params, **kwargs)
        self.events = events

    def zero_grad(self, set_to_none: bool = True):
        self.events.append('zero_grad')
        super().zero_grad(set_to_none)

    def step(self, closure=None):
        self.events.append('step')
        return super().step(closure)


class RecordingModel(ToyModel):
    def __init__(self, events, **kwargs):
        super().__init__(**kwargs)
        self.events = events

    def train_step(self, data, optimizer=None):
        self.events.append('forward')
        outputs = super().train_step(data, optimizer)
        outputs['loss'].register_hook(lambda grad: self.events.append('backward'))
        return outputs


def recorded_run(optimizer_config, max_iters=2, runner_cls=IterBasedRunner):
    """Run ``max_iters`` iterations of the toy model; the events in order, the recorder and
    the runner."""
    torch.manual_seed(0)
    events = []
    model = RecordingModel(events, dropout=0.)
    optimizer = RecordingSGD(model.parameters(), events, lr=0.1)
    runner = runner_cls(model, optimizer=optimizer, logger=LOGGER, max_iters=max_iters)
    runner.register_training_hooks(None, optimizer_config)
    recorder = Recorder(events)
    runner.register_hook(recorder, 'LOWEST')
    runner.run([toy_loader(n=8, batch_size=2)], [('train', 1)])
    return events, recorder, runner


def test_one_step_runs_forward_zero_grad_backward_step_then_the_after_hooks():
    events, _, runner = recorded_run(dict(grad_clip=dict(max_norm=10.)))
    one = ['before_train_iter', 'forward', 'zero_grad', 'backward', 'step', 'after_train_iter']
    assert events == one + one
    assert 'grad_norm' in runner.log_buffer.val_history  # clipping ran, between the two
    assert [type(h).__name__ for h in runner.hooks] == ['IterTimerHook', 'Recorder']


def test_accumulation_zeroes_at_a_group_start_and_steps_at_its_end():
    events, recorder, _ = recorded_run(
        dict(type='GradientCumulativeOptimizerHook', cumulative_iters=2), max_iters=3)
    assert [e for e in events if e != 'before_train_iter'] == [
        'forward', 'zero_grad', 'backward', 'after_train_iter',
        'forward', 'backward', 'step', 'after_train_iter',
        'forward', 'zero_grad', 'backward', 'step', 'after_train_iter']  # short last group
    first, second, third = recorder.weights
    assert torch.equal(first, recorded_run(None, max_iters=1)[1].weights[0])  # not stepped
    assert not torch.equal(first, second) and not torch.equal(second, third)


def test_without_optimizer_config_the_runner_does_no_backward():
    """MMCV's convention: no optimizer hook, the model's train_step steps (or not) itself."""
    events, recorder, _ = recorded_run(None)
    assert 'backward' not in events and 'step' not in events


# ------------------------------------------------------------------ a user's optimizer hook
def user_hook_cfg(folder, **optimizer_config):
    path = folder / 'user_cfg.py'
    path.write_text(textwrap.dedent(f'''
        custom_imports = dict(imports=['df_user_optimizer_hook'])
        optimizer_config = {optimizer_config!r}
        lr_config = None
    '''))
    return Config.fromfile(str(path))


def test_a_users_optimizer_hook_from_a_config_does_backward_and_step(user_hook):
    cfg = user_hook_cfg(user_hook, type='AccumulateTwiceOptimizerHook', every=2,
                        grad_clip=None)
    hook_cls = HOOKS.get('AccumulateTwiceOptimizerHook')
    hook_cls.stepped_at.clear()
    events, recorder, runner = recorded_run(build_train_hooks_cfg(cfg, False), max_iters=4)
    assert type(runner.optimizer_hook) is hook_cls  # registered, not translated
    assert hook_cls.stepped_at == [1, 3]  # every 2 iterations
    assert events.count('step') == 2 and events.count('backward') == 4
    first, second, third, fourth = recorder.weights
    initial = recorded_run(None, max_iters=1)[1].weights[0]
    assert torch.equal(first, initial) and torch.equal(third, second)  # no step on 1st, 3rd
    assert not torch.equal(second, first) and not torch.equal(fourth, third)
    # the same gradient mean as detforge's own accumulation, translated into run_step
    _, builtin, _ = recorded_run(dict(type='GradientCumulativeOptimizerHook',
                                      cumulative_iters=2), max_iters=4)
    for mine, theirs in zip(recorder.weights, builtin.weights):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-7)


@HOOKS.register_module(force=True)
class CountingOptimizerHook(OptimizerHook):
    """A subclass that keeps mmcv's step (``super().after_train_iter``) and counts."""
    calls = 0

    def after_train_iter(self, runner):
        type(self).calls += 1
        super().after_train_iter(runner)


def test_a_subclass_calling_super_gets_the_same_step_as_the_runner():
    CountingOptimizerHook.calls = 0
    _, counted, runner = recorded_run(dict(type='CountingOptimizerHook',
                                           grad_clip=dict(max_norm=0.5)), max_iters=3)
    assert CountingOptimizerHook.calls == 3 and runner.optimizer_hook is not None
    _, plain, _ = recorded_run(dict(grad_clip=dict(max_norm=0.5)), max_iters=3)
    for a, b in zip(counted.weights, plain.weights):
        assert torch.equal(a, b)


def test_configuring_the_step_again_replaces_a_users_hook():
    model = ToyModel()
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              logger=LOGGER, max_epochs=1)
    runner.configure_step(dict(type='CountingOptimizerHook'))
    assert [type(h).__name__ for h in runner.hooks] == ['CountingOptimizerHook']
    assert runner.hooks[0].priority == 40  # MMCV's ABOVE_NORMAL: before EMA (49), checkpoints
    runner.configure_step(dict(grad_clip=None))
    assert runner.hooks == [] and runner.optimizer_hook is None


def test_fp16_with_a_users_non_amp_hook_is_refused(user_hook):
    cfg = user_hook_cfg(user_hook, type='AccumulateTwiceOptimizerHook')
    cfg.fp16 = dict(loss_scale=512.)
    with pytest.raises(BuildError, match="'AccumulateTwiceOptimizerHook' is not a mixed-"
                                         "precision optimizer hook, so 'fp16' cannot apply"):
        build_train_hooks_cfg(cfg, False)


def test_fp16_and_accumulation_translate_into_one_step():
    cfg = build_train_hooks_cfg(dict(optimizer_config=dict(
        type='GradientCumulativeOptimizerHook', cumulative_iters=2, grad_clip=dict(
            max_norm=3)), fp16=dict(loss_scale=dict(init_scale=256.))), False)
    model = ToyModel()
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              logger=LOGGER, max_epochs=1)
    runner.register_training_hooks(None, cfg)
    step = runner.optim_step
    assert runner.optimizer_hook is None
    assert [type(h).__name__ for h in runner.hooks] == ['IterTimerHook']
    assert step.dtype == torch.float16 and step.cumulative_iters == 2
    assert step.grad_clip == dict(max_norm=3) and step.scaler.get_scale() == 256.
    # MMDetection's hook name in optimizer_config, without an fp16 key
    runner.register_training_hooks(None, dict(type='Fp16OptimizerHook', loss_scale=512.))
    assert runner.optimizer_hook is None and runner.optim_step.dtype == torch.float16
    assert runner.optim_step.scaler.get_scale() == 512.


def test_bad_step_settings_name_the_config_key():
    model = ToyModel()
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              logger=LOGGER, max_epochs=1)
    with pytest.raises(BuildError, match=r'cumulative_iters must be a positive int.*'
                                         r'optimizer_config'):
        runner.register_training_hooks(None, dict(type='GradientCumulativeOptimizerHook',
                                                  cumulative_iters=0))
    with pytest.raises(BuildError, match=r'grad_clip must be dict\(max_norm'):
        runner.register_training_hooks(None, dict(grad_clip=35))


def test_old_checkpoints_with_the_scaler_in_the_hook_state_still_resume(tmp_path):
    """Before the step moved into the runner, the scaler was AmpOptimizerHook's state."""
    from detforge.engine import save_checkpoint
    cfg = dict(type='AmpOptimizerHook', dtype='float16', loss_scale='dynamic')
    model = ToyModel()
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              logger=LOGGER, max_epochs=2)
    runner.register_training_hooks(None, cfg)
    scaler = torch.amp.GradScaler('cpu', init_scale=64.)
    save_checkpoint(model, tmp_path / 'old.pth', optimizer=runner.optimizer,
                    meta=dict(epoch=1, iter=6),
                    hooks={'AmpOptimizerHook': {'scaler': scaler.state_dict()}})
    runner.resume(str(tmp_path / 'old.pth'))
    assert runner.optim_step.scaler.get_scale() == 64.


# ------------------------------------------------------------------ IterBasedRunner's hooks
def test_iter_runner_plain_checkpoint_config_saves_by_iteration(tmp_path):
    model = ToyModel()
    runner = IterBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                             work_dir=str(tmp_path), logger=LOGGER, max_iters=5)
    runner.timestamp = 'toy'
    runner.register_training_hooks(dict(policy='step', step=[2], gamma=0.5), dict(),
                                   dict(interval=2),
                                   dict(interval=1, hooks=[dict(type='TextLoggerHook')]))
    lrs = []

    class LrProbe(Hook):
        def after_train_iter(self, runner):
            lrs.append(runner.current_lr()[0])
    runner.register_hook(LrProbe())
    runner.run([toy_loader(n=12, batch_size=4)], [('train', 1)])  # 3 batches an epoch
    assert sorted(p.name for p in tmp_path.glob('iter_*.pth')) == [
        'iter_2.pth', 'iter_4.pth', 'iter_5.pth']  # every 2 iterations and the last
    assert not list(tmp_path.glob('epoch_*.pth'))
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.005])  # step at iteration 2
    records = [json.loads(line) for line in (tmp_path / 'toy.log.json').read_text()
               .splitlines()]
    assert [r['iter'] for r in records if r.get('mode') == 'train'] == [1, 2, 3, 4, 5]
    # a config that asks for epochs keeps them
    runner = IterBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                             work_dir=str(tmp_path / 'e'), logger=LOGGER, max_iters=5)
    runner.register_training_hooks(None, dict(), dict(interval=1, by_epoch=True))
    assert [h.by_epoch for h in runner.hooks if type(h).__name__ == 'CheckpointHook'] == [True]


def test_iter_runner_evaluates_every_n_iterations(tmp_path):
    model = ToyModel()
    runner = IterBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                             work_dir=str(tmp_path), logger=LOGGER, max_iters=5)
    runner.register_training_hooks(None, dict(), dict(interval=2))
    evaluated_at = []

    def toy_test(model, loader, show=False):
        evaluated_at.append(runner.iter + 1)
        return [0] * len(loader.dataset)
    runner.register_hook(EvalHook(toy_loader(n=4, batch_size=2), interval=2, by_epoch=False,
                                  test_fn=toy_test), 'LOW')
    runner.run([toy_loader()], [('train', 1)])
    assert evaluated_at == [2, 4]
    assert runner.log_buffer.output['toy_mAP'] == 4.0  # the toy metric: number of results


@pytest.mark.slow
def test_detforge_train_iter_runner_with_a_users_optimizer_hook(repo_root, bccd_subset,
                                                               tmp_path, user_hook):
    """``detforge train`` from a config file: IterBasedRunner with a plain
    ``checkpoint_config=dict(interval=1)`` and ``evaluation=dict(interval=2)``, and a user's
    gradient-accumulation hook named in ``optimizer_config`` via ``custom_imports``."""
    from test_train_cli import cli
    from conftest import data_options
    config = tmp_path / 'iter_user_hook.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = {str(repo_root / 'tests/configs/retinanet_r18_tiny_bccd.py')!r}
        custom_imports = dict(imports=['df_user_optimizer_hook'])
        optimizer_config = dict(_delete_=True, type='AccumulateTwiceOptimizerHook', every=2,
                                grad_clip=dict(max_norm=35, norm_type=2))
        runner = dict(_delete_=True, type='IterBasedRunner', max_iters=4)
        checkpoint_config = dict(_delete_=True, interval=1)
        evaluation = dict(interval=2, metric='bbox')
        lr_config = dict(_delete_=True, policy='fixed')
    '''))
    if 'df_user_optimizer_hook' in sys.modules:  # imported by an earlier test
        sys.modules['df_user_optimizer_hook'].AccumulateTwiceOptimizerHook.stepped_at.clear()
    work_dir = tmp_path / 'work'
    rc = cli(['train', str(config), '--work-dir', str(work_dir), '--seed', '0',
              '--cfg-options', *data_options(repo_root, bccd_subset(2)),
              'data.samples_per_gpu=1'])
    assert rc == 0
    # custom_imports imported the module; the hook stepped after iterations 2 and 4
    assert sys.modules['df_user_optimizer_hook'].AccumulateTwiceOptimizerHook.stepped_at == [
        1, 3]
    names = sorted(p.name for p in work_dir.glob('iter_*.pth'))
    assert names == ['iter_1.pth', 'iter_2.pth', 'iter_3.pth', 'iter_4.pth']
    weights = [torch.load(work_dir / n, weights_only=True)['state_dict'] for n in names]
    trainable = [k for k in weights[0] if k.startswith('bbox_head.')]
    assert all(torch.equal(weights[2][k], weights[1][k]) for k in trainable)  # no step at 3
    assert any(not torch.equal(weights[1][k], weights[0][k]) for k in trainable)
    assert any(not torch.equal(weights[3][k], weights[2][k]) for k in trainable)
    records = [json.loads(line) for line in next(work_dir.glob('*.log.json')).read_text()
               .splitlines()]
    # evaluated after training iterations 2 and 4 (a val record's own "iter" is the number
    # of evaluated images, as in MMCV)
    order = [r['iter'] if r['mode'] == 'train' else 'val' for r in records if 'mode' in r]
    assert order == [1, 2, 'val', 3, 4, 'val']
    assert all('bbox_mAP' in r for r in records if r.get('mode') == 'val')


@pytest.mark.parametrize('optimizer_config', [
    dict(type='GradientCumulativeOptimizerHook', cumulative_iters=2, grad_clip=dict(max_norm=5)),
    dict(type='AmpOptimizerHook', dtype='float16', loss_scale=dict(init_scale=2. ** 10,
                                                                   growth_interval=2)),
], ids=['accumulation', 'fp16-scaler'])
def test_resume_is_exact_with_the_steps_settings(tmp_path, optimizer_config):
    """Accumulation (resumed at a group boundary) and the fp16 scaler's state survive a
    resume: the resumed run ends bitwise equal to the uninterrupted one."""
    from test_engine_runner import Stop, StopAfter, assert_bitwise_equal, make_runner, weights
    straight = make_runner(tmp_path / 'straight', 'IterBasedRunner', length=10,
                           optimizer_config=dict(optimizer_config))
    straight.run([toy_loader()], [('train', 1)])
    interrupted = make_runner(tmp_path / 'resumed', 'IterBasedRunner', length=10,
                              checkpoint_config=dict(interval=4),
                              optimizer_config=dict(optimizer_config))
    interrupted.register_hook(StopAfter(iteration=5), priority='LOWEST')
    with pytest.raises(Stop):
        interrupted.run([toy_loader()], [('train', 1)])
    resumed = make_runner(tmp_path / 'resumed', 'IterBasedRunner', length=10, seed=5,
                          checkpoint_config=dict(interval=4),
                          optimizer_config=dict(optimizer_config))
    resumed.resume(str(tmp_path / 'resumed' / 'iter_4.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    assert_bitwise_equal(weights(straight), weights(resumed))
    if straight.optim_step.scaler is not None:
        assert straight.optim_step.scaler.get_scale() != 2. ** 10  # it did change
        assert resumed.optim_step.scaler.get_scale() == straight.optim_step.scaler.get_scale()


@pytest.mark.slow
def test_detforge_train_translates_amp_and_accumulation_into_the_step(repo_root, bccd_subset,
                                                                     tmp_path):
    """``amp`` + ``GradientCumulativeOptimizerHook`` + ``grad_clip`` from the command line:
    bfloat16 forward, one optimizer step per 2 iterations (``grad_norm`` is logged when the
    step clips), no optimizer hook among the hooks."""
    from test_train_cli import cli
    from conftest import data_options
    work_dir = tmp_path / 'work'
    rc = cli(['train', str(repo_root / 'tests/configs/retinanet_r18_tiny_bccd.py'),
              '--work-dir', str(work_dir), '--seed', '0', '--no-validate',
              '--cfg-options', *data_options(repo_root, bccd_subset(2)),
              'data.samples_per_gpu=1', 'amp.dtype=bfloat16',
              'optimizer_config.type=GradientCumulativeOptimizerHook',
              'optimizer_config.cumulative_iters=2'])
    assert rc == 0
    text = next(work_dir.glob('*.log')).read_text()
    assert "training step: OptimizerStep(grad_clip={'max_norm': 35, 'norm_type': 2}, " \
           "dtype=bfloat16, loss_scale=None, cumulative_iters=2)" in text
    assert 'OptimizerHook' not in text.split('Hooks will be executed')[1].split('workflow')[0]
    records = [json.loads(line) for line in next(work_dir.glob('*.log.json')).read_text()
               .splitlines()]
    train = [r for r in records if r.get('mode') == 'train']
    assert [('grad_norm' in r) for r in train] == [False, True]
    assert all(torch.isfinite(v).all() for v in torch.load(
        work_dir / 'latest.pth', weights_only=True)['state_dict'].values()
        if v.is_floating_point())


def test_every_schedule_logger_and_checkpoint_hook_accepts_by_epoch():
    """IterBasedRunner gives each of them ``by_epoch=False``; one that refused the argument
    would fail to build under it (WarmupCosineLR did)."""
    import inspect
    kinds = ('LrUpdaterHook', 'MomentumUpdaterHook', 'LoggerHook', 'CheckpointHook', 'LR')
    checked = []
    for name in HOOKS.keys():
        cls = HOOKS.get(name)
        if not name.endswith(kinds) or cls in (Hook,):
            continue
        params = inspect.signature(cls.__init__).parameters
        assert 'by_epoch' in params or any(p.kind is p.VAR_KEYWORD for p in params.values()), \
            name
        checked.append(name)
    assert {'WarmupCosineLR', 'StepLrUpdaterHook', 'TextLoggerHook', 'CheckpointHook'} <= \
        set(checked)
    model = ToyModel()
    runner = IterBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                             logger=LOGGER, max_iters=4)
    runner.register_training_hooks(dict(policy='WarmupCosineLR', warmup_iters=2), dict())
    runner.run([toy_loader()], [('train', 1)])
    assert runner.current_lr()[0] < 0.01


def test_iter_runner_evaluates_and_saves_the_ema_weights_and_trains_the_raw_ones(tmp_path):
    """EMAHook under IterBasedRunner: evaluation and checkpoints by iteration see the EMA
    weights, training goes on from the trained ones (same as a run without EMA)."""
    def run(with_ema, work_dir):
        torch.manual_seed(0)
        model = ToyModel()
        runner = IterBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                 work_dir=str(work_dir), logger=LOGGER, max_iters=4)
        hooks = [dict(type='EMAHook', momentum=0.5, warm_up=1, priority=49)] if with_ema else None
        runner.register_training_hooks(None, dict(), dict(interval=2), custom_hooks_config=hooks)
        seen, trained = [], []

        def toy_test(model, loader, show=False):
            seen.append({k: v.clone() for k, v in model.state_dict().items()})
            return [0] * len(loader.dataset)

        class TrainedWeights(Hook):  # before the step: the weights the step starts from
            def before_train_iter(self, runner):
                trained.append({k: v.clone() for k, v in runner.model.state_dict().items()})
        runner.register_hook(TrainedWeights(), 'LOWEST')
        runner.register_hook(EvalHook(toy_loader(n=4, batch_size=2), interval=2, by_epoch=False,
                                      test_fn=toy_test), 'LOW')
        runner.run([toy_loader()], [('train', 1)])
        ema = [h for h in runner.hooks if type(h).__name__ == 'EMAHook']
        return seen, trained, ema[0] if ema else None

    seen, trained, ema = run(True, tmp_path / 'ema')
    _, trained_plain, _ = run(False, tmp_path / 'plain')
    assert len(seen) == 2 and len(trained) == 4
    # the steps start from the trained weights: identical to a run without EMA
    for a, b in zip(trained, trained_plain):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the EMA of the trained weights, computed here (m = 0.5 from the first iteration): the
    # weights after step i are trained[i + 1], after the last step the ones swapped out
    # into the hook at the end of the run (the model holds the EMA weights then)
    assert ema.swapped
    after_step = trained[1:] + [dict(ema.ema)]
    expected = {k: v.clone() for k, v in trained[0].items()}
    for i, weights in enumerate(after_step):
        for k in expected:
            expected[k].mul_(0.5).add_(weights[k], alpha=0.5)
        if i in (1, 3):  # evaluated after iterations 2 and 4
            got = seen[(i - 1) // 2]
            assert all(torch.equal(got[k], expected[k]) for k in expected), i
            assert any(not torch.equal(got[k], weights[k]) for k in expected)  # EMA != trained
    # the checkpoint of iteration 2 holds the weights that evaluation saw at iteration 2
    ckpt = torch.load(tmp_path / 'ema' / 'iter_2.pth', weights_only=False)
    assert all(torch.equal(ckpt['state_dict'][k], seen[0][k]) for k in seen[0])
