"""The caching allocator of the kernels' large outputs: reuse of dead buffers only, limits, threads."""

import gc
import threading

import numpy as np
import pytest

from recgrad.kernels import activations, buffers


@pytest.fixture(autouse=True)
def empty_cache():
    buffers.empty_cache()
    yield
    buffers.empty_cache()


LARGE = (buffers.MIN_BYTES // 8 + 3,)  # float64 elements: just above the threshold


def address(array):
    return array.__array_interface__["data"][0]


def test_a_dead_output_is_reused_and_a_live_one_is_not():
    first = buffers.empty(LARGE, np.float64)
    first_address = address(first)
    live = buffers.empty(LARGE, np.float64)
    assert address(live) != first_address  # first is alive: its memory is not handed out
    del first
    gc.collect()
    assert buffers.cached_bytes() == LARGE[0] * 8
    again = buffers.empty(LARGE, np.float64)
    assert address(again) == first_address
    assert buffers.cached_bytes() == 0


def test_a_view_keeps_the_buffer_alive():
    array = buffers.empty(LARGE, np.float64)
    view = array[10:20].reshape(2, 5)
    del array
    gc.collect()
    assert buffers.cached_bytes() == 0
    del view
    gc.collect()
    assert buffers.cached_bytes() == LARGE[0] * 8


def test_arrays_are_ordinary_writeable_contiguous_arrays_of_the_requested_shape_and_dtype():
    for shape, dtype in [((1000, 300), np.float32), ((3, 200, 500), np.float64), ((7,), np.float32), ((), np.float64)]:
        array = buffers.empty(shape, dtype)
        assert isinstance(array, np.ndarray) and array.shape == shape and array.dtype == dtype
        assert array.flags.c_contiguous and array.flags.writeable
        array[...] = 1.5
        assert np.all(array == 1.5)


def test_small_requests_bypass_the_cache_and_the_limit_is_kept(monkeypatch):
    small = buffers.empty((10,), np.float64)
    assert small.base is None
    monkeypatch.setattr(buffers, "CACHE_LIMIT_BYTES", 3 * buffers.MIN_BYTES)
    arrays = [buffers.empty((buffers.MIN_BYTES,), np.uint8) for _ in range(5)]
    del arrays
    gc.collect()
    assert buffers.cached_bytes() == 3 * buffers.MIN_BYTES  # two were freed, not kept
    buffers.empty_cache()
    assert buffers.cached_bytes() == 0


def test_threads_never_get_the_same_buffer_at_once():
    seen, errors = [], []

    def work():
        for _ in range(50):
            array = buffers.empty(LARGE, np.float64)
            array[:] = threading.get_ident()
            seen.append(address(array))
            if not np.all(array == threading.get_ident()):
                errors.append("another thread wrote into this buffer")
            del array

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(seen)) < len(seen)  # buffers were reused


def test_activation_outputs_come_from_the_cache_and_stay_correct():
    x = np.random.default_rng(0).standard_normal((600, 1000))
    reference = activations.forward("sigmoid", x)
    y = activations.forward("sigmoid", x)
    y_address = address(y)
    del y
    gc.collect()
    z = activations.forward("sigmoid", x)
    assert address(z) == y_address
    np.testing.assert_array_equal(z, reference)
    assert activations.forward("softmax", x, axis=0).shape == x.shape
