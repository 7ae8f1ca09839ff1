"""recgrad tune on the synthetic set with a tiny budget: its outputs work, a study resumes, bad input is one line."""

import csv
import json

import pytest

optuna = pytest.importorskip("optuna")

from recgrad.cli import build_model, build_trainer, main, read_toml, resolve_config  # noqa: E402
from recgrad.tune import TuneError, parse_budget  # noqa: E402

FLAGS = ["--data", "synthetic", "--epochs", "2", "--threads", "1", "--budget", "10m"]


def rows(out):
    with open(out / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_small_search_writes_a_runnable_recipe_and_a_usable_run(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["tune", *FLAGS, "--trials", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.err.count("recgrad tune: trial ") == 3
    assert "test, trial" in printed.out and "never used by the search" in printed.out
    assert "refit" in printed.out and json.loads((out / "best" / "test_metrics.json").read_text())["refit"]
    assert len(rows(out)) == 3 and (out / "search.png").read_bytes()[:4] == b"\x89PNG"
    first = rows(out)[0]  # the defaults of recgrad train, enqueued as trial 0
    assert (first["optimizer"], float(first["lr"]), first["lr_schedule"], int(first["dns_candidates"])) == \
        ("hogwild", 0.05, "cosine", 32)
    recipe = read_toml(out / "best.toml")
    assert recipe["selection"] == "validation" and "out" not in recipe
    config = resolve_config(recipe, {})
    build_trainer(config, build_model(config, 10, 12), out_dir=None)
    assert main(["evaluate", "--run", str(out / "best")]) == 0
    assert main(["recommend", "--run", str(out / "best"), "--users", "0", "-n", "5"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()[-1].split("\t")[1].split()) == 5


def test_resume_continues_the_study_and_keeps_every_finished_trial(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["tune", *FLAGS, "--trials", "2", "--out", str(out)]) == 0
    first = rows(out)
    assert main(["tune", *FLAGS, "--trials", "2", "--out", str(out)]) == 2  # a study is there: --resume
    assert "already holds a study" in capsys.readouterr().err
    assert main(["tune", *FLAGS, "--trials", "4", "--out", str(out), "--resume"]) == 0
    again = rows(out)
    assert len(again) == 4 and again[:2] == first


@pytest.mark.parametrize("flags, message", [
    (["--budget", "soon"], "--budget: expected seconds"),
    (["--budget", "0"], "--budget"),
    (["--trials", "0"], "--trials"),
    (["--resume"], "holds no study"),
])
def test_bad_requests_are_one_line(tmp_path, capsys, flags, message):
    assert main(["tune", "--data", "synthetic", "--out", str(tmp_path / "s"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_budget_units():
    assert parse_budget("300") == 300 and parse_budget("5m") == 300 and parse_budget("1.5h") == 5400
    with pytest.raises(TuneError):
        parse_budget("-3")


def test_a_killed_search_resumes_without_losing_a_finished_trial(tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "study"
    command = [sys.executable, "-m", "recgrad.cli", "tune", *FLAGS, "--trials", "20", "--out", str(out)]
    search = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    finished = []
    try:
        for line in search.stderr:
            if line.startswith("recgrad tune: trial "):
                finished.append(line.split()[3])  # the trial's number
            if len(finished) == 2:
                break
        search.send_signal(signal.SIGKILL)
    finally:
        search.wait()
        search.stderr.close()
    assert finished == ["0", "1"]
    assert main(["tune", *FLAGS, "--trials", "3", "--out", str(out), "--resume"]) == 0
    states = {row["trial"]: row["state"] for row in rows(out)}
    assert states["0"] in ("complete", "pruned") and states["1"] in ("complete", "pruned")
    assert sum(state in ("complete", "pruned") for state in states.values()) == 3
