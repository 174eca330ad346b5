"""Fold trainings run side by side in worker processes.

Every fold of every method (GMVAE4P, the prototype and per-type baselines, the scikit-learn baselines) is an
independent fit with its own seed, so the folds of Table 1, of the null control, of Table 2's draws and of Table 4's
configurations can run at the same time. A torch fold is a few thousand small steps whose cost is Python and kernel
launches, not arithmetic: one process keeps a GPU mostly idle, and several processes share it well. A :class:`FoldWorkers` holds the stage's
data (the pseudobulk samples, and the cells' inputs when a cell-level baseline runs); with ``n_jobs > 1`` each worker
process reads that data once, when it starts, and then receives only small task descriptions. The data is pickled
once into a temporary folder that :meth:`FoldWorkers.close` removes, and every worker starts at once and reads it
there: handed to each worker on its start, a worker could not start until the one before had unpickled its copy.
Large arrays reach the workers as mappings of one file instead of a copy each: the samples' where they were read
mapped (:func:`gmvae4p.data.read_h5ad`), the cells' from that folder.

Results do not depend on ``n_jobs``: a task's seed comes from its fold, and the tasks of a call are collected in the
order they were submitted. With ``n_jobs`` 1 (the default) a task runs in this process when its result is asked for.
"""

from __future__ import annotations

import concurrent.futures
import copy
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import time
from collections.abc import Callable

import anndata as ad
import numpy as np
from threadpoolctl import threadpool_limits

from ..data import map_arrays

_SHARED: dict = {}
"""A worker process's copy of the data (set once by :func:`_start_worker`)."""
_THREADS: int | None = None
"""A worker process's share of the cores (set once by :func:`_start_worker`)."""


def task_threads() -> int:
    """Threads a task may take: its worker's share of the cores, or every core when it runs in this process.
    Libraries that start their own threads (XGBoost, the random forest's joblib) are told this number."""
    return _THREADS or os.cpu_count() or 1


class FoldWorkers:
    """Runs ``function(shared, *args)`` for submitted tasks, where ``shared`` is ``{"samples": samples, "cells":
    cells}``; ``n_jobs`` worker processes (spawned: CUDA cannot be forked, all started on construction, so that they
    start while this process goes on), or this process when ``n_jobs`` is 1.

    Use as a context manager, or call :meth:`close` when done. The workers also end with this process, even when it
    is killed mid-task (a stopped kernel leaves no worker training on; Linux).
    """

    def __init__(self, samples: ad.AnnData, cells=None, *, n_jobs: int = 1):
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be at least 1, not {n_jobs!r}.")
        self.samples, self.cells = samples, cells
        self._pool = self._folder = None
        if n_jobs > 1:
            # each worker's torch takes its share of the cores (its tasks are small; more threads only contend)
            threads = max(1, (os.cpu_count() or 1) // n_jobs)
            self._folder = tempfile.TemporaryDirectory(prefix="gmvae4p-workers-")
            if cells is not None:  # the workers map one copy of the cells' arrays instead of receiving one each
                cells = _with_mapped_arrays(cells, self._folder.name)
            data = os.path.join(self._folder.name, "shared.pickle")
            with open(data, "wb") as file:
                pickle.dump({"samples": samples, "cells": cells}, file, protocol=pickle.HIGHEST_PROTOCOL)
            self._pool = concurrent.futures.ProcessPoolExecutor(
                n_jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                initargs=(data, threads, os.getpid()))
            for _ in range(n_jobs):  # a pool spawns a worker per submit while none is idle: all of them, now
                self._pool.submit(os.getpid)

    def submit(self, function: Callable, *args):
        """``function(shared, *args)`` (a module-level function) with its wall time: the returned object's
        ``result()`` is ``(value, seconds)``."""
        if self._pool is not None:
            return self._pool.submit(_timed, function, None, *args)
        return _Deferred(lambda: _timed(function, {"samples": self.samples, "cells": self.cells}, *args))

    def check(self, samples: ad.AnnData, cells=None) -> None:
        """Refuse to run on other data than the workers hold."""
        if samples is not self.samples or (cells is not None and cells is not self.cells):
            raise ValueError("workers hold other samples or cells than those passed: make FoldWorkers(samples, cells) "
                             "from the same objects.")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> FoldWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Pending:
    """Work already submitted to :class:`FoldWorkers`: :meth:`result` waits for its tasks and returns what
    ``collect(progress)`` makes of them; :attr:`seconds` is then the tasks' wall time summed (``collect`` returns the
    value and that sum). Starting several before collecting any keeps every worker busy from one table to the next."""

    def __init__(self, collect: Callable[[bool], tuple[object, float]]):
        self._collect, self._value, self.seconds = collect, None, None

    def result(self, *, progress: bool = True):
        if self._collect is not None:
            (self._value, self.seconds), self._collect = self._collect(progress), None
        return self._value


class _Deferred:
    """A task of the in-process mode, run when its result is first asked for (so progress bars follow the work)."""

    def __init__(self, run: Callable):
        self._run, self._value = run, None

    def result(self):
        if self._run is not None:
            self._value, self._run = self._run(), None
        return self._value


MAPPED_BYTES = 1 << 20
"""Arrays of the cells' inputs at least this large reach the workers mapped from a file (:func:`_with_mapped_arrays`)."""


def _with_mapped_arrays(cells, folder: str):
    """A shallow copy of ``cells`` whose large NumPy attributes are mapped from files in ``folder``
    (:func:`gmvae4p.data.map_arrays`): it pickles as references to them."""
    large = {name: value for name, value in vars(cells).items()
             if isinstance(value, np.ndarray) and value.nbytes >= MAPPED_BYTES}
    shared = copy.copy(cells)
    for name, value in map_arrays(large, folder).items():
        setattr(shared, name, value)
    return shared


def _start_worker(data: str, threads: int, parent: int) -> None:
    if sys.platform.startswith("linux"):  # killed with its parent: a pool only notices between tasks
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
    import torch

    global _THREADS
    _THREADS = threads
    torch.set_num_threads(threads)
    with open(data, "rb") as file:
        _SHARED.update(pickle.load(file))


def _timed(function: Callable, shared: dict | None, *args):
    start = time.perf_counter()
    if shared is None:  # in a worker: BLAS and OpenMP pools too, those of libraries the task's module loaded
        with threadpool_limits(_THREADS):
            value = function(_SHARED, *args)
    else:
        value = function(shared, *args)
    return value, time.perf_counter() - start
