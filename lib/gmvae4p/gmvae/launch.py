"""Start GMVAE training under torchrun from a notebook, stream its log, and fail loudly.

The command is an argument list (no shell). torchrun prefixes every line of a worker with its local rank
(``--tee 3``); rank 0's lines are passed on, torchrun's own lines are kept only for the error. When any rank fails,
:class:`TrainingFailed` names the rank torchrun saw fail first and quotes its last lines and torchrun's account
of it; the entry writes ``model.pt`` only after a complete run, so no output is marked complete.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from collections.abc import Callable

TAIL_LINES = 25
_RANK_PREFIX = re.compile(r"^\[default(\d+)\]:(.*)$")
_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+) \(local_rank: (\d+)\)(.*?)(?:={20,}|\Z)", re.S)


class TrainingFailed(RuntimeError):
    """A torchrun rank failed; the message names it and quotes its last lines."""


def torchrun_command(trainset: str | os.PathLike, output_dir: str | os.PathLike, *, n_processes: int = 1,
                     resume: bool = False, device: str | None = None) -> list[str]:
    """The torchrun argument list for one node with ``n_processes`` ranks (one per GPU when on GPUs)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_processes}",
               "--tee", "3", "-m", "gmvae4p.gmvae.train", str(trainset), str(output_dir)]
    if resume:
        command.append("--resume")
    if device is not None:
        command += ["--device", device]
    return command


def launch(trainset: str | os.PathLike, output_dir: str | os.PathLike, *, n_processes: int = 1,
           resume: bool = False, device: str | None = None, log: Callable[[str], None] = print) -> None:
    """Run the training entry under torchrun; pass rank 0's lines to ``log``; raise :class:`TrainingFailed`."""
    command = torchrun_command(trainset, output_dir, n_processes=n_processes, resume=resume, device=device)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           # torchrun would set 1 thread per rank with a warning; share the cores instead
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_processes)))}
    rank_tail = collections.defaultdict(lambda: collections.deque(maxlen=TAIL_LINES))
    launcher_lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
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
    cause = _ROOT_CAUSE.search(launcher_output)
    if cause is None:  # torchrun itself failed before or around its workers
        tail = "\n".join(launcher_output.splitlines()[-TAIL_LINES:])
        return f"GMVAE training failed (torchrun exit code {returncode}):\n{tail}"
    rank, local_rank, account = int(cause[1]), int(cause[2]), cause[3].strip()
    last = "\n".join(rank_tail.get(local_rank, [])) or "(no output)"
    return (f"GMVAE training failed on rank {rank}; torchrun reports:\n{account}\n"
            f"Last lines of rank {rank}:\n{last}")
