"""Config: loading .py/.yaml/.json, _base_ inheritance, access, overrides, pretty_text, dump."""
import argparse
import copy
import json
import pickle
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml

from detforge.config import Config, ConfigDict, ConfigError, ConfigKeyError, DictAction
from detforge.registry import DetforgeError

FIXTURES = Path(__file__).parent / 'fixtures' / 'configs'


def load(name, **kwargs):
    return Config.fromfile(FIXTURES / name, **kwargs)


# ---------------------------------------------------------------------- Python files
def test_python_config_keeps_variables_and_drops_modules_functions_and_dunders():
    cfg = load('_base_/model.py')
    assert set(cfg.keys()) == {'norm_cfg', 'model'}
    assert cfg.model.backbone.norm_cfg == cfg.norm_cfg == {'type': 'BN', 'requires_grad': True}
    assert cfg.model.backbone.out_indices == (1, 2, 3)  # tuples stay tuples


def test_filename_and_text_record_the_source_files():
    cfg = load('inherit/child.py')
    assert cfg.filename == str(FIXTURES / 'inherit/child.py')
    for part in ('model.py', 'schedule.py', 'runtime.yaml', 'data.json', 'child.py'):
        assert part in cfg.text
    assert "optimizer = dict(_delete_=True, type='AdamW'" in cfg.text


# ---------------------------------------------------------------------- inheritance
def test_base_dicts_merge_recursively_across_python_yaml_and_json_bases():
    cfg = load('inherit/child.py')
    head = cfg.model.bbox_head
    assert head.num_classes == 3                           # from the child
    assert head.in_channels == 64 and head.loss_cls.gamma == 2.0  # kept from the base
    assert cfg.checkpoint_config.interval == 1             # from the YAML base
    assert cfg.data.train.pipeline[1].img_scale == [1333, 800]  # from the JSON base


def test_delete_key_replaces_the_base_dict_instead_of_merging():
    cfg = load('inherit/child.py')
    assert cfg.optimizer.to_dict() == {'type': 'AdamW', 'lr': 0.0001}
    assert '_delete_' not in cfg.pretty_text


def test_lists_are_replaced_whole():
    assert load('inherit/child.py').lr_config.step == [20]


def test_inheritance_several_levels_deep_with_string_base():
    cfg = load('inherit/grandchild.py')
    assert cfg.model.neck.out_channels == 32 and cfg.model.neck.num_outs == 5
    assert cfg.model.bbox_head.num_classes == 3             # from the child
    assert cfg.runner.to_dict() == {'type': 'EpochBasedRunner', 'max_epochs': 24}
    assert cfg.optimizer.type == 'AdamW'


def test_a_key_in_two_bases_is_an_error_naming_both_files():
    with pytest.raises(ConfigError) as info:
        load('inherit/dup_child.py')
    msg = str(info.value)
    assert "'optimizer'" in msg and 'dup_a.py' in msg and 'dup_b.py' in msg
    assert 'dup_child.py' in msg


def test_base_variable_reference_is_replaced_by_the_bases_value():
    cfg = load('inherit/base_var.py')
    assert cfg.test_norm.to_dict() == cfg.img_norm_cfg.to_dict()
    assert cfg.test_norm.std == [58.395, 57.12, 57.375]
    assert cfg.first_step == 'LoadImageFromFile'


def test_using_a_bases_variable_by_name_explains_why_it_fails():
    with pytest.raises(ConfigError) as info:
        load('inherit/uses_base_name.py')
    msg = str(info.value)
    assert 'uses_base_name.py:2' in msg and "'norm_cfg'" in msg and '{{_base_.NAME}}' in msg


def test_circular_inheritance_is_reported():
    with pytest.raises(ConfigError, match='circular _base_ inheritance.*cycle_a.py'):
        load('inherit/cycle_a.py')


