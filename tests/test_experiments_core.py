"""The core experiments in quick mode: each writes its files and its claims still come out as measured.

Each experiment runs once per module (a fixture) into a temporary directory; the tests then assert
the qualitative result its verdict depends on, so a regression in the core (an activation, a
derivative, an initialiser, a layer's backward) shows up here as a failing claim.
"""

import json

import numpy as np
import pytest

from recgrad.experiments import activations_plot, common, cost, depth, dying_relu, init_distributions

VERDICTS = {"holds", "holds with conditions", "does not hold"}
MAX_FIGURE_BYTES = 200_000


def _run(module, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp(module.NAME)
    result = module.run(out_dir, quick=True, seed=0)
    return out_dir, result


def _check_contract(module, out_dir, result):
    assert result["name"] == module.NAME
    assert isinstance(module.DESCRIPTION, str) and module.DESCRIPTION
    assert set(result) == {"name", "figures", "numbers", "claims", "verdict"}
    assert result["figures"]
    for filename in result["figures"]:
        path = out_dir / filename
        assert path.suffix == ".png"
        assert 0 < path.stat().st_size < MAX_FIGURE_BYTES
    with open(out_dir / f"{module.NAME}.json", encoding="utf-8") as handle:
        assert json.load(handle) == json.loads(json.dumps(result))
    for entry in result["claims"]:
        assert {"claim", "verdict", "evidence"} <= set(entry) <= {"claim", "verdict", "evidence", "figure", "data"}
        assert entry["verdict"] in VERDICTS
    assert isinstance(result["verdict"], str) and len(result["verdict"]) > 80


def _verdicts(result, data="synthetic"):
    """{claim: verdict} of the claims judged on `data` (or carrying no data set)."""
    return {entry["claim"]: entry["verdict"] for entry in result["claims"] if entry.get("data", data) == data}


@pytest.fixture(scope="module")
def activations_run(tmp_path_factory):
    return _run(activations_plot, tmp_path_factory)


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    return _run(depth, tmp_path_factory)


@pytest.fixture(scope="module")
def dying_run(tmp_path_factory):
    return _run(dying_relu, tmp_path_factory)


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory):
    return _run(cost, tmp_path_factory)


@pytest.fixture(scope="module")
def init_run(tmp_path_factory):
    return _run(init_distributions, tmp_path_factory)


def test_activations_contract(activations_run):
    _check_contract(activations_plot, *activations_run)


def test_activations_derivatives_match_finite_differences(activations_run):
    numbers = activations_run[1]["numbers"]
    assert numbers["max_abs_error_overall"] < 1e-6
    for name, errors in numbers["max_abs_error"].items():
        assert errors["closed_form_vs_fd"] < 1e-6, name
        assert errors["layer_backward_vs_fd"] < 1e-6, name
    expected = {"sigmoid", "tanh", "relu", "gelu", "gelu-tanh", "softmax"}
    assert expected <= set(numbers["max_abs_error"])
    assert all(verdict == "holds" for verdict in _verdicts(activations_run[1]).values())


def test_activations_closed_form_facts(activations_run):
    numbers = activations_run[1]["numbers"]
    assert numbers["sigmoid_grad_max"] == pytest.approx(0.25, abs=1e-3)
    assert 1e-4 < numbers["gelu_tanh_vs_exact_max_abs"] < 1e-3  # the approximation is close, not exact
    gaps = list(numbers["swish_vs_relu_max_abs"].values())  # betas 0.5, 1, 2: gap = 0.2785 / beta
    assert gaps == pytest.approx([0.5569, 0.2785, 0.1392], abs=1e-3)


def test_depth_contract(depth_run):
    _check_contract(depth, *depth_run)


