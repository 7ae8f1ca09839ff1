"""`recgrad bench` in its tiny mode: the table and JSON structure, the goals' verdicts, the data it
runs on (--data, or the synthetic set, said in the output), the functions it is built from.

No timing is asserted (the machine is shared); only what the numbers are attached to.
"""

import argparse
import importlib.util
import json
import types

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
    ceiling_name = "Adam step, 10M params: the traffic probe vs torch fused=True (ceiling)"
    ceiling = [t for t in targets if t["target"] == ceiling_name]
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
    class Loop:  # CompiledMFLoop's seam: the optimizer whose lr the next epoch reads
        def __init__(self):
            self.optimizer = types.SimpleNamespace(param_groups=[{"lr": None}])
            self.seen = []

        def train_epoch(self):
            self.seen.append(self.optimizer.param_groups[0]["lr"])
            return {}

    trainer = Loop()
    step = bench.cosine_epochs(trainer, 0.4, epochs=4)
    for _ in range(4):
        step()
    assert trainer.seen == pytest.approx([0.4, 0.2 * (1 + np.cos(np.pi / 4)), 0.2, 0.2 * (1 + np.cos(3 * np.pi / 4))])


def run_eval_case(capsys, tmp_path, *flags):
    """`recgrad bench --cases eval` (the quickest case that needs data) with `flags`:
    (status, report, stdout, stderr)."""
    report_path = tmp_path / "bench.json"
    status = bench.run(parse("--quick", "--repeats", "1", "--threads", "1", "--cases", "eval",
                             "--json", str(report_path), *flags))
    captured = capsys.readouterr()
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return status, report, captured.out, captured.err


def write_lightgcn(folder, train_lines, test_lines=None):
    folder.mkdir()
    (folder / "train.txt").write_text("\n".join(train_lines) + "\n")
    if test_lines is not None:
        (folder / "test.txt").write_text("\n".join(test_lines) + "\n")
    return folder


def test_data_flag_runs_on_the_named_folder_and_names_it(capsys, tmp_path):
    folder = write_lightgcn(tmp_path / "tiny", ["0 0 1 2", "1 1 2 3", "2 0 3 4"], ["0 3", "1 4", "2 1"])
    status, report, out, err = run_eval_case(capsys, tmp_path, "--data", str(folder))
    assert status == 0
    assert report["data"] == {"label": f"tiny ({folder})", "synthetic": False}
    assert f"data: tiny ({folder})" in report["notes"]
    assert "SYNTHETIC" not in out and "SYNTHETIC" not in err
    eval_rows = [row for row in report["rows"] if row["group"] == "eval"]
    assert eval_rows and all(row["case"] == "full ranking top-20, 3 users x 5 items" for row in eval_rows)


def test_data_without_a_test_file_is_split_per_user(capsys, tmp_path):
    lines = [f"{user} " + " ".join(str((user + k) % 12) for k in range(6)) for user in range(8)]
    folder = write_lightgcn(tmp_path / "no-test", lines)
    status, report, _, _ = run_eval_case(capsys, tmp_path, "--data", str(folder))
    assert status == 0 and report["data"]["synthetic"] is False
    case = {row["case"] for row in report["rows"] if row["group"] == "eval"}
    assert case == {"full ranking top-20, 8 users x 12 items"}  # every user holds out round(0.2 * 6) = 1 item


def test_without_data_the_synthetic_set_is_used_and_said(capsys, tmp_path):
    status, report, out, err = run_eval_case(capsys, tmp_path, "--scale", "0.002")
    assert status == 0
    assert report["data"] == {"label": "SYNTHETIC, Gowalla's shape x 0.002", "synthetic": True}
    notice = [note for note in report["notes"] if note.startswith("data: ")]
    assert len(notice) == 1 and "SYNTHETIC" in notice[0] and "pass --data PATH" in notice[0]
    assert f"note: {notice[0]}" in out  # in the printed report
    assert f"recgrad bench: {notice[0]}" in err  # and before the cases run


