"""The benchmark tooling: FLOP counting, the utilisation arithmetic, the report's parsers and
the scripts' command lines (no benchmark is run here)."""
import importlib.util
import subprocess
import sys

import pytest
import torch

from conftest import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def flops():
    return _load('flops')


@pytest.fixture(scope='module')
def run_all():
    sys.path.insert(0, str(REPO / 'benchmarks'))
    try:
        return _load('run_all')
    finally:
        sys.path.remove(str(REPO / 'benchmarks'))


def test_conv_flops_equal_the_hand_count(flops):
    # 2 images, 3 -> 8 channels, 3x3 kernel, stride 2, padding 1: 16x20 -> 8x10 outputs;
    # each output is 3*3*3 = 27 multiply-adds = 54 FLOP: 2 * 8 * 8 * 10 * 54 = 69,120
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    total, out = flops.count_flops(conv, torch.randn(2, 3, 16, 20))
    assert out.shape == (2, 8, 8, 10)
    assert total == flops.conv2d_flops(2, 3, 8, 8, 10, 3, 3) == 69_120


def test_grouped_conv_flops_divide_by_groups(flops):
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=4)
    total, _ = flops.count_flops(conv, torch.randn(1, 8, 5, 5))
    assert total == flops.conv2d_flops(1, 8, 8, 5, 5, 3, 3, groups=4) == 2 * 8 * 25 * 2 * 9


def test_backward_of_a_linear_layer_is_counted_twice_more(flops):
    # forward x @ W^T: 2*N*in*out; backward: grad input and grad weight, the same each
    layer = torch.nn.Linear(16, 4, bias=False)
    x = torch.randn(8, 16, requires_grad=True)
    total, _ = flops.count_flops(lambda: layer(x).sum().backward())
    assert total == 3 * (2 * 8 * 16 * 4)


def test_matmul_throughput_is_reported_per_run(flops):
    result = flops.matmul_gflops(n=64, repeats=3, warmup=1)
    assert len(result['runs']) == 3 and result['n'] == 64
    assert result['median'] == sorted(result['runs'])[1] > 0
    assert len(result['cpu_runs']) == 3 and result['cpu_median'] > 0
    conv = flops.conv_gflops(channels=8, size=(6, 7), batch=1, repeats=2)
    assert conv['shape'] == (1, 8, 6, 7) and len(conv['runs']) == 2 and conv['median'] > 0
    assert result['threads'] == torch.get_num_threads()


def test_utilisation_is_achieved_over_limit(flops):
    u = flops.utilisation(flops=300e9, seconds=2.0, limit_gflops=200.0)
    assert u['achieved_gflops'] == pytest.approx(150.0)
    assert u['utilisation'] == pytest.approx(0.75)
    rows = flops.utilisation_table({'ours': {'train': 10e9, 'infer': 2e9},
                                    'base': {'train': 10e9, 'infer': 2e9}},
                                   {'ours_train': 1.0, 'base_train': 2.0, 'ours_infer': 0.5,
                                    'base_infer': 0.25}, limit_gflops=10.0)
    assert [(r['who'], r['step'], round(r['utilisation'], 3)) for r in rows] == [
        ('ours', 'train', 1.0), ('base', 'train', 0.5), ('ours', 'infer', 0.4),
        ('base', 'infer', 0.8)]


def test_cpu_time_utilisation_uses_cpu_seconds_on_both_sides(flops):
    # a step of 10 GFLOP using 2 CPU-seconds against a limit of 10 GFLOP per CPU-second: 50%
    rows = flops.utilisation_table({'ours': {'train': 10e9}}, {'ours_train': 4.0},
                                   limit_gflops=10.0, median_cpu_s={'ours_train': 2.0},
                                   cpu_limit_gflops=10.0)
    assert rows[0]['utilisation'] == pytest.approx(0.25)
    assert rows[0]['cpu_utilisation'] == pytest.approx(0.5)


