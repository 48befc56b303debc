"""``RecordStore``: per-image records pickled into one numpy buffer, shared by forked workers.

A data set of Python dicts (MMDetection 2.x's ``data_infos`` list) costs memory twice over
with loader workers: every access to a record from a forked worker writes its reference
count, and Python's garbage collector walks every dict and list, so the pages holding them
are copied into each worker, bit by bit, as training runs (memory grows with the number
of workers and with time). Detectron2 (``DatasetFromList(serialize=True)``) and MMEngine
(``BaseDataset.serialize_data``) pickle each record into one ``uint8`` array instead: a
numpy array's data is a plain buffer without reference counts, so the pages stay shared,
and the pickled form is also several times smaller than the dicts.

Layout: ``buffer`` (uint8, all records' pickles back to back) and ``ends`` (int64, ``(N,)``,
the end offset of each record). ``store[i]`` unpickles record ``i`` into a new dict every
time (numpy arrays in it are new, writable copies), so a pipeline that changes its input
never changes the store.
"""
from __future__ import annotations

import io
import json
import pickle
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import DatasetError

__all__ = ['RecordStore', 'RecordStoreBuilder', 'JsonText', 'parse_json_text', 'release_free_memory']

_PROTOCOL = 5


def _array(data: bytearray, dtype: str, shape: tuple) -> np.ndarray:
    """An array rebuilt from its bytes (writable: it owns the unpickled ``bytearray``)."""
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)


class JsonText:
    """A part of a record kept as its JSON text (``text``): stored as that text and parsed
    (:func:`json.loads`) when the record is read. A loader keeps bulky parts of a record
    (the polygons of a COCO file) in this form instead of as thousands of Python floats."""

    __slots__ = ('text',)

    def __init__(self, text: str):
        self.text = text


def parse_json_text(text: str):
    """``json.loads(text)``; invalid JSON is a :class:`DatasetError` quoting the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:  # the file's numbers are only checked here
        raise DatasetError(f'a record holds invalid JSON ({e}): {text[:200]!r}') from None


class _RecordPickler(pickle.Pickler):
    """Pickles plain numpy arrays as ``(bytes, dtype, shape)``: several times faster than
    numpy's own reduction for the small arrays of a record (a few boxes), and ~100 bytes
    smaller each; :class:`JsonText` parts as their text. Other objects pickle as usual."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray and not obj.dtype.hasobject:
            data = bytearray(np.ascontiguousarray(obj).tobytes())
            return _array, (data, obj.dtype.str, obj.shape)
        if type(obj) is JsonText:
            return parse_json_text, (obj.text,)
        return NotImplemented


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). Parsing a large annotation file leaves hundreds of MiB free but still
    mapped in the process, which forked workers would inherit; a no-op where unavailable."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def dumps(record: Any) -> bytes:
    """``record`` pickled as the store keeps it."""
    f = io.BytesIO()
    _RecordPickler(f, protocol=_PROTOCOL).dump(record)
    return f.getvalue()


class RecordStoreBuilder:
    """Pickle records one at a time; :meth:`finish` returns the :class:`RecordStore`.

    Pickles are joined into blocks of about ``block_bytes`` as they come, so that building
    holds one copy of the data plus one block (no list of a million small ``bytes``, and no
    second full copy when the blocks are joined: each is freed once copied out).
    """

    def __init__(self, block_bytes: int = 16 << 20):
        self.block_bytes = int(block_bytes)
        # one pickler for all records (its memo cleared each time: the same bytes as dumps)
        self._file = io.BytesIO()
        self._pickler = _RecordPickler(self._file, protocol=_PROTOCOL)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._blocks: list[bytes | None] = []
        self._sizes: list[int] = []

    def __len__(self) -> int:
        return len(self._sizes)

    def append(self, record: Any) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._pickler.clear_memo()
        self._pickler.dump(record)
        data = self._file.getvalue()
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._sizes.append(len(data))
        if self._pending_bytes >= self.block_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._blocks.append(b''.join(self._pending))
            self._pending = []
            self._pending_bytes = 0

    def finish(self) -> 'RecordStore':
        self._flush()
        sizes = np.asarray(self._sizes, dtype=np.int64)
        ends = np.cumsum(sizes) if len(sizes) else np.zeros(0, np.int64)
        buffer = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
        pos = 0
        for k, block in enumerate(self._blocks):
            buffer[pos:pos + len(block)] = np.frombuffer(block, dtype=np.uint8)
            pos += len(block)
            self._blocks[k] = None  # freed now: never two full copies at once
        self._blocks, self._sizes = [], []
        return RecordStore.from_buffer(buffer, ends)


