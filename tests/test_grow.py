"""Growing a run: id maps that keep known indices, tables and optimizer state that keep their rows,
new rows initialised as a fresh model's, exact resume of the grown run, and the CLI's error lines."""

import json

import numpy as np
import pytest

from recgrad import models
from recgrad.cli import build_model, main, resolve_config
from recgrad.data import Dataset, align_ids, grow_id_map, synthetic
from recgrad.data.dataset import interactions_to_csr
from recgrad.rundir import RunDirError, read_id_maps, read_run, write_id_maps
from recgrad.train import Trainer
from recgrad.train.checkpoint import load_checkpoint
from recgrad.train.grow import grow_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ id maps
def test_grow_id_map_keeps_known_positions_and_appends_new_ids_in_order_of_appearance():
    grown, positions = grow_id_map(np.array([7, 3, 9]), np.array([9, 11, 7, 5, 11]))
    assert grown.tolist() == [7, 3, 9, 11, 5] and grown.dtype == np.int64
    assert positions.tolist() == [2, 3, 0, 4, 3]
    text, positions = grow_id_map(np.array([12, 4]), np.array(["4", "x"], dtype=object))
    assert text.tolist() == ["12", "4", "x"]  # an integer id and its text are one id
    assert positions.tolist() == [1, 2]


def _dataset(pairs, test_pairs, users, items, stamps=None):
    users, items = np.array(users, dtype=object), np.array(items, dtype=object)
    index_u = {u: k for k, u in enumerate(users)}
    index_i = {i: k for k, i in enumerate(items)}
    shape = (len(users), len(items))
    train, aligned, _ = interactions_to_csr([index_u[u] for u, _ in pairs], [index_i[i] for _, i in pairs], shape,
                                            timestamps=stamps)
    test, _, _ = interactions_to_csr([index_u[u] for u, _ in test_pairs], [index_i[i] for _, i in test_pairs], shape)
    return Dataset(train=train, test=test, user_ids=users, item_ids=items, train_timestamps=aligned)


def _raw_pairs(matrix, dataset, stamps=None):
    coo = matrix.tocoo()
    found = [(dataset.user_ids[u], dataset.item_ids[i]) for u, i in zip(coo.row, coo.col)]
    return sorted(found) if stamps is None else sorted(zip(found, stamps.tolist()))


def test_align_ids_re_indexes_every_matrix_to_the_known_maps_grown_by_the_new_ids():
    pairs = [("b", "y"), ("c", "x"), ("a", "z"), ("d", "y"), ("c", "w")]
    new = _dataset(pairs, [("a", "x"), ("d", "w")], ["b", "c", "a", "d"], ["y", "x", "z", "w"],
                   stamps=[5.0, 1.0, 3.0, 2.0, 4.0])
    aligned = align_ids(new, np.array(["a", "b", "e"]), np.array(["x", "y"]))
    assert aligned.user_ids.tolist() == ["a", "b", "e", "c", "d"]  # "e": known, absent from the data
    assert aligned.item_ids.tolist() == ["x", "y", "z", "w"]
    assert _raw_pairs(aligned.train, aligned) == _raw_pairs(new.train, new)
    assert _raw_pairs(aligned.test, aligned) == _raw_pairs(new.test, new)
    assert _raw_pairs(aligned.train, aligned, aligned.train_timestamps) == _raw_pairs(new.train, new,
                                                                                     new.train_timestamps)
    assert aligned.train.getrow(2).nnz == 0
    assert aligned.report["user_slots"] == 5 and aligned.report["users_without_train"] == 1
    assert align_ids(aligned, aligned.user_ids, aligned.item_ids) is aligned


# ------------------------------------------------------------------------------- model and optimizer
SMALL = {"n_users": 60, "n_items": 50, "interactions_per_user": 8, "seed": 3}
KNOWN = (48, 40)  # the old run saw the first 48 users and 40 items


