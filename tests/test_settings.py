"""The settings schema: one declaration per setting, from which flags, checks and defaults derive."""

import pytest

from recgrad.cli import make_parser
from recgrad.models import MF
from recgrad.train import Trainer
from recgrad.train import settings as run_settings
from recgrad.train.settings import SettingError, check_value, resolve


def test_every_setting_has_a_flag_with_its_help_and_nothing_else_does():
    parser = make_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {action.dest: action for action in train._actions if action.option_strings}
    for setting in run_settings.SETTINGS:
        action = flags.pop(setting.name)
        assert action.option_strings == [run_settings.flag_name(setting.name)]
        assert setting.help in action.help
    assert set(flags) == {"help", "config", "resume", "resume_from"}


def test_the_trainer_takes_exactly_the_training_and_evaluation_settings():
    names = run_settings.trainer_settings()
    assert "lr" in names and "topk" in names and "data" not in names and "threads" not in names
    assert set(run_settings.resume_settings()) <= set(names)


@pytest.mark.parametrize("name, text, value", [
    ("lr", "1e-3", 1e-3), ("epochs", "7", 7), ("topk", "10,20", [10, 20]), ("topk", [5], [5]),
    ("logq_correction", "true", True), ("normalize", "off", False), ("loss", "bce", "bce"),
    ("pretrained", "runs/gmf, runs/mlp", ["runs/gmf", "runs/mlp"]), ("pretrained", ("a", "b"), ["a", "b"]),
])
def test_flag_text_and_python_values_convert(name, text, value):
    assert check_value(name, text) == value


@pytest.mark.parametrize("name, value, message", [
    ("lr", 0, "lr: expected a number > 0, got 0"),
    ("lr", "abc", "lr: expected a number > 0"),
    ("lr", "nan", "lr: expected a number > 0"),
    ("epochs", 2.5, "epochs: expected an int >= 0"),
    ("validation", 1, "validation: expected a number >= 0 and < 1"),
    ("test_ratio", 0.0, "test_ratio: expected a number > 0 and < 1"),
    ("loss", "hinge", "loss: expected one of bpr, bce, infonce"),
    ("seed", -1, "seed: expected an int >= 0"),
    ("topk", "10,0", "topk: expected a list of ints >= 1"),
    ("logq_correction", "maybe", "logq_correction: expected true or false"),
    ("epochs", True, "epochs: expected an int"),
    ("pretrained", ["a", 3], "pretrained: expected a list of strings"),
    ("pretrained", [], "pretrained: expected a list of strings"),
    ("loss", "x" * 10_000, "..."),
])
def test_bad_values_are_one_line_naming_the_setting_and_what_is_allowed(name, value, message):
    with pytest.raises(SettingError) as error:
        check_value(name, value)
    text = str(error.value)
    assert message in text and "\n" not in text and len(text) < 200


def test_derived_defaults_follow_the_other_settings():
    assert resolve({"loss": "bpr"})["negatives"] == 1
    assert resolve({"loss": "bce"})["negatives"] == 4
    assert resolve({"loss": "infonce"})["negatives"] == 64
    assert resolve({"loss": "infonce", "negatives_mode": "shared"})["negatives"] == 1024
    assert resolve({"loss": "infonce", "negatives_mode": "in_batch"})["negatives"] is None
    assert resolve({"optimizer": "adamw"})["weight_decay"] == 1e-2
    assert resolve({"optimizer": "adam"})["weight_decay"] == 0.0
    assert resolve({"loss": "bpr"})["temperature"] is None  # does not apply: left unset
    assert resolve({"loss": "infonce"})["temperature"] == 0.1
    assert resolve({"optimizer": "hogwild"})["batch_size"] is None
    assert resolve({"lr_schedule": "cosine"})["lr_min"] == 0.0
    ccl = resolve({"loss": "ccl"})
    assert (ccl["negatives"], ccl["margin"], ccl["negative_weight"], ccl["normalize"]) == (256, 0.9, 150.0, True)
    assert resolve({"loss": "ccl", "negatives_mode": "shared"})["negatives"] == 1024
    assert resolve({"loss": "infonce"})["margin"] is None


