"""Settings detforge cannot honour are refused with a clear error instead of being ignored:
``file_client_args`` naming a backend other than the disk, and ``gpus``."""
import pytest

from conftest import data_options
from detforge.cli import main as cli
from detforge.data import build_dataset
from detforge.data.pipelines.loading import LoadAnnotations, LoadImageFromFile
from detforge.registry import HOOKS, BuildError

TINY = 'tests/configs/retinanet_r18_tiny_bccd.py'
PETREL = dict(backend='petrel', path_mapping={'data/': 's3://bucket/data/'})


@pytest.mark.parametrize('build', [
    lambda args: LoadImageFromFile(file_client_args=args),
    lambda args: LoadAnnotations(file_client_args=args),
    lambda args: HOOKS.build(dict(type='TextLoggerHook', file_client_args=args)),
])
def test_file_client_args_other_than_disk_are_refused(build):
    build(dict(backend='disk'))
    build(None)
    with pytest.raises(BuildError, match="backend 'petrel' is not supported.*local disk"):
        build(PETREL)


def test_dataset_with_a_remote_backend_is_a_build_error(repo_root, bccd_subset):
    with pytest.raises(BuildError, match="CocoDataset: file_client_args backend 'petrel'"):
        build_dataset(dict(type='CocoDataset', ann_file=bccd_subset(1), file_client_args=PETREL,
                           classes=('RBC', 'WBC', 'Platelets'), pipeline=[]))


def test_gpus_that_the_launch_does_not_give_is_refused(repo_root, bccd_subset, tmp_path, capsys):
    assert cli(['train', str(repo_root / TINY), '--work-dir', str(tmp_path), '--cfg-options',
                *data_options(repo_root, bccd_subset(1)), 'gpus=2']) != 0
    assert 'gpus=2 asks for 2 GPU(s) but this run has 1 process(es)' in capsys.readouterr().err
    assert not list(tmp_path.glob('*.pth'))
    from detforge.commands.train import check_gpu_request
    from detforge.config import Config
    check_gpu_request(Config(dict(gpus=1)), 1)   # fulfilled: accepted
