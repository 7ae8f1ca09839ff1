"""`recgrad bench` in its tiny mode: the table and JSON structure, the targets' verdicts, the helpers.

No timing is asserted (the machine is shared); only what the numbers are attached to.
"""

import argparse
import importlib.util
import json

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad import bench

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_IMPLICIT = importlib.util.find_spec("implicit") is not None


def parse(*flags):
    return bench.add_arguments(argparse.ArgumentParser()).parse_args(list(flags))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run of every group but time-to-quality (it needs Gowalla), with --json and --markdown."""
    folder = tmp_path_factory.mktemp("bench")
    args = parse("--quick", "--scale", "0.002", "--repeats", "1", "--threads", "1",
                 "--cases", "copy,activations,optim,mf,eval", "--json", str(folder / "bench.json"),
                 "--markdown", str(folder / "bench.md"))
    status = bench.run(args)
    return status, json.loads((folder / "bench.json").read_text()), (folder / "bench.md").read_text()


def test_tiny_run_writes_every_case_with_finite_numbers(tiny_run):
    status, report, _ = tiny_run
    assert status == 0
    assert {"machine", "rows", "targets", "notes", "quality", "threads", "quick"} <= set(report)
    assert report["threads"] == 1 and report["machine"]["threads"] == 1
    assert {"cpu", "cores", "numpy", "numba", "torch", "implicit", "thread_pools"} <= set(report["machine"])
    rows = report["rows"]
    assert {row["group"] for row in rows} == {"copy", "activations", "optim", "mf", "eval"}
    for row in rows:
        assert row["seconds"] > 0 and row["throughput"] > 0, row
        assert row["kind"] in ("kernel", "reference", "peer", "probe")
        assert row["seconds"] == pytest.approx(float(np.median(row["times"])))
    activation_cases = {row["case"] for row in rows if row["group"] == "activations"}
    assert len(activation_cases) == len(bench.ACTIVATIONS)
    optim_cases = {row["case"] for row in rows if row["group"] == "optim"}
    assert len(optim_cases) == 2 * len(bench.OPTIMIZERS)


def test_every_case_has_its_baseline_row_at_speedup_one(tiny_run):
    _, report, _ = tiny_run
    by_case = {}
    for row in report["rows"]:
        by_case.setdefault(row["case"], []).append(row)
    for case, rows in by_case.items():
        baselines = {row["baseline"] for row in rows}
        assert len(baselines) == 1, case
        baseline = baselines.pop()
        if baseline is None:  # the copy probe compares to nothing
            assert all(row["speedup"] is None for row in rows)
            continue
        base = [row for row in rows if row["implementation"] == baseline]
        assert len(base) == 1, case
        assert base[0]["speedup"] == pytest.approx(1.0)
        for row in rows:
            assert row["speedup"] == pytest.approx(base[0]["seconds"] / row["seconds"])


def test_peers_appear_exactly_when_installed(tiny_run):
    _, report, _ = tiny_run
    implementations = {row["implementation"] for row in report["rows"]}
    assert ("torch autograd" in implementations) == HAS_TORCH
    assert ("torch SparseAdam" in implementations) == HAS_TORCH
    assert ("implicit BPR (hogwild SGD)" in implementations) == HAS_IMPLICIT
    assert any("SYNTHETIC" in note for note in report["notes"])  # scale < 1 never uses Gowalla


def test_markdown_holds_the_table_and_the_targets(tiny_run):
    _, report, markdown = tiny_run
    assert "| case | implementation | kind | median | throughput | vs baseline | note |" in markdown
    assert markdown.count("\n| ") >= len(report["rows"]) + len(report["targets"])
    assert report["machine"]["cpu"] in markdown
    for target in report["targets"]:
        assert target["met"] in (True, False, None)


def test_bad_options_exit_with_status_2(capsys):
    assert bench.run(parse("--cases", "copy,nonsense")) == 2
    assert "nonsense" in capsys.readouterr().err
    assert bench.run(parse("--threads", "0")) == 2
    assert "--threads" in capsys.readouterr().err
    assert bench.run(parse("--scale", "2")) == 2


def test_compare_runs_each_implementation_once_untimed_then_round_robin():
    calls = []
    times = bench.compare({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert [len(t) for t in times.values()] == [3, 3]


def test_targets_are_judged_on_the_measured_ratio():
    results = bench.Results()
    case = "sigmoid fwd+bwd"
    results.add("activations", case, "recgrad kernel", "kernel", [1.0], 20e9, "GB/s", "torch autograd")
    results.add("activations", case, "torch autograd", "peer", [2.9], 20e9, "GB/s", "torch autograd")
    results.add("copy", "copy", "np.copyto (1 thread)", "probe", [1.0], 40e9, "GB/s")
    results.add("optim", "Adam step, 10M params", "recgrad fused", "kernel", [1.0], 1e9, "GB/s", "torch fused=True")
    results.add("optim", "Adam step, 10M params", "torch fused=True", "peer", [1.3], 1e9, "GB/s", "torch fused=True")
    results.add("optim", "Adam step, 10M params", bench.TRAFFIC_PROBE, "probe", [0.8], 1e9, "GB/s", "torch fused=True")
    results.finish()
    targets = bench.evaluate_targets(results)
    verdicts = {target["target"]: target["met"] for target in targets}
    ceiling = [t for t in targets if t["target"] == "Adam step, 10M params: the traffic probe vs torch fused=True (ceiling)"]
    assert ceiling[0]["met"] is None and ceiling[0]["measured"].startswith("1.62x; recgrad fused at 80% of the probe")
    assert verdicts["sigmoid fwd+bwd: recgrad kernel vs torch autograd"] is False  # 2.9x < 3x
    assert verdicts["sigmoid fwd+bwd: share of copy bandwidth"] is False  # 20 / 40 GB/s = 50% < 55%
    assert verdicts["Adam step, 10M params: recgrad fused vs torch fused=True"] is True  # 1.3x >= 1.25x


def test_synthetic_set_has_gowallas_shape_scaled():
    dataset = bench.synthetic_like_gowalla(scale=0.01)
    assert dataset.train.shape == (299, 410)
    total = dataset.train.nnz + dataset.test.nnz
    expected = round(0.01 * (bench.GOWALLA_SHAPE["train"] + bench.GOWALLA_SHAPE["test"]))
    assert total == expected
    assert dataset.train.multiply(dataset.test).nnz == 0


def test_time_to_quality_records_the_first_evaluation_reaching_each_target():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 1]], np.float32))
    dataset = bench.Dataset(train=train, test=test, user_ids=np.arange(2), item_ids=np.arange(4))
    perfect = (np.eye(4, dtype=np.float32)[[2, 3]], np.eye(4, dtype=np.float32))  # each user's test item on top
    epochs = []
    records = bench.time_to_quality("fake", "kernel", lambda: epochs.append(1), lambda: perfect, dataset,
                                    budget_seconds=60.0, targets=(0.5, 0.9), min_eval_seconds=0.0)
    assert len(epochs) == 1  # recall 1.0 at the first evaluation reaches both targets
    assert [record["recall_target"] for record in records] == [0.5, 0.9]
    for record in records:
        assert record["epochs"] == 1 and record["best_recall"] == 1.0
        assert 0.0 <= record["train_seconds"] <= record["wall_seconds"]
    never = bench.time_to_quality("fake", "kernel", lambda: None, lambda: perfect, dataset,
                                  budget_seconds=1e-9, targets=(1.5,))
    assert never[0]["wall_seconds"] is None and never[0]["epochs_run"] == 1
    assert "not reached: best 1.0000 after 1 epochs" in bench._quality_line(never[0])


def test_cosine_epochs_anneal_the_lr_to_zero_over_the_schedule():
    class Hogwild:  # FusedMFTrainer's hogwild mode keeps lr on the trainer and has no optimizer
        optimizer = None
        lr = None

        def __init__(self):
            self.seen = []

        def train_epoch(self):
            self.seen.append(self.lr)
            return {}

    trainer = Hogwild()
    step = bench.cosine_epochs(trainer, 0.4, epochs=4)
    for _ in range(4):
        step()
    assert trainer.seen == pytest.approx([0.4, 0.2 * (1 + np.cos(np.pi / 4)), 0.2, 0.2 * (1 + np.cos(3 * np.pi / 4))])