def test_depth_sigmoid_gradients_vanish(depth_run):
    results = depth_run[1]["numbers"]["results"]["synthetic"]
    for scheme in ("xavier", "kaiming", "default"):
        summary = results["sigmoid"][scheme]["summary"]["init"]
        assert summary["weight_grad_first_over_last"] < 1e-3, scheme
    # A sigmoid layer scales the back-propagated gradient by at most 1/4 (times ~1 from Xavier weights).
    norms = results["sigmoid"]["xavier"]["init"]["output_grad_norm"]
    assert norms[0] / norms[-1] < 0.3 ** (depth.DEPTH - 1)
    assert results["sigmoid"]["xavier"]["first_layer_relative_change"] < 1e-6


def test_depth_init_pairings(depth_run):
    results = depth_run[1]["numbers"]["results"]["synthetic"]

    def spread(activation, scheme):
        return results[activation][scheme]["summary"]["init"]["output_grad_spread"]

    assert spread("relu", "kaiming") < 10.0
    assert spread("relu", "xavier") > 100.0  # each ReLU layer halves the variance: 2^-14 over 29 layers
    assert spread("tanh", "xavier") < 10.0
    assert spread("gelu", "kaiming") < 10.0
    for activation in ("sigmoid", "tanh", "relu", "gelu", "swish"):
        assert spread(activation, "default") > 1e3, activation  # Var 1/(3 fan_in) shrinks every layer
    verdicts = _verdicts(depth_run[1])
    assert verdicts["Kaiming init suits ReLU"] == "holds"
    assert verdicts["Xavier init suits sigmoid"] == "does not hold"
    assert verdicts["Sigmoid causes vanishing gradients in deep networks"] == "holds"


def test_depth_relu_weight_gradients_are_scale_balanced(depth_run):
    # Positive homogeneity: without biases, rescaling a ReLU net's weights moves every layer's weight
    # gradient together, so even Xavier keeps ||dL/dW_l|| balanced while ||dL/dz_l|| vanishes.
    results = depth_run[1]["numbers"]["results"]["synthetic"]
    assert results["relu"]["xavier"]["summary"]["init"]["weight_grad_spread"] < 10.0
    assert np.isfinite(results["relu"]["kaiming"]["summary"]["trained"]["loss"])


def test_dying_relu_contract(dying_run):
    _check_contract(dying_relu, *dying_run)


def test_relu_dies_at_a_large_learning_rate_only(dying_run):
    results = dying_run[1]["numbers"]["results"]["synthetic"]
    assert results["relu"]["0.01"]["final_dead_fraction"] == 0.0
    assert results["relu"]["0.3"]["final_dead_fraction"] > 0.1
    assert results["relu"]["1"]["final_dead_fraction"] > 0.3
    assert not results["relu"]["1"]["diverged"]
    # For ReLU, dead (z <= 0 on every training input) and stuck (no gradient left) are the same units.
    for lr, run in results["relu"].items():
        assert run["dead_fraction"] == run["stuck_fraction"], lr
    assert results["relu"]["1"]["dead_units_median_max_slope"] == 0.0
    for activation in ("gelu", "swish"):
        assert results[activation]["0.01"]["final_dead_fraction"] == 0.0
        assert results[activation]["0.3"]["final_stuck_fraction"] < results["relu"]["0.3"]["final_stuck_fraction"] / 2
    verdicts = _verdicts(dying_run[1])
    assert verdicts["ReLU can die"] == "holds with conditions"


def test_cost_contract(cost_run):
    _check_contract(cost, *cost_run)


def test_cost_ratios(cost_run):
    numbers = cost_run[1]["numbers"]
    implementations = ["reference", "kernels"] if numbers["kernels_available"] else ["reference"]
    assert sorted(numbers["ratio_to_relu"]) == sorted(implementations)
    for impl in implementations:
        assert numbers["ratio_to_relu"][impl]["relu"] == 1.0
        assert all(value > 0.0 for value in numbers["ns_per_element"][impl].values())
    # In NumPy, exact GELU (erfc, several passes) and Swish cost several times ReLU: a wide margin,
    # robust to a loaded machine since the fastest of the repeats is kept.
    assert numbers["ratio_to_relu"]["reference"]["gelu"] > 2.0
    assert numbers["ratio_to_relu"]["reference"]["swish"] > 2.0
    swish = next(c for c in cost_run[1]["claims"] if c["claim"].startswith("Swish is as cheap"))
    assert swish["verdict"] != "holds"  # never cheap in the reference, so at most "with conditions"


