"""Run-directory lock between real processes, its release on SIGKILL, and consistent reads."""

import os
import signal
import subprocess
import sys
import time

import pytest

from recgrad.models import MF
from recgrad.models.base import load_model
from recgrad.rundir import LOCK_NAME, RunDirBusy, RunDirError, RunDirLock, read_run

HOLDER = """
import sys, time
from recgrad.rundir import RunDirLock
lock = RunDirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def start_holder(run):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_in_one_line_and_a_killed_holder_frees_the_directory(tmp_path):
    run = tmp_path / "run"
    holder = start_holder(run)
    try:
        with pytest.raises(RunDirBusy) as caught:
            RunDirLock(run).acquire()
        assert str(caught.value) == (f"{run} is in use by recgrad train (pid {holder.pid}); "
                                     "wait for it or choose another --out")
        assert sorted(os.listdir(run)) == [LOCK_NAME]  # the refused writer created nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with RunDirLock(run, command="recgrad test") as lock:  # the kernel dropped the killed holder's flock
        assert lock.held
        assert (run / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        assert (run / LOCK_NAME).read_text().split(maxsplit=2)[2].strip() == "recgrad test"
    assert not lock.held and (run / LOCK_NAME).read_text() == ""


def test_the_lock_is_exclusive_within_one_process_and_reusable_after_release(tmp_path):
    first = RunDirLock(tmp_path / "a" / "b").acquire()  # creates the folders
    with pytest.raises(RunDirBusy, match=r"is in use by recgrad train \(pid \d+\)"):
        RunDirLock(tmp_path / "a" / "b").acquire()
    with pytest.raises(RuntimeError, match="already held"):
        first.acquire()
    first.release()
    first.release()  # a second release is harmless
    RunDirLock(tmp_path / "a" / "b").acquire().release()


def test_an_unreadable_lock_file_still_gives_one_line(tmp_path):
    holder = start_holder(tmp_path)
    try:
        (tmp_path / LOCK_NAME).write_text("garbage")  # the holder's flock is on the inode, not the text
        with pytest.raises(RunDirBusy, match=r"is in use by another process; wait for it or choose another --out"):
            RunDirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def write_run(run, n_users):
    run.mkdir(exist_ok=True)
    (run / "config.toml").write_text(f"n_users = {n_users}\n")
    MF(n_users, 3, dim=2, rng=0).save(run / "best.npz")


def test_read_run_returns_the_pair_and_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        read_run(tmp_path)
    (tmp_path / "config.toml").write_text("x = 1\n")
    with pytest.raises(FileNotFoundError, match="holds no best.npz or last.npz model"):
        read_run(tmp_path)
    MF(4, 3, dim=2, rng=0).save(tmp_path / "last.npz")
    assert read_run(tmp_path).model_file == tmp_path / "last.npz"
    write_run(tmp_path, 5)
    files = read_run(tmp_path)
    assert files.model_file == tmp_path / "best.npz" and files.model.n_users == 5
    assert files.config_text == "n_users = 5\n"


def test_read_run_reads_again_when_a_writer_replaced_the_files_meanwhile(tmp_path):
    write_run(tmp_path, 5)
    calls = []

    def load_during_a_new_save(path):
        calls.append(path)
        if len(calls) == 1:  # a writer replaces both files while the first read is under way
            time.sleep(0.01)
            (tmp_path / "config.toml").write_text("n_users = 6\n")
            MF(6, 3, dim=2, rng=0).save(tmp_path / "tmp.npz")
            os.replace(tmp_path / "tmp.npz", tmp_path / "best.npz")
        return load_model(path)

    files = read_run(tmp_path, load_model=load_during_a_new_save)
    assert len(calls) == 2 and files.config_text == "n_users = 6\n" and files.model.n_users == 6


def test_read_run_gives_up_in_one_line_when_the_files_never_settle(tmp_path):
    write_run(tmp_path, 5)

    def always_rewritten(path):
        model = load_model(path)
        (tmp_path / "config.toml").write_text(f"n_users = 5\n# {time.monotonic_ns()}\n")
        return model

    with pytest.raises(RunDirError, match="changed during each of 5 reads"):
        read_run(tmp_path, load_model=always_rewritten)
