"""A run directory's owner and its readers: one writing process at a time, consistent reads.

A run directory (`recgrad train --out DIR`) holds config.toml, metrics.jsonl, the checkpoint and
the models. Two processes writing into one directory interleave their metrics and leave one run's
config beside the other's models, so the writer holds `RunDirLock`: an exclusive `fcntl.flock` on
DIR/.lock for as long as it writes. The kernel drops a flock when its holder exits, however it
exits (SIGKILL included), so a lock left by a killed process is never stale: the next writer simply
takes it. The lock file keeps the holder's pid, host and command, only to name them in the refusal:

    DIR is in use by recgrad train (pid 4242); wait for it or choose another --out

flock is advisory and local: it holds between processes of one machine (on NFS it depends on the
mount), and a child forked without exec keeps its parent's lock until it exits too.

Readers (`evaluate`, `recommend`, `serve`) never lock, so they can read a run while it trains:
`read_run` loads config.toml and the model (best.npz, else last.npz) and retries when either file
was replaced meanwhile, so the pair it returns comes from one moment. The writer replaces every
file atomically (temporary file + rename), so a file itself is never read half-written.

A run grown from another one (`recgrad train --resume-from`) also holds ids.npz, its id maps: the
raw user and item id of every model row (`write_id_maps`). Whoever loads the run's data re-indexes
it to them (`recgrad.data.align_ids`), because the data's own maps may number the ids otherwise.
A run without ids.npz uses its data's maps as they are.
"""

import dataclasses
import fcntl
import os
import socket
import zipfile
from pathlib import Path

import numpy as np

LOCK_NAME = ".lock"
MODEL_NAMES = ("best.npz", "last.npz")
ID_MAPS_NAME = "ids.npz"
READ_ATTEMPTS = 5


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message is one line naming it."""


class RunDirBusy(RunDirError):
    """Another process holds the run directory's lock."""


class RunDirLock:
    """Exclusive ownership of a run directory by this process (an flock on DIR/.lock).

    Use as a context manager or call `acquire()` / `release()`. `acquire` creates the directory
    when missing (only once the lock can be taken does anything else get written) and raises
    `RunDirBusy` at once, never waiting, when another process holds it.
    """

    def __init__(self, path, command="recgrad train"):
        self.path = Path(path)
        self.command = command
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this RunDirLock is already held")
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise RunDirBusy(f"{self.path} is in use by {holder}; wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {self.command}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self):
        """Give the directory up (exiting the process does the same)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # before unlocking: the next holder writes its own line
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def _describe(content):
    """'recgrad train (pid N)' from a lock file's 'pid host command' line ('another process' when unreadable)."""
    fields = content.decode("utf-8", errors="replace").split(maxsplit=2)
    if len(fields) < 3 or not fields[0].isdigit():
        return "another process"
    pid, host, command = fields[0], fields[1], fields[2].strip()[:60]
    where = "" if host == socket.gethostname() else f" on {host[:60]}"
    return f"{command} (pid {pid}{where})"


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """What `read_run` read at one moment: the config text, which model file, the model, and the
    run's id maps ((user_ids, item_ids), or None when the run uses its data's own)."""

    config_text: str
    model_file: Path
    model: object
    id_maps: tuple | None = None


def write_id_maps(path, user_ids, item_ids):
    """Write DIR/ids.npz (the raw id of every user and item row) atomically; text ids as unicode arrays."""
    from recgrad.train.checkpoint import atomic_write

    arrays = {name: ids if ids.dtype.kind in "iu" else np.asarray(ids, dtype=str)
              for name, ids in (("user_ids", np.asarray(user_ids)), ("item_ids", np.asarray(item_ids)))}
    atomic_write(str(Path(path) / ID_MAPS_NAME), lambda handle: np.savez(handle, **arrays))


def read_id_maps(path):
    """(user_ids, item_ids) from DIR/ids.npz, None when the run has none; RunDirError for a damaged file."""
    file = Path(path) / ID_MAPS_NAME
    try:
        with open(file, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            maps = archive["user_ids"], archive["item_ids"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0][:80] if str(error) else type(error).__name__
        raise RunDirError(f"{file}: not a readable id-maps file ({reason}); train the run again") from None
    if any(ids.ndim != 1 or ids.dtype.kind not in "iuU" for ids in maps):
        raise RunDirError(f"{file}: not a readable id-maps file (expected two 1-D id arrays)")
    return maps


def read_run(path, load_model=None):
    """config.toml and the model of a run directory, as one consistent pair.

    The model is best.npz, else last.npz, loaded with `load_model` (default
    `recgrad.models.load_model`); ids.npz is read too when the run has one. The files are stat-ed
    before and after reading; when one was replaced in between (a new run started, a better model
    saved) the read is repeated, up to READ_ATTEMPTS times. Raises FileNotFoundError naming what is
    missing, RunDirError when the files keep changing or ids.npz is damaged, and whatever
    `load_model` raises for a damaged model (ModelFileError).
    """
    if load_model is None:
        from recgrad.models import load_model
    run = Path(path)
    for _ in range(READ_ATTEMPTS):
        before = _snapshot(run)
        if before is None:
            continue
        model_file = before[0]
        config_text = (run / "config.toml").read_text(encoding="utf-8", errors="replace")
        model = load_model(model_file)
        id_maps = read_id_maps(run)
        if _snapshot(run) == before:
            return RunFiles(config_text, model_file, model, id_maps)
    raise RunDirError(f"{run}: config.toml or the model changed during each of {READ_ATTEMPTS} reads; "
                      "try again when the run is not being written")


def _snapshot(run):
    """(current model file, (inode, size, mtime) of config.toml, of it and of ids.npz when present),
    None when a file vanished between the checks; FileNotFoundError naming a run directory without
    config.toml or model."""
    config_path = run / "config.toml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run}: not a run directory (no config.toml); pass the --out of a recgrad train run")
    model_file = next((run / name for name in MODEL_NAMES if (run / name).exists()), None)
    if model_file is None:
        raise FileNotFoundError(f"{run}: holds no {' or '.join(MODEL_NAMES)} model")
    try:
        stats = [os.stat(config_path), os.stat(model_file)]
    except FileNotFoundError:
        return None
    if (run / ID_MAPS_NAME).exists():
        try:
            stats.append(os.stat(run / ID_MAPS_NAME))
        except FileNotFoundError:
            return None
    return model_file, tuple((stat.st_ino, stat.st_size, stat.st_mtime_ns) for stat in stats)