def _known_part(data):
    users, items = KNOWN
    keep = data.train[:users, :items].tocsr()
    return Dataset(train=keep, test=data.test[:users, :items].tocsr(), user_ids=data.user_ids[:users],
                   item_ids=data.item_ids[:items])


def _trainer(config, n_users, n_items, out=None):
    model = build_model(config, n_users, n_items)
    names = ("loss", "optimizer", "lr", "batch_size", "epochs", "seed", "l2", "eval_every")
    return Trainer(model, out_dir=out, progress=False, **{name: config[name] for name in names})


@pytest.mark.parametrize("model, optimizer", [("mf", "sparse_adam"), ("mf", "adam"), ("two-tower", "adamw"),
                                              ("gmf", "adam"), ("neumf", "sparse_adam")])
def test_growing_keeps_old_rows_and_optimizer_state_and_starts_new_rows_as_a_fresh_model(tmp_path, model, optimizer):
    full = synthetic(**SMALL)
    config = resolve_config({"model": model, "optimizer": optimizer, "epochs": 2, "batch_size": 64,
                             "loss": "bce" if model in ("gmf", "neumf") else "bpr", "seed": 5}, {})
    old = _trainer(config, *KNOWN, out=tmp_path / "old")
    old.fit(_known_part(full))
    checkpoint = load_checkpoint(str(tmp_path / "old" / "checkpoint.npz"))

    grown = _trainer({**config, "epochs": 0}, full.n_users, full.n_items)
    grown.fit(full, grow_from=checkpoint)  # zero epochs: the state the grown run starts from
    fresh = build_model(config, full.n_users, full.n_items).state_dict()
    tables = type(grown.model).ID_TABLES
    assert tables
    for name, value in grown.model.state_dict().items():
        saved = checkpoint["model"][name]
        if name in tables:
            rows = saved.shape[0]
            assert rows == KNOWN[0 if tables[name] == "user" else 1]
            np.testing.assert_array_equal(value[:rows], saved)
            np.testing.assert_array_equal(value[rows:], fresh[name][rows:])
        else:
            np.testing.assert_array_equal(value, saved)
    names = {id(param): name for name, param in grown.model.named_parameters()}
    for optimizer_now, saved in zip(grown.optimizers, checkpoint["optimizers"]):
        params = [param for group in optimizer_now.param_groups for param in group["params"]]
        assert optimizer_now.state and len(optimizer_now.state) == len(saved["state"])
        for index, entry in saved["state"].items():
            name = names[id(params[index])]
            for key, value in entry.items():
                now = optimizer_now.state[index][key]
                if not isinstance(value, np.ndarray):
                    assert now == value  # the step count
                elif name in tables:
                    np.testing.assert_array_equal(now[:value.shape[0]], value)
                    assert not now[value.shape[0]:].any() and now.shape == params[index].data.shape
                else:
                    np.testing.assert_array_equal(now, value)
        assert optimizer_now.param_groups[0]["lr"] == config["lr"]


def test_a_model_without_id_tables_cannot_grow(monkeypatch):
    model = models.MF(5, 4, dim=3, rng=0)
    monkeypatch.setattr(models.MF, "ID_TABLES", {})
    with pytest.raises(ValueError, match="no user or item embedding tables"):
        grow_parameters(model, model.state_dict())


def test_a_table_cannot_shrink_nor_change_width():
    small, large = models.MF(5, 4, dim=3, rng=0), models.MF(4, 6, dim=3, rng=0)
    with pytest.raises(ValueError, match="user_embedding.weight"):
        grow_parameters(large, small.state_dict())
    with pytest.raises(ValueError, match="cannot grow"):
        grow_parameters(models.MF(6, 6, dim=2, rng=0), small.state_dict())


# ---------------------------------------------------------------------------------------- run files
def test_id_maps_file_round_trips_and_a_damaged_one_is_one_line(tmp_path):
    write_id_maps(tmp_path, np.array(["u1", "u22"], dtype=object), np.array([5, 7]))
    users, items = read_id_maps(tmp_path)
    assert users.tolist() == ["u1", "u22"] and items.tolist() == [5, 7] and items.dtype == np.int64
    assert read_id_maps(tmp_path / "none") is None
    (tmp_path / "ids.npz").write_bytes(b"not a zip")
    with pytest.raises(RunDirError, match="ids.npz: not a readable id-maps file"):
        read_id_maps(tmp_path)


