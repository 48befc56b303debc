"""Config faults (issue 18 items 4 and 5): a typo'd top-level override and an optimizer
argument of the wrong type stop at build time with the key path as the user wrote it."""
from pathlib import Path

import pytest
import torch

from detforge.cli import main
from detforge.config import CfgOptions, Config, ConfigError
from detforge.engine import build_optimizer
from detforge.registry import BuildError, build_context

CHILD = str(Path(__file__).parent / 'fixtures' / 'configs' / 'inherit' / 'child.py')


def test_top_level_typo_on_the_command_line_is_refused_with_a_suggestion(capsys):
    rc = main(['print-config', CHILD, '--cfg-options', 'runnr.max_epochs=5'])
    err = capsys.readouterr().err
    assert rc == 2 and err.count('\n') == 1
    assert "override 'runnr.max_epochs': 'runnr' is not a key of the config or of its bases" in err
    assert "did you mean 'runner'?" in err and '+runnr.max_epochs=...' in err


def test_a_new_top_level_key_on_purpose_is_written_with_a_plus(capsys):
    assert main(['print-config', CHILD, '--cfg-options', '+my_flag=3',
                 'work_dir=/tmp/x']) == 0  # work_dir: read by detforge, in no base
    out = capsys.readouterr().out
    assert 'my_flag = 3' in out and "work_dir = '/tmp/x'" in out


def test_api_merges_stay_lenient_and_command_line_options_are_strict():
    cfg = Config.fromfile(CHILD)
    cfg.merge_from_dict({'my_project.setting': 1})  # Python callers add keys as before
    assert cfg.my_project.setting == 1
    with pytest.raises(ConfigError, match="'lr_confg' is not a key.*did you mean 'lr_config'"):
        cfg.merge_from_dict(CfgOptions({'lr_confg.step': [3]}))
    cfg.merge_from_dict(CfgOptions({'model.bbox_head.num_classes': 7}))  # nested: as before
    assert cfg.model.bbox_head.num_classes == 7


@pytest.mark.parametrize('cfg, expected', [
    (dict(type='SGD', lr='fast', momentum=0.9),
     r"SGD argument lr must be a number, got 'fast' \(str\) \(in optimizer\.lr of my\.py\)"),
    (dict(type='SGD', lr=0.01, momentum='0.9'),
     r"SGD argument momentum must be a number, got '0\.9' \(str\) \(in optimizer\.momentum"),
    (dict(type='Adam', lr=0.01, betas=0.9),
     r'Adam argument betas must be a tuple of 2 numbers, got 0\.9 \(float\) \(in '
     r'optimizer\.betas'),
    (dict(type='SGD', lr=0.01, nesterov='yes'),
     r"SGD argument nesterov must be True or False, got 'yes'"),
    (dict(type='SGD', lr=-0.01), r'SGD: Invalid learning rate: -0\.01 \(in optimizer of my\.py\)'),
])
def test_optimizer_arguments_are_checked_when_built(cfg, expected):
    with pytest.raises(BuildError, match=expected):
        with build_context('optimizer', filename='my.py'):
            build_optimizer(torch.nn.Linear(2, 2), cfg)


def test_valid_optimizer_arguments_still_build():
    model = torch.nn.Linear(2, 2)
    assert type(build_optimizer(model, dict(type='AdamW', lr=1e-4, betas=[0.9, 0.99],
                                            weight_decay=0.05))).__name__ == 'AdamW'
    assert build_optimizer(model, dict(type='SGD', lr=1, momentum=0, nesterov=False)) \
        .defaults['lr'] == 1
