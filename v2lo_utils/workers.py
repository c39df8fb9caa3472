"""Worker processes that die with the process that started them.

A SIGKILLed ``v2lo data build`` must not leave its pool workers rendering and writing shards.
:func:`parent_bound_pool` is a ProcessPoolExecutor whose workers exit when their parent dies:
on Linux the kernel sends them SIGKILL (prctl PR_SET_PDEATHSIG); everywhere a daemon thread in
each worker polls the parent and exits when it is gone.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 0.5


def _parent_alive(pid: int, child: bool) -> bool:
    """Whether process ``pid`` still runs: a killed parent stays a zombie ('Z') until reaped; a
    worker whose parent (``child``: ``pid`` forked it) died has been re-parented."""
    if child and os.getppid() != pid:
        return False
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])  # after "(comm)"
    if os.name == "nt":  # os.kill would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(pid: int, child: bool) -> None:
    while _parent_alive(pid, child):
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _die_with_parent(parent_pid: int) -> None:
    """Pool-worker initializer: the worker dies with the build process (a SIGKILLed build must not
    leave workers rendering and writing shards). Linux: the kernel sends SIGKILL when the parent
    dies (prctl PR_SET_PDEATHSIG); everywhere: a daemon thread polls the parent and exits."""
    child = os.getppid() == parent_pid  # forked by the build (not by a forkserver)
    if child and sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not _parent_alive(parent_pid, child):  # died before the worker could ask to die with it
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, child), daemon=True).start()


def _init_worker(parent_pid: int, threads: int | None) -> None:
    """Pool-worker initializer: die with the parent; with ``threads``, torch and OpenMP use that
    many (set before torch is imported in the worker, and again if it already was)."""
    _die_with_parent(parent_pid)
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


def parent_bound_pool(
    workers: int, threads: int | None = None, context: str | None = None
) -> ProcessPoolExecutor:
    """A process pool of ``workers`` processes that die with this process; ``threads``: torch
    threads per worker (None: as inherited); ``context``: a multiprocessing start method
    ('spawn': workers that import afresh, for work that loads torch)."""
    import multiprocessing

    return ProcessPoolExecutor(
        max_workers=workers,
        initializer=_init_worker,
        initargs=(os.getpid(), threads),
        mp_context=multiprocessing.get_context(context) if context else None,
    )