# -------------------------------------------------------------------------------------- the CLI
def _write_csv(path, data, keep):
    """user,item lines of `data`'s training pairs that `keep` accepts, in a seeded shuffled order
    (so that the two files number their raw ids differently)."""
    coo = data.train.tocoo()
    order = np.random.default_rng(len(str(path))).permutation(coo.nnz)
    lines = ["user,item"] + [f"u{coo.row[k]},i{coo.col[k]}" for k in order if keep(coo.row[k], coo.col[k])]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def grown_runs(tmp_path_factory):
    """An old run on a part of the data, and the data with new users and items."""
    folder = tmp_path_factory.mktemp("grow")
    data = synthetic(n_users=120, n_items=90, interactions_per_user=10, seed=1)
    _write_csv(folder / "old.csv", data, lambda u, i: u < 100 and i < 75)
    _write_csv(folder / "new.csv", data, lambda u, i: True)
    common = ["--format", "csv", "--user-col", "user", "--item-col", "item", "--threads", "1"]
    old = ["train", "--data", str(folder / "old.csv"), *common, "--optimizer", "sparse_adam", "--dim", "8",
           "--batch-size", "128", "--epochs", "2"]
    assert main([*old, "--out", str(folder / "old")]) == 0
    return folder


def _grow(folder, out, *flags):
    return main(["train", "--resume-from", str(folder / "old"), "--data", str(folder / "new.csv"), "--out",
                 str(folder / out), *flags])