def test_init_contract(init_run):
    _check_contract(init_distributions, *init_run)


def test_init_distributions_match_formulas(init_run):
    distributions = init_run[1]["numbers"]["distributions"]
    for label, entry in distributions.items():
        assert entry["std_rel_error"] < 0.02, label
        assert entry["ks_pvalue"] > 1e-3, label
        if entry["kind"] == "uniform":
            assert entry["bound_rel_error"] < 0.02, label
            assert entry["empirical_max_abs"] <= entry["formula_scale"], label
    fan_out, fan_in = init_run[1]["numbers"]["weight_shape"]
    assert distributions["xavier_uniform"]["formula_scale"] == pytest.approx(np.sqrt(6.0 / (fan_in + fan_out)))
    assert distributions["kaiming_normal"]["formula_std"] == pytest.approx(np.sqrt(2.0 / fan_in))
    assert distributions["linear_default"]["formula_scale"] == pytest.approx(1.0 / np.sqrt(fan_in))


def test_init_signal_through_depth(init_run):
    results = init_run[1]["numbers"]["signal"]["results"]
    assert 0.5 <= results["relu"]["kaiming"]["last_over_first"] <= 2.0
    assert results["relu"]["xavier"]["per_layer_factor"] == pytest.approx(0.5, abs=0.05)
    assert results["tanh"]["xavier"]["last_over_first"] < 0.1  # gain 1 lets tanh's signal decay
    assert results["tanh"]["xavier-gain-5/3"]["last_over_first"] > 0.1
    assert results["sigmoid"]["xavier"]["signal_last_over_first"] < 1e-6


# ---------------------------------------------------------------- the real data set (scikit-learn's digits)


def test_digits_data_is_standardised_and_split():
    pytest.importorskip("sklearn")
    data = common.digits_classification(360, np.random.default_rng(0))
    assert (data.name, data.features, data.classes) == ("digits", 64, 10)
    assert data.x.shape == (1437, 64) and data.x_test.shape == (360, 64)
    np.testing.assert_allclose(data.x.mean(axis=0), 0.0, atol=1e-12)
    assert set(np.unique(data.y)) == set(range(10))


@pytest.mark.parametrize("module, name", [(depth, "digits"), (dying_relu, "digits")])
def test_claims_are_judged_on_the_digits_too(module, name, depth_run, dying_run):
    pytest.importorskip("sklearn")
    result = {depth: depth_run, dying_relu: dying_run}[module][1]
    judged = {entry.get("data") for entry in result["claims"]}
    assert judged == {"synthetic", name}
    per_data = [_verdicts(result, data) for data in ("synthetic", name)]
    assert set(per_data[0]) == set(per_data[1])  # every claim on both data sets
    assert any(figure.endswith(f"_{name}.png") for figure in result["figures"])


def test_depth_sigmoid_vanishes_on_the_digits_too(depth_run):
    pytest.importorskip("sklearn")
    assert _verdicts(depth_run[1], "digits")["Sigmoid causes vanishing gradients in deep networks"] == "holds"


def test_without_scikit_learn_the_real_data_part_is_skipped_with_a_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(common, "digits_classification", lambda n_test, rng: None)
    result = depth.run(tmp_path, quick=True, seed=0)
    assert {entry["data"] for entry in result["claims"]} == {"synthetic"}
    assert list(result["numbers"]["results"]) == ["synthetic"]
    assert common.DIGITS_MISSING in result["verdict"]
    assert "depth: scikit-learn is not installed" in capsys.readouterr().err
