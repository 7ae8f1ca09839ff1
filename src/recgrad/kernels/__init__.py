"""Compiled fast paths (numba). The NumPy code elsewhere in recgrad is the reference and the test oracle.

Each kernel module here is tested against its reference: see tests/test_kernels_*.py.
Kernels are compiled on first use and cached on disk (numba's `cache=True`, next to the
source in __pycache__), so a second process does not recompile.

Threads: every parallel kernel uses numba's thread pool. By default it has one thread per core;
`set_num_threads(n)`, the CLI's `--threads N` or the environment variable RECGRAD_NUM_THREADS
change that. With one thread, every kernel is bit-reproducible for a given seed.
"""

import contextlib
import os

import numba


def set_num_threads(n):
    """Use `n` threads (1 <= n <= cores) in the compiled kernels; ValueError naming the bound otherwise."""
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise ValueError(f"threads must be an int in [1, {limit}] (the machine's cores), got {n!r}")
    numba.set_num_threads(n)


def get_num_threads():
    """The number of threads the compiled kernels use now."""
    return numba.get_num_threads()


@contextlib.contextmanager
def num_threads(n):
    """Inside the block the compiled kernels use `n` threads (as set_num_threads); restored on exit."""
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)


def _threads_from_environment():
    value = os.environ.get("RECGRAD_NUM_THREADS")
    if value is None:
        return
    try:
        set_num_threads(int(value))
    except ValueError as error:
        raise ValueError(f"RECGRAD_NUM_THREADS={value!r}: {error}") from None


_threads_from_environment()