def test_limits_measured_twice_merge_into_one_median(flops):
    a = dict(n=8, threads=1, runs=[1.0, 2.0, 3.0], median=2.0, cpu_runs=[1.0], cpu_median=1.0)
    b = dict(n=8, threads=1, runs=[10.0, 11.0], median=10.5, cpu_runs=[3.0, 5.0], cpu_median=4.0)
    merged = flops.merge_matmul(a, b)
    assert merged['median'] == 3.0 and merged['cpu_median'] == 3.0
    assert merged['medians_per_batch'] == [2.0, 10.5]


def test_report_parses_the_summary_lines_of_data_and_eval(run_all):
    data = run_all.parse_data_output(
        'noise\nworkers=0: detforge   224.3 img/s   torchvision.v2    33.0 img/s   ratio 6.81\n'
        'workers=2: detforge    90.0 img/s   torchvision.v2   100.5 img/s   ratio 0.90\n')
    assert data == [dict(workers=0, ours_img_s=224.3, base_img_s=33.0),
                    dict(workers=2, ours_img_s=90.0, base_img_s=100.5)]
    ev = run_all.parse_eval_output(
        'AP/AP50/AP75/APs/APm/APl detforge/pycocotools    0.1 0.2  (max |difference| 0.00e+00)\n'
        'AP/AP50/AP75/APs/APm/APl detforge/faster_coco_eval 0.1 0.2  (max |difference| 1.50e-07)\n'
        'median time: plain pycocotools 4.30s, detforge/pycocotools 4.50s -> ratio 1.05\n'
        'median time: plain pycocotools 4.30s, detforge/faster_coco_eval 0.67s -> ratio 0.16\n')
    assert ev == dict(base_s=4.30, backends=dict(
        pycocotools=dict(ours_s=4.50, max_ap_difference=0.0),
        faster_coco_eval=dict(ours_s=0.67, max_ap_difference=1.5e-7)))
    with pytest.raises(run_all.BenchFailed, match='median time'):
        run_all.parse_eval_output('Traceback ...')


def test_a_failing_benchmark_raises_with_its_last_lines(run_all, capsys):
    out = run_all.run_bench(['-c', 'print("step 1"); print("all fine")'], 'ok')
    assert out == 'step 1\nall fine\n'
    assert '    all fine' in capsys.readouterr().out  # echoed as it came, indented
    with pytest.raises(run_all.BenchFailed, match=r'exited with 3: .*boom'):
        run_all.run_bench(['-c', 'import sys; print("boom"); sys.exit(3)'], 'bad')


def test_max_iters_scales_the_lr_steps_to_iterations():
    acc = _load('bench_accuracy')
    opts = acc.schedule_options(str(REPO / acc.DEFAULT_CONFIG), 24)
    # 12 epochs with steps at 8 and 11 -> 24 iterations with steps at 16 and 22
    assert 'lr_config.step=[16,22]' in opts and 'lr_config.by_epoch=False' in opts
    assert {'runner.type=IterBasedRunner', 'runner.max_iters=24',
            'runner.max_epochs=None'} <= set(opts)


