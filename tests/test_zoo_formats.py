"""Safe checkpoint formats: .safetensors round trip, old MMDetection pickles through the
allow-list, and pickles that would run code refused."""
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from detforge.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from detforge.engine.checkpoint_formats import load_safetensors
from detforge.registry import DetforgeError


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))


def test_safetensors_round_trip(tmp_path):
    src, dst = _model(0), _model(1)
    path = tmp_path / 'w.safetensors'
    save_checkpoint(src, path, meta={'CLASSES': ('a', 'b'), 'epoch': 3, 'arr': np.arange(3)})
    with open(path, 'rb') as f:  # really safetensors: an 8-byte header length then JSON
        n = int.from_bytes(f.read(8), 'little')
        assert f.read(n).startswith(b'{')
    ckpt = load_checkpoint(dst, path)
    assert ckpt['meta']['CLASSES'] == ['a', 'b'] and ckpt['meta']['epoch'] == 3
    assert ckpt['meta']['arr'] == [0, 1, 2]
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k
    assert load_safetensors(path)['state_dict'].keys() == src.state_dict().keys()


def test_safetensors_corrupt_file_is_one_line_error(tmp_path):
    path = tmp_path / 'bad.safetensors'
    path.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00not json at all!')
    with pytest.raises(DetforgeError, match='bad.safetensors'):
        read_checkpoint(path)


def _fake_mmcv(monkeypatch):
    """A module named like MMCV's config module, with a ConfigDict that pickles by its name."""
    mod = types.ModuleType('mmcv.utils.config')

    class ConfigDict(dict):  # pickles like addict.Dict: its state is itself
        def __getstate__(self):
            return self

        def __setstate__(self, state):
            self.update(state)
    ConfigDict.__module__ = 'mmcv.utils.config'
    ConfigDict.__qualname__ = 'ConfigDict'
    mod.ConfigDict = ConfigDict
    for name in ('mmcv', 'mmcv.utils', 'mmcv.utils.config'):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name) if name != 'mmcv.utils.config' else mod)
    return ConfigDict


def test_old_mmdet_checkpoint_with_numpy_and_configdict_meta(tmp_path, monkeypatch):
    """Meta as MMDetection 2.x wrote it: numpy arrays/scalars and an mmcv ConfigDict."""
    ConfigDict = _fake_mmcv(monkeypatch)
    src = _model(0)
    meta = {'mmdet_version': '2.28.2', 'CLASSES': ('cell',), 'epoch': np.int64(12),
            'hook_msgs': {'best_score': np.float64(0.5), 'hist': np.arange(4, dtype=np.float32)},
            'cfg': ConfigDict(model=ConfigDict(type='RetinaNet'), lr=0.01)}
    path = tmp_path / 'mmdet.pth'
    torch.save({'meta': meta, 'state_dict': src.state_dict()}, path)
    for name in ('mmcv', 'mmcv.utils', 'mmcv.utils.config'):
        monkeypatch.delitem(sys.modules, name)  # loading must not need (or import) mmcv
    with pytest.raises(Exception, match='Unsupported global'):  # torch alone refuses it
        torch.load(path, weights_only=True)
    dst = _model(1)
    ckpt = load_checkpoint(dst, path)
    assert 'mmcv' not in sys.modules
    assert ckpt['load_report'].ok
    assert torch.equal(dst[0].weight, src[0].weight)
    m = ckpt['meta']
    assert np.array_equal(m['hook_msgs']['hist'], np.arange(4, dtype=np.float32))
    assert m['epoch'] == 12 and m['hook_msgs']['best_score'] == 0.5
    assert m['cfg'] == {'model': {'type': 'RetinaNet'}, 'lr': 0.01}
    assert type(m['cfg']) is OrderedDict and type(m['cfg']['model']) is OrderedDict


class _Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + os.environ.get('I25_EVIL_MARK', '/nonexistent/x'),))


@pytest.mark.parametrize('suffix', ['.pth', '.pkl'])
def test_pickle_with_code_stays_refused(tmp_path, monkeypatch, suffix):
    mark = tmp_path / 'pwned'
    monkeypatch.setenv('I25_EVIL_MARK', str(mark))
    path = tmp_path / f'evil{suffix}'
    torch.save({'meta': {'x': _Evil(), 'a': np.arange(2)}, 'state_dict': _model().state_dict()}, path)
    with pytest.raises(DetforgeError, match='evil'):
        load_checkpoint(_model(), path)
    assert not mark.exists()


def test_checkpoint_hook_writes_safetensors_beside_the_resumable_pth(tmp_path):
    """``checkpoint_config=dict(save_format='safetensors')``: every epoch_N.pth gets an
    epoch_N.safetensors twin holding the same weights (no optimizer); max_keep_ckpts prunes
    both kinds; the .pth still resumes."""
    sys.path.insert(0, os.path.dirname(__file__))
    from test_engine_runner import make_runner
    from test_engine_toys import toy_loader
    runner = make_runner(tmp_path, length=3, checkpoint_config=dict(
        interval=1, max_keep_ckpts=2, save_format='safetensors'))
    runner.run([toy_loader()], [('train', 1)])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith('.log')
                  and not p.name.endswith('.json')) == [
        'epoch_2.pth', 'epoch_2.safetensors', 'epoch_3.pth', 'epoch_3.safetensors',
        'latest.pth']
    pth = read_checkpoint(tmp_path / 'epoch_3.pth')
    st = load_safetensors(tmp_path / 'epoch_3.safetensors')
    assert 'optimizer' in pth and set(st) == {'meta', 'state_dict'}
    assert st['meta']['epoch'] == 3 == pth['meta']['epoch']
    assert st['state_dict'].keys() == pth['state_dict'].keys()
    for key, value in pth['state_dict'].items():
        assert torch.equal(st['state_dict'][key], value), key
    # the weights are the model's at the end of epoch 3, not at some earlier save
    for key, value in runner.model.state_dict().items():
        assert torch.equal(st['state_dict'][key], value), key


def test_checkpoint_hook_rejects_an_unknown_save_format():
    from detforge.engine.hooks import CheckpointHook
    from detforge.registry import BuildError
    with pytest.raises(BuildError, match=r"save_format.*'pth', 'safetensors'.*'onnx'"):
        CheckpointHook(interval=1, save_format='onnx')
