"""Learning-rate schedulers: PyTorch parity over 30 steps (fixture + live), closed forms, resume, errors."""

import doctest
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from recgrad.nn import Parameter
from recgrad.optim import SGD, Adam, CosineAnnealingLR, ExponentialLR, LinearLR, StepLR, lr_scheduler

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "optim.npz"
SCHEDULERS = {"StepLR": StepLR, "ExponentialLR": ExponentialLR, "CosineAnnealingLR": CosineAnnealingLR,
              "LinearLR": LinearLR}


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_optim", ROOT / "scripts" / "fixtures" / "make_optim.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
GRID = gen.scheduler_grid()


def make_optimizer(lrs=gen.GROUP_LRS):
    return SGD([{"params": [Parameter(np.zeros(1))], "lr": lr} for lr in lrs])


def recgrad_schedule(name, kwargs, steps=gen.SCHEDULER_STEPS):
    """get_last_lr() after construction and after each step, with optimizer.step() first: (steps+1, groups)."""
    opt = make_optimizer()
    scheduler = SCHEDULERS[name](opt, **kwargs)
    values = [scheduler.get_last_lr()]
    for _ in range(steps):
        opt.step()
        scheduler.step()
        values.append(scheduler.get_last_lr())
        assert [group["lr"] for group in opt.param_groups] == values[-1]
    return np.array(values)


@pytest.mark.parametrize("key,name,kwargs", GRID, ids=[entry[0] for entry in GRID])
def test_schedule_matches_fixture(key, name, kwargs):
    with np.load(FIXTURE, allow_pickle=False) as data:
        expected = data[f"{key}/lrs"]
    np.testing.assert_allclose(recgrad_schedule(name, kwargs), expected, rtol=1e-12, atol=0)


@pytest.mark.torch
@pytest.mark.parametrize("key,name,kwargs", GRID, ids=[entry[0] for entry in GRID])
def test_schedule_matches_live_torch(key, name, kwargs):
    pytest.importorskip("torch")
    np.testing.assert_allclose(recgrad_schedule(name, kwargs), gen.torch_scheduler_run(name, kwargs),
                               rtol=1e-12, atol=0)


@pytest.mark.torch
def test_external_lr_change_carries_through_like_torch():
    """The schedulers are chainable: halving group["lr"] mid-way is kept by later steps, as in torch."""
    torch = pytest.importorskip("torch")
    ours_opt = make_optimizer()
    theirs_opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr}
                                  for lr in gen.GROUP_LRS])
    ours = CosineAnnealingLR(ours_opt, T_max=12, eta_min=0.001)
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(theirs_opt, T_max=12, eta_min=0.001)
    for step in range(20):
        if step == 5:
            for group in ours_opt.param_groups + theirs_opt.param_groups:
                group["lr"] *= 0.5
        theirs_opt.step()
        ours.step()
        theirs.step()
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Closed forms (the recursions equal them when nothing else touches the lr)


def closed_form(name, kwargs, base_lr, e):
    if name == "StepLR":
        return base_lr * kwargs.get("gamma", 0.1) ** (e // kwargs["step_size"])
    if name == "ExponentialLR":
        return base_lr * kwargs["gamma"] ** e
    if name == "CosineAnnealingLR":
        eta_min = kwargs.get("eta_min", 0.0)
        return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * e / kwargs["T_max"])) / 2
    start, end, total = kwargs.get("start_factor", 1 / 3), kwargs.get("end_factor", 1.0), kwargs.get("total_iters", 5)
    return base_lr * (start + (end - start) * min(e, total) / total)


@pytest.mark.parametrize("key,name,kwargs", GRID, ids=[entry[0] for entry in GRID])
def test_schedule_equals_closed_form(key, name, kwargs):
    values = recgrad_schedule(name, kwargs)
    expected = np.array([[closed_form(name, kwargs, lr, e) for lr in gen.GROUP_LRS] for e in range(len(values))])
    np.testing.assert_allclose(values, expected, rtol=1e-10, atol=1e-15)


