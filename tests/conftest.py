"""Fixtures shared by the test files: thread counts set for a test and put back after it.

With one thread every compiled kernel is bit-reproducible for a given seed, and BLAS on one thread
keeps matrix products from depending on the pool's split; tests that compare thread counts set the
kernels' count themselves through `kernel_threads`. Either way the counts from before the test are
restored when it ends, passed or failed, so no test leaks its threads into the next.
"""

import contextlib

import pytest
from threadpoolctl import threadpool_limits

from recgrad import kernels


@contextlib.contextmanager
def _one_thread():
    with kernels.num_threads(1), threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def one_thread():
    """The compiled kernels (numba) and BLAS on one thread during the test."""
    with _one_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """As `one_thread`, for a whole module, so that its module-scoped fixtures run on one thread too."""
    with _one_thread():
        yield


@pytest.fixture
def kernel_threads():
    """`kernel_threads(n)` sets the compiled kernels' thread count inside the test (as
    `recgrad.kernels.set_num_threads`); the count from before the test comes back after it."""
    with kernels.num_threads(kernels.get_num_threads()):
        yield kernels.set_num_threads
