"""Every lr schedule against values computed by hand at chosen iterations."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from detforge.engine.hooks import build_lr_hook, build_momentum_hook
from detforge.registry import BuildError


def lr_curve(lr_config, *, epochs=1, iters_per_epoch=10, lr=0.1, momentum_config=None):
    """Drive a schedule hook as the runner does; return the lr (and momentum) used at
    each iteration."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    runner = SimpleNamespace(optimizer=optimizer, epoch=0, iter=0, max_epochs=epochs,
                             max_iters=epochs * iters_per_epoch,
                             data_loader=range(iters_per_epoch))
    hooks = [build_lr_hook(lr_config)]
    if momentum_config is not None:
        hooks.append(build_momentum_hook(momentum_config))
    for hook in hooks:
        hook.before_run(runner)
    lrs, momentums = [], []
    for epoch in range(epochs):
        runner.epoch = epoch
        for hook in hooks:
            hook.before_train_epoch(runner)
        for i in range(iters_per_epoch):
            runner.iter = epoch * iters_per_epoch + i
            for hook in hooks:
                hook.before_train_iter(runner)
            lrs.append(optimizer.param_groups[0]['lr'])
            momentums.append(optimizer.param_groups[0]['momentum'])
    return (lrs, momentums) if momentum_config is not None else lrs


def test_step_policy_decays_at_each_milestone_epoch():
    lrs = lr_curve(dict(policy='step', step=[2, 3]), epochs=4, iters_per_epoch=2)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_step_policy_with_int_step_and_min_lr():
    lrs = lr_curve(dict(policy='step', step=1, gamma=0.5, min_lr=0.03), epochs=4,
                   iters_per_epoch=1)
    assert lrs == pytest.approx([0.1, 0.05, 0.03, 0.03])


def test_multistep_name_is_the_step_schedule():
    lrs = lr_curve(dict(policy='multistep', step=[1], gamma=0.5), epochs=2, iters_per_epoch=1)
    assert lrs == pytest.approx([0.1, 0.05])


def test_linear_warmup_then_schedule():
    # k = (1 - i / 4) * (1 - 0.1); lr = 0.1 * (1 - k)
    lrs = lr_curve(dict(policy='step', step=[10], warmup='linear', warmup_iters=4,
                        warmup_ratio=0.1), epochs=1, iters_per_epoch=6)
    assert lrs == pytest.approx([0.01, 0.0325, 0.055, 0.0775, 0.1, 0.1])


def test_constant_and_exp_warmup():
    lrs = lr_curve(dict(policy='step', step=[10], warmup='constant', warmup_iters=3,
                        warmup_ratio=0.25), iters_per_epoch=4)
    assert lrs == pytest.approx([0.025, 0.025, 0.025, 0.1])
    lrs = lr_curve(dict(policy='step', step=[10], warmup='exp', warmup_iters=4,
                        warmup_ratio=0.1), iters_per_epoch=5)
    assert lrs[2] == pytest.approx(0.1 * 0.1 ** 0.5)
    assert lrs[0] == pytest.approx(0.01) and lrs[4] == pytest.approx(0.1)


def test_warmup_by_epoch_counts_epochs():
    lrs = lr_curve(dict(policy='step', step=[10], warmup='linear', warmup_iters=1,
                        warmup_ratio=0.1, warmup_by_epoch=True), epochs=2, iters_per_epoch=4)
    assert lrs[2] == pytest.approx(0.1 * (1 - 0.5 * 0.9))
    assert lrs[4:] == pytest.approx([0.1] * 4)


def test_exp_and_inv_policies():
    lrs = lr_curve(dict(policy='exp', gamma=0.5), epochs=4, iters_per_epoch=1)
    assert lrs == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    lrs = lr_curve(dict(policy='inv', gamma=0.1, power=2, by_epoch=False), iters_per_epoch=4)
    assert lrs[3] == pytest.approx(0.1 * 1.3 ** -2)


def test_poly_policy():
    lrs = lr_curve(dict(policy='poly', power=2., min_lr=0.01, by_epoch=False))
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx((0.1 - 0.01) * 0.5 ** 2 + 0.01)