def test_linear_warmup_reaches_base_lr_and_stays():
    opt = make_optimizer([0.3])
    scheduler = LinearLR(opt, start_factor=0.25, total_iters=4)
    assert scheduler.get_last_lr() == [0.075]
    for _ in range(4):
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.3, rel=1e-15)
    for _ in range(3):
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.3, rel=1e-15)


# ----------------------------------------------------------------------------------------------
# Bookkeeping: initial_lr, get_last_lr, state_dict / resume


def test_initial_lr_is_recorded_and_an_existing_one_kept():
    opt = make_optimizer()
    ExponentialLR(opt, gamma=0.5).step()
    assert [group["initial_lr"] for group in opt.param_groups] == list(gen.GROUP_LRS)
    second = StepLR(opt, step_size=1, gamma=0.1)  # keeps initial_lr from the first scheduler (torch)
    assert second.base_lrs == list(gen.GROUP_LRS)


def test_get_last_lr_is_a_copy():
    opt = make_optimizer()
    scheduler = ExponentialLR(opt, gamma=0.5)
    scheduler.get_last_lr()[0] = 99.0
    assert scheduler.get_last_lr()[0] == gen.GROUP_LRS[0]


@pytest.mark.parametrize("key,name,kwargs", GRID, ids=[entry[0] for entry in GRID])
def test_resume_from_state_dicts_continues_the_schedule(key, name, kwargs):
    """Build optimizer and scheduler, load the optimizer's state, then the scheduler's (torch's order)."""
    uninterrupted = recgrad_schedule(name, kwargs)
    w = Parameter(np.zeros(1))
    opt = Adam([{"params": [w], "lr": gen.GROUP_LRS[0]}])
    scheduler = SCHEDULERS[name](opt, **kwargs)
    for _ in range(11):
        scheduler.step()
    opt_state, scheduler_state = opt.state_dict(), scheduler.state_dict()

    w2 = Parameter(np.zeros(1))
    opt2 = Adam([{"params": [w2], "lr": gen.GROUP_LRS[0]}])
    scheduler2 = SCHEDULERS[name](opt2, **kwargs)
    opt2.load_state_dict(opt_state)
    scheduler2.load_state_dict(scheduler_state)
    resumed = [scheduler2.get_last_lr()[0]]
    for _ in range(gen.SCHEDULER_STEPS - 11):
        scheduler2.step()
        resumed.append(scheduler2.get_last_lr()[0])
    np.testing.assert_array_equal(resumed, uninterrupted[11:, 0])


def test_load_state_dict_rejects_unknown_keys():
    scheduler = StepLR(make_optimizer(), step_size=2)
    with pytest.raises(KeyError, match="expected keys"):
        scheduler.load_state_dict({**scheduler.state_dict(), "surprise": 1})


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("make,argument", [
    (lambda opt: StepLR(opt, step_size=0), "step_size"),
    (lambda opt: StepLR(opt, step_size=2.5), "step_size"),
    (lambda opt: CosineAnnealingLR(opt, T_max=0), "T_max"),
    (lambda opt: LinearLR(opt, start_factor=0.0), "start_factor"),
    (lambda opt: LinearLR(opt, start_factor=1.5), "start_factor"),
    (lambda opt: LinearLR(opt, end_factor=1.5), "end_factor"),
    (lambda opt: LinearLR(opt, total_iters=-1), "total_iters"),
])
def test_invalid_arguments_raise_value_error_naming_them(make, argument):
    with pytest.raises(ValueError, match=f"^{argument}"):
        make(make_optimizer())


def test_scheduler_needs_an_optimizer():
    with pytest.raises(TypeError, match="optimizer"):
        StepLR([{"lr": 0.1}], step_size=1)


def test_docstring_examples():
    failures, _ = doctest.testmod(lr_scheduler, raise_on_error=False)
    assert failures == 0
