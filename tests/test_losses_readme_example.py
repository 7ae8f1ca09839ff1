"""The README's classifier example runs as written and learns its task."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### A classifier, as in PyTorch"


def readme_example():
    """The first Python block after the example's heading."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(HEADING):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_classifier_example_runs_and_learns():
    namespace = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    assert namespace["accuracy"] > 0.95  # the README says 0.97
    assert np.isfinite(namespace["loss"]) and float(namespace["loss"]) < 0.5
    assert namespace["scheduler"].get_last_lr()[0] < 1e-4  # the cosine reached its end