class RecordStore(Sequence):
    """An immutable sequence of records (dicts), stored pickled in one ``uint8`` array.

    Args:
        records: the records (any picklable objects), e.g. the list ``load_annotations``
            returns. They are pickled in order; the iterable is not kept.

    ``store[i]`` is a fresh copy of record ``i``; ``store[a:b]`` and :meth:`take` give new
    stores; ``len``, iteration and ``nbytes`` (buffer plus offsets) as expected.
    """

    def __init__(self, records: Iterable = ()):
        builder = RecordStoreBuilder()
        for record in records:
            builder.append(record)
        built = builder.finish()
        self._buffer, self._ends = built._buffer, built._ends

    @classmethod
    def from_buffer(cls, buffer: np.ndarray, ends: np.ndarray) -> 'RecordStore':
        """A store over ``buffer`` (uint8) with record ``i`` at ``[ends[i-1], ends[i])``."""
        store = cls.__new__(cls)
        store._buffer = np.ascontiguousarray(buffer, dtype=np.uint8)
        store._ends = np.ascontiguousarray(ends, dtype=np.int64)
        if len(store._ends) and store._ends[-1] != len(store._buffer):
            raise ValueError(f'RecordStore: the offsets end at {store._ends[-1]} but the buffer '
                             f'holds {len(store._buffer)} bytes')
        return store

    @property
    def buffer(self) -> np.ndarray:
        return self._buffer

    @property
    def ends(self) -> np.ndarray:
        return self._ends

    @property
    def nbytes(self) -> int:
        return int(self._buffer.nbytes + self._ends.nbytes)

    def __len__(self) -> int:
        return len(self._ends)

    def _bounds(self, i: int) -> tuple[int, int]:
        n = len(self._ends)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f'record index {i} out of range for {n} records')
        return (int(self._ends[i - 1]) if i else 0), int(self._ends[i])

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self.take(np.arange(len(self))[idx])
        if isinstance(idx, (np.ndarray, list)) and not np.isscalar(idx):
            return self.take(idx)
        start, end = self._bounds(int(idx))
        return pickle.loads(self._buffer[start:end])

    def __iter__(self) -> Iterator:
        for i in range(len(self)):
            yield self[i]

    def take(self, indices) -> 'RecordStore':
        """A new store of records ``indices`` (any order, repeats allowed), copied without
        unpickling."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self._ends)
        if len(indices) and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f'record indices out of range for {n} records')
        indices = np.where(indices < 0, indices + n, indices)
        starts = np.concatenate([[0], self._ends[:-1]]) if n else np.zeros(0, np.int64)
        sizes = (self._ends - starts)[indices]
        new_ends = np.cumsum(sizes)
        buffer = np.empty(int(new_ends[-1]) if len(new_ends) else 0, dtype=np.uint8)
        # copy runs of consecutive records as one slice each (a filtered store is a few
        # long runs; a shuffled one is a loop over records): no per-byte index arrays
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        run_first = np.concatenate([[0], breaks]).astype(np.int64) if len(indices) else breaks
        run_last = np.concatenate([breaks, [len(indices)]]).astype(np.int64) - 1
        for a, b in zip(run_first.tolist(), run_last.tolist()):
            src_start, src_end = int(starts[indices[a]]), int(self._ends[indices[b]])
            dst_start = int(new_ends[a] - sizes[a])
            buffer[dst_start:dst_start + src_end - src_start] = self._buffer[src_start:src_end]
        return RecordStore.from_buffer(buffer, new_ends)

    def __eq__(self, other) -> bool:
        return (isinstance(other, RecordStore) and np.array_equal(self._ends, other._ends)
                and np.array_equal(self._buffer, other._buffer))

    __hash__ = None  # mutable-looking container semantics: not hashable

    def __repr__(self) -> str:
        return f'RecordStore({len(self)} records, {self.nbytes / 2 ** 20:.1f} MiB)'
