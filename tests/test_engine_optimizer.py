"""build_optimizer and the optimizer hooks: param groups, clipping, accumulation, AMP."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from detforge.apis.train import auto_scale_lr, build_train_hooks_cfg
from detforge.engine import EpochBasedRunner, IterBasedRunner, build_optimizer
from detforge.registry import BuildError

from test_engine_toys import ToyModel, toy_loader


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.dw = nn.Conv2d(4, 4, 3, groups=4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def settings(optimizer):
    """{id(param): (lr, weight_decay)} over the param groups."""
    return {id(p): (g['lr'], g.get('weight_decay')) for g in optimizer.param_groups
            for p in g['params']}


def test_any_torch_optimizer_by_name_and_frozen_params_left_out():
    net = Net()
    for name in ('SGD', 'Adam', 'AdamW', 'RMSprop'):
        optimizer = build_optimizer(net, dict(type=name, lr=0.01))
        assert type(optimizer).__name__ == name
        params = {id(p) for g in optimizer.param_groups for p in g['params']}
        assert id(net.frozen.weight) not in params and id(net.head.weight) in params
        assert len(params) == sum(1 for p in net.parameters() if p.requires_grad)


def test_mmdet_paramwise_multipliers():
    net = Net()
    optimizer = build_optimizer(net, dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4,
        paramwise_cfg=dict(bias_lr_mult=2., bias_decay_mult=0.5, norm_decay_mult=0.,
                           dwconv_decay_mult=0.25)))
    s = settings(optimizer)
    assert s[id(net.head.weight)] == pytest.approx((0.1, 1e-4))
    assert s[id(net.head.bias)] == pytest.approx((0.2, 5e-5))
    assert s[id(net.backbone[1].weight)] == pytest.approx((0.1, 0.))  # norm weight
    assert s[id(net.backbone[1].bias)] == pytest.approx((0.1, 0.))  # norm bias: no lr mult
    assert s[id(net.dw.weight)] == pytest.approx((0.1, 2.5e-5))
    assert len(optimizer.param_groups) < len(s)  # equal settings share a group


def test_custom_keys_longest_match_first():
    net = Net()
    optimizer = build_optimizer(net, dict(
        type='SGD', lr=0.1, weight_decay=1e-4,
        paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1),
                                        'backbone.1': dict(lr_mult=0.5, decay_mult=0.)})))
    s = settings(optimizer)
    assert s[id(net.backbone[0].weight)] == pytest.approx((0.01, 1e-4))
    assert s[id(net.backbone[1].weight)] == pytest.approx((0.05, 0.))
    assert s[id(net.head.weight)] == pytest.approx((0.1, 1e-4))


def test_detectron2_paramwise_names():
    net = Net()
    optimizer = build_optimizer(net, dict(
        type='SGD', lr=0.1, weight_decay=1e-4, weight_decay_norm=0.,
        paramwise_cfg=dict(bias_lr_factor=2., weight_decay_bias=0.)))
    s = settings(optimizer)
    assert s[id(net.backbone[1].weight)] == pytest.approx((0.1, 0.))
    assert s[id(net.head.bias)] == pytest.approx((0.2, 0.))
    assert s[id(net.head.weight)] == pytest.approx((0.1, 1e-4))


def test_bad_optimizer_configs_are_clear():
    with pytest.raises(BuildError, match="no 'optimizer'"):
        build_optimizer(Net(), None)
    with pytest.raises(BuildError, match="'Adamm' is not in the OPTIMIZERS registry; did you "
                                         "mean 'Adam'"):
        build_optimizer(Net(), dict(type='Adamm', lr=0.1))
    with pytest.raises(BuildError, match='unknown paramwise_cfg key'):
        build_optimizer(Net(), dict(type='SGD', lr=0.1, paramwise_cfg=dict(bias_lr=2)))


def train(optimizer_config, *, max_iters=4, batch_size=2, n=8, lr=1.0, model_cls=ToyModel,
          runner_cls=IterBasedRunner):
    torch.manual_seed(0)
    model = model_cls(dropout=0.)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    runner = runner_cls(model, optimizer=optimizer, logger=logging.getLogger('t'),
                        max_iters=max_iters)
    runner.register_training_hooks(None, optimizer_config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner.run([toy_loader(n=n, batch_size=batch_size)], [('train', 1)])
    return runner, before


def test_grad_clip_bounds_the_step_and_logs_the_norm():
    free, before = train(dict(grad_clip=None), max_iters=1)
    step_free = torch.cat([(free.model.state_dict()[k] - before[k]).flatten() for k in before])
    clipped, before = train(dict(grad_clip=dict(max_norm=0.5)), max_iters=1)
    step = torch.cat([(clipped.model.state_dict()[k] - before[k]).flatten() for k in before])
    assert step_free.norm() > 1.0  # lr 1: the step is the gradient
    assert step.norm() == pytest.approx(0.5, rel=1e-4)
    assert torch.allclose(step / step.norm(), step_free / step_free.norm(), atol=1e-5)
    assert clipped.log_buffer.val_history['grad_norm'][0] == pytest.approx(
        float(step_free.norm()), rel=1e-4)


def test_gradient_accumulation_equals_a_larger_batch():
    big, _ = train(dict(), max_iters=2, batch_size=4, lr=0.1)
    accumulated, _ = train(dict(type='GradientCumulativeOptimizerHook', cumulative_iters=2),
                           max_iters=4, batch_size=2, lr=0.1)
    for key, value in big.model.state_dict().items():
        assert torch.allclose(value, accumulated.model.state_dict()[key], atol=1e-6), key
    plain, _ = train(dict(), max_iters=4, batch_size=2, lr=0.1)
    assert not torch.allclose(plain.model.linear.weight, accumulated.model.linear.weight)


class DtypeProbe(ToyModel):
    def train_step(self, data, optimizer=None):
        x, y = data
        out = self.linear(x).squeeze(1)
        self.seen_dtype = out.dtype
        loss = ((out.float() - y) ** 2).mean()
        return dict(loss=loss, log_vars={'loss': loss.item()}, num_samples=len(x))


def test_bf16_autocast_on_cpu_changes_the_forward_dtype_only_during_training():
    runner, _ = train(dict(type='AmpOptimizerHook', dtype='bfloat16'), max_iters=2,
                      model_cls=DtypeProbe, lr=0.01)
    assert runner.model.seen_dtype == torch.bfloat16
    assert runner.model.linear.weight.dtype == torch.float32  # master weights stay fp32
    fp32, _ = train(dict(), max_iters=2, model_cls=DtypeProbe, lr=0.01)
    assert fp32.model.seen_dtype == torch.float32
    assert not torch.equal(runner.model.linear.weight, fp32.model.linear.weight)
    assert torch.allclose(runner.model.linear.weight, fp32.model.linear.weight, atol=1e-2)


def test_fp16_loss_scaler_state_is_checkpointed_and_resumed(tmp_path):
    cfg = build_train_hooks_cfg(dict(optimizer_config=dict(grad_clip=None),
                                     fp16=dict(loss_scale=dict(init_scale=1024.,
                                                               growth_interval=1))), False)
    assert cfg['type'] == 'AmpOptimizerHook' and cfg['dtype'] == 'float16'
    torch.manual_seed(0)
    model = ToyModel(dropout=0.)
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                              work_dir=str(tmp_path), logger=logging.getLogger('t'),
                              max_epochs=1)
    runner.register_training_hooks(None, cfg, dict(interval=1))
    runner.run([toy_loader()], [('train', 1)])
    # the step's scaler (the runner's, not a hook's since the step moved into run_step)
    scale = runner.optim_step.scaler.get_scale()
    assert scale != 1024.  # grown (or backed off) by the dynamic scaler
    saved = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    assert saved['scaler']['scale'] == scale

    resumed = EpochBasedRunner(ToyModel(dropout=0.), optimizer=torch.optim.SGD(
        model.parameters(), lr=0.01), work_dir=str(tmp_path), logger=logging.getLogger('t'),
        max_epochs=2)
    resumed.register_training_hooks(None, dict(cfg))
    resumed.resume(str(tmp_path / 'epoch_1.pth'))
    assert resumed.optim_step.scaler.get_scale() == scale


def test_amp_config_builds_a_bf16_hook_without_scaler():
    cfg = build_train_hooks_cfg(dict(optimizer_config=dict(grad_clip=dict(max_norm=1)),
                                     amp=dict(dtype='bfloat16')), False)
    assert cfg == dict(grad_clip=dict(max_norm=1), dtype='bfloat16', loss_scale=None,
                       type='AmpOptimizerHook')


class Cfg(dict):
    __getattr__ = dict.__getitem__


def test_auto_scale_lr_uses_gpus_times_samples_per_gpu():
    cfg = Cfg(optimizer=dict(lr=0.02), data=dict(samples_per_gpu=4), gpu_ids=[0],
              auto_scale_lr=dict(base_batch_size=16, enable=True))
    auto_scale_lr(cfg, distributed=False)
    assert cfg['optimizer']['lr'] == pytest.approx(0.02 * 4 / 16)
    cfg = Cfg(optimizer=dict(lr=0.02), data=dict(samples_per_gpu=4),
              auto_scale_lr=dict(base_batch_size=16, enable=False))
    auto_scale_lr(cfg, distributed=False)
    assert cfg['optimizer']['lr'] == 0.02