@pytest.mark.parametrize('cfg', [
    dict(policy='CosineAnnealing', min_lr=0.01, by_epoch=False),
    dict(policy='CosineAnnealing', min_lr_ratio=0.1, by_epoch=False),
    dict(policy='cosine', min_lr=0.01, by_epoch=False),
])
def test_cosine_annealing(cfg):
    lrs = lr_curve(cfg)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.055)  # half way: the mean of 0.1 and 0.01
    assert lrs[8] == pytest.approx(0.01 + 0.045 * (math.cos(math.pi * 0.8) + 1))


def test_cosine_annealing_by_epoch_is_flat_within_an_epoch():
    lrs = lr_curve(dict(policy='CosineAnnealing', min_lr=0.), epochs=2, iters_per_epoch=3)
    assert lrs == pytest.approx([0.1] * 3 + [0.05] * 3)


def test_cosine_restart():
    lrs = lr_curve(dict(policy='CosineRestart', periods=[4, 6], restart_weights=[1, 0.5],
                        min_lr=0., by_epoch=False))
    assert lrs[2] == pytest.approx(0.05)
    assert lrs[4] == pytest.approx(0.05)  # restart at half height
    assert lrs[7] == pytest.approx(0.025)


def test_flat_cosine():
    lrs = lr_curve(dict(policy='FlatCosineAnnealing', start_percent=0.5, min_lr=0.,
                        by_epoch=False))
    assert lrs[:5] == pytest.approx([0.1] * 5)
    assert lrs[5] == pytest.approx(0.1)
    assert lrs[7] == pytest.approx(0.05 * (math.cos(math.pi * 0.4) + 1))


def test_one_cycle():
    lrs = lr_curve(dict(policy='OneCycle', max_lr=0.1, total_steps=10, pct_start=0.3))
    initial = 0.1 / 25
    assert lrs[0] == pytest.approx(initial)
    assert lrs[1] == pytest.approx(0.1 + 0.5 * (initial - 0.1))  # half way up, cosine
    assert lrs[2] == pytest.approx(0.1)
    final = initial / 1e4
    assert lrs[5] == pytest.approx(final + 0.5 * (0.1 - final) * (math.cos(math.pi * 3 / 7) + 1))
    assert lrs[9] == pytest.approx(final)


def test_one_cycle_linear_three_phase():
    lrs = lr_curve(dict(policy='OneCycle', max_lr=0.1, total_steps=10, pct_start=0.3,
                        anneal_strategy='linear', three_phase=True))
    initial = 0.1 / 25
    assert lrs[1] == pytest.approx(initial + (0.1 - initial) * 0.5)
    assert lrs[2] == pytest.approx(0.1)
    # phase 2 ends at 2 * 0.3 * 10 - 2 = 4: back down to the initial lr
    assert lrs[3] == pytest.approx(0.1 - (0.1 - initial) * 0.5)
    assert lrs[4] == pytest.approx(initial)


def test_detectron2_warmup_multistep_by_name():
    lrs = lr_curve(dict(policy='WarmupMultiStepLR', steps=[6, 8], gamma=0.1, warmup_iters=4,
                        warmup_factor=0.001))
    assert lrs[0] == pytest.approx(0.1 * 0.001)
    assert lrs[2] == pytest.approx(0.1 * (0.001 * 0.5 + 0.5))
    assert lrs[4:6] == pytest.approx([0.1, 0.1])
    assert lrs[6] == pytest.approx(0.01)
    assert lrs[8] == pytest.approx(0.001)


def test_detectron2_warmup_cosine_by_name():
    lrs = lr_curve(dict(policy='WarmupCosineLR', warmup_iters=2, warmup_factor=0.001))
    assert lrs[1] == pytest.approx(0.1 * 0.5005 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert lrs[5] == pytest.approx(0.05)


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(BuildError, match='unknown lr policy .*Step'):
        build_lr_hook(dict(policy='stepp', step=[1]))


def test_bad_warmup_type_is_rejected():
    with pytest.raises(BuildError, match='warmup'):
        build_lr_hook(dict(policy='step', step=[1], warmup='quadratic', warmup_iters=2))


def test_cosine_momentum_schedule():
    _, momentums = lr_curve(dict(policy='fixed'), momentum_config=dict(
        policy='CosineAnnealing', min_momentum_ratio=0.5, by_epoch=False))
    assert momentums[0] == pytest.approx(0.9)
    assert momentums[5] == pytest.approx(0.9 * 0.75)
