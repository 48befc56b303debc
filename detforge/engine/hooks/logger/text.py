"""Human log lines (with ETA) and a JSON-lines log ``{timestamp}.log.json`` in the work dir."""
from __future__ import annotations

import datetime
import json
import os.path as osp
import resource
import sys
from collections import OrderedDict

import torch

from detforge.registry import HOOKS
from detforge.utils.file_client import check_file_client_args

from ...dist_utils import get_dist_info
from .base import LoggerHook

__all__ = ['TextLoggerHook', 'max_memory_mb']


def max_memory_mb(device: torch.device | None = None) -> int:
    """Peak memory in MB: CUDA memory allocated on a GPU, the process's max RSS on CPU."""
    if device is not None and device.type == 'cuda':
        return int(torch.cuda.max_memory_allocated(device) / (1024 * 1024))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss / 1024 / 1024) if sys.platform == 'darwin' else int(rss / 1024)


@HOOKS.register_module()
class TextLoggerHook(LoggerHook):
    """Writes lines such as::

        Epoch [1][10/50]  lr: 1.000e-02, eta: 0:03:12, time: 0.512, data_time: 0.020,
        memory: 1830, loss_cls: 1.1034, loss_bbox: 0.6612, loss: 1.7646, grad_norm: 7.1

    to the log, and the same values as one JSON object per line to
    ``WORK_DIR/{timestamp}.log.json`` (rank 0 only).
    """

    def __init__(self, by_epoch: bool = True, interval: int = 10, ignore_last: bool = True,
                 reset_flag: bool = False, interval_exp_name: int = 1000,
                 out_dir: str | None = None, out_suffix=('.log.json', '.log', '.py'),
                 keep_local: bool = True, file_client_args=None):
        super().__init__(interval, ignore_last, reset_flag, by_epoch)
        check_file_client_args(file_client_args, 'TextLoggerHook')
        self.time_sec_tot = 0.
        self.interval_exp_name = interval_exp_name
        self.out_dir = out_dir
        self.json_log_path: str | None = None

    def before_run(self, runner):
        super().before_run(runner)
        self.start_iter = runner.iter
        self.time_sec_tot = 0.
        if runner.work_dir is not None and runner.timestamp is not None:
            self.json_log_path = osp.join(runner.work_dir, f'{runner.timestamp}.log.json')
            rank, _ = get_dist_info()
            if rank == 0 and runner.meta is not None:
                meta = {k: v for k, v in runner.meta.items()
                        if k in ('exp_name', 'seed', 'env_info_short', 'detforge_version')}
                if meta:
                    self._dump_log(meta)

    def _device(self, runner):
        try:
            from ...dist_utils import unwrap_model
            return next(unwrap_model(runner.model).parameters()).device
        except StopIteration:
            return torch.device('cpu')

    def _log_info(self, log_dict: dict, runner) -> None:
        if runner.meta is not None and 'exp_name' in runner.meta:
            if self.every_n_iters(runner, self.interval_exp_name) or (
                    self.by_epoch and self.end_of_epoch(runner)):
                runner.logger.info(f'Exp name: {runner.meta["exp_name"]}')
        if log_dict['mode'] == 'train':
            lr_str = log_dict['lr']
            if isinstance(lr_str, dict):
                lr_str = ', '.join(f'lr_{k}: {v:.3e}' for k, v in lr_str.items())
            else:
                lr_str = f'lr: {lr_str:.3e}'
            if self.by_epoch:
                head = (f'Epoch [{log_dict["epoch"]}][{log_dict["iter"]}/'
                        f'{len(runner.data_loader)}]\t')
            else:
                head = f'Iter [{log_dict["iter"]}/{runner.max_iters}]\t'
            head += f'{lr_str}, '
            if 'time' in log_dict:
                self.time_sec_tot += log_dict['time'] * self.interval
                time_sec_avg = self.time_sec_tot / (runner.iter - self.start_iter + 1)
                eta_sec = time_sec_avg * (runner.max_iters - runner.iter - 1)
                eta_str = str(datetime.timedelta(seconds=int(eta_sec)))
                head += f'eta: {eta_str}, time: {log_dict["time"]:.3f}, '
                head += f'data_time: {log_dict["data_time"]:.3f}, '
                head += f'memory: {log_dict["memory"]}, '
        else:
            if self.by_epoch:
                head = f'Epoch({log_dict["mode"]}) [{log_dict["epoch"]}][{log_dict["iter"]}]\t'
            else:
                head = f'Iter({log_dict["mode"]}) [{log_dict["iter"]}]\t'
        items = []
        for name, val in log_dict.items():
            if name in ('mode', 'Epoch', 'iter', 'lr', 'time', 'data_time', 'memory', 'epoch'):
                continue
            if isinstance(val, float):
                val = f'{val:.4f}'
            items.append(f'{name}: {val}')
        runner.logger.info(head + ', '.join(items))

    def _dump_log(self, log_dict: dict) -> None:
        if self.json_log_path is None:
            return
        if get_dist_info()[0] != 0:
            return
        json_log = OrderedDict((k, _round(v)) for k, v in log_dict.items())
        with open(self.json_log_path, 'a+', encoding='utf-8') as f:
            f.write(json.dumps(json_log) + '\n')

    def log(self, runner) -> OrderedDict:
        if 'eval_iter_num' in runner.log_buffer.output:
            # the eval hook put its metrics here; the iteration is the eval loader's length
            cur_iter = runner.log_buffer.output.pop('eval_iter_num')
        else:
            cur_iter = self.get_iter(runner, inner_iter=True)
        log_dict = OrderedDict(mode=self.get_mode(runner), epoch=self.get_epoch(runner),
                               iter=cur_iter)
        lrs = runner.current_lr()
        log_dict['lr'] = {k: v[0] for k, v in lrs.items()} if isinstance(lrs, dict) else lrs[0]
        if 'time' in runner.log_buffer.output:
            memory = max_memory_mb(self._device(runner))
            if get_dist_info()[1] > 1 and self._device(runner).type == 'cuda':
                t = torch.tensor(memory, device=self._device(runner))
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
                memory = int(t.item())
            log_dict['memory'] = memory
        log_dict.update(runner.log_buffer.output)
        self._log_info(log_dict, runner)
        self._dump_log(log_dict)
        return log_dict


def _round(value, digits: int = 5):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return round(float(value), digits)
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)
