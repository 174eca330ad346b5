"""Start GMVAE training under torchrun from a notebook, stream its log, and fail loudly.

The command is an argument list (no shell). torchrun prefixes every line of a worker with its local rank
(``--tee 3``); rank 0's lines are passed on, torchrun's own lines are kept only for the error. When any rank fails,
:class:`TrainingFailed` names the rank that failed first and quotes its last lines and torchrun's account of it; the entry writes ``model.pt`` only after a complete run, so no output is marked complete.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable

TAIL_LINES = 25
_RANK_PREFIX = re.compile(r"^\[default(\d+)\]:(.*)$")
_FAILURE = re.compile(r"rank\s*:\s*(\d+) \(local_rank: (\d+)\)(.*?)(?=\n\s*\[\d+\]:|[=-]{20,}|\Z)", re.S)


class TrainingFailed(RuntimeError):
    """A torchrun rank failed; the message names it and quotes its last lines."""


def torchrun_command(trainset: str | os.PathLike, output_dir: str | os.PathLike, *, n_processes: int = 1,
                     resume: bool = False, device: str | None = None, log_dir: str | os.PathLike) -> list[str]:
    """The torchrun argument list for one node with ``n_processes`` ranks (one per GPU when on GPUs); torchrun keeps
    the ranks' log files under ``log_dir``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_processes}",
               "--tee", "3", "--log-dir", str(log_dir), "-m", "gmvae4p.gmvae.train", str(trainset), str(output_dir)]
    if resume:
        command.append("--resume")
    if device is not None:
        command += ["--device", device]
    return command


def rank_threads(n_processes: int, busy_cores: int = 0) -> int:
    """Torch threads per rank: ``OMP_NUM_THREADS`` where the user set it, else the cores that ``busy_cores`` leave,
    shared between the ranks (torchrun alone would give each rank one thread)."""
    if busy_cores < 0:
        raise ValueError(f"busy_cores must be at least 0, not {busy_cores!r}.")
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, ((os.cpu_count() or 1) - busy_cores) // n_processes)


def launch(trainset: str | os.PathLike, output_dir: str | os.PathLike, *, n_processes: int = 1,
           resume: bool = False, device: str | None = None, busy_cores: int = 0,
           log: Callable[[str], None] = print) -> None:
    """Run the training entry under torchrun; pass rank 0's lines to ``log``; raise :class:`TrainingFailed`.

    The ranks share the cores that ``busy_cores`` (other work running meanwhile) leaves, one torch thread or more
    each: OpenMP threads that outnumber the free cores wait on each other at every parallel region, and a step then
    takes many times longer."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(rank_threads(n_processes, busy_cores))}
    rank_tail = collections.defaultdict(lambda: collections.deque(maxlen=TAIL_LINES))
    launcher_lines = []
    # the ranks' lines reach log and the error here; torchrun's copies of them in files (in a new temporary
    # folder per run when no folder is given) would only pile up
    with tempfile.TemporaryDirectory(prefix="gmvae4p_torchrun_") as log_dir, \
            subprocess.Popen(torchrun_command(trainset, output_dir, n_processes=n_processes, resume=resume,
                                              device=device, log_dir=log_dir),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                             env=env) as process:
        for line in process.stdout:
            line = line.rstrip("\n")
            match = _RANK_PREFIX.match(line)
            if match is None:
                launcher_lines.append(line)
                continue
            rank, text = int(match[1]), match[2]
            rank_tail[rank].append(text)
            if rank == 0:
                log(text)
    if process.returncode != 0:
        raise TrainingFailed(_failure_message(process.returncode, rank_tail, "\n".join(launcher_lines)))


def _failure_message(returncode: int, rank_tail: dict, launcher_output: str) -> str:
    failures = [(int(m[1]), int(m[2]), m[3].strip()) for m in _FAILURE.finditer(launcher_output)]
    if not failures:  # torchrun itself failed before or around its workers
        tail = "\n".join(launcher_output.splitlines()[-TAIL_LINES:])
        return f"GMVAE training failed (torchrun exit code {returncode}):\n{tail}"
    # A rank killed by a signal is the cause when others then fail at a collective or are stopped by torchrun (with
    # SIGTERM); torchrun's "root cause" orders by timestamps and may name one of the latter.
    signalled = [f for f in failures if "Signal" in f[2] and "SIGTERM" not in f[2]]
    rank, local_rank, account = (signalled or [f for f in failures if f[0] == _root_cause(launcher_output)]
                                 or failures)[0]
    last = "\n".join(rank_tail.get(local_rank, [])) or "(no output)"
    others = sorted({f[0] for f in failures} - {rank})
    return (f"GMVAE training failed on rank {rank}; torchrun reports:\n{account}\n"
            f"Last lines of rank {rank}:\n{last}" + (f"\n(Also failed: rank {', '.join(map(str, others))}.)"
                                                    if others else ""))


def _root_cause(launcher_output: str) -> int | None:
    match = re.search(r"Root Cause.*?rank\s*:\s*(\d+)", launcher_output, re.S)
    return int(match[1]) if match else None
