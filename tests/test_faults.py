"""A training process killed at any point (mid-epoch, mid-checkpoint-write) resumes to the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

# Runs the CLI after arranging for the process to SIGKILL itself at one chosen point.
KILLER = """
import os, signal, sys
import recgrad.train.checkpoint as checkpoint
import recgrad.train.trainer as trainer
where, count = sys.argv[1], int(sys.argv[2])
calls = {"batch": 0, "checkpoint": 0}
if where == "checkpoint":
    original = checkpoint.atomic_write
    def dying_write(path, write):
        def partial(handle):
            calls["checkpoint"] += 1
            if calls["checkpoint"] == count:
                handle.write(b"half a checkpoint")
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            write(handle)
        if path.endswith("checkpoint.npz"):
            return original(path, partial)
        return original(path, write)
    checkpoint.atomic_write = dying_write
else:
    original_batch = trainer.Trainer.train_batch
    def dying_batch(self, users, positives):
        calls["batch"] += 1
        if calls["batch"] == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return original_batch(self, users, positives)
    trainer.Trainer.train_batch = dying_batch
from recgrad.cli import main
sys.exit(main(sys.argv[3:]))
"""

FLAGS = ["--epochs", "2", "--threads", "1", "--refit", "false", "--optimizer", "adam", "--batch-size", "512",
         "--engine", "numpy", "--eval-every", "1"]


def train(out, *extra, kill=None):
    argv = ["train", "--out", str(out), *FLAGS, *extra]
    prefix = [sys.executable, "-c", KILLER, *kill] if kill else [sys.executable, "-m", "recgrad.cli"]
    return subprocess.run(prefix + argv, capture_output=True, text=True, timeout=600)


def outcome(out):
    with np.load(out / "last.npz", allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timings = ("train_seconds", "samples_per_second", "eval_seconds")
    return arrays, [{k: v for k, v in r.items() if k not in timings} for r in records]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    assert train(out).returncode == 0
    return outcome(out)


# 84 batches an epoch: batch 120 is in the middle of the last epoch, after the first checkpoint
@pytest.mark.parametrize("kill", [("batch", "120"), ("checkpoint", "1"), ("checkpoint", "2")],
                         ids=["mid-epoch-2", "writing-checkpoint-1", "writing-checkpoint-2"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, kill):
    out = tmp_path / "run"
    killed = train(out, kill=kill)
    assert killed.returncode == -signal.SIGKILL
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")] or kill[0] == "checkpoint"
    if (out / "checkpoint.npz").exists():
        resumed = train(out, "--resume")  # the kill released the run directory's lock
    else:  # killed before the first checkpoint: nothing to resume, the run starts again
        resumed = train(out)
    assert resumed.returncode == 0, resumed.stderr
    arrays, records = outcome(out)
    expected_arrays, expected_records = uninterrupted
    assert records == expected_records
    for name, value in expected_arrays.items():
        np.testing.assert_array_equal(arrays[name], value)
