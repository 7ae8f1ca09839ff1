"""The training experiments (convergence, optimizers, losses) in quick mode, the registry and the runner.

Each experiment runs once per module (quick mode, into a temporary folder); the tests then assert
the measured results that its verdicts depend on, so that a regression in the core shows up as a
failing claim here.
"""

import argparse
import json
import re
import sys
import types

import numpy as np
import pytest

from recgrad import experiments
from recgrad.experiments import convergence, losses_compare, optimizers, runner

MAX_FIGURE_BYTES = 200_000


pytestmark = pytest.mark.usefixtures("one_thread_module")  # the experiments' module fixtures run on one thread


def _run(module, tmp_path_factory):
    out = tmp_path_factory.mktemp(module.NAME)
    return runner.run_one(module, out, quick=True, seed=0), out


def _check_files(result, out):
    """Figures are small PNGs, and the JSON holds the returned numbers."""
    for name in result["figures"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) < MAX_FIGURE_BYTES
    saved = json.loads((out / f"{result['name']}.json").read_text())
    assert saved["numbers"] == json.loads(json.dumps(result["numbers"]))
    assert saved["claims"] == result["claims"]


@pytest.fixture(scope="module")
def convergence_run(tmp_path_factory):
    return _run(convergence, tmp_path_factory)


@pytest.fixture(scope="module")
def optimizers_run(tmp_path_factory):
    return _run(optimizers, tmp_path_factory)


@pytest.fixture(scope="module")
def losses_run(tmp_path_factory):
    return _run(losses_compare, tmp_path_factory)


# ---------------------------------------------------------------------------------- convergence
def test_convergence_writes_figures_and_numbers(convergence_run):
    result, out = convergence_run
    _check_files(result, out)
    claims = [(c["claim"], c["data"]) for c in result["claims"]]
    per_data = ["tanh converges faster than sigmoid", "Swish/GELU are better than ReLU in deep models"]
    data_sets = ["synthetic"] + (["digits"] if "digits" in result["numbers"]["mlp"] else [])
    assert claims == [(c, d) for d in data_sets for c in per_data] + [(c, "synthetic interactions") for c in per_data]


def test_convergence_verdicts_weigh_every_measure(convergence_run):
    """The deep-model claim names each measure it weighs (test accuracy, training loss, Recall@20), and its
    verdict follows from them: all ahead = holds, none ahead = does not hold."""
    for entry in convergence_run[0]["claims"]:
        outcomes = entry["evidence"].split("Per measure: ")[1].rstrip(".").split("; ")
        results = [outcome.rsplit(": ", 1)[1] for outcome in outcomes]
        expected = ("holds" if all(r == "ahead" for r in results) else
                    "does not hold" if "ahead" not in results else "holds with conditions")
        assert entry["verdict"] == expected, entry
        if entry["claim"].startswith("Swish/GELU") and entry["data"] != "synthetic interactions":
            assert {"gelu test accuracy", "gelu training loss", "swish test accuracy", "swish training loss"} == {
                outcome.rsplit(": ", 1)[0] for outcome in outcomes}


def test_tanh_reaches_half_the_initial_loss_before_sigmoid(convergence_run):
    """The verdict on tanh vs sigmoid rests on this: with Xavier init and the same SGD, the shallow and
    the deep MLP with tanh bring the training loss to ln(4)/2 in fewer steps than with sigmoid, and
    after the last step tanh's loss is below sigmoid's."""
    mlp = convergence_run[0]["numbers"]["mlp"]["synthetic"]
    for depth in ("shallow", "deep"):
        tanh, sigmoid = mlp[depth]["tanh"], mlp[depth]["sigmoid"]
        assert tanh["mean_steps_to_target"] is not None
        assert sigmoid["mean_steps_to_target"] is None or tanh["mean_steps_to_target"] < sigmoid["mean_steps_to_target"]
        assert tanh["final_loss"] < sigmoid["final_loss"]
    # the deep sigmoid network barely moves from chance (ln 4 = 1.386) in the quick run's steps
    assert mlp["deep"]["sigmoid"]["final_loss"] > 1.0 > mlp["deep"]["tanh"]["final_loss"]


def test_convergence_two_tower_learns_with_every_activation(convergence_run):
    tower = convergence_run[0]["numbers"]["two_tower"]
    for activation in convergence.ACTIVATIONS:
        assert tower[activation]["loss"][-1] < tower[activation]["loss"][0]


