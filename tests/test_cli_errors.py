"""Hostile data, model and run files through the real command line, as a user meets them.

Each case runs `python -m recgrad.cli` in a subprocess and checks the contract for bad input:
exit status 2, exactly one line on stderr (`recgrad: error: ...` naming the file), no traceback,
and nothing created in the folders involved.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from recgrad.models import MF

ENV = {**os.environ, "RECGRAD_NUM_THREADS": "1"}


def run_cli(*arguments, cwd):
    return subprocess.run([sys.executable, "-m", "recgrad.cli", *map(str, arguments)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def assert_one_line_error(result, *fragments):
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("recgrad: error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr) < 1000
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def lightgcn(folder, test_text):
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{u} {u % 5} {(u + 1) % 5}\n" for u in range(6)))
    (folder / "test.txt").write_text(test_text)
    return folder


@pytest.mark.parametrize("make, fragments", [
    (lambda tmp: lightgcn(tmp / "lg", "0 999999999999\n"),
     ["lg/test.txt:1: item id 999999999999 makes 1000000000000 item slots for 6 distinct item ids",
      "--format csv --user-col/--item-col"]),
    (lambda tmp: lightgcn(tmp / "lg", "0 1\n1 " + "9" * 5 + "x" * 10_000_000 + "\n"),
     ["lg/test.txt:2: item id '99999xxxxx", "(10000005 bytes) is not a non-negative integer"]),
])
def test_info_refuses_hostile_lightgcn_folders_in_one_line(tmp_path, make, fragments):
    folder = make(tmp_path)
    before = listing(tmp_path)
    assert_one_line_error(run_cli("info", folder, cwd=tmp_path), *fragments)
    assert listing(tmp_path) == before


def test_non_utf8_csv_names_file_and_line(tmp_path):
    (tmp_path / "log.csv").write_bytes(b"user,item\nann,1\nb\xe9a,2\n")
    result = run_cli("info", "log.csv", "--user-col", "user", "--item-col", "item", cwd=tmp_path)
    assert_one_line_error(result, "log.csv:3: byte 0xe9 at column 2 is not UTF-8")


def test_train_on_bad_data_creates_no_run_directory(tmp_path):
    lightgcn(tmp_path / "lg", "0 999999999999\n")
    result = run_cli("train", "--data", "lg", "--out", "run", "--epochs", "1", "--threads", "1", cwd=tmp_path)
    assert_one_line_error(result, "999999999999")
    assert not (tmp_path / "run").exists()


def test_bom_and_stray_id_are_accepted_with_counts(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "u.data").write_bytes(b"\xef\xbb\xbf1\t10\t5\t100\n2\t10\t4\t101\n1\t11\t3\t102\n")
    result = run_cli("info", folder, cwd=tmp_path)
    assert result.returncode == 0 and re.search(r"^users +2$", result.stdout, re.MULTILINE), result.stdout
    lightgcn(tmp_path / "lg", "0 5000\n")
    result = run_cli("info", "lg", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4996 of 5001 item slot(s) have no training interaction" in result.stdout


def model_entries():
    model = MF(6, 5, dim=2, rng=0)
    entries = {"__model__": np.array("MF"), "__config__": np.array(json.dumps(model.config())),
               "__format__": np.array(1)}
    entries.update({"param." + name: value for name, value in model.state_dict().items()})
    return entries


def with_weight(entries, value):
    weights = entries["param.user_embedding.weight"].copy()
    weights[0, 0] = value
    return {**entries, "param.user_embedding.weight": weights}


def with_config(entries, **changes):
    config = {**json.loads(str(entries["__config__"][()])), **changes}
    return {**entries, "__config__": np.array(json.dumps(config))}


DAMAGED = {
    "random bytes": (lambda path: path.write_bytes(np.random.default_rng(0).bytes(3000)),
                     "not a recgrad model file (not a readable .npz archive"),
    "1e12 users": (lambda path: np.savez(path, **with_config(model_entries(), n_users=10**12)),
                   "needs 2000000000010 parameter values but the file holds 22"),
    "unknown class": (lambda path: np.savez(path, **{**model_entries(), "__model__": np.array("Evil")}),
                      "unknown model class Evil"),
    "extra keyword": (lambda path: np.savez(path, **with_config(model_entries(), depth=3)),
                      "unknown keyword(s) ['depth']"),
    "NaN weights": (lambda path: np.savez(path, **with_weight(model_entries(), np.nan)),
                    "parameter user_embedding.weight holds 1 NaN or infinite value(s)"),
}


@pytest.mark.parametrize("command, case", [("evaluate", case) for case in sorted(DAMAGED)]
                         + [("recommend", "1e12 users"), ("recommend", "random bytes")])
def test_damaged_model_in_a_run_is_one_line(tmp_path, command, case):
    lightgcn(tmp_path / "lg", "0 1\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(f'data = "{tmp_path / "lg"}"\nmodel = "mf"\ndim = 2\n')
    write, fragment = DAMAGED[case]
    write(run / "best.npz")
    before = listing(tmp_path)
    assert_one_line_error(run_cli(command, "--run", run, cwd=tmp_path), "run/best.npz: ", fragment)
    assert listing(tmp_path) == before


def test_a_second_writer_to_a_run_directory_is_refused(tmp_path):
    lightgcn(tmp_path / "lg", "0 1\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom recgrad.rundir import RunDirLock\n"
         "RunDirLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)", str(tmp_path / "run")],
        stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = listing(tmp_path)
        result = run_cli("train", "--data", "lg", "--out", "run", "--epochs", "1", "--threads", "1", cwd=tmp_path)
        assert_one_line_error(result, f"run is in use by recgrad train (pid {holder.pid}); "
                                      "wait for it or choose another --out")
        assert listing(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


@pytest.mark.parametrize("arguments, fragment", [
    (["train", "--validation", "1"], "--validation: expected a number >= 0 and < 1, got '1'"),
    (["train", "--validation", "-1"], "--validation: expected a number >= 0 and < 1"),
    (["train", "--validation", "nan"], "--validation: expected a number >= 0 and < 1"),
    (["train", "--metric", "foo@20"], "--metric: expected '<name>@<K>' with name in"),
    (["train", "--metric", "recall@0"], "--metric: expected '<name>@<K>' with K >= 1"),
    (["train", "--seed", "-1"], "--seed: expected an int >= 0"),
    (["train", "--lr", "x" * 100_000], "..."),
    (["train", "--resume", "--out", "missing"], "--resume: missing is not a run directory"),
])
def test_bad_training_settings_are_one_line_and_create_nothing(tmp_path, arguments, fragment):
    if "--out" not in arguments:
        arguments = [*arguments, "--out", "run"]
    before = listing(tmp_path)
    assert_one_line_error(run_cli(*arguments, "--epochs", "1", "--threads", "1", cwd=tmp_path), fragment)
    assert listing(tmp_path) == before


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One finished one-epoch run, copied by each test that damages it."""
    folder = tmp_path_factory.mktemp("trained")
    done = run_cli("train", "--epochs", "1", "--threads", "1", "--out", "run", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "run"


@pytest.mark.parametrize("damage, fragment", [
    (lambda path: path.unlink(), "no checkpoint to resume from"),
    (lambda path: path.write_bytes(path.read_bytes()[:200]), "not a readable recgrad checkpoint"),
    (lambda path: path.write_bytes(np.random.default_rng(1).bytes(5000)), "not a readable recgrad checkpoint"),
    (lambda path: np.savez(path, meta=np.array('{"format": 1}')), "checkpoint format 1"),
])
def test_resume_from_a_damaged_checkpoint_is_one_line_and_writes_nothing(tmp_path, trained_run, damage, fragment):
    shutil.copytree(trained_run, tmp_path / "run")
    damage(tmp_path / "run" / "checkpoint.npz")
    before = {path: path.stat().st_mtime_ns for path in (tmp_path / "run").iterdir()}
    result = run_cli("train", "--resume", "--out", "run", "--epochs", "2", "--threads", "1", cwd=tmp_path)
    assert_one_line_error(result, "run/checkpoint.npz: ", fragment)
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "run").iterdir()} == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_cli("train", "--out", locked / "run", "--epochs", "1", "--threads", "1", cwd=tmp_path)
    assert_one_line_error(result, "--out: cannot create")
