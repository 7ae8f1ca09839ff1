"""A small caching allocator for the large outputs of the compiled kernels.

Why: a fresh NumPy array of tens of MB is a fresh memory mapping, and the first write to each of
its pages is a page fault in which the operating system zeroes the page. For an activation's
forward + backward on 1e7 float32 (two fresh 40 MB outputs) that zeroing took as long as the two
kernels themselves (docs/kernels.md, "Output memory"). A training loop asks for arrays of the
same sizes at every step, so keeping the memory of dead outputs and handing it out again removes
the faults; PyTorch's CUDA caching allocator does the same for the same reason.

How: `empty(shape, dtype)` returns an ordinary writeable C-contiguous ndarray whose memory belongs
to a holder object (the array's `.base`). When the last array or view on that memory is
garbage-collected, the holder puts the raw buffer back on a free list keyed by its size in bytes;
the next request of that size takes it. Only requests of at least `MIN_BYTES` go through the cache
(smaller ones are reused by malloc without faults), and at most `CACHE_LIMIT_BYTES` of idle buffers
are kept (a buffer coming back when the cache is full is freed). `empty_cache()` frees every idle
buffer, as `torch.cuda.empty_cache()`. A buffer is never shared: it is in the cache only while no
array refers to it. The contents of a returned array are arbitrary, as `numpy.empty`'s.
"""

import threading

import numpy as np

MIN_BYTES = 1 << 20
CACHE_LIMIT_BYTES = 256 << 20


class _Cache:
    """Idle raw buffers by size in bytes, and their total."""

    def __init__(self):
        self.lock = threading.Lock()
        self.free = {}
        self.idle_bytes = 0

    def take(self, nbytes):
        with self.lock:
            stack = self.free.get(nbytes)
            if not stack:
                return None
            self.idle_bytes -= nbytes
            return stack.pop()

    def give_back(self, raw):
        with self.lock:
            if self.idle_bytes + raw.nbytes <= CACHE_LIMIT_BYTES:
                self.free.setdefault(raw.nbytes, []).append(raw)
                self.idle_bytes += raw.nbytes

    def clear(self):
        with self.lock:
            self.free.clear()
            self.idle_bytes = 0


_CACHE = _Cache()


class _Holder:
    """Owns one raw buffer while arrays view it; returns it to the cache when they are all gone."""

    def __init__(self, raw, shape, dtype, cache):
        self.raw = raw
        self.cache = cache  # kept here so that it outlives the module's globals at interpreter exit
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "data": (raw.ctypes.data, False),
                                    "version": 3}

    def __del__(self):
        self.cache.give_back(self.raw)


def empty(shape, dtype):
    """An uninitialised C-contiguous array like `numpy.empty(shape, dtype)` (shape: a tuple), its memory
    reused when possible."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    raw = _CACHE.take(nbytes)
    if raw is None:
        raw = np.empty(nbytes, np.uint8)
    return np.asarray(_Holder(raw, shape, dtype, _CACHE))


def empty_cache():
    """Free every idle cached buffer (arrays in use are not affected)."""
    _CACHE.clear()


def cached_bytes():
    """Bytes held by idle buffers, ready for reuse."""
    return _CACHE.idle_bytes