# ---------------------------------------------------------------------- errors
def test_missing_file_is_a_detforge_error():
    with pytest.raises(DetforgeError, match='config file not found: .*no_such_config.py'):
        load('no_such_config.py')


def test_missing_base_names_the_including_file_and_the_missing_path():
    with pytest.raises(ConfigError) as info:
        load('inherit/bad_base.py')
    msg = str(info.value)
    assert msg.split(':')[0].endswith('bad_base.py')  # the including file comes first
    assert 'does_not_exist.py' in msg and 'relative to the file' in msg


def test_syntax_error_names_the_file_and_line():
    with pytest.raises(ConfigError) as info:
        load('syntax_error.py')
    msg = str(info.value)
    assert 'syntax_error.py:3' in msg and 'syntax error' in msg
    assert "type='ResNet' depth=18" in msg


def test_unsupported_extension_is_rejected(tmp_path):
    path = tmp_path / 'cfg.toml'
    path.write_text('a = 1\n')
    with pytest.raises(ConfigError, match=r"unsupported config format '.toml'"):
        Config.fromfile(path)


# ---------------------------------------------------------------------- YAML and JSON
def test_yaml_and_json_configs_load_to_the_same_dict():
    assert load('simple.yaml').to_dict() == load('simple.json').to_dict()
    assert load('simple.yaml').model.bbox_head.num_classes == 3


def test_yaml_python_tags_are_rejected_as_unsafe(tmp_path):
    with pytest.raises(ConfigError) as info:
        load('unsafe.yaml')
    msg = str(info.value)
    assert 'unsafe.yaml:3' in msg
    assert '!!python/object/apply:eval' in msg and 'not allowed' in msg and 'safe' in msg


def test_yaml_tags_never_run_code(tmp_path):
    marker = tmp_path / 'ran'
    text = f"x: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(ConfigError, match='unsafe tags'):
        Config.fromstring(text, '.yaml')
    assert not marker.exists()


def test_invalid_yaml_and_json_name_the_line():
    with pytest.raises(ConfigError, match=r'bad.yaml:3: invalid YAML'):
        load('bad.yaml')
    with pytest.raises(ConfigError, match=r'<string>:2: invalid JSON'):
        Config.fromstring('{"a": 1,\n "b": }', '.json')


def test_a_config_must_be_a_mapping():
    with pytest.raises(ConfigError, match='must be a mapping'):
        Config.fromstring('- 1\n- 2\n', '.yaml')


# ---------------------------------------------------------------------- fromstring / Config(dict)
def test_fromstring_in_every_format():
    assert Config.fromstring('a = dict(b=1)\n').a.b == 1
    assert Config.fromstring('a: {b: 1}\n', file_format='.yaml').a.b == 1
    assert Config.fromstring('{"a": {"b": 1}}', file_format='json').a.b == 1


def test_config_from_a_dict_and_filename():
    cfg = Config(dict(model=dict(type='X')), filename='my.py')
    assert cfg.filename == 'my.py' and cfg.model.type == 'X'
    assert Config().to_dict() == {}


def test_reserved_names_cannot_be_keys():
    with pytest.raises(ConfigError, match="'filename' is a reserved name"):
        Config(dict(filename='x'))


# ---------------------------------------------------------------------- access
def test_attribute_and_item_access_and_get():
    cfg = load('inherit/child.py')
    assert cfg['model']['bbox_head']['num_classes'] == cfg.model.bbox_head.num_classes
    assert cfg.get('no_key', 5) == 5 and cfg.model.get('no_key') is None
    assert isinstance(cfg.data.train.pipeline[0], ConfigDict)  # dicts inside lists too
    assert cfg.data.train.pipeline[0].type == 'LoadImageFromFile'
    cfg.model.bbox_head.num_classes = 7
    cfg['work_dir'] = 'w'
    assert cfg.to_dict()['model']['bbox_head']['num_classes'] == 7 and cfg.work_dir == 'w'


