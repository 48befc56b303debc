"""Distributed test results reach rank 0 only, in dataset order (2 ranks, gloo, spawned).

Each rank holds the results of its share of 5,000 synthetic images (the non-shuffled
``DistributedSampler`` split: rank ``r`` has images ``r, r + 2, ...``); both ways of
collecting them (``collect_results_gpu``: a gather through the process group;
``collect_results_cpu``: files in a folder) give rank 0 every result in dataset order and the
other rank ``None``, and the other rank never allocates room for the whole data set's results.
"""
from __future__ import annotations

import os
import pickle
import socket
import tracemalloc

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

NUM_IMAGES = 5000
NUM_CLASSES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def image_result(i: int) -> list[np.ndarray]:
    """Per class ``(n, 5)`` float32 detections of image ``i``; the first value is ``i``."""
    rng = np.random.default_rng(i)
    out = []
    for c in range(NUM_CLASSES):
        dets = rng.random((int(rng.integers(0, 20)), 5)).astype(np.float32)
        if len(dets):
            dets[0, 0] = i
        out.append(dets)
    return out


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    from detforge.apis.test import collect_results_cpu, collect_results_gpu
    from detforge.data.samplers import DistributedSampler
    sampler = DistributedSampler(range(NUM_IMAGES), num_replicas=world, rank=rank, shuffle=False)
    part = [image_result(i) for i in sampler]  # padded to equal lengths, as in testing
    report = {'part_bytes': len(pickle.dumps(part))}
    # count what this rank unpickles: the objects it receives from the process group, and
    # the part files it reads
    import torch.distributed.distributed_c10d as c10d
    counts = {'received': 0, 'files': 0}
    to_object, load = c10d._tensor_to_object, pickle.load

    def counting_to_object(*args, **kwargs):
        obj = to_object(*args, **kwargs)
        counts['received'] += isinstance(obj, list)  # a results part (not the folder name)
        return obj

    def counting_load(*args, **kwargs):
        counts['files'] += 1
        return load(*args, **kwargs)
    c10d._tensor_to_object, pickle.load = counting_to_object, counting_load
    for name, collect in (('gpu', lambda: collect_results_gpu(part, NUM_IMAGES)),
                          ('cpu', lambda: collect_results_cpu(
                              part, NUM_IMAGES, os.path.join(out_dir, 'collect_tmp')))):
        dist.barrier()
        tracemalloc.start()
        results = collect()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        report[name] = dict(peak=peak, results=results, **counts)
        counts.update(received=0, files=0)
        dist.barrier()
    report['tmpdir_left'] = os.path.exists(os.path.join(out_dir, 'collect_tmp'))
    with open(os.path.join(out_dir, f'rank{rank}.pkl'), 'wb') as f:
        pickle.dump(report, f)
    dist.destroy_process_group()


@pytest.fixture(scope='module')
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp('collect')
    before = torch.get_num_threads()
    mp.spawn(_rank_main, args=(2, free_port(), str(out)), nprocs=2, join=True)
    torch.set_num_threads(before)
    return [pickle.loads((out / f'rank{r}.pkl').read_bytes()) for r in range(2)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


@pytest.mark.parametrize('mode', ['gpu', 'cpu'])
def test_rank_0_gets_every_result_in_dataset_order_and_rank_1_none(reports, mode):
    got = reports[0][mode]['results']
    assert len(got) == NUM_IMAGES
    assert _same(got, [image_result(i) for i in range(NUM_IMAGES)])
    assert reports[1][mode]['results'] is None


@pytest.mark.parametrize('mode', ['gpu', 'cpu'])
def test_the_other_rank_never_holds_the_whole_results(reports, mode):
    # rank 1 unpickles nothing (an all-gather would hand it every rank's part); rank 0
    # unpickles the parts (through the process group its own too; from files the other's)
    assert (reports[1][mode]['received'], reports[1][mode]['files']) == (0, 0)
    assert reports[0][mode]['received' if mode == 'gpu' else 'files'] == (2 if mode == 'gpu' else 1)


def test_the_collection_folder_is_removed(reports):
    assert not reports[0]['tmpdir_left']