# ----------------------------------------------------------------------------------- optimizers
def test_optimizers_writes_figures_and_numbers(optimizers_run):
    result, out = optimizers_run
    _check_files(result, out)
    assert set(result["numbers"]["runs"]) == {"sgd", "sgd_momentum", "sgd_momentum_ema", "adam", "adam_l2", "adamw"}


def test_adam_l2_collapses_the_embeddings_where_adamw_does_not(optimizers_run):
    """At a large decay (0.1), L2 in Adam is divided by sqrt(v) and pulls the rarely-updated rows to
    zero, while AdamW's decoupled decay shrinks by (1 - lr * lambda) per step only."""
    numbers = optimizers_run[0]["numbers"]
    adam_l2, adamw = numbers["sweep"]["adam_l2"]["0.1"], numbers["sweep"]["adamw"]["0.1"]
    assert adamw["final_recall@20"] > 2.0 * adam_l2["final_recall@20"]
    assert adam_l2["item_row_norm"] < 0.1 * adamw["item_row_norm"]
    assert adamw["final_recall@20"] >= optimizers.TOLERANCE * numbers["runs"]["adam"]["final_recall@20"]
    assert result_verdict(optimizers_run, "AdamW handles weight decay better than Adam with L2") == "holds"


def test_adamw_without_decay_and_adam_agree_and_momentum_forms_match(optimizers_run):
    runs = optimizers_run[0]["numbers"]["runs"]
    # the EMA form at lr eta and PyTorch's form at lr eta (1 - mu) take the same steady-state step
    torch_form, ema = runs["sgd_momentum"]["final_recall@20"], runs["sgd_momentum_ema"]["final_recall@20"]
    assert abs(torch_form - ema) <= optimizers.RELATIVE_TIE * max(torch_form, ema)
    popularity = optimizers_run[0]["numbers"]["popularity_recall@20"]
    for key in ("sgd", "sgd_momentum", "adam", "adamw"):
        assert runs[key]["final_recall@20"] > popularity


def result_verdict(run, statement):
    return next(c["verdict"] for c in run[0]["claims"] if c["claim"] == statement)


