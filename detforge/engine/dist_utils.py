"""torch.distributed helpers: who am I, start the process group, reduce logged values.

``init_dist('pytorch')`` reads the variables ``torchrun`` sets (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); ``init_dist('slurm')`` derives them from
SLURM's (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_NODELIST``), as MMDetection does.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import os
import re
import subprocess

import torch
import torch.distributed as dist
from torch import nn

from detforge.registry import DetforgeError

__all__ = ['get_dist_info', 'init_dist', 'master_only', 'is_main_process', 'barrier',
           'all_reduce_dict', 'reduce_mean', 'broadcast_object', 'wrap_distributed',
           'unwrap_model', 'DetforgeDistributedDataParallel', 'DistributedFailure',
           'clear_dist_failures']


def get_dist_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return get_dist_info()[0] == 0


def master_only(func):
    """Run ``func`` on rank 0 only (other ranks get ``None``)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if is_main_process():
            return func(*args, **kwargs)
        return None
    return wrapper


def barrier() -> None:
    if get_dist_info()[1] > 1:
        dist.barrier()


# the timeout init_dist gave the process group, quoted by the failure messages
_TIMEOUT_S = [1800.]


def init_dist(launcher: str, backend: str | None = None, timeout_s: float = 1800.,
              port: int | None = None, **kwargs) -> None:
    """Initialise the default process group.

    Args:
        launcher: ``'pytorch'`` (torchrun) or ``'slurm'``.
        backend: ``'nccl'``, ``'gloo'``; default NCCL when CUDA is available, else gloo.
        timeout_s: collectives that wait longer raise instead of hanging forever (so a
            killed rank makes the others exit).
        port: master port for SLURM (else ``MASTER_PORT`` or 29500).
    """
    if backend is None:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE') if k not in os.environ]
        if missing:
            raise DetforgeError(f'--launcher pytorch needs the variables torchrun sets; missing '
                                f'{", ".join(missing)}. Start with: torchrun --nproc_per_node N '
                                f'-m detforge train CONFIG --launcher pytorch')
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
    elif launcher == 'slurm':
        if 'SLURM_PROCID' not in os.environ:
            raise DetforgeError('--launcher slurm needs SLURM_PROCID, SLURM_NTASKS and '
                                'SLURM_NODELIST (run under srun)')
        proc_id = int(os.environ['SLURM_PROCID'])
        ntasks = int(os.environ['SLURM_NTASKS'])
        node_list = os.environ['SLURM_NODELIST']
        num_gpus = max(torch.cuda.device_count(), 1)
        local_rank = int(os.environ.get('SLURM_LOCALID', proc_id % num_gpus))
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            os.environ['MASTER_ADDR'] = _first_slurm_host(node_list)
        os.environ['WORLD_SIZE'] = str(ntasks)
        os.environ['LOCAL_RANK'] = str(local_rank)
        os.environ['RANK'] = str(proc_id)
    else:
        raise DetforgeError(f"unknown launcher {launcher!r}; use 'none', 'pytorch' or 'slurm'")
    if backend == 'nccl':
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not timeout_s or timeout_s <= 0:
        raise DetforgeError(f'dist_params.timeout must be a positive number of seconds, got '
                            f'{timeout_s!r}')
    _TIMEOUT_S[0] = float(timeout_s)
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **kwargs)
    except Exception as exc:
        if not _is_dist_failure(exc):
            raise
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise DistributedFailure(
            f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}: could "
            f'not join the process group at {where} ({backend}) within dist_params.timeout='
            f'{timeout_s:g} s: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}'
        ) from exc


