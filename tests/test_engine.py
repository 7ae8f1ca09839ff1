"""recgrad.engine: the one switch between the compiled kernels and the NumPy reference."""

import os
import subprocess
import sys

import pytest

from recgrad import engine


@pytest.fixture
def fresh_notices(monkeypatch):
    """Each notice is printed once per process; start from none shown."""
    monkeypatch.setattr(engine, "_notices_shown", set())


def test_check_engine_accepts_the_names_and_none_and_refuses_the_rest():
    for value in (None, "auto", "compiled", "numpy"):
        assert engine.check_engine(value) == value
    with pytest.raises(ValueError, match="^engine: expected one of auto, compiled, numpy, got 'numba'$"):
        engine.check_engine("numba")
    with pytest.raises(ValueError, match="^--engine: expected one of"):
        engine.check_engine("fused", "--engine")


def test_use_compiled_follows_the_engine_and_the_coverage(fresh_notices, capsys):
    assert engine.use_compiled(None, True, "x") and engine.use_compiled("auto", True, "x")
    assert engine.use_compiled("compiled", True, "x")
    assert not engine.use_compiled("numpy", True, "x")
    assert not engine.use_compiled("auto", False, "x") and not engine.use_compiled(None, False, "x")
    assert capsys.readouterr().err == ""  # "auto" falls back silently
    assert not engine.use_compiled("compiled", False, "Adam on a float16 array")
    assert not engine.use_compiled("compiled", False, "Adam on a float16 array")
    notice = "recgrad: notice: the compiled path does not cover Adam on a float16 array; running the NumPy reference\n"
    assert capsys.readouterr().err == notice  # once, not per call
    with pytest.raises(ValueError, match="^engine"):
        engine.use_compiled("fast", True, "x")


def test_the_process_default_applies_where_no_engine_is_passed():
    assert engine.get_default_engine() == "auto"
    with engine.default_engine_set("numpy"):
        assert engine.get_default_engine() == "numpy"
        assert not engine.use_compiled(None, True, "x")
        assert engine.use_compiled("compiled", True, "x")  # an explicit engine wins
        assert engine.use_compiled("auto", True, "x")
    assert engine.get_default_engine() == "auto"


def test_the_block_restores_the_default_after_an_error():
    with pytest.raises(RuntimeError), engine.default_engine_set("numpy"):
        raise RuntimeError("inside")
    assert engine.get_default_engine() == "auto"
    with pytest.raises(ValueError, match="^engine"), engine.default_engine_set("fast"):
        pass
    assert engine.get_default_engine() == "auto"


def test_set_default_engine_none_means_auto():
    try:
        engine.set_default_engine("numpy")
        assert engine.get_default_engine() == "numpy"
        engine.set_default_engine(None)
        assert engine.get_default_engine() == "auto"
    finally:
        engine.set_default_engine("auto")


def _default_in_a_new_process(value):
    env = {**os.environ, "RECGRAD_ENGINE": value}
    return subprocess.run([sys.executable, "-c", "import recgrad.engine as e; print(e.get_default_engine())"],
                          env=env, capture_output=True, text=True)


def test_the_environment_variable_sets_the_default():
    done = _default_in_a_new_process("numpy")
    assert done.returncode == 0 and done.stdout == "numpy\n"
    done = _default_in_a_new_process("fast")
    assert done.returncode != 0 and "RECGRAD_ENGINE: expected one of auto, compiled, numpy, got 'fast'" in done.stderr


def test_a_bad_environment_variable_is_one_cli_line_with_status_2():
    env = {**os.environ, "RECGRAD_ENGINE": "fast"}
    done = subprocess.run([sys.executable, "-m", "recgrad.cli", "info", "synthetic"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "recgrad: error: RECGRAD_ENGINE: expected one of auto, compiled, numpy, got 'fast'"
