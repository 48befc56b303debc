"""Faults around checkpoints and evaluation (issue 18 items 6, 8, 9, 11): a disk that
fills up, temporaries of killed saves, checkpoints that would run code, an evaluation that a
kill interrupted."""
from __future__ import annotations

import errno
import json
import os
import shutil
from collections import namedtuple

import pytest
import torch

from detforge.engine import EvalHook, load_checkpoint
from detforge.engine.checkpoint import (CheckpointWriteError, UnsafeCheckpointError,
                                        atomic_torch_save, find_latest_checkpoint)

from test_engine_runner import Stop, make_runner
from test_engine_toys import ToyModel, toy_loader

Usage = namedtuple('Usage', 'total used free')


@pytest.mark.parametrize('failure', ['torch_enforce_fail', 'enospc'])
def test_disk_full_while_saving_is_one_line_saying_where_and_how_much(tmp_path, monkeypatch,
                                                                      failure):
    target = tmp_path / 'epoch_1.pth'
    atomic_torch_save({'w': torch.zeros(10)}, target)  # the previous checkpoint
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b'x' * 1000)
        if failure == 'enospc':
            raise OSError(errno.ENOSPC, 'No space left on device')
        # what torch's zip writer raises when a write fails
        raise RuntimeError('[enforce fail at inline_container.cc:672] . PytorchStreamWriter '
                           'failed writing file data/0: file write failed')
    monkeypatch.setattr(torch, 'save', full_disk)
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: Usage(100 << 20, 100 << 20, 1000))
    weights = {'w': torch.zeros(3 << 20)}  # 12 MB of float32
    with pytest.raises(CheckpointWriteError) as info:
        atomic_torch_save(weights, target)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith(f'disk full: cannot write checkpoint {target}: it needs about '
                              f'12 MB and {tmp_path} has 0 MB free; the previous checkpoint '
                              f'is intact')
    monkeypatch.setattr(torch, 'save', real_save)
    assert torch.load(target, weights_only=True)['w'].shape == (10,)
    assert [p.name for p in tmp_path.iterdir()] == ['epoch_1.pth']  # no temporary left


def test_stale_temporaries_of_killed_saves_are_removed_when_a_run_starts(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = [tmp_path / '.epoch_2.pth.k2j4x_9.tmp', tmp_path / '.latest.pth.link.tmp']
    for path in stale:
        path.write_bytes(b'half a checkpoint')
    keep = [tmp_path / 'notes.tmp', tmp_path / '.hidden.tmp']
    for path in keep:
        path.write_bytes(b'not ours')
    runner = make_runner(tmp_path, length=1)
    runner.run([toy_loader()], [('train', 1)])
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)
    assert (tmp_path / 'epoch_1.pth').is_file()


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, 'w'))


def test_checkpoint_that_would_run_code_is_named_as_such_and_never_unpickled(tmp_path,
                                                                             monkeypatch):
    touched = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': ToyModel().state_dict(), 'extra': _Payload(str(touched))}, evil)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(ToyModel(), str(evil))
    message = str(info.value)
    assert 'would run code when unpickled (global io.open)' in message
    assert f'DETFORGE_TRUSTED_CHECKPOINTS={evil}' in message
    assert 'truncated' not in message and 'weights_only=False' not in message
    assert '\n' not in message and not touched.exists()
    # the documented way to load a file you trust
    monkeypatch.setenv('DETFORGE_TRUSTED_CHECKPOINTS', str(evil))
    load_checkpoint(ToyModel(), str(evil))
    assert touched.exists()


def test_checkpoint_calling_a_blocked_module_names_it(tmp_path):
    class System:
        def __reduce__(self):
            return (os.system, ('true',))
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': System()}, evil)
    with pytest.raises(UnsafeCheckpointError, match=r'global (posix|os|nt)\.system\)'):
        load_checkpoint(ToyModel(), str(evil))


def _eval_hook(calls, stop_at=None):
    def test_fn(model, loader, show=False):
        calls.append(None)
        if stop_at is not None and len(calls) == stop_at:
            raise Stop  # killed during evaluation
        return [0] * len(loader.dataset)
    return EvalHook(toy_loader(), test_fn=test_fn)


def _val_epochs(work_dir):
    epochs = []
    for log in sorted(work_dir.glob('*.log.json')):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if 'toy_mAP' in record:
                epochs.append(record['epoch'])
    return epochs


def test_evaluation_killed_midway_is_run_again_on_resume(tmp_path):
    calls = []
    first = make_runner(tmp_path, length=2)
    first.register_hook(_eval_hook(calls, stop_at=1), priority='LOW')
    with pytest.raises(Stop):
        first.run([toy_loader()], [('train', 1)])
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / 'epoch_1.pth')
    assert torch.load(tmp_path / 'epoch_1.pth', weights_only=True)['hooks']['EvalHook'] == \
        {'eval_due': 1}

    calls = []
    resumed = make_runner(tmp_path, length=2)
    resumed.register_hook(_eval_hook(calls), priority='LOW')
    resumed.resume(str(tmp_path / 'epoch_1.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    assert len(calls) == 2  # epoch 1 again, then epoch 2
    assert _val_epochs(tmp_path) == [1, 2]
    # the checkpoint of epoch 2 was written before its evaluation, which then finished:
    # resuming from it does not evaluate epoch 2 again
    assert torch.load(tmp_path / 'epoch_2.pth', weights_only=True)['hooks']['EvalHook'] == \
        {'eval_due': 2}
    calls = []
    again = make_runner(tmp_path, length=2)
    again.register_hook(_eval_hook(calls), priority='LOW')
    again.resume(str(tmp_path / 'epoch_2.pth'))
    again.run([toy_loader()], [('train', 1)])
    assert calls == []


def test_evaluation_killed_after_the_last_epoch_runs_on_resume(tmp_path):
    calls = []
    first = make_runner(tmp_path, length=1)
    first.register_hook(_eval_hook(calls, stop_at=1), priority='LOW')
    with pytest.raises(Stop):
        first.run([toy_loader()], [('train', 1)])
    calls = []
    resumed = make_runner(tmp_path, length=1)
    resumed.register_hook(_eval_hook(calls), priority='LOW')
    resumed.resume(str(tmp_path / 'epoch_1.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    assert len(calls) == 1 and _val_epochs(tmp_path) == [1]


def test_evaluation_killed_midway_is_run_again_on_resume_by_iteration(tmp_path):
    def hook(calls, stop_at=None):
        evaluation = _eval_hook(calls, stop_at)
        evaluation.by_epoch, evaluation.interval = False, 2
        return evaluation
    calls = []
    first = make_runner(tmp_path, runner_type='IterBasedRunner', length=4)
    first.register_hook(hook(calls, stop_at=1), priority='LOW')
    with pytest.raises(Stop):
        first.run([toy_loader()], [('train', 4)])
    assert torch.load(tmp_path / 'iter_2.pth', weights_only=True)['hooks']['EvalHook'] == \
        {'eval_due': 2}
    calls = []
    resumed = make_runner(tmp_path, runner_type='IterBasedRunner', length=4)
    resumed.register_hook(hook(calls), priority='LOW')
    resumed.resume(str(tmp_path / 'iter_2.pth'))
    resumed.run([toy_loader()], [('train', 4)])
    assert len(calls) == 2  # iteration 2 again, then iteration 4
