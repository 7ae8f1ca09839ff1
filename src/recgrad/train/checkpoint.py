"""Run-directory files written atomically, and the checkpoint a resumed run continues from.

checkpoint.npz holds everything an exact resume needs: the model's arrays, every optimizer's
state, the learning-rate schedulers, the negatives' and the shuffle's RNG states, the position in
the epoch (batch index, loss sum, samples, seconds), the history of epoch records and each
callback's state (best metric, evaluations without improvement, ...). Arrays are stored as npz
members and everything else as one JSON document ("meta"), so loading never unpickles
(allow_pickle=False): a checkpoint cannot execute code.

Every file is written to a temporary file in the same directory, flushed, fsynced and renamed over
the old one (`atomic_write`), so a crash or a full disk leaves the previous file intact.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["FORMAT", "CheckpointError", "atomic_write", "save_checkpoint", "load_checkpoint"]

FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: one line naming the file and the reason."""


def atomic_write(path, write):
    """Call write(binary file handle) on a temp file in path's directory, fsync, then os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                         delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.remove(handle.name)
        raise


def save_checkpoint(path, state):
    """Write `state` (nested dicts, lists, tuples, scalars and arrays) to `path` atomically."""
    arrays = {}
    meta = {"format": FORMAT, "state": _encode_tree(state, arrays, "state")}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_checkpoint(path):
    """The state `save_checkpoint` wrote; CheckpointError (one line) for a missing or damaged file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no checkpoint to resume from (train without --resume to start the run)")
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("meta")[()]))
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, this recgrad reads format "
                                  f"{FORMAT}; start the run again without --resume")
        return _decode_tree(meta["state"], arrays)
    except CheckpointError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
        reason = str(error).splitlines()[0][:80] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable recgrad checkpoint ({reason}); delete it, or train "
                              "without --resume") from None


def _encode_tree(value, arrays, prefix):
    """A JSON-able copy of a nested state; arrays go to `arrays`. Dict keys keep their type
    (optimizer state is keyed by int) and tuples stay tuples, so `_decode_tree` gives back an equal
    structure."""
    if isinstance(value, np.ndarray):
        arrays[prefix] = value
        return {"__array__": prefix}
    if isinstance(value, dict):
        return {"__dict__": [[key, _encode_tree(item, arrays, f"{prefix}.{key}")] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_encode_tree(item, arrays, f"{prefix}.{i}") for i, item in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, np.generic):
        return {"__scalar__": value.item(), "dtype": value.dtype.str}
    return value


def _decode_tree(value, arrays):
    if isinstance(value, list):
        return [_decode_tree(item, arrays) for item in value]
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__dict__" in value:
            return {key: _decode_tree(item, arrays) for key, item in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_decode_tree(item, arrays) for item in value["__tuple__"])
        if "__scalar__" in value:
            return np.array(value["__scalar__"], dtype=value["dtype"])[()]
    return value