def test_scale_section_is_spliced_into_an_existing_report(run_all):
    info = dict(date='2026-12-04 16:00 UTC', commit='abc1234', cpu='CPU', usable_cpus=2,
                load_before=(1.0, 1.0, 1.0), load_after=(2.0, 2.0, 2.0))
    mem = lambda pss: dict(pss_mib=pss, rss_mib=2 * pss)  # noqa: E731
    load = {m: dict(seconds=s, cpu_seconds=s / 2, peak_rss_mib=p, rss_after_mib=p - 1,
                    rss_before_mib=100, records_mib=50 if m == 'detforge' else None,
                    images=1000 if m == 'detforge' else None)
            for m, s, p in (('detforge', 9.0, 800), ('pycocotools', 10.0, 1000),
                            ('json', 8.0, 1000))}
    scale = dict(images=1000, boxes=7000, file_mib=4.0, options=['--rounds', '1'],
                 load=dict(rounds=1, summary=load),
                 workers=[dict(serialize=True, workers=4, batch_size=8, batches=500,
                               first=mem(100), last=mem(110))])
    section = '\n'.join(run_all.render_scale(info, scale))
    assert run_all.SCALE_TITLE in section and 'shared with other jobs' in section
    assert '| `CocoDataset` (records serialised) | 9.0 | 4.5 | 800 | 799 | 100 | 0.90 (CPU 0.90) | 0.80 |' in section
    assert '| serialised | 4 | 100 | 110 | 1.100 | n/a | 200 | 220 |' in section
    old = ('# report\n\n**Stale**\n\n## Machine\n\n- old machine\n\n## Data pipeline\n\n'
           'rows\n\n## Failed or missing\n\n- **eval**: failed\n')
    new = '# report\n\n## Machine\n\n- new machine\n' + section + '\n'
    merged = run_all.splice_report(old, new)
    assert merged.count(run_all.SCALE_TITLE) == 1 and 'old machine' in merged
    assert 'new machine' not in merged and '## Data pipeline\n\nrows' in merged
    assert merged.index(run_all.SCALE_TITLE) < merged.index('## Failed or missing')
    # a second run replaces the section, it does not add another
    again = run_all.splice_report(merged, new.replace('| 4 | 100 |', '| 4 | 101 |'))
    assert again.count(run_all.SCALE_TITLE) == 1 and '| 4 | 101 |' in again


def test_synthetic_coco_file_has_the_asked_counts_and_loads(tmp_path):
    bench = _load('bench_scale')
    path = tmp_path / 'coco.json'
    bench.make_synthetic_coco(path, num_images=60, num_boxes=400, seed=1)
    from pycocotools.coco import COCO
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    assert len(coco.imgs) == 60 and len(coco.anns) == 400 and len(coco.cats) == 80
    from detforge.data import CocoDataset
    ds = CocoDataset(str(path), [], test_mode=True)
    assert len(ds) == 60
    kept = sum(len(ds.get_ann_info(i)['bboxes']) + len(ds.get_ann_info(i)['bboxes_ignore'])
               for i in range(len(ds)))
    assert 380 <= kept <= 400  # a few boxes under 1 px are dropped, as in COCO


@pytest.mark.parametrize('script, option', [('bench_accuracy.py', '--max-iters'),
                                            ('bench_scale.py', '--batches'),
                                            ('check_long_run.py', '--max-growth'),
                                            ('bench_accuracy_tv.py', '--test-images'),
                                            ('run_all.py', '--quick'),
                                            ('flops.py', '--models-json'),
                                            ('bench_deploy.py', '--no-memory'),
                                            ('bench_train_levers.py', '--variants')])
def test_scripts_print_their_help(script, option):
    out = subprocess.run([sys.executable, str(REPO / 'benchmarks' / script), '--help'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert option in out.stdout


def test_bench_models_channels_last_times_both_layouts_side_by_side(monkeypatch):
    """``--channels-last`` runs NCHW and NHWC copies (same weights) of each model alternating
    in one process; tiny stand-in models here (no timing is judged)."""
    import argparse
    bench = _load('bench_models')
    seen = []

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))

    def train(model, opt, samples):
        seen.append(('train', model[0].weight.is_contiguous(memory_format=torch.channels_last),
                     model[0].weight.detach().clone()))
        opt.zero_grad()
        model(torch.zeros(1, 3, 8, 8)).sum().backward()

    def infer(model, samples):
        seen.append(('infer', model.training, None))

    monkeypatch.setitem(bench.BUILDERS, 'retinanet', (build, train, infer, build, train, infer))
    monkeypatch.setattr(bench, 'load_images', lambda n: [None] * n)
    monkeypatch.setattr(bench, 'make_optimizer',
                        lambda m: torch.optim.SGD(m.parameters(), lr=0.0))
    result = bench.run_layouts(argparse.Namespace(model='retinanet', warmup=1, iters=2))
    assert set(result['median_s']) == {f'{w}_{l}_{p}' for w in ('ours', 'base')
                                       for l in ('nchw', 'nhwc') for p in ('train', 'infer')}
    assert set(result['nhwc_over_nchw']) == {'ours_train', 'ours_infer', 'base_train',
                                             'base_infer'}
    trains = [s for s in seen if s[0] == 'train']
    assert len(trains) == 4 * 3 and sum(s[1] for s in trains) == 2 * 3  # half in NHWC
    assert all(torch.equal(s[2], trains[0][2]) for s in trains)         # same weights
    assert not any(s[1] for s in seen if s[0] == 'infer')               # eval mode


