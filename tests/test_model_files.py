"""Damaged and hostile model files: one ModelFileError line naming the file, never another exception.

Each case starts from a genuine archive written by `Recommender.save` and changes one thing.
"""

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recgrad.models import MF, NeuMF, TwoTower
from recgrad.models.base import ModelFileError, load_model


def entries_of(model):
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def mf_entries():
    return entries_of(MF(6, 9, dim=4, rng=0))


def write_entries(path, entries, allow_pickle=False):
    with open(path, "wb") as handle:
        np.savez(handle, allow_pickle=allow_pickle, **entries)
    return path


def with_config(entries, **changes):
    config = json.loads(str(entries["__config__"][()]))
    config.update(changes)
    for key in [key for key, value in changes.items() if value is None]:
        del config[key]
    return {**entries, "__config__": np.array(json.dumps(config))}


def raises_one_line(path, *fragments):
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and len(message) < 500
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("model", [MF(5, 7, dim=3, rng=1), TwoTower(4, 6, dim=4, hidden=(8,), rng=2),
                                   NeuMF(5, 4, mlp_layers=(8, 4), rng=3)])
def test_genuine_files_round_trip(tmp_path, model):
    loaded = load_model(model.save(tmp_path / "model"))
    assert type(loaded) is type(model) and loaded.config() == model.config()
    for (name, value), (_, again) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert np.array_equal(value, again), name


def test_truncated_bit_flipped_random_and_empty_files(tmp_path):
    genuine = MF(6, 9, dim=4, rng=0).save(tmp_path / "genuine.npz")
    data = Path(genuine).read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    raises_one_line(tmp_path / "truncated.npz", "not a recgrad model file")
    flipped = bytearray(data)
    flipped[data.index(b"param.user") + 200] ^= 0x40  # inside an array's bytes: the zip CRC catches it
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    raises_one_line(tmp_path / "flipped.npz", "is damaged")
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(5000))
    raises_one_line(tmp_path / "random.npz", "not a readable .npz archive")
    (tmp_path / "empty.npz").write_bytes(b"")
    raises_one_line(tmp_path / "empty.npz", "not a readable .npz archive")
    np.save(tmp_path / "array.npy", np.zeros(3))
    raises_one_line(tmp_path / "array.npy", "not a readable .npz archive")
    with pytest.raises(FileNotFoundError, match="missing.npz: no such model file"):
        load_model(tmp_path / "missing.npz")


def test_pickled_objects_are_refused_not_run(tmp_path):
    entries = {**mf_entries(), "__config__": np.array([{"n_users": 6}], dtype=object)}
    path = write_entries(tmp_path / "pickled.npz", entries, allow_pickle=True)
    raises_one_line(path, "holds Python objects")


def test_a_config_of_1e12_users_fails_before_allocating(tmp_path):
    path = write_entries(tmp_path / "huge.npz", with_config(mf_entries(), n_users=10**12))
    tracemalloc.start()
    message = raises_one_line(path, "1000000000000 users x 9 items) needs 4000000000036 parameter values",
                              "the file holds 60")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000, message
    raises_one_line(write_entries(tmp_path / "float.npz", with_config(mf_entries(), n_users=1e12)),
                    "config n_users = 1000000000000.0, expected a positive int")
    raises_one_line(write_entries(tmp_path / "dim.npz", with_config(mf_entries(), dim=10**9)),
                    "config sizes [1000000000] are far too large for the 60 parameter values")


def test_declared_array_larger_than_its_entry_is_refused_unread(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in mf_entries().items():
            if key != "param.user_embedding.weight":
                with archive.open(key + ".npy", "w") as member:
                    np.lib.format.write_array(member, value)
        archive.writestr("param.user_embedding.weight.npy", header.getvalue() + bytes(16))
    raises_one_line(path, "declares shape (1000000000000,) of float32, larger than its")


def test_unknown_class_and_keywords(tmp_path):
    raises_one_line(write_entries(tmp_path / "class.npz", {**mf_entries(), "__model__": np.array("Evil")}),
                    "unknown model class Evil")
    raises_one_line(write_entries(tmp_path / "extra.npz", with_config(mf_entries(), layers=3)),
                    "unknown keyword(s) ['layers']")
    raises_one_line(write_entries(tmp_path / "missing.npz", with_config(mf_entries(), n_items=None)),
                    "lacks ['n_items']")
    raises_one_line(write_entries(tmp_path / "json.npz", {**mf_entries(), "__config__": np.array("{oops")}),
                    "the config entry is not a JSON object: {oops")
    raises_one_line(write_entries(tmp_path / "version.npz", {**mf_entries(), "__format__": np.array(7)}),
                    "model file format 7, this recgrad reads 1")
    raises_one_line(write_entries(tmp_path / "entry.npz", {**mf_entries(), "surprise": np.zeros(2)}),
                    "unexpected entries ['surprise']")
    raises_one_line(write_entries(tmp_path / "bad.npz", with_config(mf_entries(), init_std=-1.0)),
                    "invalid MF config: init_std")


@pytest.mark.parametrize("value, fragment", [(np.nan, "holds 1 NaN or infinite value(s)"),
                                             (np.inf, "holds 1 NaN or infinite value(s)")])
def test_non_finite_weights(tmp_path, value, fragment):
    entries = mf_entries()
    weights = entries["param.item_embedding.weight"].copy()
    weights[2, 1] = value
    path = write_entries(tmp_path / "nan.npz", {**entries, "param.item_embedding.weight": weights})
    raises_one_line(path, "parameter item_embedding.weight " + fragment)


def test_wrong_shapes_dtypes_and_parameter_names(tmp_path):
    entries = mf_entries()
    transposed = {**entries, "param.user_embedding.weight": entries["param.user_embedding.weight"].T.copy()}
    raises_one_line(write_entries(tmp_path / "shape.npz", transposed), "config and parameters do not fit",
                    "shape (4, 6), expected (6, 4)")
    as_int = {**entries, "param.user_embedding.weight": np.zeros((6, 4), dtype=np.int32)}
    raises_one_line(write_entries(tmp_path / "int.npz", as_int), "has dtype int32, expected float")
    renamed = {key.replace("item_embedding", "items"): value for key, value in entries.items()}
    raises_one_line(write_entries(tmp_path / "names.npz", renamed), "missing keys ['item_embedding.weight']")
    fewer = {key: value for key, value in entries.items() if key != "param.item_embedding.weight"}
    raises_one_line(write_entries(tmp_path / "fewer.npz", fewer), "needs 60 parameter values but the file holds 24")


def test_class_load_names_the_other_class(tmp_path):
    path = MF(3, 4, dim=2, rng=0).save(tmp_path / "mf.npz")
    with pytest.raises(ValueError, match="holds a MF, not a NeuMF"):
        NeuMF.load(path)
