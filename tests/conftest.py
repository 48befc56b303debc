"""Shared fixtures: where the repository and the real data sets are."""
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
BUNDLED_BCCD = REPO / 'data' / 'bccd'

# Two cores are shared by the whole suite; more threads only add contention.
torch.set_num_threads(2)


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope='session')
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f'the shared data sets are missing: expected {SHARED_DATA}')
    return SHARED_DATA


@pytest.fixture(scope='session')
def bccd_voc_root(shared_data) -> Path:
    """The VOC-layout BCCD folder (Annotations/, JPEGImages/, ImageSets/Main/)."""
    return shared_data / 'bccd' / 'BCCD'


@pytest.fixture(scope='session')
def raccoon_root(shared_data) -> Path:
    return shared_data / 'raccoon'