def test_train_levers_count_a_lever_only_when_faster_with_the_same_losses():
    """bench_train_levers' verdict: >= 10% faster AND every loss within --rtol of the
    baseline's; the compile column is the warm-up time above the baseline's."""
    import argparse
    import types
    levers = _load('bench_train_levers')

    def runner(name, seconds, loss):
        r = types.SimpleNamespace(variant=levers.VARIANTS[name], seconds=seconds, error=None,
                                  new_graphs=[0] * len(seconds),
                                  losses=[dict(loss_cls=loss, loss=loss)] * len(seconds))
        return r
    runners = {'baseline': runner('baseline', [5.0, 5.0, 4.0, 4.0, 4.0], 2.0),
               'compile': runner('compile', [65.0, 5.0, 3.0, 3.0, 3.0], 2.0 * (1 + 5e-4)),
               'bf16': runner('bf16', [3.0, 3.0, 2.0, 2.0, 2.0], 2.0 * (1 + 5e-3)),
               'channels_last': runner('channels_last', [5.0, 5.0, 3.8, 3.8, 3.8], 2.0)}
    args = argparse.Namespace(warmup=2, steps=3, rtol=1e-3, batch_size=4)
    table = levers.report(runners, {'onednn-bf16': 'no bf16'}, args, '0.0 0.0 0.0')
    rows = {line.split('|')[1].strip(): line for line in table.splitlines()
            if line.startswith('| ') and not line.startswith('| variant')}
    assert '| 3.000 | 1.33x | 60.0 |' in rows['compile'] and 'adopt' in rows['compile']
    assert 'no: losses differ' in rows['bf16'] and '5.0e-03' in rows['bf16']
    assert 'no: < 10% faster' in rows['channels_last'] and '| - |' in rows['channels_last']
    assert 'skipped: no bf16' in rows['onednn-bf16']


def test_train_levers_restore_the_onednn_settings_after_a_step():
    import torch
    levers = _load('bench_train_levers')
    before = torch.backends.mkldnn.enabled
    with levers.mkldnn_settings({'enabled': not before}):
        assert torch.backends.mkldnn.enabled is (not before)
    assert torch.backends.mkldnn.enabled is before


def test_deploy_verdict_checks_the_issue_goals():
    deploy = _load('bench_deploy')
    tv = dict(backend='torchvision', p50_ms=100.0)
    pytorch = dict(backend='pytorch', p50_ms=95.0, ap=0.61234)
    assert deploy.verdict(tv, tv, pytorch) == 'baseline'
    assert deploy.verdict(pytorch, tv, pytorch) == "misses <= 0.6x; AP = PyTorch's"
    fast = dict(backend="compiled", p50_ms=55.0, ap=0.6108)
    assert deploy.verdict(fast, tv, pytorch) == "meets <= 0.6x; AP differs (-0.0015)"
    int8 = dict(backend='int8', p50_ms=39.0, ap=0.60034)
    assert deploy.verdict(int8, tv, pytorch) == 'meets <= 0.4x; AP drop 1.2 points (> 1.0)'
    lines = deploy.goal_lines({'R18': [tv, pytorch, fast, int8]})
    assert lines[0] == ('- R18: best float32 path `compiled` at 0.55x torchvision '
                        '(goal <= 0.6x): met.')
    assert 'AP drop 1.2 points (goal <= 1.0): not met' in lines[1]
    assert lines[2] == "- R18: float32 paths' AP equal to 3 decimals: no (0.611, 0.612)."
