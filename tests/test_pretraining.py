"""NeuMF pre-training on the command line: a GMF run and an MLP run, then NeuMF started from both
(`pretrained`), on a tiny data set in the NCF format; and the one-line errors of the setting."""

import numpy as np
import pytest

from recgrad.cli import main
from recgrad.models import GMF, MLP, NeuMF, load_model

N_USERS, N_ITEMS, NEGATIVES = 24, 30, 9
COMMON = ["--data", None, "--loss", "bce", "--selection", "test", "--topk", "5", "--batch-size", "64",
          "--threads", "1"]


def write_ncf_data(folder):
    """Each user likes 6 items near their own id (a learnable pattern); the 7th is held out for the test,
    ranked among NEGATIVES items the user never saw (files as NCF's ml-1m.*)."""
    rng = np.random.default_rng(0)
    train, test, negatives = [], [], []
    for user in range(N_USERS):
        liked = [(user + offset) % N_ITEMS for offset in range(7)]
        train += [f"{user}\t{item}\t1\t0" for item in sorted(liked[:6])]
        test.append(f"{user}\t{liked[6]}\t1\t0")
        unseen = np.setdiff1d(np.arange(N_ITEMS), liked)
        drawn = rng.choice(unseen, size=NEGATIVES, replace=False)
        negatives.append(f"({user},{liked[6]})\t" + "\t".join(map(str, drawn)))
    for suffix, lines in (("train.rating", train), ("test.rating", test), ("test.negative", negatives)):
        (folder / f"toy.{suffix}").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def pretrained_runs(tmp_path_factory):
    """(data folder, GMF run, MLP run): two short runs on the tiny data."""
    root = tmp_path_factory.mktemp("pretraining")
    data = write_ncf_data(root)
    flags = [str(data) if flag is None else flag for flag in COMMON]
    gmf, mlp = root / "gmf", root / "mlp"
    assert main(["train", "--model", "gmf", "--dim", "4", "--epochs", "2", "--lr", "0.05", *flags,
                 "--out", str(gmf)]) == 0
    assert main(["train", "--model", "mlp", "--mlp-layers", "8,4", "--epochs", "2", "--lr", "0.05", *flags,
                 "--out", str(mlp)]) == 0
    return data, gmf, mlp


def neumf_flags(data, *extra):
    return ["train", "--model", "neumf", *[str(data) if flag is None else flag for flag in COMMON], *extra]


def test_neumf_starts_as_the_alpha_mix_of_the_pretrained_runs(pretrained_runs, tmp_path):
    data, gmf_run, mlp_run = pretrained_runs
    out = tmp_path / "neumf"
    # one epoch at a negligible lr: the saved NeuMF is the pre-trained start, up to float32 rounding
    assert main(neumf_flags(data, "--dim", "4", "--mlp-layers", "8,4", "--pretrained", f"{gmf_run},{mlp_run}",
                            "--epochs", "1", "--lr", "1e-9", "--out", str(out))) == 0
    assert f'pretrained = ["{gmf_run}", "{mlp_run}"]' in (out / "config.toml").read_text()
    neumf, gmf, mlp = (load_model(run / "best.npz") for run in (out, gmf_run, mlp_run))
    assert (type(neumf), type(gmf), type(mlp)) == (NeuMF, GMF, MLP)
    users = np.arange(N_USERS)
    expected = 0.5 * gmf.score_all(users) + 0.5 * mlp.score_all(users)
    assert np.abs(gmf.score_all(users) - mlp.score_all(users)).max() > 0.1  # the mix is not trivially either
    np.testing.assert_allclose(neumf.score_all(users), expected, rtol=0, atol=1e-4)
    # and the pre-trained start trains on (any lr): a NeuMF run from the two reaches the end of its epochs
    assert main(neumf_flags(data, "--dim", "4", "--mlp-layers", "8,4", "--pretrained", f"{gmf_run},{mlp_run}",
                            "--epochs", "1", "--optimizer", "sgd", "--lr", "0.01",
                            "--out", str(tmp_path / "sgd"))) == 0


@pytest.mark.parametrize("flags, fragments", [
    (["--dim", "8", "--mlp-layers", "8,4"], ["--pretrained:", "gmf/best.npz has dim 4, this run needs 8"]),
    (["--dim", "4", "--mlp-layers", "16,4"],
     ["--pretrained:", "mlp/best.npz has mlp_layers [8, 4], this run needs [16, 4]"]),
    (["--dim", "4", "--mlp-layers", "8,4", "SWAP"], ["--pretrained:", "mlp/best.npz holds a model of class MLP, "
                                                     "expected GMF"]),
])
def test_pretrained_runs_that_do_not_fit_are_one_line_naming_the_file_and_both_shapes(
        pretrained_runs, tmp_path, capsys, flags, fragments):
    data, gmf_run, mlp_run = pretrained_runs
    runs = f"{mlp_run},{gmf_run}" if "SWAP" in flags else f"{gmf_run},{mlp_run}"
    out = tmp_path / "neumf"
    status = main(neumf_flags(data, *[flag for flag in flags if flag != "SWAP"], "--pretrained", runs,
                              "--epochs", "1", "--out", str(out)))
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and error[0].startswith("recgrad: error: --pretrained:"), error
    for fragment in fragments:
        assert fragment in error[0]
    assert not out.exists()


def test_pretrained_runs_on_other_data_are_refused(pretrained_runs, tmp_path, capsys):
    data, gmf_run, mlp_run = pretrained_runs
    status = main(["train", "--model", "neumf", "--loss", "bce", "--dim", "4", "--mlp-layers", "8,4",
                   "--pretrained", f"{gmf_run},{mlp_run}", "--epochs", "1", "--out", str(tmp_path / "neumf")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2 and "--pretrained:" in error and f"has users x items {N_USERS} x {N_ITEMS}" in error, error


@pytest.mark.parametrize("flags, fragment", [
    (["--model", "gmf", "--pretrained", "a,b"], "--pretrained: applies only with model 'neumf' (got model='gmf')"),
    (["--model", "neumf", "--pretrained", "a"], "--pretrained: expected 2 run directories"),
    (["--model", "neumf", "--pretrained", "a,,b"], "--pretrained: expected a list of strings, got 'a,,b'"),
    (["--model", "neumf", "--pretrained", "a,missing"], "--pretrained: a: not a run directory (no config.toml)"),
    (["--model", "mlp", "--dim", "8"], "--dim: applies only with model"),
])
def test_the_setting_is_validated_in_one_line(tmp_path, capsys, flags, fragment):
    out = tmp_path / "run"
    assert main(["train", "--loss", "bce", *flags, "--epochs", "1", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and fragment in error[0], error
    assert not out.exists()
