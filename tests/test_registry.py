"""Registry: registration, lookup through scopes, building, and the errors a user sees."""
from pathlib import Path

import pytest
from torch import nn

from detforge.config import Config
from detforge.registry import (BuildError, DetforgeError, Registry, RegistryError, build_context,
                               build_from_cfg)
import detforge.registry as registry_module

FIXTURES = Path(__file__).parent / 'fixtures' / 'configs'


@pytest.fixture
def toy():
    """Registries shaped like the real ones: a detector builds its head, the head its loss."""
    losses, heads, detectors = Registry('losses'), Registry('heads'), Registry('detectors')

    @losses.register_module()
    class FocalLoss:
        def __init__(self, gamma=2.0, alpha=0.25, loss_weight=1.0):
            self.gamma, self.alpha = gamma, alpha

    @losses.register_module()
    class SmoothL1Loss:
        def __init__(self, beta=1.0):
            self.beta = beta

    @heads.register_module()
    class ToyHead:
        def __init__(self, num_classes, loss_cls=dict(type='FocalLoss'), train_cfg=None):
            self.num_classes = num_classes
            self.loss_cls = losses.build(loss_cls)

    @detectors.register_module()
    class ToyDetector:
        def __init__(self, bbox_head, train_cfg=None):
            bbox_head.update(train_cfg=train_cfg)  # as MMDetection's detectors do
            self.bbox_head = heads.build(bbox_head)

    return dict(losses=losses, heads=heads, detectors=detectors, FocalLoss=FocalLoss,
                ToyHead=ToyHead, ToyDetector=ToyDetector)


# ---------------------------------------------------------------------- registration
def test_register_as_decorator_with_and_without_call_and_as_function():
    reg = Registry('things')

    @reg.register_module
    class Bare:
        pass

    @reg.register_module()
    class Called:
        pass

    @reg.register_module(name='Alias')
    class Named:
        pass

    class Plain:
        pass

    assert reg.register_module(module=Plain) is Plain
    assert reg.get('Bare') is Bare and reg.get('Called') is Called
    assert reg.get('Alias') is Named and reg.get('Named') is None
    assert reg.get('Plain') is Plain and len(reg) == 4 and 'Plain' in reg


def test_register_under_a_list_of_names():
    reg = Registry('things')

    @reg.register_module(name=['A', 'B'])
    class Two:
        pass

    assert reg.get('A') is reg.get('B') is Two


def test_register_a_function():
    reg = Registry('fns')

    @reg.register_module()
    def make_list(n=2):
        return [0] * n

    assert reg.build(dict(type='make_list', n=3)) == [0, 0, 0]


def test_registering_a_taken_name_names_both_definitions():
    reg = Registry('things')

    @reg.register_module(name='Thing')
    class First:
        pass

    with pytest.raises(RegistryError) as info:
        @reg.register_module(name='Thing')
        class Second:
            pass
    msg = str(info.value)
    assert "'Thing' is already registered in the things registry" in msg
    assert 'First' in msg and 'Second' in msg and 'test_registry.py' in msg
    assert 'force=True' in msg
    assert isinstance(info.value, KeyError) and isinstance(info.value, DetforgeError)


def test_a_conflict_in_a_list_of_names_registers_none_of_them():
    reg = Registry('things')
    reg.register_module(name='B', module=type('Old', (), {}))
    with pytest.raises(RegistryError):
        reg.register_module(name=['A', 'B'], module=type('New', (), {}))
    assert reg.get('A') is None


def test_force_replaces_a_registered_name():
    reg = Registry('things')
    reg.register_module(name='X', module=type('Old', (), {}))
    new = type('New', (), {})
    reg.register_module(name='X', force=True, module=new)
    assert reg.get('X') is new


def test_only_callables_can_be_registered():
    with pytest.raises(TypeError):
        Registry('things').register_module(module=3)


