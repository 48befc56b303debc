"""Loader: padded uint8 batches with metas, group sampling, reproducible and resumable order."""
import numpy as np
import pytest
import torch

from detforge.config import Config
from detforge.data import build_dataloader, build_dataset, collate
from detforge.data.errors import DatasetError
from detforge.data.samplers import DistributedGroupSampler, DistributedSampler, GroupSampler

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


@pytest.fixture(scope='module')
def bccd_cfg(repo_root):
    cfg = Config.fromfile(str(repo_root / 'configs' / '_base_' / 'datasets' / 'bccd.py'))
    root = str(repo_root / 'data' / 'bccd') + '/'
    for split in ('train', 'test'):
        cfg.data[split].ann_file = cfg.data[split].ann_file.replace('data/bccd/', root)
        cfg.data[split].img_prefix = root
    return cfg


def small_aug_dataset(repo_root):
    """BCCD test split with a random multi-scale resize and flip, at small sizes (fast)."""
    pipeline = [
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
        dict(type='Resize', img_scale=[(96, 64), (160, 120)], multiscale_mode='range'),
        dict(type='RandomFlip', flip_ratio=0.5), dict(type='Pad', size_divisor=32),
        dict(type='DefaultFormatBundle'),
        dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])]
    return build_dataset(dict(type='CocoDataset', classes=BCCD_CLASSES,
                              data_root=str(repo_root / 'data' / 'bccd') + '/',
                              ann_file='annotations/test.json', pipeline=pipeline))


def test_training_batch_is_padded_uint8_with_metas(bccd_cfg):
    ds = build_dataset(bccd_cfg.data.train)
    batch = next(iter(build_dataloader(ds, 4, 0, seed=0)))
    img = batch['img']
    assert img.dtype == torch.uint8 and img.shape == (4, 3, 320, 448)
    assert img.shape[-1] % 32 == 0 and img.shape[-2] % 32 == 0
    assert (img[:, :, :, 427:] == 0).all()  # padding is zero, image at the top-left
    for meta, boxes, labels in zip(batch['img_metas'], batch['gt_bboxes'], batch['gt_labels']):
        assert meta['ori_shape'] == (480, 640, 3) and meta['img_shape'] == (320, 427, 3)
        assert meta['pad_shape'] == (320, 448, 3) and meta['batch_input_shape'] == (320, 448)
        np.testing.assert_allclose(meta['scale_factor'], [427 / 640, 2 / 3] * 2, rtol=1e-6)
        assert isinstance(meta['flip'], bool) and meta['filename'].endswith('.jpg')
        assert meta['img_norm_cfg']['to_rgb'] is True
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
        assert len(boxes) == len(labels) > 0
        assert (boxes[:, 2] <= 427).all() and (boxes[:, 3] <= 320).all()


def test_test_batch_has_one_entry_per_augmentation(bccd_cfg):
    ds = build_dataset(bccd_cfg.data.test)
    batch = next(iter(build_dataloader(ds, 2, 0, shuffle=False)))
    assert len(batch['img']) == 1 and batch['img'][0].shape == (2, 3, 320, 448)
    assert len(batch['img_metas']) == 1 and len(batch['img_metas'][0]) == 2
    assert batch['img_metas'][0][0]['filename'].endswith(ds.data_infos[0]['file_name'])


def test_collate_pads_to_batch_max_rounded_to_32():
    samples = [dict(img=torch.full((3, 100, 200), 7, dtype=torch.uint8), img_metas={}),
               dict(img=torch.full((3, 130, 90), 9, dtype=torch.uint8), img_metas={})]
    batch = collate(samples)
    assert batch['img'].shape == (2, 3, 160, 224)
    assert (batch['img'][0, :, :100, :200] == 7).all() and batch['img'][0, :, 100:].sum() == 0
    assert batch['img'][1, :, :, 90:].sum() == 0
    assert batch['img_metas'][1]['pad_shape'] == (160, 224, 3)


def test_collate_rejects_unpacked_images_with_a_clear_error():
    with pytest.raises(DatasetError, match='DefaultFormatBundle'):
        collate([dict(img=np.zeros((10, 10, 3), np.uint8), img_metas={'filename': 'a.jpg'})])


