"""The command line end to end on the built-in synthetic data (small runs)."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from recgrad.cli import UsageError, build_model, build_trainer, main, read_toml, resolve_config


def run_train(tmp_path, *flags):
    out = tmp_path / "run"
    status = main(["train", "--epochs", "3", "--out", str(out), *flags])
    return status, out


def test_train_writes_the_run_directory_and_beats_popularity(tmp_path, capsys):
    # 10 epochs instead of the default 60: a larger lr than the default 0.05 reaches the model in that time
    status, out = run_train(tmp_path, "--topk", "10,20", "--epochs", "10", "--lr", "0.2")
    assert status == 0
    for name in ("config.toml", "metrics.jsonl", "best.npz", "last.npz", "checkpoint.npz", "learning_curve.png"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 11))
    for key in ("loss", "train_seconds", "samples_per_second", "recall@20", "ndcg@20", "recall@10"):
        assert key in records[-1]
    printed = capsys.readouterr()
    assert "SYNTHETIC" in printed.err
    lines = printed.out.splitlines()
    column = lines[0].split().index("recall@20") - 1  # row labels hold one more word than "model"
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("best", "popularity"))}
    model_recall, popularity_recall = float(rows["best"][column + 2]), float(rows["popularity"][column + 2])
    assert model_recall > popularity_recall
    assert "selected on the validation split" in printed.out and "test, epoch" in printed.out
    assert json.loads((out / "test_metrics.json").read_text())["recall@20"] > popularity_recall


def test_dynamic_negative_sampling_on_the_compiled_hogwild_loop(tmp_path):
    status, out = run_train(tmp_path, "--optimizer", "hogwild", "--lr", "0.1", "--l2", "0.01",
                            "--dns-candidates", "8", "--epochs", "10")
    assert status == 0
    assert "dns_candidates = 8" in (out / "config.toml").read_text()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["recall@20"] > 2 * 0.0884  # the built-in set's popularity baseline (0.34 when written)


def test_evaluate_and_recommend_use_the_run(tmp_path, capsys):
    status, out = run_train(tmp_path, "--epochs", "6", "--lr", "0.2")  # lr for 6 epochs (the default suits 60)
    assert status == 0
    assert main(["evaluate", "--run", str(out), "--topk", "5,20"]) == 0
    results = json.loads((out / "evaluation.json").read_text())
    assert {"recall@5", "ndcg@20", "hr@20", "map@20"} <= set(results["model"])
    assert results["model"]["recall@20"] > results["popularity"]["recall@20"]

    recs = tmp_path / "recs.tsv"
    assert main(["recommend", "--run", str(out), "--users", "all", "-n", "7", "--output", str(recs)]) == 0
    lines = recs.read_text().splitlines()
    assert len(lines) == 2000
    from recgrad.data import synthetic

    train = synthetic(seed=0).train
    for line in lines[:50]:
        user, items = line.split("\t")
        items = [int(i) for i in items.split()]
        assert len(items) == 7 and len(set(items)) == 7
        assert not set(items) & set(train[int(user)].indices)  # seen items excluded


def test_config_file_is_overridden_by_flags(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('epochs = 1\nlr = 0.005\ndim = 8\nloss = "infonce"\nsimilarity = "cosine"\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--dim", "16", "--out", str(out)]) == 0
    resolved = (out / "config.toml").read_text()
    assert "dim = 16" in resolved and "lr = 0.005" in resolved and 'similarity = "cosine"' in resolved


def test_switching_the_schedule_off_by_flag_drops_the_files_lr_min():
    recipe = {"lr_schedule": "cosine", "lr_min": 1e-5}
    assert resolve_config(recipe, {"lr_schedule": "constant"})["lr_min"] is None
    assert resolve_config(recipe, {})["lr_min"] == 1e-5
    # an explicit --lr-min beside --lr-schedule constant is refused in the CLI's words
    with pytest.raises(UsageError, match="--lr-min: applies only with lr_schedule 'cosine'"):
        resolve_config(recipe, {"lr_schedule": "constant", "lr_min": "1e-4"})


def test_a_cosine_infonce_run_builds_a_model_that_ranks_by_the_cosine():
    cosine = resolve_config({"loss": "infonce", "similarity": "cosine"}, {})
    assert cosine["normalize"] is True and build_model(cosine, 5, 6).normalize is True
    assert resolve_config({"loss": "infonce", "similarity": "cosine"}, {"normalize": "false"})["normalize"] is False
    assert resolve_config({"loss": "bpr"}, {})["normalize"] is False


def test_resume_continues_to_the_requested_epochs(tmp_path):
    status, out = run_train(tmp_path, "--epochs", "2")
    assert status == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "4"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--lr", "abc"], "--lr"),
        (["train", "--loss", "hinge"], "--loss"),
        (["train", "--data", "/no/such/folder"], "/no/such/folder"),
        (["train", "--resume"], "--resume"),
        (["train", "--temperature", "0.1"], "temperature"),
        (["train", "--dns-candidates", "0"], "--dns-candidates"),
        (["train", "--dns-candidates", "4", "--negatives-mode", "shared"], "--dns-candidates"),
        (["train", "--seed", "-1"], "--seed"),
        (["train", "--metric", "recall@0"], "--metric"),
        (["train", "--validation", "1"], "--validation"),
        (["train", "--validation", "nan"], "--validation"),
        (["train", "--optimizer", "hogwild", "--batch-size", "64"], "--batch-size"),
        (["evaluate", "--run", "/no/such/run"], "/no/such/run"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_info_prints_statistics(capsys):
    assert main(["info", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "users" in out and "2,000" in out and "density" in out


def test_check_exits_zero_and_prints_the_table(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "InfoNCELoss(cosine, shared)" in out and out.strip().endswith("0 failed")


def test_help_does_not_raise(capsys):
    for command in ("train", "evaluate", "recommend", "info", "check", "experiment", "bench"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    assert "--batch-size" in capsys.readouterr().out


RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[path.stem for path in RECIPES])
def test_every_shipped_recipe_resolves_and_builds_its_model_and_trainer(recipe):
    # The reproductions need ../shared/data; this checks everything else a recipe says, without it.
    config = resolve_config(read_toml(recipe), {})
    if config["pretrained"] is not None:  # it starts from the runs that shipped recipes write (checked there)
        outs = {read_toml(other)["out"]: read_toml(other)["model"] for other in RECIPES}
        assert [outs.get(run) for run in config["pretrained"]] == ["gmf", "mlp"], config["pretrained"]
        config["pretrained"] = None
    train = scipy.sparse.random(50, 40, density=0.1, format="csr", random_state=0)  # LightGCN's graph
    model = build_model(config, n_users=50, n_items=40, train=train)
    trainer = build_trainer(config, model, out_dir=None)
    assert trainer.epochs == config["epochs"] and trainer.settings["engine"] == config["engine"]


# ------------------------------------------------------------------ run directories and faults
def test_a_second_writer_to_a_run_directory_is_refused_in_one_line(tmp_path, capsys):
    from recgrad.rundir import RunDirLock

    out = tmp_path / "run"
    with RunDirLock(out, command="recgrad train"):  # as if another process were training into it
        assert main(["train", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in use by recgrad train" in err[0] and "another --out" in err[0]
    assert sorted(path.name for path in out.iterdir()) == [".lock"]  # nothing of the refused run
    assert main(["train", "--epochs", "1", "--out", str(out)]) == 0  # released: the next writer gets it


@pytest.mark.parametrize("content, message", [
    (None, "no checkpoint to resume from"),
    (b"PK\x03\x04 truncated", "not a readable recgrad checkpoint"),
    (bytes(range(256)) * 4, "not a readable recgrad checkpoint"),
])
def test_resume_from_a_missing_or_damaged_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys, content,
                                                                                    message):
    status, out = run_train(tmp_path, "--epochs", "1")
    assert status == 0
    capsys.readouterr()
    if content is None:
        (out / "checkpoint.npz").unlink()
    else:
        (out / "checkpoint.npz").write_bytes(content)
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


def test_resume_of_a_folder_that_does_not_exist_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["train", "--out", str(missing), "--resume"]) == 2
    assert "is not a run directory" in capsys.readouterr().err and not missing.exists()


def test_resume_with_other_settings_leaves_the_config_as_it_was(tmp_path, capsys):
    status, out = run_train(tmp_path, "--epochs", "1")
    config = (out / "config.toml").read_text()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--lr", "0.5"]) == 2
    assert "different settings: lr=0.05 (now 0.5)" in capsys.readouterr().err
    assert (out / "config.toml").read_text() == config


def test_resume_says_where_it_continues_and_the_config_holds_the_absolute_data_path(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data.csv"
    rng = np.random.default_rng(0)
    rows = {(int(u), int(i)) for u, i in zip(rng.integers(0, 40, 900), rng.integers(0, 60, 900))}
    data.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in sorted(rows)))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--data", "data.csv", "--user-col", "user", "--item-col", "item", "--epochs", "1",
                 "--out", str(out)]) == 0
    assert f'data = "{data}"' in (out / "config.toml").read_text()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert f"resuming {out} at epoch 2 (batch 0)" in capsys.readouterr().err


def test_a_failing_disk_is_one_line_and_the_last_checkpoint_stays(tmp_path, capsys, monkeypatch):
    import recgrad.train.callbacks as callbacks

    status, out = run_train(tmp_path, "--epochs", "1")
    checkpoint = (out / "checkpoint.npz").read_bytes()

    def full_disk(path, state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(callbacks, "save_checkpoint", full_disk)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("recgrad: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "checkpoint is intact" in errors[0]
    assert "Traceback" not in err
    assert (out / "checkpoint.npz").read_bytes() == checkpoint


def test_a_metric_the_protocol_does_not_compute_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--metric", "foo@20", "--out", str(out)]) == 2
    assert "--metric" in capsys.readouterr().err and not out.exists()


def test_a_new_run_into_a_used_directory_leaves_none_of_the_old_runs_files(tmp_path):
    status, out = run_train(tmp_path, "--epochs", "1")
    (out / "evaluation.json").write_text("{}")
    assert main(["train", "--epochs", "1", "--eval-every", "5", "--out", str(out), "--model", "gmf",
                 "--data", "synthetic"]) == 0
    assert not (out / "evaluation.json").exists()
    assert 'model = "gmf"' in (out / "config.toml").read_text()


def test_recommend_refuses_an_empty_user_list_and_an_unwritable_output(tmp_path, capsys):
    status, out = run_train(tmp_path, "--epochs", "1")
    capsys.readouterr()
    assert main(["recommend", "--run", str(out), "--users", ","]) == 2
    assert "--users: no user id" in capsys.readouterr().err
    target = tmp_path / "no-such-folder" / "recs.tsv"
    assert main(["recommend", "--run", str(out), "--users", "0", "--output", str(target)]) == 2
    assert "--output: cannot write" in capsys.readouterr().err and not target.parent.exists()
    assert main(["evaluate", "--run", str(out), "--topk", "0"]) == 2
    assert "--topk" in capsys.readouterr().err


def test_data_too_small_for_a_validation_split_falls_back_to_the_test_set_with_a_warning(tmp_path, capsys):
    data = tmp_path / "small.csv"
    data.write_text("user,item\n" + "".join(f"{u},{(u + k) % 30}\n" for u in range(40) for k in range(4)))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--user-col", "user", "--item-col", "item", "--epochs", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "no user has enough training interactions to hold out a validation part" in printed.err
    assert "selected on the test split" in printed.out and "optimistic" in printed.out
