"""Training you can watch and trust: progress bars, the best checkpoint, early stopping.

On the toy model of ``test_engine_toys``: the evaluation's metric is scripted (the toy data
set's ``toy_mAP`` is the number of results the test function returns), so each test knows
which epoch is best and when a run must stop.
"""
from __future__ import annotations

import logging

import pytest
import torch

from detforge.engine import EarlyStoppingHook, EvalHook, ProgressBarHook
from detforge.registry import DetforgeError

from test_engine_runner import LOGGER, make_runner
from test_engine_toys import toy_loader


@pytest.fixture(autouse=True)
def restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def read(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def scripted_test(scores):
    """A test function whose n-th call makes the toy evaluation return ``scores[n]``."""
    calls = iter(scores)

    def test_fn(model, loader, show=False):
        return [0] * next(calls)
    return test_fn


def with_eval(runner, scores, **kwargs):
    runner.register_hook(EvalHook(toy_loader(), test_fn=scripted_test(scores), **kwargs),
                         priority='LOW')
    return runner


# ----------------------------------------------------------------------------- progress bar
def test_progress_bar_shows_each_epoch_with_the_run_eta(tmp_path, capsys):
    runner = make_runner(tmp_path, length=2)
    runner.register_hook(ProgressBarHook(enable=True, mininterval=0), priority='LOWEST')
    runner.run([toy_loader()], [('train', 1)])
    err = capsys.readouterr().err
    assert 'Epoch 1/2' in err and 'Epoch 2/2' in err
    assert '6/6' in err  # 12 samples, batch 2
    assert 'eta=' in err and 'loss=' in err


def test_progress_bar_stays_out_of_a_stream_that_is_not_a_terminal(tmp_path, capsys):
    runner = make_runner(tmp_path, length=1)
    runner.register_hook(ProgressBarHook(), priority='LOWEST')  # enable=None: TTY only
    runner.run([toy_loader()], [('train', 1)])
    assert 'Epoch 1/1' not in capsys.readouterr().err  # pytest's capture is no terminal


def test_progress_bar_of_an_iteration_runner_covers_the_run(tmp_path, capsys):
    runner = make_runner(tmp_path, runner_type='IterBasedRunner', length=5)
    runner.register_hook(ProgressBarHook(enable=True, mininterval=0), priority='LOWEST')
    runner.run([toy_loader()], [('train', 1)])
    assert '5/5' in capsys.readouterr().err


def test_test_progress_bar_only_on_a_terminal(monkeypatch):
    from detforge.apis.test import _progress
    assert _progress(3, 'test').disable  # pytest's stderr is not a terminal
    from detforge.engine.hooks.progress_bar import progress_enabled

    class Tty:
        def isatty(self):
            return True
    assert progress_enabled(stream=Tty())
    monkeypatch.setenv('TQDM_DISABLE', '1')
    assert not progress_enabled(stream=Tty())


# ----------------------------------------------------------------------------- save_best
def test_save_best_keeps_one_file_for_the_best_epoch(tmp_path, caplog):
    runner = with_eval(make_runner(tmp_path, length=3), [1, 3, 2], save_best='auto')
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        runner.run([toy_loader()], [('train', 1)])
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == ['best_toy_mAP_epoch_2.pth']
    assert 'Now best checkpoint is saved as best_toy_mAP_epoch_2.pth' in caplog.text
    best = read(str(tmp_path / 'best_toy_mAP_epoch_2.pth'))
    assert best['meta']['epoch'] == 2
    assert best['meta']['hook_msgs']['best_score'] == 3
    last = read(str(tmp_path / 'epoch_3.pth'))
    assert last['meta']['hook_msgs']['best_ckpt'] == str(tmp_path / 'best_toy_mAP_epoch_2.pth')


def test_save_best_rule_less_keeps_the_smallest(tmp_path):
    runner = with_eval(make_runner(tmp_path, length=3), [3, 1, 2], save_best='toy_mAP',
                       rule='less')
    runner.run([toy_loader()], [('train', 1)])
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == ['best_toy_mAP_epoch_2.pth']


def test_resume_keeps_the_best_score(tmp_path):
    """The best value so far travels in the checkpoint's meta (MMCV's ``hook_msgs``): a
    resumed run does not call a worse score "best"."""
    first = with_eval(make_runner(tmp_path, length=2), [5, 1], save_best='auto')
    first.run([toy_loader()], [('train', 1)])
    resumed = with_eval(make_runner(tmp_path, length=3), [4], save_best='auto')
    resumed.resume(str(tmp_path / 'epoch_2.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == ['best_toy_mAP_epoch_1.pth']
    assert resumed.meta['hook_msgs']['best_score'] == 5


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_ends_the_run_and_says_why(tmp_path, caplog):
    # best 2, then 10 (improves by >= 2), 10 (no), 11 (no: < 10 + 2) -> stop after epoch 4
    runner = make_runner(tmp_path, length=10, checkpoint_config=dict(interval=3))
    with_eval(runner, [2, 10, 10, 11, 18, 18], save_best='auto')
    runner.register_hook_from_cfg(dict(type='EarlyStoppingHook', monitor='toy_mAP',
                                       patience=2, min_delta=2))
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        runner.run([toy_loader()], [('train', 1)])
    assert runner.epoch == 4
    assert 'early stopping after the evaluation of epoch 4: toy_mAP did not improve' \
        in caplog.text
    # interval 3 skipped epoch 4: its checkpoint is written on stopping, with the hook state
    ckpt = read(str(tmp_path / 'latest.pth'))
    assert ckpt['meta']['epoch'] == 4
    assert (tmp_path / 'epoch_4.pth').is_file()
    assert ckpt['hooks']['EarlyStoppingHook'] == {'best_score': 10.0, 'wait_count': 2}
    # save_best counts any gain (11 > 10); early stopping wanted min_delta=2
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == ['best_toy_mAP_epoch_4.pth']


def test_early_stopping_follows_mmengine_on_ties_and_thresholds():
    hook = EarlyStoppingHook(monitor='bbox_mAP', min_delta=0.0, patience=1)
    assert hook.rule == 'greater'
    assert hook.check(0.3) == (False, '')
    assert hook.check(0.3) == (False, '')  # equal to best + min_delta counts as improved
    assert hook.check(0.29)[0]
    threshold = EarlyStoppingHook(monitor='loss', stopping_threshold=0.5)
    assert threshold.rule == 'less'
    assert not threshold.check(0.7)[0] and threshold.check(0.4)[0]
    assert EarlyStoppingHook(monitor='bbox_mAP').check(float('nan'))[0]


def test_early_stopping_on_the_validation_loss_of_the_workflow(tmp_path, caplog):
    runner = make_runner(tmp_path, length=5)
    with_eval(runner, [1] * 5)  # an evaluation too: no warning that it lacks 'loss'
    runner.register_hook_from_cfg(dict(type='EarlyStoppingHook', monitor='loss',
                                       stopping_threshold=1e9))
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        runner.run([toy_loader(), toy_loader()], [('train', 1), ('val', 1)])
    assert runner.epoch == 1
    assert 'early stopping after the validation losses of epoch 1' in caplog.text
    assert 'is not among the metrics' not in caplog.text


def test_early_stopping_bad_settings_are_clear_errors():
    with pytest.raises(DetforgeError, match='cannot tell whether'):
        EarlyStoppingHook(monitor='toy_score')
    with pytest.raises(DetforgeError, match='patience'):
        EarlyStoppingHook(monitor='bbox_mAP', patience=0)


def test_early_stopping_missing_monitor_warns_or_raises(tmp_path):
    runner = make_runner(tmp_path, length=2)
    with_eval(runner, [1, 2])
    runner.register_hook(EarlyStoppingHook(monitor='bbox_mAP', strict=True))
    with pytest.raises(DetforgeError, match="'bbox_mAP' is not among the metrics"):
        runner.run([toy_loader()], [('train', 1)])


def test_early_stopping_with_an_iteration_runner(tmp_path):
    runner = make_runner(tmp_path, runner_type='IterBasedRunner', length=20,
                         checkpoint_config=dict(interval=7, by_epoch=False))
    with_eval(runner, [1] * 10, by_epoch=False, interval=2)
    runner.register_hook(EarlyStoppingHook(monitor='toy_mAP', patience=2, min_delta=1))
    runner.run([toy_loader()], [('train', 1)])
    assert runner.iter == 6  # evaluated at 2 (best), 4 and 6 (no gain of >= 1): stop
    assert read(str(tmp_path / 'latest.pth'))['meta']['iter'] == 6
    assert sorted(p.name for p in tmp_path.glob('iter_*.pth')) == ['iter_6.pth']


def test_resume_from_the_checkpoint_before_a_finished_evaluation_keeps_its_results(tmp_path):
    """epoch_2.pth is written before evaluation 2 (as in MMCV); that evaluation finished, so
    the resumed run does not repeat it, and takes its best score and the early-stopping
    state from the work dir's record of it."""
    first = with_eval(make_runner(tmp_path, length=2), [1, 5], save_best='auto')
    first.register_hook(EarlyStoppingHook(monitor='toy_mAP', min_delta=1, patience=2))
    first.run([toy_loader()], [('train', 1)])
    assert read(str(tmp_path / 'epoch_2.pth'))['meta']['hook_msgs']['best_score'] == 1
    resumed = with_eval(make_runner(tmp_path, length=4), [4, 4], save_best='auto')
    stopper = EarlyStoppingHook(monitor='toy_mAP', min_delta=1, patience=2)
    resumed.register_hook(stopper)
    resumed.resume(str(tmp_path / 'epoch_2.pth'))
    resumed.run([toy_loader()], [('train', 1)])
    # 4 < 5: no new best; two evaluations without a gain of 1 over 5: stopped after epoch 4
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == ['best_toy_mAP_epoch_2.pth']
    assert stopper.best_score == 5 and stopper.wait_count == 2 and resumed.epoch == 4