def test_group_sampler_batches_share_aspect_ratio_and_cover_all(raccoon_root):
    ds = build_dataset(dict(type='XMLDataset', ann_file=None, img_prefix=str(raccoon_root),
                            img_subdir='images', ann_subdir='annotations',
                            classes=('raccoon',), pipeline=[]))
    s = GroupSampler(ds, samples_per_gpu=4, seed=0)
    order = list(s)
    assert len(order) == len(s) and len(order) % 4 == 0
    assert set(order) == set(range(len(ds)))
    for b in range(0, len(order), 4):
        assert len({int(ds.flag[i]) for i in order[b:b + 4]}) == 1
    assert list(GroupSampler(ds, 4, seed=0)) == order  # same seed, same epoch -> same order
    s.set_epoch(1)
    assert list(s) != order


def test_distributed_group_sampler_splits_without_overlap(raccoon_root):
    ds = build_dataset(dict(type='XMLDataset', ann_file=None, img_prefix=str(raccoon_root),
                            img_subdir='images', ann_subdir='annotations',
                            classes=('raccoon',), pipeline=[]))
    parts = [list(DistributedGroupSampler(ds, 2, num_replicas=2, rank=r, seed=5)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1])
    assert set(parts[0]) | set(parts[1]) == set(range(len(ds)))
    test = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert sorted(test[0] + test[1]) == list(range(len(ds)))


def _batches(loader, n):
    out = []
    for i, batch in enumerate(loader):
        if i == n:
            break
        out.append(batch)
    return out


def _same(a, b):
    return (all(x['filename'] == y['filename'] and x['flip'] == y['flip']
                for x, y in zip(a['img_metas'], b['img_metas']))
            and torch.equal(a['img'], b['img']))


def test_same_seed_same_batches_with_0_and_2_workers(repo_root):
    ds = small_aug_dataset(repo_root)
    ref = _batches(build_dataloader(ds, 4, 0, seed=7), 4)
    again = _batches(build_dataloader(ds, 4, 0, seed=7), 4)
    workers = _batches(build_dataloader(ds, 4, 2, seed=7), 4)
    assert all(_same(a, b) for a, b in zip(ref, again))
    assert all(_same(a, b) for a, b in zip(ref, workers))
    other = _batches(build_dataloader(ds, 4, 0, seed=8), 4)
    assert not all(_same(a, b) for a, b in zip(ref, other))
    # the augmentations really are random: sizes and flips vary within the run
    assert len({b['img'].shape for b in ref}) > 1 or len({m['flip'] for b in ref
                                                           for m in b['img_metas']}) > 1


def test_resumed_sampler_gives_exactly_the_remaining_batches(repo_root):
    ds = small_aug_dataset(repo_root)
    loader = build_dataloader(ds, 4, 0, seed=11)
    loader.sampler.set_epoch(1)
    full = list(loader)
    resumed = build_dataloader(ds, 4, 0, seed=11)
    resumed.sampler.set_epoch(1)
    resumed.sampler.set_start(5)
    rest = list(resumed)
    assert len(rest) == len(full) - 5
    assert all(_same(a, b) for a, b in zip(full[5:], rest))
    # the start applies to one iteration only; the next epoch is complete
    assert len(list(resumed)) == len(full)


def test_dist_loader_takes_rank_and_world_size_from_torch_distributed(repo_root, monkeypatch):
    import detforge.data.loader as loader_mod
    monkeypatch.setattr(loader_mod, 'get_dist_info', lambda: (1, 2))
    ds = small_aug_dataset(repo_root)
    loader = build_dataloader(ds, 2, 0, dist=True, seed=0)
    sampler = loader.sampler.sampler
    assert isinstance(sampler, DistributedGroupSampler)
    assert (sampler.rank, sampler.num_replicas) == (1, 2)
    assert len(loader) == len(sampler) // 2 and len(sampler) * 2 >= len(ds)
    test = build_dataloader(ds, 2, 0, dist=True, shuffle=False)
    assert list(test.sampler) == list(range(1, len(ds), 2))
