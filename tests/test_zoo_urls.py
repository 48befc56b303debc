"""Checkpoint URIs resolve to MMCV's URLs and to torch.hub's cache; a cached file is used
without a network."""
import pytest
import torch

from detforge.engine.checkpoint import read_checkpoint
from detforge.models import pretrained
from detforge.models.pretrained import hub_cache_path, load_pretrained_state_dict, resolve_url
from detforge.registry import DetforgeError

THIRD = 'https://download.openmmlab.com/pretrain/third_party/'


@pytest.mark.parametrize('uri,url', [
    ('open-mmlab://detectron2/resnet50_caffe', THIRD + 'resnet50_msra-5891d200.pth'),
    ('open-mmlab://detectron/resnet50_caffe', THIRD + 'resnet50_caffe-788b5fa3.pth'),
    ('open-mmlab://resnext101_32x4d', THIRD + 'resnext101_32x4d-a5af3160.pth'),
    ('open-mmlab://resnext101_64x4d', THIRD + 'resnext101_64x4d-ee2c6f71.pth'),
    ('mmcls://resnet50', 'https://download.openmmlab.com/mmclassification/v0/resnet/'
                         'resnet50_batch256_imagenet_20200708-cfb998bf.pth'),
    ('torchvision://resnet50', 'https://download.pytorch.org/models/resnet50-0676ba61.pth'),
    ('https://example.org/a/b/w-123.pth', 'https://example.org/a/b/w-123.pth'),
])
def test_resolve_url(uri, url):
    assert resolve_url(uri) == url


def test_deprecated_open_mmlab_name_maps_like_mmcv():
    with pytest.warns(DeprecationWarning, match='detectron/resnet50_caffe'):
        assert resolve_url('open-mmlab://resnet50_caffe') == THIRD + 'resnet50_caffe-788b5fa3.pth'


@pytest.mark.parametrize('uri,match', [('open-mmlab://resnet9000', 'unknown name'),
                                       ('s3://bucket/w.pth', 'unknown checkpoint prefix')])
def test_unknown_uri_is_one_line_error(uri, match):
    with pytest.raises(DetforgeError, match=match):
        resolve_url(uri)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """torch.hub's dir in tmp_path; any download attempt fails the test."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def no_network(url, dst, *args, **kwargs):
        raise AssertionError(f'network used for {url}')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    return tmp_path / 'hub' / 'checkpoints'


def test_cached_file_is_used_without_network(offline_hub):
    url = resolve_url('open-mmlab://resnext101_32x4d')
    assert hub_cache_path(url) == offline_hub / 'resnext101_32x4d-a5af3160.pth'
    offline_hub.mkdir(parents=True)
    torch.save({'state_dict': {'conv1.weight': torch.ones(2)}}, offline_hub / 'resnext101_32x4d-a5af3160.pth')
    state = load_pretrained_state_dict('open-mmlab://resnext101_32x4d')
    assert torch.equal(state['conv1.weight'], torch.ones(2))
    # load_from / detforge test take the same URIs
    assert torch.equal(read_checkpoint('open-mmlab://resnext101_32x4d')['state_dict']['conv1.weight'],
                       torch.ones(2))


def test_missing_file_without_network_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def fail(url, dst, *a, **k):
        raise OSError('no network')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', fail)
    with pytest.raises(DetforgeError, match='resnet50_msra-5891d200.pth'):
        load_pretrained_state_dict('open-mmlab://detectron2/resnet50_caffe')


def test_mmcls_checkpoint_gives_its_backbone(offline_hub):
    offline_hub.mkdir(parents=True)
    name = pretrained.hub_cache_path(resolve_url('mmcls://resnet18')).name
    torch.save({'meta': {}, 'state_dict': {'backbone.conv1.weight': torch.ones(1),
                                           'head.fc.weight': torch.ones(1)}}, offline_hub / name)
    assert list(load_pretrained_state_dict('mmcls://resnet18')) == ['conv1.weight']


def test_backbone_init_cfg_takes_open_mmlab_uri(offline_hub):
    from detforge.models.builder import build_backbone
    cfg = dict(type='ResNet', depth=18, num_stages=4, out_indices=(3,),
               init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnet18_v1c'))
    src = build_backbone(dict(cfg, init_cfg=None))
    offline_hub.mkdir(parents=True)
    torch.save({'state_dict': src.state_dict()}, offline_hub / 'resnet18_v1c-b5776b93.pth')
    dst = build_backbone(cfg)
    dst.init_weights()
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