# ---------------------------------------------------------------------- building
def test_build_from_a_name_or_a_class(toy):
    loss = build_from_cfg(dict(type='FocalLoss', gamma=1.0), toy['losses'])
    assert isinstance(loss, toy['FocalLoss']) and loss.gamma == 1.0
    by_class = toy['losses'].build(dict(type=toy['FocalLoss'], alpha=0.5))
    assert isinstance(by_class, toy['FocalLoss']) and by_class.alpha == 0.5


def test_default_args_fill_only_missing_keys(toy):
    loss = build_from_cfg(dict(type='FocalLoss', gamma=1.0), toy['losses'],
                          default_args=dict(gamma=5.0, alpha=0.1))
    assert loss.gamma == 1.0 and loss.alpha == 0.1
    typed = build_from_cfg(dict(gamma=3.0), toy['losses'], default_args=dict(type='FocalLoss'))
    assert typed.gamma == 3.0


def test_build_does_not_modify_the_config(toy):
    cfg = dict(type='FocalLoss', gamma=1.0)
    toy['losses'].build(cfg, default_args=dict(alpha=0.3))
    assert cfg == dict(type='FocalLoss', gamma=1.0)


def test_a_list_of_configs_builds_an_nn_sequential():
    layers = Registry('layers')
    layers.register_module(module=nn.Linear)
    layers.register_module(module=nn.ReLU)
    seq = layers.build([dict(type='Linear', in_features=4, out_features=2), dict(type='ReLU')])
    assert isinstance(seq, nn.Sequential) and isinstance(seq[0], nn.Linear) and len(seq) == 2


def test_build_from_a_configdict(toy):
    cfg = Config(dict(loss=dict(type='SmoothL1Loss', beta=0.11)))
    assert toy['losses'].build(cfg.loss).beta == 0.11


def test_from_config_derives_arguments():
    reg = Registry('things')

    @reg.register_module()
    class Head:
        def __init__(self, in_channels, feat_channels):
            self.in_channels, self.feat_channels = in_channels, feat_channels

        @classmethod
        def from_config(cls, cfg):
            cfg = dict(cfg)
            cfg.setdefault('feat_channels', cfg['in_channels'] * 2)
            return cfg

    head = reg.build(dict(type='Head', in_channels=16))
    assert head.feat_channels == 32
    assert reg.build(dict(type='Head', in_channels=16, feat_channels=5)).feat_channels == 5


# ---------------------------------------------------------------------- errors
def test_unknown_type_names_registry_and_closest_names(toy):
    with pytest.raises(BuildError) as info:
        toy['losses'].build(dict(type='FocalLos'))
    msg = str(info.value)
    assert "'FocalLos' is not in the LOSSES registry; did you mean 'FocalLoss'" in msg


def test_unknown_type_without_close_names_lists_the_registered_ones(toy):
    with pytest.raises(BuildError, match='registered names: FocalLoss, SmoothL1Loss'):
        toy['losses'].build(dict(type='Zzzzzz'))


def test_unknown_type_in_a_nested_build_names_the_key_path_and_file(toy):
    cfg = Config.fromfile(FIXTURES / 'typo_loss.py')
    with pytest.raises(BuildError) as info:
        with build_context('model', filename=cfg.filename):
            toy['detectors'].build(cfg.model, default_args=dict(train_cfg=dict(x=1)))
    msg = str(info.value)
    assert "'FocalLos' is not in the LOSSES registry; did you mean 'FocalLoss'" in msg
    assert 'in model.bbox_head.loss_cls of ' in msg and 'typo_loss.py' in msg
    assert info.value.key_path == ['model', 'bbox_head', 'loss_cls']


def test_key_path_when_the_parent_passes_a_changed_copy_of_the_child_config():
    losses, heads = Registry('losses'), Registry('heads')

    @heads.register_module()
    class CopyingHead:
        def __init__(self, loss, num_classes=3):
            self.loss = losses.build(dict(loss, num_classes=num_classes))  # a new dict

    with pytest.raises(BuildError) as info:
        heads.build(dict(type='CopyingHead', loss=dict(type='Nope')))
    assert info.value.key_path == ['loss']


