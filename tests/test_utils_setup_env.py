"""The config's speed switches: ``channels_last`` and ``cudnn_benchmark``."""
import pytest
import torch
from torch import nn

from detforge.config import Config
from detforge.registry import BuildError
from detforge.utils.setup_env import model_to_device, setup_speed_switches


def net():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))


def test_channels_last_puts_conv_weights_in_nhwc_and_computes_the_same():
    torch.manual_seed(0)
    plain = model_to_device(net(), 'cpu', Config(dict()))
    nhwc = model_to_device(net(), 'cpu', Config(dict(channels_last=True)))
    nhwc.load_state_dict(plain.state_dict())  # a checkpoint loads into either layout
    assert plain[0].weight.is_contiguous()
    assert nhwc[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nhwc[0].weight.is_contiguous()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-5, atol=1e-5)
    assert model_to_device(net(), 'cpu')[0].weight.is_contiguous()  # no config: as is


@pytest.mark.parametrize('key', ['channels_last', 'cudnn_benchmark'])
def test_a_flag_that_is_not_a_bool_names_the_key_and_the_file(tmp_path, key):
    path = tmp_path / 'cfg.py'
    path.write_text(f"{key} = 'yes'\n")
    cfg = Config.fromfile(str(path))
    checks = [setup_speed_switches] + ([lambda c: model_to_device(net(), 'cpu', c)]
                                        if key == 'channels_last' else [])
    for check in checks:
        with pytest.raises(BuildError) as info:
            check(cfg)
        message = str(info.value)
        assert f"{key} must be True or False, got 'yes'" in message and str(path) in message


def test_cudnn_benchmark_sets_the_backend_flag():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        setup_speed_switches(Config(dict()))
        assert torch.backends.cudnn.benchmark is False
        setup_speed_switches(Config(dict(cudnn_benchmark=True)))
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before