def test_missing_attribute_names_the_key_path_and_suggests_the_closest_key():
    cfg = load('inherit/child.py')
    with pytest.raises(AttributeError) as info:
        cfg.model.bbox_head.num_clases
    msg = str(info.value)
    assert "'ConfigDict'" in msg and "model.bbox_head has no key 'num_clases'" in msg
    assert "did you mean 'num_classes'?" in msg
    assert isinstance(info.value, ConfigKeyError) and isinstance(info.value, DetforgeError)


def test_missing_top_level_attribute_names_the_file():
    cfg = load('inherit/child.py')
    with pytest.raises(AttributeError) as info:
        cfg.modle
    assert "has no key 'modle'; did you mean 'model'?" in str(info.value)
    assert 'child.py' in str(info.value)
    assert not hasattr(cfg, 'modle') and getattr(cfg.model, 'nope', 3) == 3


def test_missing_item_in_a_list_item_dict_names_its_index_path():
    cfg = load('inherit/child.py')
    with pytest.raises(KeyError, match=r'data.train.pipeline.1 has no key .img_scal.'):
        cfg.data.train.pipeline[1]['img_scal']


def test_copy_is_deep_and_to_dict_is_plain():
    cfg = load('inherit/child.py')
    other = cfg.copy()
    other.model.bbox_head.num_classes = 99
    other.lr_config.step.append(30)
    assert cfg.model.bbox_head.num_classes == 3 and cfg.lr_config.step == [20]
    plain = cfg.to_dict()
    assert type(plain['model']) is dict and type(plain['data']['train']['pipeline'][0]) is dict
    assert copy.deepcopy(cfg) == cfg and other != cfg


def test_pickle_round_trip_keeps_config_and_filename():
    cfg = load('inherit/child.py')
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.filename == cfg.filename
    assert again.model.bbox_head.num_classes == 3


# ---------------------------------------------------------------------- --cfg-options
def parse_options(*options):
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *options]).cfg_options


def test_dict_action_parses_every_kind_of_value():
    opts = parse_options(
        'model.bbox_head.num_classes=3', 'data.samples_per_gpu=4', 'optimizer.lr=0.005',
        'lr_config.step=[8,11]', 'data.train.pipeline.2.img_scale=(640,480)',
        'flag=True', 'other=false', 'nothing=None', 'name=retina', "quoted='123'",
        'nested=[(1,2),(3,4)]', 'mixed=[a,true,1.5]', 'bare=8,11', 'empty=[]', 'neg=-1')
    assert opts == {
        'model.bbox_head.num_classes': 3, 'data.samples_per_gpu': 4, 'optimizer.lr': 0.005,
        'lr_config.step': [8, 11], 'data.train.pipeline.2.img_scale': (640, 480),
        'flag': True, 'other': False, 'nothing': None, 'name': 'retina', 'quoted': '123',
        'nested': [(1, 2), (3, 4)], 'mixed': ['a', True, 1.5], 'bare': [8, 11], 'empty': [],
        'neg': -1}
    assert isinstance(opts['data.train.pipeline.2.img_scale'], tuple)