def test_quality_is_skipped_on_synthetic_data_with_a_note():
    results = bench.Results()
    bench.bench_quality(results, dataset=None, real=False, budget_seconds=1.0, threads=1)
    assert results.quality == [] and results.notes == [
        "time-to-quality skipped: it needs real data (--data; recall on synthetic data means nothing)"]


@pytest.mark.parametrize("flags, expected", [
    (("--data", "{missing}"), "recgrad bench: error: --data {missing}: no such file or folder"),
    (("--data", "{malformed}"), "recgrad bench: error: --data {malformed}/train.txt:2: "),
    (("--data", "{tiny}", "--scale", "0.5"), "recgrad bench: error: --scale: below 1 (0.5) scales the synthetic "
                                              "data set; drop --data {tiny}"),
])
def test_bad_data_is_one_line_naming_the_flag_and_status_2(capsys, tmp_path, flags, expected):
    paths = {"missing": tmp_path / "nowhere", "tiny": write_lightgcn(tmp_path / "tiny", ["0 0 1"], ["0 2"]),
             "malformed": write_lightgcn(tmp_path / "malformed", ["0 0 1", "1 x"])}
    flags = [flag.format(**paths) for flag in flags]
    status, report, out, err = run_eval_case(capsys, tmp_path, *flags)
    assert status == 2 and report is None and out == ""
    assert err.startswith(expected.format(**paths)) and err.count("\n") == 1 and "Traceback" not in err


def test_goals_are_stated_as_the_projects_performance_goals(tiny_run):
    _, report, markdown = tiny_run
    assert "| performance goal | goal | measured | verdict |" in markdown
    results = bench.Results()
    results.add("activations", "ReLU fwd+bwd", "recgrad kernel", "kernel", [1.0], 20e9, "GB/s", "torch autograd")
    results.add("activations", "ReLU fwd+bwd", "torch autograd", "peer", [4.0], 20e9, "GB/s", "torch autograd")
    results.finish()
    text = bench.format_text(results, bench.evaluate_targets(results), report["machine"])
    assert "performance goals (docs/performance.md):" in text
    assert "[MET] ReLU fwd+bwd: recgrad kernel vs torch autograd: 4.00x (20.0 vs 5.0 GB/s) (goal >= 3x)" in text


def test_defaults_runs_recgrad_train_with_no_flags_beside_implicits_defaults(tmp_path):
    lines = [f"{user} " + " ".join(str((3 * user + k) % 40) for k in range(10)) for user in range(30)]
    folder = write_lightgcn(tmp_path / "small", lines)
    dataset, _, real = bench.load_data(str(folder), 1.0)
    results = bench.Results()
    bench.bench_defaults(results, str(folder), dataset, real, threads=1)
    names = [record["implementation"] for record in results.defaults]
    assert names[0] == "recgrad train (no flags)"
    assert names[1:] == (["implicit BPR (its defaults)"] if bench._optional("implicit") else [])
    for record in results.defaults:
        assert record["wall_seconds"] > 0 and 0.0 <= record["ndcg@20"] <= 1.0 and 0.0 <= record["recall@20"] <= 1.0
    skipped = bench.Results()
    bench.bench_defaults(skipped, None, dataset, False, threads=1)
    assert skipped.defaults == [] and "defaults skipped" in skipped.notes[0]


def test_the_defaults_goal_is_four_times_implicits_wall_time_and_at_least_its_recall():
    results = bench.Results()
    results.defaults = [{"implementation": "recgrad train (no flags)", "wall_seconds": 90.0, "recall@20": 0.166,
                         "ndcg@20": 0.14},
                        {"implementation": "implicit BPR (its defaults)", "wall_seconds": 30.0, "recall@20": 0.087,
                         "ndcg@20": 0.07}]
    verdicts = [target["met"] for target in bench.evaluate_targets(results)]
    assert verdicts == [True, True]
    results.defaults[0]["wall_seconds"] = 121.0
    assert [target["met"] for target in bench.evaluate_targets(results)] == [False, True]
