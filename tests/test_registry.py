"""The model registry: names, options validated against each builder, and the contract every
registered model keeps (input_spec, forward(rgb, flow) -> (B, K), prune_ignored_layers...)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from actionrepro import config
from actionrepro.errors import ConfigError
from actionrepro.inputs import InputSpec
from actionrepro.models import registry
from actionrepro.models.registry import (ModelInfo, Published, VideoModel, build_model, model_info, model_names,
                                         model_options, register)

BASELINES = ["i3d", "r2plus1d", "r3d", "tsm", "tsn"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that test-only models can be added to without leaking."""
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_INFO", dict(registry._INFO))


def inputs_for(spec: InputSpec, batch: int) -> dict[str, torch.Tensor]:
    """Random tensors in exactly the layout actionrepro.inputs documents for `spec`."""
    out = {}
    if spec.rgb:
        out["rgb"] = torch.randn(batch, spec.frames, 3, spec.size, spec.size)
    if spec.flow:
        out["flow"] = torch.randn(batch, spec.flow_segments, 2 * spec.flow_len, spec.size, spec.size)
    return out


def test_model_names_lists_every_baseline_sorted():
    names = model_names()
    assert set(BASELINES) <= set(names)
    assert names == sorted(names)


def test_registered_names_are_the_schemas_model_names():
    allowed = set(config.schema()["$defs"]["model"]["enum"])
    assert set(model_names()) <= allowed


def test_unknown_model_name_is_a_config_error_listing_known_models():
    with pytest.raises(ConfigError, match=r"unknown model 'tsn3'.*known models: .*tsm, tsn"):
        build_model("tsn3", "tiny", 5)


def test_unknown_option_is_a_config_error_naming_key_model_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        build_model("tsm", "tiny", 5, {"shift_div": 8, "shfit_place": "block"})
    message = str(err.value)
    assert "'shfit_place'" in message and "'tsm'" in message
    assert "allowed keys: backbone, dropout, pretrained, segments, shift_div, size" in message


def test_option_of_the_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match=r"architectures\.tsn\.segments = '8'"):
        build_model("tsn", "tiny", 5, {"segments": "8"})
    with pytest.raises(ConfigError, match=r"architectures\.tsn\.segments = True"):
        build_model("tsn", "tiny", 5, {"segments": True})


def test_integer_is_accepted_where_the_default_is_a_float():
    model = build_model("tsn", "tiny", 5, {"dropout": 0})
    assert model.dropout.p == 0.0


@pytest.mark.parametrize("scale, classes, match", [("huge", 5, "scale 'huge'"), ("tiny", 0, "num_classes"),
                                                   ("tiny", 2.0, "num_classes")])
def test_bad_scale_or_class_count_is_a_config_error(scale, classes, match):
    with pytest.raises(ConfigError, match=match):
        build_model("tsn", scale, classes)


def test_options_are_the_builders_keyword_parameters_with_defaults():
    assert model_options("tsm") == {"pretrained": "none", "backbone": None, "segments": 8, "size": None,
                                    "dropout": 0.5, "shift_div": 8}


def test_empty_architectures_section_of_the_demo_config_builds_defaults():
    params = config.load(Path(__file__).resolve().parents[1] / "config" / "demo.yaml")
    model = build_model("tsn", params["scale"], 3, params["architectures"].get("tsn", {}))
    assert model.input_spec.size == 32 and model.input_spec.segments == 8


def test_register_rejects_builders_whose_options_lack_defaults(scratch_registry):
    with pytest.raises(TypeError, match="needs a default"):
        @register("broken")
        def build(scale, num_classes, *, width):  # pragma: no cover - never called
            return None


def test_register_refuses_a_second_builder_under_the_same_name(scratch_registry):
    with pytest.raises(ValueError, match="registered twice"):
        @register("tsn")
        def build(scale, num_classes):  # pragma: no cover - never called
            return None


def test_builder_breaking_the_contract_fails_at_build_time(scratch_registry):
    @register("plain_linear")
    def build(scale, num_classes):
        return nn.Linear(3, num_classes)

    with pytest.raises(TypeError, match="input_spec is not an InputSpec.*prune_ignored_layers"):
        build_model("plain_linear", "tiny", 4)


def test_registered_builder_receives_scale_classes_and_options(scratch_registry):
    seen = {}

    class Tiny(VideoModel):
        def __init__(self, k):
            super().__init__()
            self.fc = nn.Linear(3, k)
            self.input_spec = InputSpec(size=8)

        def forward(self, rgb=None, flow=None):
            return self.fc(rgb.mean(dim=(1, 3, 4)))

        def prune_ignored_layers(self):
            return [self.fc]

    @register("tiny_probe", info=ModelInfo("tiny_probe", "Probe", "test", "recon", "none"))
    def build(scale, num_classes, *, width=2):
        seen.update(scale=scale, num_classes=num_classes, width=width)
        return Tiny(num_classes)

    model = build_model("tiny_probe", "paper", 7, {"width": 5})
    assert seen == {"scale": "paper", "num_classes": 7, "width": 5}
    assert model.auxiliary_loss() is None and model.temporal is True
    assert model_info("tiny_probe").title == "Probe"


def test_provenance_tags_outside_the_four_known_are_rejected():
    with pytest.raises(ValueError, match="provenance tag"):
        Published("ucf101", 90.0, "rumour", "split 1", "a blog", init="imagenet", backbone="ResNet-50",
                  splits="split1", views="1x1")
    with pytest.raises(ValueError, match="provenance tag"):
        ModelInfo("x", "X", "ref", "guess", "protocol")


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_carry_model_info_with_tagged_numbers(name):
    info = model_info(name)
    assert info.name == name and info.protocol and info.reference
    for number in info.published:
        assert 0 < number.top1 <= 100 and number.protocol and number.source


def test_published_numbers_match_the_models_table():
    numbers = {(p.dataset, p.top1) for p in model_info("tsm").published}
    assert numbers == {("ucf101", 94.50), ("hmdb51", 72.68)}
    assert ("ucf101", 83.03) in {(p.dataset, p.top1) for p in model_info("tsn").published}
    assert {(p.dataset, p.top1) for p in model_info("r3d").published} == {("ucf101", 84.4), ("hmdb51", 56.4)}
    assert model_info("r2plus1d").published == ()


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_maps_its_declared_inputs_to_class_scores(name):
    torch.manual_seed(0)
    model = build_model(name, "tiny", 5)
    assert isinstance(model.input_spec, InputSpec)
    batch = inputs_for(model.input_spec, 2)
    logits = model(**batch)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    ignored = model.prune_ignored_layers()
    assert any(isinstance(m, nn.Linear) and m.out_features == 5 for m in ignored) or any(
        getattr(m, "out_channels", None) == 5 for m in ignored), "the classifier must never be pruned"
    aux = model.auxiliary_loss()
    assert aux is None or (isinstance(aux, torch.Tensor) and aux.ndim == 0)


def test_declared_modalities_match_what_each_built_model_consumes():
    """The DAG schedules optical flow from ModelInfo.modalities; it must agree with the input spec."""
    from actionrepro.models.registry import build_model, model_names, needs_flow

    for name in model_names():
        spec = build_model(name, "tiny", 4).input_spec
        assert needs_flow(name) == spec.flow, name