def test_dict_action_accumulates_and_rejects_a_pair_without_equals(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(['--cfg-options', 'a=1', '--cfg-options', 'b=2'])
    assert args.cfg_options == {'a': 1, 'b': 2}
    with pytest.raises(SystemExit):
        parser.parse_args(['--cfg-options', 'a'])
    assert 'KEY=VALUE' in capsys.readouterr().err


def test_merge_from_dict_with_list_indices_tuples_and_nested_keys():
    cfg = load('inherit/child.py')
    cfg.merge_from_dict(parse_options(
        'model.bbox_head.num_classes=5', 'data.train.pipeline.1.img_scale=(640,480)',
        'lr_config.step=[8,11]', 'optimizer.lr=0.005'))
    assert cfg.model.bbox_head.num_classes == 5
    assert cfg.data.train.pipeline[1].img_scale == (640, 480)
    assert cfg.data.train.pipeline[1].type == 'Resize'  # the rest of the item is kept
    assert cfg.lr_config.step == [8, 11] and cfg.optimizer.lr == 0.005


def test_merge_from_dict_merges_dict_values_and_adds_new_keys():
    cfg = load('inherit/child.py')
    cfg.merge_from_dict({'model.bbox_head.loss_cls': dict(gamma=1.0),
                         'model.pretrained': None, 'custom.new.key': 1})
    assert cfg.model.bbox_head.loss_cls.to_dict() == {'type': 'FocalLoss', 'gamma': 1.0,
                                                      'alpha': 0.25}
    assert cfg.model.pretrained is None and cfg.custom.new.key == 1
    cfg.merge_from_dict({'model.bbox_head.loss_cls': dict(_delete_=True, type='L1Loss')})
    assert cfg.model.bbox_head.loss_cls.to_dict() == {'type': 'L1Loss'}


def test_merge_from_dict_warns_when_a_new_key_looks_like_a_typo():
    cfg = load('inherit/child.py')
    with pytest.warns(UserWarning, match="adds a new key 'num_clases'.*did you mean 'num_classes'"):
        cfg.merge_from_dict({'model.bbox_head.num_clases': 3})


def test_merge_from_dict_does_not_call_a_real_argument_a_typo():
    # stride_rule is an AnchorGenerator argument, close to the 'strides' key already there
    cfg = Config(dict(model=dict(anchor_generator=dict(type='AnchorGenerator',
                                                       strides=[8, 16], ratios=[1.0]))))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        cfg.merge_from_dict({'model.anchor_generator.stride_rule': 'batch_shape'})
    assert cfg.model.anchor_generator.stride_rule == 'batch_shape'
    with pytest.warns(UserWarning, match="adds a new key 'stride'.*did you mean 'strides'"):
        cfg.merge_from_dict({'model.anchor_generator.stride': [4]})


@pytest.mark.parametrize('key, expected', [
    ('data.train.pipeline.5.img_scale', r'index 5 is out of range: data.train.pipeline has 2 items'),
    ('data.train.pipeline.first.img_scale', r'data.train.pipeline is a list, so the next key must '
                                            r'be an index'),
    ('optimizer.lr.value', r'optimizer.lr is a float \(0.0001\), not a dict or a list'),
    ('data.tran.0.x', r'data.tran does not exist; did you mean .train.'),
    ('model..type', r'empty key'),
])
def test_bad_override_paths_raise_config_errors_naming_the_path(key, expected):
    cfg = load('inherit/child.py')
    with pytest.raises(ConfigError, match=expected) as info:
        cfg.merge_from_dict({key: 1})
    assert key in str(info.value)


# ---------------------------------------------------------------------- pretty_text and dump
def test_pretty_text_reloads_to_an_equal_dict_with_tuples_and_odd_keys():
    cfg = Config(dict(
        model=dict(type='M', scales=(1, 2), single=(3,), empty_tuple=(), empty=dict(),
                   nested=[dict(a=(1.5, None)), [True, False]]),
        odd_keys={'with-dash': 1, 2: 'int key', 'class': 'a keyword'},
        values=[float('inf'), -0.0, 1e-12, 'it\'s "quoted"', None],
        long_list=list(range(60))))
    text = cfg.pretty_text
    compile(text, '<pretty>', 'exec')
    again = Config.fromstring(text)
    assert again.to_dict() == cfg.to_dict()
    assert again.model.scales == (1, 2) and again.model.single == (3,)
    assert "model = dict(" in text and "{'with-dash': 1, 2: 'int key', 'class': 'a keyword'}" in text


def test_pretty_text_of_an_inherited_config_reloads_equal():
    cfg = load('inherit/grandchild.py')
    assert Config.fromstring(cfg.pretty_text).to_dict() == cfg.to_dict()


def test_compat_fixture_loads_and_its_pretty_text_reloads_equal(shared_data):
    cfg = Config.fromfile(shared_data.parent / 'compat' / 'retinanet_r101_fpn_1x.py')
    assert cfg.model.bbox_head.loss_bbox.beta == 0.11
    assert cfg.dataset_type == 'CocoDataset' and cfg.total_epochs == 12
    assert cfg.data.train.pipeline[4].mean == [123.675, 116.28, 103.53]  # **img_norm_cfg
    assert Config.fromstring(cfg.pretty_text).to_dict() == cfg.to_dict()


@pytest.mark.parametrize('ext', ['.py', '.yaml', '.yml', '.json'])
def test_dump_and_reload_in_each_format(tmp_path, ext):
    cfg = load('inherit/grandchild.py')
    out = tmp_path / 'sub' / f'dumped{ext}'
    cfg.dump(out)
    again = Config.fromfile(out)
    if ext == '.py':
        assert again.to_dict() == cfg.to_dict()
    else:  # YAML and JSON have no tuples
        assert again.model.backbone.out_indices == [1, 2, 3]
        assert json.loads(json.dumps(again.to_dict())) == json.loads(json.dumps(cfg.to_dict()))
    if ext in ('.yaml', '.yml'):
        assert yaml.safe_load(out.read_text())['runner']['max_epochs'] == 24


def test_dump_without_a_file_returns_text_in_the_source_format():
    assert load('simple.json').dump().lstrip().startswith('{')
    assert 'samples_per_gpu: 4' in load('simple.yaml').dump()
    assert load('inherit/child.py').dump() == load('inherit/child.py').pretty_text


def test_dump_to_an_unknown_extension_fails(tmp_path):
    with pytest.raises(ConfigError, match="unsupported extension '.txt'"):
        load('simple.yaml').dump(tmp_path / 'x.txt')


# ---------------------------------------------------------------------- custom_imports
def make_plugin(tmp_path, monkeypatch, name):
    package = tmp_path / name
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'heads.py').write_text(textwrap.dedent('''
        from detforge.registry import Registry
        PLUGIN = Registry('plugin_heads')
        @PLUGIN.register_module()
        class PluginHead:
            def __init__(self, num_classes):
                self.num_classes = num_classes
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, f'{name}.heads', raising=False)
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_custom_imports_register_the_users_classes(tmp_path, monkeypatch):
    make_plugin(tmp_path, monkeypatch, 'detforge_test_plugin')
    cfg = load('custom_imports.py')
    plugin = sys.modules['detforge_test_plugin.heads']
    head = plugin.PLUGIN.build(cfg.model)
    assert type(head).__name__ == 'PluginHead' and head.num_classes == 3


def test_custom_imports_are_skipped_when_asked(tmp_path, monkeypatch):
    make_plugin(tmp_path, monkeypatch, 'detforge_test_plugin')
    load('custom_imports.py', import_custom_modules=False)
    assert 'detforge_test_plugin.heads' not in sys.modules


def test_failed_custom_import_is_a_clear_error():
    with pytest.raises(ConfigError) as info:
        load('bad_custom_imports.py')
    msg = str(info.value)
    assert "cannot import 'detforge_no_such_package.heads'" in msg
    assert 'bad_custom_imports.py' in msg and 'ModuleNotFoundError' in msg


def test_failed_custom_import_only_warns_when_allowed():
    text = "custom_imports = dict(imports=['detforge_no_such_pkg'], allow_failed_imports=True)\n"
    with pytest.warns(UserWarning, match="cannot import 'detforge_no_such_pkg'.*skipped"):
        cfg = Config.fromstring(text)
    assert cfg.custom_imports.allow_failed_imports is True


def test_pretty_text_writes_a_class_given_as_type_so_that_it_reloads():
    from collections import OrderedDict
    cfg = Config(dict(thing=dict(type=OrderedDict, size=3)))
    again = Config.fromstring(cfg.pretty_text)
    assert again.thing.type is OrderedDict and again == cfg