def _first_slurm_host(node_list: str) -> str:
    """The first host of a SLURM node list: ``scontrol show hostnames`` when SLURM is
    installed, else parsed here (``'node[01-04,07],gpu2'`` -> ``'node01'``)."""
    try:
        out = subprocess.run(['scontrol', 'show', 'hostnames', node_list], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return out.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return _parse_first_slurm_host(node_list)


def _parse_first_slurm_host(node_list: str) -> str:
    # the first entry is a prefix, optionally followed by "[ranges]" (zero padding kept)
    match = re.match(r'\s*([^\[,\s]+)(?:\[([^\]]+)\])?', node_list)
    if match is None:
        raise DetforgeError(f'SLURM_NODELIST={node_list!r} is not a SLURM node list '
                            f'(expected e.g. node[01-04] or host1,host2)')
    prefix, ranges = match.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(',')[0].split('-')[0]


class DistributedFailure(DetforgeError):
    """A collective failed: another rank died, hung past ``dist_params.timeout`` or lost
    its network connection."""


# what gloo / NCCL put in the RuntimeErrors of failed collectives (older torch has no DistError)
_DIST_FAILURE_PATTERNS = ('gloo', 'nccl', 'connection reset', 'connection closed',
                          'broken pipe')


def _is_dist_failure(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, 'DistError', ())):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(p in text for p in _DIST_FAILURE_PATTERNS)


@contextlib.contextmanager
def clear_dist_failures():
    """Turn a failed collective inside the block into one clear :class:`DistributedFailure`
    (``rank R of W: ...``) instead of a backend traceback; other errors pass unchanged.
    Outside a process group the block runs as is."""
    rank, world_size = get_dist_info()
    try:
        yield
    except Exception as exc:
        if world_size == 1 or not _is_dist_failure(exc):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedFailure(
            f'rank {rank} of {world_size}: a collective operation failed, so another rank '
            f'probably died, hung or lost its connection (waiting at most '
            f'dist_params.timeout={_TIMEOUT_S[0]:g} s); stopping this rank. Check the other '
            f'ranks\' output. Backend error: {first_line}') from exc


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (itself when not distributed)."""
    _, world_size = get_dist_info()
    if world_size == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(world_size), op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_dict(values: dict[str, float], device: torch.device | str = 'cpu'
                    ) -> dict[str, float]:
    """Average a dict of scalars over ranks in one collective (same keys on every rank)."""
    _, world_size = get_dist_info()
    if world_size == 1 or not values:
        return dict(values)
    keys = list(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    packed = reduce_mean(packed)
    return {k: float(v) for k, v in zip(keys, packed.tolist())}


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank."""
    if get_dist_info()[1] == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The detector inside a (Distributed)DataParallel wrapper."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


class DetforgeDistributedDataParallel(nn.parallel.DistributedDataParallel):
    """DDP whose ``train_step`` / ``val_step`` run the detector's step through DDP's forward,
    so that gradient synchronisation is prepared exactly as for a plain ``forward``."""

    def _step(self, name, *args, **kwargs):
        module = self.module
        step = getattr(module, name)

        def step_once(*a, **k):
            # DDP's forward calls module(...) once; inside the step, module(...) is the
            # detector's own forward again
            module.__dict__.pop('forward', None)
            return step(*a, **k)
        module.forward = step_once
        try:
            return super().forward(*args, **kwargs)
        finally:
            module.__dict__.pop('forward', None)

    def train_step(self, data, optimizer=None, **kwargs):
        return self._step('train_step', data, optimizer, **kwargs)

    def val_step(self, data, optimizer=None, **kwargs):
        return self._step('val_step', data, optimizer, **kwargs)


def wrap_distributed(model: nn.Module, find_unused_parameters: bool = False,
                     broadcast_buffers: bool = False) -> nn.Module:
    """Wrap ``model`` (already on its device) in DDP; one device per process on CUDA.

    On CUDA, detforge's ``SyncBN`` layers become torch's :class:`torch.nn.SyncBatchNorm`
    (fused kernels; same parameters and buffers); on the CPU they stay detforge's, which
    synchronise through gloo."""
    device = next(model.parameters()).device
    if device.type == 'cuda':
        from detforge.models.layers import SyncBatchNorm
        model = SyncBatchNorm.convert_to_torch(model)
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == 'cuda' else None
    import inspect
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    # newer torch renames broadcast_buffers (the buffers are synced once at init either way)
    buffers = {'forward_sync_buffers' if 'forward_sync_buffers' in params
               else 'broadcast_buffers': broadcast_buffers}
    return DetforgeDistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters, **buffers)