def test_mf_with_bpr_defaults_to_the_measured_hogwild_recipe_and_other_models_to_adam():
    mf = resolve({})
    assert (mf["model"], mf["loss"], mf["optimizer"], mf["lr"], mf["lr_schedule"], mf["lr_min"], mf["epochs"],
            mf["l2"], mf["dns_candidates"], mf["eval_every"], mf["batch_size"]) == \
        ("mf", "bpr", "hogwild", 0.05, "cosine", 0.0, 60, 0.03, 32, 6, None)
    for other in ({"model": "neumf"}, {"model": "two-tower"}, {"loss": "infonce"}, {"loss": "bce"}):
        values = resolve(other)
        assert (values["optimizer"], values["lr"], values["lr_schedule"], values["epochs"], values["l2"],
                values["dns_candidates"], values["eval_every"], values["batch_size"]) == \
            ("adam", 0.01, "constant", 20, 1e-4, 1, 2, 2048), other
    # a rule follows a setting the user gives; a value the user gives wins over its rule
    assert resolve({"optimizer": "sparse_adam"})["lr"] == 0.01 and resolve({"optimizer": "hogwild"})["lr"] == 0.05
    assert resolve({"epochs": 7})["eval_every"] == 1 and resolve({"epochs": 25})["eval_every"] == 3
    assert resolve({"lr": 0.2, "dns_candidates": 4})["lr"] == 0.2
    # settings whose `applies` test a derived default see it: lr_min applies under the default cosine
    assert resolve({"lr_min": 1e-3})["lr_min"] == 1e-3
    with pytest.raises(SettingError, match="batch_size: applies only with optimizer"):
        resolve({"batch_size": 512})


def test_the_trainer_takes_its_model_defaults_from_the_model_it_trains():
    from recgrad.models import NeuMF

    assert Trainer(MF(3, 4, dim=2), progress=False).settings["optimizer"] == "hogwild"
    assert Trainer(NeuMF(3, 4, rng=0), loss="bce", progress=False).settings["optimizer"] == "adam"
    assert "model" not in Trainer(MF(3, 4, dim=2), progress=False).config()


def test_validation_is_ten_percent_of_a_user_subset_on_large_data_and_none_when_the_test_set_selects():
    from recgrad.train.build import validation_plan

    chosen = {"selection": "validation", "validation": None}
    assert validation_plan(chosen) == (0.1, 25_000)
    assert validation_plan({**chosen, "validation": 0.2}) == (0.2, None)
    assert validation_plan({"selection": "test", "validation": None}) == (0.0, None)


@pytest.mark.parametrize("values, message", [
    ({"temperature": 0.2}, "temperature: applies only with loss 'infonce'"),
    ({"lr_schedule": "constant", "lr_min": 1e-4}, "lr_min: applies only with lr_schedule 'cosine'"),
    ({"margin": 0.5}, "margin: applies only with loss 'ccl'"),
    ({"loss": "ccl", "margin": 1.0}, "margin: expected a number >= -1 and < 1, got 1.0"),
    ({"loss": "ccl", "negative_weight": -2}, "negative_weight: expected a number >= 0"),
    ({"loss": "ccl", "negatives_mode": "in_batch"}, "in_batch"),
    ({"popularity_alpha": 0.5}, "popularity_alpha: applies only with sampler 'popularity'"),
    ({"negatives_mode": "in_batch"}, "in_batch"),
    ({"lr_schedule": "cosine", "lr": 1e-3, "lr_min": 1e-3}, "lr_min: expected a value below lr"),
    ({"optimizer": "hogwild", "weight_decay": 0.1}, "weight_decay: hogwild"),
    ({"loss": "infonce", "dns_candidates": 4, "logq_correction": True}, "logq_correction"),
    ({"metric": "recall"}, "metric"),
    ({"no_such": 1}, "unknown setting 'no_such'"),
    ({"model": "gmf", "pretrained": ["a", "b"]}, "pretrained: applies only with model 'neumf'"),
    ({"model": "neumf", "pretrained": ["a", "b", "c"]}, "pretrained: expected 2 run directories"),
    ({"model": "mlp", "dim": 32}, "dim: applies only with model"),
    ({"model": "gmf", "mlp_layers": [8, 4]}, "mlp_layers: applies only with model 'neumf' or 'mlp'"),
])
def test_combinations_that_cannot_run_are_refused(values, message):
    with pytest.raises(SettingError, match=message):
        resolve(values)


def test_the_trainer_refuses_settings_of_other_components():
    from recgrad.models import MF

    with pytest.raises(SettingError, match="data: not a setting of this component"):
        Trainer(MF(3, 4, dim=2), data="gowalla")
