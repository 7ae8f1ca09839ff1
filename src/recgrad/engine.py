"""Which implementation runs a computation: the compiled kernels or the NumPy reference.

Every component that has a compiled fast path (optimizer steps, the nn activations, the MF training
loop, full-ranking evaluation) takes an `engine` argument with one meaning everywhere:

    None        the process-wide default (below)
    "auto"      the compiled kernel wherever it computes the same algorithm (the same math up to
                float rounding, as the kernel's tests against the reference define), else NumPy
    "compiled"  as "auto", but a case the kernels do not cover prints a one-line notice before it
                runs the reference (never an error: the result is the same algorithm)
    "numpy"     the readable NumPy reference: the test oracle and the teaching path

The process-wide default is "auto"; `set_default_engine("numpy")`, the block
`with default_engine_set("numpy"):` or the environment variable RECGRAD_ENGINE=numpy force the
reference everywhere that no explicit engine was passed. The CLI's `--engine` sets it for a run.

An engine never changes what an algorithm means: hogwild SGD (a step per interaction) is its own
optimizer name, not the compiled form of minibatch SGD.
"""

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Literal

ENGINES = ("auto", "compiled", "numpy")
Engine = Literal["auto", "compiled", "numpy"] | None  # the type of every `engine` argument

_notices_shown = set()


class EngineError(ValueError):
    """An engine name that is not one of ENGINES (one line naming where it came from)."""


def check_engine(value: Engine, name: str = "engine") -> Engine:
    """`value` if it is one of ENGINES (or None, the default); EngineError naming `name` otherwise."""
    if value is not None and value not in ENGINES:
        raise EngineError(f"{name}: expected one of {', '.join(ENGINES)}, got {str(value)[:60]!r}")
    return value


# Read at import, checked when first used, so that importing recgrad never fails on a bad variable.
_default = os.environ.get("RECGRAD_ENGINE", "auto")


def get_default_engine() -> str:
    """The engine used where none is passed: "auto" unless set otherwise (RECGRAD_ENGINE, set_default_engine)."""
    return check_engine(_default, "RECGRAD_ENGINE")


def set_default_engine(engine: Engine) -> None:
    """Set the process-wide default engine ("auto", "compiled" or "numpy")."""
    global _default
    _default = check_engine(engine) or "auto"


@contextlib.contextmanager
def default_engine_set(engine: Engine) -> Iterator[None]:
    """Inside the block the default engine is `engine`; the previous one is restored on exit."""
    previous = get_default_engine()
    set_default_engine(engine)
    try:
        yield
    finally:
        set_default_engine(previous)


def use_compiled(engine: Engine, covered: bool, what: str) -> bool:
    """True when `what` should run its compiled kernel.

    engine: the caller's engine argument (None: the default). covered: whether the kernel computes
    this case. what: a short description for the notice, e.g. "Adam with a float16 parameter".
    """
    engine = check_engine(engine) or get_default_engine()
    if engine == "numpy":
        return False
    if not covered and engine == "compiled":
        message = f"recgrad: notice: the compiled path does not cover {what}; running the NumPy reference"
        if message not in _notices_shown:
            _notices_shown.add(message)
            print(message, file=sys.stderr)
    return covered
