"""The command line: `detforge --help`, `python -m detforge` and `detforge print-config`."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detforge.cli import main
from detforge.config import Config

FIXTURES = Path(__file__).parent / 'fixtures' / 'configs'
CHILD = str(FIXTURES / 'inherit' / 'child.py')


def test_python_dash_m_detforge_help_lists_the_sub_commands():
    out = subprocess.run([sys.executable, '-m', 'detforge', '--help'], capture_output=True,
                         text=True, check=True).stdout
    assert 'print-config' in out and 'COMMAND' in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 1
    assert 'print-config' in capsys.readouterr().out


def test_print_config_prints_python_that_reloads_to_the_resolved_config(capsys):
    assert main(['print-config', CHILD]) == 0
    printed = capsys.readouterr().out
    assert Config.fromstring(printed) == Config.fromfile(CHILD)
    assert "optimizer = dict(type='AdamW', lr=0.0001)" in printed


def test_print_config_applies_cfg_options(capsys):
    assert main(['print-config', CHILD, '--cfg-options', 'model.bbox_head.num_classes=5',
                 'lr_config.step=[8,11]', 'data.train.pipeline.1.img_scale=(640,480)',
                 'optimizer.lr=0.005']) == 0
    cfg = Config.fromstring(capsys.readouterr().out)
    assert cfg.model.bbox_head.num_classes == 5 and cfg.lr_config.step == [8, 11]
    assert cfg.data.train.pipeline[1].img_scale == (640, 480) and cfg.optimizer.lr == 0.005


@pytest.mark.parametrize('fmt, load', [('yaml', yaml.safe_load), ('json', __import__('json').loads)])
def test_print_config_in_yaml_and_json(capsys, fmt, load):
    assert main(['print-config', CHILD, '--format', fmt]) == 0
    data = load(capsys.readouterr().out)
    assert data['model']['bbox_head']['num_classes'] == 3


def test_print_config_upgrade_rewrites_old_keys(capsys, shared_data):
    old = str(shared_data.parent / 'compat' / 'retinanet_r101_fpn_1x.py')
    with pytest.warns(DeprecationWarning):
        assert main(['print-config', old, '--upgrade']) == 0
    cfg = Config.fromstring(capsys.readouterr().out)
    assert cfg.runner.max_epochs == 12 and cfg.model.bbox_head.num_classes == 80


@pytest.mark.parametrize('argv, expected', [
    (['print-config', str(FIXTURES / 'syntax_error.py')], 'syntax_error.py:3: syntax error'),
    (['print-config', 'no/such/config.py'], 'config file not found'),
    (['print-config', CHILD, '--cfg-options', 'data.train.pipeline.9.x=1'],
     'data.train.pipeline has 2 items'),
    (['print-config', str(FIXTURES / 'unsafe.yaml')], 'is not allowed'),
])
def test_user_errors_print_one_line_without_traceback(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('detforge print-config: error: ') and expected in err
    assert 'Traceback' not in err


def test_debug_flag_shows_the_exception(capsys):
    from detforge.config import ConfigError
    with pytest.raises(ConfigError):
        main(['--debug', 'print-config', 'no/such/config.py'])


def test_cfg_options_without_equals_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(['print-config', CHILD, '--cfg-options', 'model.bbox_head.num_classes'])
    assert info.value.code == 2 and 'KEY=VALUE' in capsys.readouterr().err