def test_an_explicit_prefix_in_a_constructor_is_not_added_twice():
    losses, heads = Registry('losses'), Registry('heads')

    @heads.register_module()
    class PrefixingHead:
        def __init__(self, loss_cls):
            try:
                self.loss = losses.build(loss_cls)
            except BuildError as e:
                raise e.prefix('loss_cls')  # as the model code does

    with pytest.raises(BuildError) as info:
        with build_context('model', 'bbox_head'):
            heads.build(dict(type='PrefixingHead', loss_cls=dict(type='Nope')))
    assert info.value.key_path == ['model', 'bbox_head', 'loss_cls']


def test_an_argument_passed_on_through_kwargs_is_reported_against_the_built_class():
    reg = Registry('things')

    class Base:
        def __init__(self, num_classes, in_channels=256):
            self.num_classes = num_classes

    @reg.register_module()
    class Child(Base):
        def __init__(self, stacked_convs=4, **kwargs):
            super().__init__(**kwargs)

    with pytest.raises(BuildError) as info:
        reg.build(dict(type='Child', num_classes=3, in_chanels=64))
    msg = str(info.value)
    assert "Child got an unexpected argument 'in_chanels' (did you mean 'in_channels'?)" in msg
    assert 'it accepts: stacked_convs, num_classes, in_channels' in msg


def test_a_type_error_inside_a_constructor_is_not_hidden():
    reg = Registry('things')

    @reg.register_module()
    class Buggy:
        def __init__(self, size=1):
            len(size)  # a bug in the class, not in the config

    with pytest.raises(TypeError, match='has no len'):
        reg.build(dict(type='Buggy', size=3))


def test_real_retinanet_errors_name_key_path_and_file(shared_data):
    from detforge.compat import compat_cfg
    from detforge.registry import DETECTORS
    with pytest.warns(DeprecationWarning):
        cfg = compat_cfg(Config.fromfile(shared_data.parent / 'compat' /
                                         'retinanet_r101_fpn_1x.py'))
    cfg.merge_from_dict({'model.pretrained': None, 'model.backbone.depth': 18,
                         'model.neck.in_channels': [64, 128, 256, 512],
                         'model.bbox_head.loss_cls.type': 'FocalLos'})
    with pytest.raises(BuildError) as info:
        with build_context('model', filename=cfg.filename):
            DETECTORS.build(cfg.model)
    msg = str(info.value)
    assert "'FocalLos' is not in the LOSSES registry; did you mean 'FocalLoss'" in msg
    assert 'in model.bbox_head.loss_cls of ' in msg and 'retinanet_r101_fpn_1x.py' in msg

    cfg.model.bbox_head.loss_cls.type = 'FocalLoss'
    cfg.model.bbox_head.num_clases = 3
    with pytest.raises(BuildError) as info:
        with build_context('model', filename=cfg.filename):
            DETECTORS.build(cfg.model)
    msg = str(info.value)
    assert "RetinaHead got an unexpected argument 'num_clases' (did you mean 'num_classes'?)" in msg
    assert 'it accepts: num_classes, in_channels' in msg and 'in model.bbox_head of' in msg


def test_key_path_through_a_list_build():
    layers = Registry('layers')
    layers.register_module(module=nn.ReLU)
    outer = Registry('outer')

    @outer.register_module()
    class Block:
        def __init__(self, layers_cfg):
            self.body = layers.build(layers_cfg)

    with pytest.raises(BuildError) as info:
        with build_context('model'):
            outer.build(dict(type='Block', layers_cfg=[dict(type='ReLU'), dict(type='Relu')]))
    assert info.value.key_path == ['model', 'layers_cfg', '1']
    assert "did you mean 'ReLU'" in str(info.value)


