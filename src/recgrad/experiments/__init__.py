"""Experiments that test the textbook claims recgrad implements, one module per experiment.

Each module defines `NAME` (its name on the command line), `DESCRIPTION` (one line) and
`run(out_dir, quick=False, seed=0) -> dict`, which writes its PNG figures and `<NAME>.json` into
`out_dir` and returns {"name", "figures", "numbers", "claims", "verdict"} (see
`recgrad.experiments.runner`). A module whose experiment trains recommenders also sets
`USES_RECOMMENDER_DATA = True`, and its `run` takes `data=None`: a `recgrad.data.Dataset` from
`--data`, or None for the built-in synthetic set. `recgrad experiment --list` lists them;
`recgrad experiment all` runs them in the order below and regenerates docs/findings.md.

Modules are imported only when an experiment is asked for, so one that is missing or broken
fails with a message naming it and leaves the others usable.
"""

import importlib

# (command-line name, module in this package), in running order.
EXPERIMENTS = (
    ("activations", "activations_plot"),
    ("depth", "depth"),
    ("dying-relu", "dying_relu"),
    ("convergence", "convergence"),
    ("cost", "cost"),
    ("optimizers", "optimizers"),
    ("losses", "losses_compare"),
    ("init", "init_distributions"),
)

__all__ = ["EXPERIMENTS", "ExperimentError", "load", "names"]


class ExperimentError(ValueError):
    """An unknown experiment name, or an experiment module that cannot be imported or is malformed."""


def names():
    """The experiments' command-line names, in running order."""
    return [name for name, _ in EXPERIMENTS]


def load(name):
    """Import and return the module of experiment `name`; ExperimentError names what went wrong."""
    modules = dict(EXPERIMENTS)
    if name not in modules:
        raise ExperimentError(f"unknown experiment {name!r}; expected one of: {', '.join(names())} (or 'all')")
    module_name = f"{__name__}.{modules[name]}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ExperimentError(f"experiment {name!r}: cannot import {module_name}: {error}") from error
    for attribute in ("NAME", "DESCRIPTION", "run"):
        if not hasattr(module, attribute):
            raise ExperimentError(f"experiment {name!r}: {module_name} does not define {attribute}")
    if module.NAME != name:
        raise ExperimentError(f"experiment {name!r}: {module_name}.NAME is {module.NAME!r}, expected {name!r}")
    return module