# --------------------------------------------------------------------------------------- losses
def test_losses_writes_figures_and_numbers(losses_run):
    result, out = losses_run
    _check_files(result, out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_infonce_with_one_negative_equals_bpr(seed):
    differences = losses_compare.infonce_bpr_equivalence(seed)["max_abs_difference"]
    assert set(differences) == {"loss", "d_anchor", "d_positive", "d_negative"}
    assert max(differences.values()) <= 1e-12


def test_infonce_one_negative_trains_exactly_like_bpr(losses_run):
    numbers = losses_run[0]["numbers"]
    assert max(numbers["equivalence"]["max_abs_difference"].values()) <= 1e-12
    np.testing.assert_allclose(numbers["runs"]["infonce_1"]["recall@20"], numbers["runs"]["bpr"]["recall@20"],
                               atol=1e-6)
    assert result_verdict(losses_run, "InfoNCE with one negative (dot, tau = 1) equals BPR") == "holds"


def test_temperature_matters_for_cosine_infonce(losses_run):
    """Cosine scores lie in [-1, 1]: at tau = 0.1 and tau = 1 the softmax differs in how peaked it can get,
    and the best Recall@20 differs by more than the 10 % threshold of the verdict."""
    numbers = losses_run[0]["numbers"]
    assert numbers["temperature_spread"]["cosine"] > losses_compare.MATTERS
    cosine = numbers["sweep"]["cosine"]
    assert cosine["0.1"]["best_recall@20"] != cosine["1.0"]["best_recall@20"]


def test_more_negatives_help_infonce(losses_run):
    runs = losses_run[0]["numbers"]["runs"]
    assert runs["infonce_16"]["best_recall@20"] > runs["infonce_1"]["best_recall@20"]


# ------------------------------------------------------------------------------ registry/runner
def _args(*argv):
    return runner.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_experiments_that_train_recommenders_take_data(tmp_path, capsys):
    assert [name for name in experiments.names() if runner.uses_data(experiments.load(name))] == [
        "convergence", "optimizers", "losses"]
    assert runner.run(_args("depth", "--data", "../shared/data/gowalla", "--out", str(tmp_path))) == 2
    assert "--data: experiment 'depth' trains no recommender" in capsys.readouterr().err
    assert runner.run(_args("optimizers", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"recgrad experiment: error: --data {tmp_path / 'nowhere'}") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_given_data_is_subsampled_and_named(tmp_path, capsys):
    from recgrad.data import synthetic

    data = synthetic(n_users=500, n_items=400, interactions_per_user=15, seed=1)
    data.name = "mine"
    result = runner.run_one(optimizers, tmp_path, quick=True, seed=0, data=data)
    assert result["numbers"]["dataset"] == "mine-400-users" and result["numbers"]["n_users"] == 400
    assert "optimizers: recommender data: mine (500 users, 400 items)" in capsys.readouterr().err


def test_registry_lists_the_eight_experiments_in_order():
    assert experiments.names() == ["activations", "depth", "dying-relu", "convergence", "cost", "optimizers",
                                   "losses", "init"]


def test_list_prints_every_name(capsys):
    assert runner.run(_args("--list")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == experiments.names()


def test_unknown_experiment_is_a_usage_error(capsys):
    assert runner.run(_args("no-such-experiment")) == 2
    error = capsys.readouterr().err
    assert "unknown experiment 'no-such-experiment'" in error and "convergence" in error


def test_missing_name_and_bad_options_are_usage_errors(capsys):
    assert runner.run(_args()) == 2
    assert runner.run(_args("losses", "--threads", "0")) == 2
    assert runner.run(_args("losses", "--quick-for", "losses")) == 2
    assert runner.run(_args("all", "--quick-for", "nope")) == 2
    assert runner.run(_args("--list", "losses")) == 2
    assert "error" in capsys.readouterr().err


def _fake_module(name, verdict="holds", figure=True, fail=False):
    """An experiment module following the contract, writing a tiny PNG and its JSON."""
    module = types.ModuleType(f"recgrad.experiments.fake_{name.replace('-', '_')}")
    module.NAME, module.DESCRIPTION = name, f"the {name} stand-in"

    def run(out_dir, quick=False, seed=0):
        if fail:
            raise RuntimeError("boom")
        from recgrad.experiments.common import figure as new_figure
        from recgrad.experiments.common import save_figure, write_result

        fig, axes = new_figure(1, 1)
        axes[0, 0].plot([0, 1], [seed, quick])
        figures = [save_figure(fig, out_dir, f"{name}.png")] if figure else []
        claims = [{"claim": f"{name} | claim", "verdict": verdict, "evidence": f"measured {seed} at quick={quick}"}]
        return write_result(out_dir, {"name": name, "figures": figures, "numbers": {"x": 1.0}, "claims": claims,
                                      "verdict": f"{name} verdict paragraph"})

    module.run = run
    return module


@pytest.fixture
def fake_registry(monkeypatch):
    modules = {"alpha": _fake_module("alpha"), "beta": _fake_module("beta", verdict="does not hold")}
    for module in modules.values():
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(experiments, "EXPERIMENTS",
                        tuple((name, module.__name__.rsplit(".", 1)[1]) for name, module in modules.items()))
    return modules


def test_all_quick_writes_results_and_findings(tmp_path, fake_registry, capsys):
    out = tmp_path / "docs" / "figures"
    assert runner.run(_args("all", "--quick", "--out", str(out), "--seed", "3")) == 0
    findings = (tmp_path / "docs" / "findings.md").read_text()
    row = ("| alpha \\| claim |  | [alpha](#alpha) | measured 3 at quick=True ([figure](figures/alpha.png)) "
           "| **holds** |")
    assert row in findings
    assert "**does not hold**" in findings
    assert "beta verdict paragraph" in findings and "![beta: beta.png](figures/beta.png)" in findings
    assert "recgrad experiment all --quick --out" in findings and "quick mode" in findings
    assert re.search(r"Generated on \d{4}-\d\d-\d\d (at commit \w+ )?by `recgrad experiment all", findings)
    assert (out / "alpha.json").is_file() and (out / "beta.png").is_file()
    assert "[holds] alpha | claim" in capsys.readouterr().out


def test_all_keeps_going_when_one_experiment_fails(tmp_path, fake_registry, monkeypatch):
    broken = _fake_module("gamma", fail=True)
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    entry = ("gamma", broken.__name__.rsplit(".", 1)[1])
    monkeypatch.setattr(experiments, "EXPERIMENTS", experiments.EXPERIMENTS + (entry,))
    findings = tmp_path / "page.md"
    assert runner.run(_args("all", "--quick", "--out", str(tmp_path / "figs"), "--findings", str(findings))) == 1
    text = findings.read_text()
    assert "alpha verdict paragraph" in text and "RuntimeError: boom" in text


def test_one_experiment_through_the_runner(tmp_path, fake_registry, capsys):
    assert runner.run(_args("alpha", "--quick", "--out", str(tmp_path / "figs"))) == 0
    out = capsys.readouterr().out
    assert "alpha verdict paragraph" in out and str(tmp_path / "figs" / "alpha.png") in out
    assert not (tmp_path / "findings.md").exists()  # only `all` writes the findings page


def test_missing_module_and_malformed_results_are_clear_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiments, "EXPERIMENTS", (("ghost", "no_such_module"),))
    with pytest.raises(experiments.ExperimentError, match="experiment 'ghost': cannot import"):
        experiments.load("ghost")
    assert runner.run(_args("ghost", "--out", str(tmp_path))) == 1
    assert "cannot import recgrad.experiments.no_such_module" in capsys.readouterr().err
    bad = _fake_module("bad", verdict="probably")
    with pytest.raises(experiments.ExperimentError, match="verdict 'probably'"):
        runner.run_one(bad, tmp_path)
    no_figure = _fake_module("nofig")
    no_figure.run = lambda out_dir, quick=False, seed=0: {"name": "nofig", "figures": ["missing.png"], "numbers": {},
                                                          "claims": [], "verdict": "v"}
    with pytest.raises(experiments.ExperimentError, match="figure 'missing.png' was not written"):
        runner.run_one(no_figure, tmp_path)


def test_findings_list_the_verdicts_that_change_with_the_data(tmp_path):
    from recgrad.experiments import findings

    claims = [{"claim": "c", "verdict": "holds", "evidence": "e", "data": "synthetic"},
              {"claim": "c", "verdict": "does not hold", "evidence": "e", "data": "digits"},
              {"claim": "d", "verdict": "holds", "evidence": "e", "data": "synthetic"},
              {"claim": "d", "verdict": "holds", "evidence": "e", "data": "digits"}]
    result = {"name": "x", "figures": [], "numbers": {}, "claims": claims, "verdict": "v", "seconds": 1.0,
              "quick": True, "description": "x"}
    page = findings.write([result], [], tmp_path / "f.md", tmp_path, command="cmd", seed=0).read_text()
    assert "| c | digits | [x](#x) | e | **does not hold** |" in page
    assert "- c: holds on synthetic; does not hold on digits." in page
    assert "- d:" not in page


def test_command_line_runs_an_experiment_from_any_folder(tmp_path):
    """`recgrad experiment NAME --quick` as a user types it, from a folder outside the source checkout."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "recgrad.cli", "experiment", "activations", "--quick", "--out",
                           "figs"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "activations:" in done.stdout and (tmp_path / "figs" / "activations.json").is_file()


def test_a_diverging_mlp_stops_and_counts_as_behind(monkeypatch):
    from recgrad.experiments.common import synthetic_classification

    monkeypatch.setattr(convergence, "LR", 100.0)
    data = synthetic_classification(256, 64, 20, 4, np.random.default_rng(0))
    record = convergence._train_mlp(data, 8, "relu", steps=40, record_every=5, seed=1)
    assert record["diverged_at"] is not None and record["step"][-1] < record["diverged_at"]
    assert all(np.isfinite(record["loss"]))
    assert convergence._compare(None, 0.5, higher_is_better=True) == "behind"
    assert convergence._compare(0.5, None, higher_is_better=False) == "ahead"
    assert convergence._compare(None, None, higher_is_better=True) == "tie"


def test_a_claim_whose_runs_all_diverged_says_it_lacks_evidence():
    run = {"final_test_accuracy": None, "final_test_accuracy_std": None, "final_loss": None, "diverged_at": [150],
           "seconds": 1.0}
    numbers = {"data": "digits", "depths": {"deep": 16}, "steps": 500,
               "deep": {a: dict(run) for a in ("relu", "gelu", "swish")}}
    entry = convergence._smooth_vs_relu_mlp(numbers)
    assert entry["verdict"] == "does not hold" and entry["data"] == "digits"
    assert "for want of evidence" in entry["evidence"] and "relu diverged (step 150)" in entry["evidence"]
