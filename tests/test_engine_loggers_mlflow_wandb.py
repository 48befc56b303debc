"""MLflow and Weights & Biases logger hooks, offline: MLflow to a file store under tmp_path,
W&B in offline mode (no account, no network). Skipped, saying why, without the packages
(``pip install 'detforge[mlflow]'`` / ``'detforge[wandb]'``)."""
from __future__ import annotations

import json

import pytest
import torch

from detforge.registry import HOOKS, DetforgeError

from test_engine_runner import make_runner
from test_engine_toys import toy_loader


@pytest.fixture(autouse=True)
def restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_mlflow_logger_writes_metrics_params_and_the_checkpoint(tmp_path, monkeypatch):
    mlflow = pytest.importorskip('mlflow', reason="MLflow is not installed: pip install "
                                                  "'detforge[mlflow]'")
    # MLflow 3 keeps the file store only on request (the database store needs SQLAlchemy)
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')
    store = (tmp_path / 'mlruns').as_uri()
    runner = make_runner(tmp_path / 'work', length=2)
    runner.register_hook(HOOKS.build(dict(
        type='MlflowLoggerHook', exp_name='toy', tracking_uri=store, interval=2,
        params=dict(lr=0.02), tags=dict(model='toy'))), priority='VERY_LOW')
    runner.run([toy_loader()], [('train', 1)])

    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name('toy')
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == 'FINISHED'
    assert run.data.params == {'lr': '0.02'} and run.data.tags['model'] == 'toy'
    history = client.get_metric_history(run.info.run_id, 'loss/train')
    assert [m.step for m in history] == [2, 4, 6, 8, 10, 12]  # a line every 2 iterations
    lines = [json.loads(x) for x in (tmp_path / 'work' / 'toy.log.json').read_text().split('\n')
             if '"mode": "train"' in x]
    assert [m.value for m in history] == pytest.approx([x['loss'] for x in lines], abs=1e-4)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, 'checkpoints')}
    assert artifacts == {'checkpoints/epoch_2.pth'}


def test_wandb_logger_offline_writes_a_run_with_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip('wandb', reason="wandb is not installed: pip install 'detforge[wandb]'")
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setenv('WANDB_CONFIG_DIR', str(tmp_path / 'wandb_config'))
    runner = make_runner(tmp_path / 'work', length=1)
    hook = HOOKS.build(dict(type='WandbLoggerHook', interval=2,
                            init_kwargs=dict(mode='offline', dir=str(tmp_path), project='toy')))
    runner.register_hook(hook, priority='VERY_LOW')
    # the real wandb run, watched: what it was given and its summary before it closes
    seen, summary = [], {}
    original_before_run = hook.before_run

    def before_run(runner):
        original_before_run(runner)
        run = hook.run
        log, finish = run.log, run.finish
        run.log = lambda data, **kw: (seen.append((kw.get('step'), dict(data))), log(data, **kw))
        run.finish = lambda *a, **kw: (summary.update(dict(run.summary)), finish(*a, **kw))
    hook.before_run = before_run
    runner.run([toy_loader()], [('train', 1)])

    (run_dir,) = (tmp_path / 'wandb').glob('offline-run-*')
    assert list(run_dir.glob('*.wandb'))  # the run's records, for `wandb sync`
    lines = [json.loads(x) for x in (tmp_path / 'work' / 'toy.log.json').read_text().split('\n')
             if '"mode": "train"' in x]
    assert [step for step, _ in seen] == [2, 4, 6]
    assert [d['loss/train'] for _, d in seen] == pytest.approx([x['loss'] for x in lines],
                                                              abs=1e-4)
    assert summary['loss/train'] == pytest.approx(lines[-1]['loss'], abs=1e-4)
    assert 'learning_rate' in summary and summary['_step'] == 6


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == 'wandb':
            raise ImportError('No module named wandb')
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_wandb)
    runner = make_runner(tmp_path, length=1)
    runner.register_hook(HOOKS.build(dict(type='WandbLoggerHook')), priority='VERY_LOW')
    with pytest.raises(DetforgeError, match=r"pip install 'detforge\[wandb\]'"):
        runner.run([toy_loader()], [('train', 1)])