def test_wrong_argument_names_class_bad_key_and_accepted_params(toy):
    with pytest.raises(BuildError) as info:
        with build_context('model'):
            toy['detectors'].build(dict(type='ToyDetector',
                                        bbox_head=dict(type='ToyHead', num_clases=3)))
    msg = str(info.value)
    assert "ToyHead got an unexpected argument 'num_clases' (did you mean 'num_classes'?)" in msg
    assert 'it accepts: num_classes, loss_cls, train_cfg' in msg
    assert 'in model.bbox_head' in msg
    assert not isinstance(info.value, TypeError)


def test_missing_required_argument_is_a_build_error(toy):
    with pytest.raises(BuildError, match="ToyHead needs the argument 'num_classes'"):
        toy['heads'].build(dict(type='ToyHead'))


def test_a_config_without_type_or_not_a_dict_is_a_build_error(toy):
    with pytest.raises(BuildError, match='needs a "type" key'):
        toy['losses'].build(dict(gamma=1.0))
    with pytest.raises(BuildError, match='must be a dict'):
        toy['losses'].build('FocalLoss')


def test_build_context_adds_the_filename_to_build_errors_only(toy):
    with pytest.raises(ValueError):
        with build_context('model', filename='x.py'):
            raise ValueError('not ours')
    with pytest.raises(BuildError, match=r'\(in data.train of cfg.py\)'):
        with build_context('data', 'train', filename='cfg.py'):
            toy['losses'].build(dict(type='Nope'))


# ---------------------------------------------------------------------- scopes
def test_child_registry_sees_parent_entries_and_parent_finds_scoped_names():
    parent = Registry('heads')

    @parent.register_module()
    class RetinaHead:
        def __init__(self, num_classes=80):
            self.num_classes = num_classes

    child = Registry('heads', parent=parent, scope='myproj')

    @child.register_module()
    class MyHead:
        def __init__(self, num_classes=80):
            self.num_classes = num_classes

    assert child.get('RetinaHead') is RetinaHead          # the child sees its parent
    assert parent.get('myproj.MyHead') is MyHead          # the parent finds scoped names
    assert parent.get('MyHead') is MyHead                 # unambiguous plain name
    assert isinstance(parent.build(dict(type='myproj.MyHead', num_classes=3)), MyHead)
    assert isinstance(child.build(dict(type='RetinaHead')), RetinaHead)
    assert 'myproj.MyHead' in parent.suggest('myproj.MyHaed')


def test_a_plain_name_in_two_scopes_is_ambiguous():
    parent = Registry('heads')
    a = Registry('heads', parent=parent, scope='a')
    b = Registry('heads', parent=parent, scope='b')
    a.register_module(name='Head', module=type('HeadA', (), {}))
    b.register_module(name='Head', module=type('HeadB', (), {}))
    assert parent.get('Head') is None
    assert parent.get('a.Head').__name__ == 'HeadA' and parent.get('b.Head').__name__ == 'HeadB'


def test_a_child_registry_needs_a_scope():
    with pytest.raises(ValueError):
        Registry('heads', parent=Registry('heads'))


# ---------------------------------------------------------------------- the project's registries
@pytest.mark.parametrize('name', [
    'DETECTORS', 'BACKBONES', 'NECKS', 'HEADS', 'ROI_EXTRACTORS', 'SHARED_HEADS', 'LOSSES',
    'PRIOR_GENERATORS', 'ANCHOR_GENERATORS', 'BBOX_ASSIGNERS', 'BBOX_SAMPLERS', 'BBOX_CODERS',
    'DATASETS', 'PIPELINES', 'TRANSFORMS', 'HOOKS', 'OPTIMIZERS', 'LR_SCHEDULERS', 'RUNNERS',
    'METRICS'])
def test_the_project_registries_exist(name):
    assert isinstance(getattr(registry_module, name), Registry)


def test_a_failed_location_import_is_raised_again_on_the_next_lookup():
    reg = Registry('things', locations=('detforge_no_such_module_xyz',))
    for _ in range(2):
        with pytest.raises(ModuleNotFoundError):
            reg.get('X')
