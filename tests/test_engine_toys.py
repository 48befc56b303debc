"""A toy model, data set and sampler for the engine tests (no detector, no images).

The other engine test modules import these; the tests here check the toys themselves.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler


class ToyModel(nn.Module):
    """``y = w . dropout(x) + b`` with a squared loss; dropout makes the torch RNG matter,
    so exact resume must restore it."""

    def __init__(self, dropout: float = 0.2, norm: bool = False):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.BatchNorm1d(4) if norm else None

    def forward(self, x):
        if self.norm is not None:
            x = self.norm(x)
        return self.linear(self.dropout(x)).squeeze(1)

    def train_step(self, data, optimizer=None):
        x, y = data
        loss = ((self(x) - y) ** 2).mean()
        return dict(loss=loss, log_vars={'loss': loss.item()}, num_samples=len(x))

    def val_step(self, data, optimizer=None):
        return self.train_step(data, optimizer)


class ToyDataset(Dataset):
    """``n`` samples ``(x (4,), y)`` with ``y = x . [1, -2, 3, 0.5] + 1`` plus noise."""
    CLASSES = ('a', 'b')

    def __init__(self, n: int = 12, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1., -2., 3., .5]) + 1 + 0.1 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def evaluate(self, results, logger=None, **kwargs):
        return {'toy_mAP': float(len(results))}


class ToySampler(Sampler):
    """A shuffle that depends only on ``(seed, epoch)``, with ``set_epoch`` and
    ``set_start(num_batches)`` as the data side's samplers have."""

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self._start = 0, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def set_start(self, num_batches):
        self._start = num_batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        start, self._start = self._start * self.batch_size, 0
        return iter(order[start:])

    def __len__(self):
        return self.n


def toy_loader(n: int = 12, batch_size: int = 2, seed: int = 0) -> DataLoader:
    dataset = ToyDataset(n)
    return DataLoader(dataset, batch_size=batch_size, sampler=ToySampler(n, batch_size, seed),
                      num_workers=0)


def test_toy_sampler_skips_whole_batches_once():
    sampler = ToySampler(6, batch_size=2)
    full = list(sampler)
    sampler.set_start(2)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # the skip applies to one pass only


def test_toy_sampler_order_depends_on_epoch():
    sampler = ToySampler(12, batch_size=2)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert sorted(list(sampler)) == list(range(12))
