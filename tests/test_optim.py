"""The classifier lr multiplier (train.classifier_lr_mult): its parameter groups, their lrs under the
schedule, wrapped and pruned models, every registered model, the schema and the resume fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from actionrepro import config
from actionrepro.engine import optim
from actionrepro.engine.settings import TrainSettings
from actionrepro.errors import ConfigError
from actionrepro.models.registry import build_model, model_names

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


class Net(nn.Module):
    """conv-BN, then the classifier `fc` (every model's name for it)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.features(x))


class Wrapped(nn.Module):
    """Stands in for DistributedDataParallel, which names the wrapped network `module`."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.module = inner


def group_params(opt: torch.optim.Optimizer) -> dict[str, set[int]]:
    return {g["name"]: {id(p) for p in g["params"]} for g in opt.param_groups}


def sgd(model: nn.Module, mult: float, lr: float = 0.1, no_decay_norm_bias: bool = True) -> torch.optim.Optimizer:
    return optim.make_optimizer(model, name="sgd", lr=lr, weight_decay=1e-4, momentum=0.9, nesterov=False,
                                no_decay_norm_bias=no_decay_norm_bias, classifier_lr_mult=mult)


def demo_params(**train) -> dict:
    params = config.load(ROOT / "config" / "demo.yaml")
    params["train"].update(train)
    return params


# ---------------------------------------------------------------- groups and lrs
def test_classifier_groups_train_at_lr_times_mult_with_decay_on_the_weight_only():
    model = Net()
    opt = sgd(model, 5.0)
    groups = {g["name"]: g for g in opt.param_groups}
    assert opt.param_groups[0]["name"] == "decay"  # the lr the logs show is the base lr
    assert group_params(opt)["classifier_decay"] == {id(model.fc.weight)}
    assert group_params(opt)["classifier_no_decay"] == {id(model.fc.bias)}
    assert groups["classifier_decay"]["lr"] == pytest.approx(0.5)
    assert groups["classifier_no_decay"]["lr"] == pytest.approx(0.5)
    assert groups["classifier_decay"]["weight_decay"] == 1e-4 and groups["classifier_no_decay"]["weight_decay"] == 0
    assert groups["decay"]["lr"] == groups["no_decay"]["lr"] == 0.1
    classifier = {id(model.fc.weight), id(model.fc.bias)}
    assert not classifier & (group_params(opt)["decay"] | group_params(opt)["no_decay"])


def test_without_norm_bias_exemption_the_classifier_is_one_decayed_group():
    model = Net()
    opt = sgd(model, 5.0, no_decay_norm_bias=False)
    assert [g["name"] for g in opt.param_groups] == ["decay", "classifier_decay"]
    assert group_params(opt)["classifier_decay"] == {id(model.fc.weight), id(model.fc.bias)}


def test_the_schedule_keeps_the_classifier_at_mult_times_the_base_lr():
    model = Net()
    opt = sgd(model, 5.0, lr=0.2)
    sched = optim.make_scheduler(opt, schedule="step", epochs=4, steps_per_epoch=2, warmup_epochs=1, milestones=[2],
                                 gamma=0.1)
    factor = optim.lr_factor("step", total_steps=8, warmup_steps=2, steps_per_epoch=2, milestones=[2], gamma=0.1)
    for s in range(8):
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        assert lrs["decay"] == lrs["no_decay"] == pytest.approx(0.2 * factor(s)), s
        assert lrs["classifier_decay"] == lrs["classifier_no_decay"] == pytest.approx(1.0 * factor(s)), s
        opt.step()
        sched.step()
    assert lrs["classifier_decay"] == pytest.approx(0.1)  # 0.2 x 5 x gamma after the milestone


def test_default_mult_gives_the_two_groups_of_one_lr_as_before():
    model = Net()
    opt = sgd(model, 1.0)
    assert [g["name"] for g in opt.param_groups] == ["decay", "no_decay"]
    assert {g["lr"] for g in opt.param_groups} == {0.1}
    assert not any("lr_mult" in g for g in opt.param_groups)
    assert group_params(opt)["decay"] == {id(model.features[0].weight), id(model.fc.weight)}
    plain = optim.param_groups(model, 1e-4, True)  # the call of callers that know no multiplier
    assert [[id(p) for p in g["params"]] for g in plain] == [[id(p) for p in g["params"]] for g in opt.param_groups]


def test_adamw_gets_the_same_groups():
    model = Net()
    opt = optim.make_optimizer(model, name="adamw", lr=0.01, weight_decay=1e-4, momentum=0.9, nesterov=False,
                               no_decay_norm_bias=True, classifier_lr_mult=10)
    assert {g["name"]: g["lr"] for g in opt.param_groups}["classifier_decay"] == pytest.approx(0.1)


def test_built_from_validated_params_and_from_settings():
    params = demo_params(classifier_lr_mult=5, lr=0.01)
    model = Net()
    for opt in (optim.build_optimizer(model, params["train"]),
                optim.optimizer_for(model, TrainSettings.from_params(params))):
        assert {g["name"]: g["lr"] for g in opt.param_groups}["classifier_decay"] == pytest.approx(0.05)
    finetune = TrainSettings.from_params(params, lr=0.001)  # the pruning fine-tune's lr override
    assert finetune.classifier_lr_mult == 5.0
    lrs = {g["name"]: g["lr"] for g in optim.optimizer_for(model, finetune).param_groups}
    assert lrs["classifier_decay"] == pytest.approx(0.005) and lrs["decay"] == pytest.approx(0.001)


def test_a_model_without_a_classifier_refuses_a_multiplier():
    with pytest.raises(ConfigError, match="classifier_lr_mult"):
        sgd(nn.Sequential(nn.Linear(2, 2)), 5.0)
    sgd(nn.Sequential(nn.Linear(2, 2)), 1.0)  # the default asks nothing of the model


# ---------------------------------------------------------------- wrapped, pruned and registered models
@pytest.mark.parametrize("name", ["fc.weight", "module.fc.bias", "_orig_mod.fc.weight",
                                  "_orig_mod.module.fc.weight", "module._orig_mod.fc.bias"])
def test_classifier_names_are_found_through_ddp_and_compile_prefixes(name):
    assert optim.is_classifier(name)


@pytest.mark.parametrize("name", ["backbone.fc.weight", "fcx.weight", "module.backbone.fc.bias", "conv.fc"])
def test_other_names_are_not_the_classifier(name):
    assert not optim.is_classifier(name)


def test_ddp_and_compiled_wrappers_still_split_off_the_classifier():
    for model in (Wrapped(Net()), torch.compile(Net()), Wrapped(torch.compile(Net()))):
        fc = dict(model.named_parameters())
        weight = next(p for n, p in fc.items() if n.endswith("fc.weight"))
        assert group_params(sgd(model, 5.0))["classifier_decay"] == {id(weight)}, type(model).__name__


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_has_its_classifier_split_off(name):
    model = build_model(name, "tiny", 5)
    groups = group_params(sgd(model, 5.0))
    assert groups["classifier_decay"] | groups["classifier_no_decay"] == {id(p) for p in model.fc.parameters()}


def test_a_pruned_model_keeps_its_classifier_group():
    from actionrepro.pruning import structure

    model = build_model("tsn", "tiny", 5)
    structure.prune_model(model, 0.5)
    groups = group_params(sgd(model, 5.0))
    assert groups["classifier_decay"] == {id(model.fc.weight)} and groups["classifier_no_decay"] == {id(model.fc.bias)}


# ---------------------------------------------------------------- schema and resume fingerprint
@pytest.mark.parametrize("bad", [0, -1.0, "5"])
def test_schema_rejects_a_multiplier_that_is_not_positive(bad):
    params = demo_params()
    params["train"]["classifier_lr_mult"] = bad
    with pytest.raises(ConfigError, match="classifier_lr_mult"):
        config.validate(params)
    in_recipe = demo_params()
    in_recipe["recipes"] = {"tsm": {"train": {"classifier_lr_mult": bad}}}
    with pytest.raises(ConfigError, match="classifier_lr_mult"):
        config.validate(in_recipe)


def test_schema_fills_the_default_and_accepts_a_recipe_value():
    assert config.validate(demo_params())["train"]["classifier_lr_mult"] == 1.0
    params = demo_params()
    params["recipes"] = {"tsm": {"train": {"classifier_lr_mult": 5}}}
    assert config.resolve(config.validate(params), "synth_ucf101", "tsm")["train"]["classifier_lr_mult"] == 5


def fingerprint(params: dict) -> str:
    return TrainSettings.from_params(params).fingerprint({"model": "tsm"}, (10, 0), "none")


def test_fingerprint_changes_with_the_multiplier():
    assert fingerprint(demo_params(classifier_lr_mult=5)) != fingerprint(demo_params())
    assert fingerprint(demo_params(classifier_lr_mult=5)) != fingerprint(demo_params(classifier_lr_mult=10))
