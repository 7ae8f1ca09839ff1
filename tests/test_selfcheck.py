import numpy as np

from recgrad import gradcheck
from recgrad.selfcheck import format_results, run_checks


def test_every_registered_gradient_passes():
    results = run_checks(seed=0)
    failed = [r.name for r in results if not r.ok]
    assert not failed, f"gradient check failed for {failed}"
    names = {r.name for r in results}
    for expected in ("sigmoid", "gelu(tanh)", "softmax_jacobian", "nn.Linear", "BPRLoss",
                     "InfoNCELoss(cosine, in-batch)", "models.MLP", "models.NeuMF", "models.LightGCN(2 layers)",
                     "CrossEntropyLoss(indices, weight, smoothing)",
                     "CrossEntropyLoss(probabilities, weight)", "NLLLoss(weight, ignore_index)", "MSELoss"):
        assert expected in names


def test_table_reports_failures():
    table = format_results(run_checks(seed=1))
    assert table.splitlines()[-1].endswith("0 failed")


def test_gradcheck_catches_a_wrong_gradient():
    x = (np.linspace(-2.0, 2.0, 7),)
    ok, _, rel = gradcheck(np.square, x, lambda inputs, g: (g * 2.0 * inputs[0],))
    assert ok and rel < 1e-6
    ok, _, rel = gradcheck(np.square, x, lambda inputs, g: (g * 2.02 * inputs[0],))
    assert not ok and rel > 5e-3


def test_gradcheck_reports_a_wrong_shape_without_raising():
    ok, abs_err, _ = gradcheck(np.square, (np.ones(3),), lambda inputs, g: (np.ones(4),))
    assert not ok and abs_err == float("inf")