def test_the_grown_run_keeps_old_ids_at_their_rows_and_serves_new_ones(grown_runs, capsys):
    folder = grown_runs
    assert _grow(folder, "grown", "--epochs", "2") == 0
    assert "recgrad: growing" in capsys.readouterr().err
    old_files, grown_files = read_run(folder / "old"), read_run(folder / "grown")
    from recgrad.data import load_csv

    old_data, new_data = (load_csv(folder / name, "user", "item") for name in ("old.csv", "new.csv"))
    users, items = grown_files.id_maps
    assert old_files.id_maps is None
    assert sorted(users.tolist()) == sorted(new_data.user_ids.tolist()) and len(users) > len(old_data.user_ids)
    assert sorted(items.tolist()) == sorted(new_data.item_ids.tolist()) and len(items) > len(old_data.item_ids)
    assert users[:len(old_data.user_ids)].tolist() == old_data.user_ids.tolist()  # old indices, then the new ids
    assert items[:len(old_data.item_ids)].tolist() == old_data.item_ids.tolist()
    assert users.tolist() != new_data.user_ids.tolist()  # the new file alone numbers them otherwise
    assert (grown_files.model.n_users, grown_files.model.n_items) == (len(users), len(items))
    config = (folder / "grown" / "config.toml").read_text()
    assert "new.csv" in config and "sparse_adam" in config and "dim = 8" in config
    assert main(["recommend", "--run", str(folder / "grown"), "--users", "u110,u3", "-n", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["u110", "u3"] and len(lines[0].split("\t")[1].split()) == 4
    assert main(["evaluate", "--run", str(folder / "grown")]) == 0
    assert json.loads((folder / "grown" / "evaluation.json").read_text())["model"]["recall@20"] > 0
    # a new run into the directory drops the grown run's id maps with its other files
    assert main(["train", "--data", str(folder / "old.csv"), "--format", "csv", "--user-col", "user",
                 "--item-col", "item", "--epochs", "1", "--threads", "1", "--out", str(folder / "grown")]) == 0
    assert read_id_maps(folder / "grown") is None


def test_a_grown_run_resumes_exactly_after_a_checkpoint(grown_runs):
    folder = grown_runs
    assert _grow(folder, "straight", "--epochs", "3") == 0
    assert _grow(folder, "resumed", "--epochs", "2") == 0
    assert main(["train", "--out", str(folder / "resumed"), "--resume", "--epochs", "3"]) == 0
    straight = load_checkpoint(str(folder / "straight" / "checkpoint.npz"))
    resumed = load_checkpoint(str(folder / "resumed" / "checkpoint.npz"))
    assert resumed["epoch"] == straight["epoch"] == 3
    for name, value in straight["model"].items():
        np.testing.assert_array_equal(resumed["model"][name], value)
    for saved, again in zip(straight["optimizers"], resumed["optimizers"]):
        for index, entry in saved["state"].items():
            for key, value in entry.items():
                np.testing.assert_array_equal(again["state"][index][key], value)
    losses = [[record["loss"] for record in run["history"]] for run in (straight, resumed)]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("flags, fragment", [
    (["--resume"], "--resume-from: --resume continues --out itself"),
    (["--dim", "4"], "these model settings differ: dim=8 (now 4)"),
    (["--lr", "0.5"], "was written with different settings: lr=0.01 (now 0.5)"),
    (["--init-std", "0.5"], "init_std=None (now 0.5)"),
])
def test_growing_with_other_settings_is_one_line_and_writes_nothing(grown_runs, capsys, flags, fragment):
    assert _grow(grown_runs, "refused", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("recgrad: error: ") and fragment in err and len(err.strip().splitlines()) == 1
    assert not (grown_runs / "refused").exists()


def test_growing_needs_its_flags_and_a_run_with_a_checkpoint(grown_runs, tmp_path, capsys):
    old = str(grown_runs / "old")
    cases = [
        (["train", "--resume-from", old, "--data", str(grown_runs / "new.csv")], "needs --out NEWDIR"),
        (["train", "--resume-from", old, "--out", str(tmp_path / "x")], "needs --data"),
        (["train", "--resume-from", old, "--data", str(grown_runs / "new.csv"), "--out", old],
         "must be a new directory"),
        (["train", "--resume-from", str(tmp_path), "--data", "x.csv", "--out", str(tmp_path / "x")],
         "is not a run directory"),
    ]
    (tmp_path / "nockpt").mkdir()
    (tmp_path / "nockpt" / "config.toml").write_text((grown_runs / "old" / "config.toml").read_text())
    cases.append((["train", "--resume-from", str(tmp_path / "nockpt"), "--data", "x.csv", "--out",
                   str(tmp_path / "x")], "holds no checkpoint.npz"))
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_growing_a_run_whose_data_is_gone_or_whose_model_cannot_grow(grown_runs, tmp_path, capsys, monkeypatch):
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("config.toml", "checkpoint.npz"):
        (moved / name).write_bytes((grown_runs / "old" / name).read_bytes())
    text = (moved / "config.toml").read_text().replace(str(grown_runs / "old.csv"), str(tmp_path / "gone.csv"))
    (moved / "config.toml").write_text(text)
    argv = ["train", "--resume-from", str(moved), "--data", str(grown_runs / "new.csv"), "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "the id maps of" in capsys.readouterr().err
    monkeypatch.setattr(models.MF, "ID_TABLES", {})
    assert _grow(grown_runs, "refused") == 2
    assert "a MF model cannot grow" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (grown_runs / "refused").exists()


def test_a_grown_run_grows_again_from_its_own_id_maps(grown_runs):
    folder = grown_runs
    assert _grow(folder, "once", "--epochs", "1") == 0
    assert main(["train", "--resume-from", str(folder / "once"), "--data", str(folder / "new.csv"), "--out",
                 str(folder / "twice"), "--epochs", "1"]) == 0
    once, twice = read_id_maps(folder / "once"), read_id_maps(folder / "twice")
    assert all(a.tolist() == b.tolist() for a, b in zip(once, twice))  # nothing new: the same maps
    assert read_run(folder / "twice").model.n_users == len(once[0])
