"""Structural pruning: every registered model prunes, still runs, shrinks, keeps its classifier
output and input stems, and reloads from its recorded structure (weights_only) to identical
outputs; pruning removes exactly the channels it claims (silenced beforehand, they leave the
output unchanged), through every custom layer; the criteria pick the channels they should; the
prune step runs end to end on synthetic data. Tiny configurations, one thread."""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch_pruning as tp
from torch import nn

from actionrepro import config, paths, profile
from actionrepro import runs
from actionrepro.steps import prune as prune_step
from actionrepro.engine import checkpoint
from actionrepro.errors import ActionReproError, ConfigError
from actionrepro.models.layers import TemporalShift
from actionrepro.models.registry import build_model, model_names
from actionrepro.pruning import importance, structure
from actionrepro.pruning.shift import ChannelShift, ShiftPruner

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
CLASSES = 5
MODELS = model_names()


# ---------------------------------------------------------------- helpers
def built(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, "tiny", CLASSES).eval()


def inputs(model: nn.Module, batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    return profile.example_inputs(model.input_spec, batch, seed=seed)


def outputs(model: nn.Module, x: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**x)


@lru_cache(maxsize=None)
def _pruned(name: str) -> tuple[nn.Module, nn.Module, dict]:
    dense = built(name)
    pruned = copy.deepcopy(dense)
    record = structure.prune_model(pruned, 0.5)
    return dense, pruned, record


def pruned_at_half(name: str) -> tuple[nn.Module, nn.Module, dict]:
    """(dense, pruned at 0.5 with l2, record): fresh copies of one pruning per model."""
    return copy.deepcopy(_pruned(name))


def widths(module: nn.Module) -> tuple[int, int]:
    """(input, output) channels of a conv or linear layer, from its weight."""
    weight = module.weight
    return (weight.shape[1] * getattr(module, "groups", 1), weight.shape[0])


def input_stems(model: nn.Module) -> list[str]:
    """Names of the conv/linear layers that read the model's inputs: their input carries no
    autograd history (nothing trainable has touched it yet)."""
    found = []

    def watch(name: str):
        def hook(module, args):
            if not args[0].requires_grad:
                found.append(name)
        return hook

    hooks = [m.register_forward_pre_hook(watch(name)) for name, m in model.named_modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    try:
        with torch.enable_grad():
            model.eval()(**inputs(model, 1))
    finally:
        for hook in hooks:
            hook.remove()
    return sorted(set(found))


def write_run(run: Path, name: str, model: nn.Module, record: dict, complete: bool = True) -> Path:
    """A pruned run directory in the format train.py writes (model.json + checkpoint.pt)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.json").write_text(json.dumps({
        "name": name, "scale": "tiny", "options": {}, "input_spec": model.input_spec.to_dict(),
        "num_classes": CLASSES, "variant": "pruned-0.5", "pruning": record}))
    checkpoint.save(run / "checkpoint.pt", {"model": model.state_dict(), "epoch": 1, "complete": complete})
    return run


# ---------------------------------------------------------------- every registered model
@pytest.mark.parametrize("name", MODELS)
def test_half_ratio_prunes_every_model_which_still_runs_with_fewer_parameters_and_flops(name):
    dense, pruned, record = pruned_at_half(name)
    x = inputs(pruned)
    logits = outputs(pruned, x)
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()
    assert profile.count_params(pruned) < 0.5 * profile.count_params(dense)
    one = inputs(pruned, batch=1)
    assert profile.count_flops(pruned, one) < 0.75 * profile.count_flops(dense, one)
    assert record["history"] and json.loads(json.dumps(record)) == record  # plain JSON data


@pytest.mark.parametrize("name", MODELS)
def test_classifier_outputs_and_input_stems_are_never_pruned(name):
    dense, pruned, _ = pruned_at_half(name)
    dense_modules, pruned_modules = dict(dense.named_modules()), dict(pruned.named_modules())
    listed = {id(sub) for layer in dense.prune_ignored_layers() for sub in layer.modules()}  # with their parts
    ignored = {n for n, m in dense.named_modules() if id(m) in listed}
    for n in ignored:
        if isinstance(dense_modules[n], (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            assert widths(pruned_modules[n])[1] == widths(dense_modules[n])[1], n
    stems = input_stems(dense)
    assert stems, "found no layer reading the model's input"
    for n in stems:
        assert n in ignored, f"input stem {n} is not in prune_ignored_layers()"
        assert widths(pruned_modules[n]) == widths(dense_modules[n]), n
    assert outputs(pruned, inputs(pruned)).shape[-1] == CLASSES


@pytest.mark.parametrize("name", MODELS)
def test_saved_pruned_run_reloads_from_its_record_with_weights_only_to_identical_outputs(name, tmp_path, monkeypatch):
    _, pruned, record = pruned_at_half(name)
    run = write_run(tmp_path / "runs/synth_ucf101/split1" / name / "pruned-0.5", name, pruned, record)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw.get("weights_only")) or real_load(*a, **kw))
    loaded = runs.load_model(run)
    assert calls and all(flag is True for flag in calls)
    assert not loaded.training and loaded.input_spec == pruned.input_spec
    x = inputs(pruned)
    assert torch.equal(outputs(loaded, x), outputs(pruned, x))
    mine, theirs = dict(loaded.named_buffers()), dict(pruned.named_buffers())  # incl. non-persistent ones
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def silence(group, graph: tp.DependencyGraph) -> None:
    """Make a group's channels output exact zeros: zero rows of the convs/linears whose outputs
    the group cuts (every row of a depthwise conv's channels), zero gamma and beta of its
    batch-norms (unit variance, zero mean)."""
    with torch.no_grad():
        for dep, idxs in group:
            module = dep.target.module
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight[idxs] = 0
                module.bias[idxs] = 0
                module.running_mean[idxs] = 0
                module.running_var[idxs] = 1
            elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                depthwise = getattr(module, "groups", 1) > 1 and module.groups == module.weight.shape[0]
                if depthwise or graph.is_out_channel_pruning_fn(dep.handler):
                    module.weight[idxs] = 0
                    if module.bias is not None:
                        module.bias[idxs] = 0


def worst_change_when_pruning_silenced_channels(model: nn.Module) -> float:
    """Prune `model` group by group; before each group is cut, silence its channels. Returns the
    largest relative output change a cut caused (0 when exactly the silenced channels go)."""
    for m in model.modules():  # statistics that matter, so a wrongly cut channel shows
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    x = inputs(model)
    pruner = structure.build_pruner(model, 0.5)
    worst, groups = 0.0, 0
    for group in pruner.step(interactive=True):
        silence(group, pruner.DG)
        before = outputs(model, x)
        group.prune()
        after = outputs(model, x)
        worst = max(worst, float((after - before).abs().max() / before.abs().max()))
        groups += 1
    assert groups > 0
    return worst


@pytest.mark.parametrize("name", MODELS)
def test_pruning_cuts_exactly_the_channels_it_claims_so_silenced_ones_leave_outputs_unchanged(name):
    """Custom layers (shifts, difference modules, STH convs, sketches, non-local blocks, side
    branches) included: a channel mapped wrongly anywhere would cut a live channel."""
    model = built(name)
    structure.prepare(model)
    assert worst_change_when_pruning_silenced_channels(model) < 1e-4


# ---------------------------------------------------------------- custom layers
def test_tsm_shift_must_keep_each_surviving_channels_direction_which_channel_shift_does():
    x = torch.randn(6, 20, 3, 3)
    plain, stored = TemporalShift(3, 8), ChannelShift(3, 8, 20)
    assert torch.equal(plain(x), stored(x))  # the same function before pruning
    ShiftPruner().prune_out_channels(stored, [0, 2, 5])
    # before: 1 1 -1 -1 0 ... (fold 20 // 8 = 2); channels 1 (next) and 3 (previous) survive
    assert stored.direction.tolist() == [1, -1] + [0] * 15
    assert not torch.equal(plain(x[:, 3:]), stored(x[:, 3:]))  # the run-time rule would pick others
    raw = built("tsm")  # without the conversion the silenced-channel check catches the change
    assert worst_change_when_pruning_silenced_channels(raw) > 1e-3


def test_stpn_count_sketches_keep_the_hash_and_sign_of_surviving_channels():
    model = built("stpn")
    spatial_stream = model.rgb_backbone.layer4[0].downsample[0]  # roots the channels of S
    sketches = [model.attention_fusion.sketches[0], model.final_fusion.sketches[0], model.final_fusion.sketches[2]]
    before = [s.weight.clone() for s in sketches]
    spread = model.attention_spread.weight.clone()
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs(model, 1), verbose=False)
    graph.get_pruning_group(spatial_stream, tp.prune_conv_out_channels, idxs=[1, 3]).prune()
    keep = [i for i in range(before[0].shape[1]) if i not in (1, 3)]
    for sketch, old in zip(sketches, before):
        assert torch.equal(sketch.weight, old[:, keep]) and not isinstance(sketch.weight, nn.Parameter)
    assert torch.equal(model.attention_spread.weight, spread[keep])
    assert outputs(model, inputs(model)).shape == (2, CLASSES)


def test_ustn_learnable_shift_taps_are_cut_with_the_channels_they_shift():
    model = built("ustn")
    block = model.backbone.layer2[0]
    shift, ldm = block.conv2.shift, block.conv2.ldm
    taps = [t.weight.clone() for t in (shift.prev, shift.keep, shift.next)]
    expand = ldm.expand.weight.clone()
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs(model, 1), verbose=False)
    graph.get_pruning_group(block.conv1, tp.prune_conv_out_channels, idxs=[0, 2]).prune()
    keep = [i for i in range(taps[0].shape[0]) if i not in (0, 2)]
    for tap, old in zip((shift.prev, shift.keep, shift.next), taps):
        assert torch.equal(tap.weight, old[keep])
    assert torch.equal(ldm.expand.weight, expand[keep]) and ldm.reduce.weight.shape[1] == len(keep)


# ---------------------------------------------------------------- criteria and settings
def graded_block(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """TSN-tiny's layer2[0] inner channels (conv1 rows, bn1, conv2 columns) made to grow in magnitude
    with their index, so a magnitude criterion must keep the upper half."""
    block = model.backbone.layer2[0]
    n = block.conv1.out_channels
    scale = torch.arange(1, n + 1, dtype=torch.float32)
    with torch.no_grad():
        block.conv1.weight.copy_(torch.ones_like(block.conv1.weight) * scale.view(-1, 1, 1, 1))
        block.bn1.weight.copy_(scale)
        block.conv2.weight.copy_(torch.ones_like(block.conv2.weight) * scale.view(1, -1, 1, 1))
    return block.conv1, block.bn1, block.conv2


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale"])
def test_magnitude_criteria_remove_the_smallest_channels(criterion):
    model = built("tsn")
    conv1, bn1, _ = graded_block(model)
    n = conv1.out_channels
    structure.prune_model(model, 0.5, importance=criterion)
    assert bn1.weight.tolist() == [float(i) for i in range(n // 2 + 1, n + 1)]


def test_taylor_needs_gradients_and_prunes_the_channels_whose_weight_times_gradient_is_smallest():
    model = built("tsn")
    conv1, bn1, conv2 = graded_block(model)
    n = conv1.out_channels
    with pytest.raises(ConfigError, match="taylor"):
        structure.prune_model(copy.deepcopy(model), 0.5, importance="taylor")

    def gradients(net):  # real gradients of the training loss, then the upper half made irrelevant
        batch = {**inputs(net, 4), "label": torch.tensor([0, 1, 2, 3])}
        assert importance.accumulate_gradients(net, [batch]) == 4
        block = net.backbone.layer2[0]
        with torch.no_grad():
            block.conv1.weight.grad[n // 2:] = 0
            block.bn1.weight.grad[n // 2:] = 0
            block.bn1.bias.grad[n // 2:] = 0
            block.conv2.weight.grad[:, n // 2:] = 0

    structure.prune_model(model, 0.5, importance="taylor", gradients=gradients)
    assert bn1.weight.tolist() == [float(i) for i in range(1, n // 2 + 1)]  # big but gradient-free: gone
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("settings", [{"round_to": 8, "iterative_steps": 2}, {"global_pruning": True}],
                         ids=["round_to-8-two-steps", "global"])
def test_pruning_settings_are_honoured_and_replay_exactly(settings):
    model = built("tsm")
    widths_before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    record = structure.prune_model(model, 0.5, **settings)
    fresh = built("tsm", seed=7)
    structure.replay(fresh, record)
    fresh.load_state_dict(model.state_dict())
    x = inputs(model)
    assert torch.equal(outputs(fresh, x), outputs(model, x))
    changed = {n: m.out_channels for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d) and m.out_channels != widths_before[n]}
    assert changed
    if settings.get("round_to"):
        assert all(c % 8 == 0 for c in changed.values()), changed
        assert record["iterative_steps"] == 2


def test_a_record_that_does_not_fit_the_model_is_refused_with_a_clear_error(tmp_path):
    _, pruned, record = pruned_at_half("tsn")
    with pytest.raises(ValueError, match=r"backbone.layer1.0.conv1 \(Conv2d recorded, Sequential built\)"):
        structure.replay(built("r3d"), record)
    run = write_run(tmp_path / "runs/synth_ucf101/split1/tsn/pruned-0.5", "tsn", pruned, record)
    meta = json.loads((run / "model.json").read_text())
    meta["pruning"]["shapes"]["fc.weight"] = [CLASSES, 1]
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ActionReproError, match=r"model.json.*actionrepro prune synth_ucf101 1 tsn 0.5"):
        runs.load_model(run)


def test_load_pruned_refuses_dense_records_and_unfinished_fine_tunes(tmp_path):
    _, pruned, record = pruned_at_half("tsn")
    run = write_run(tmp_path / "pruned-0.5", "tsn", pruned, record, complete=False)
    with pytest.raises(ActionReproError, match="not finished"):
        runs.load_model(run)
    meta = json.loads((run / "model.json").read_text())
    del meta["pruning"]
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ActionReproError, match="no pruning record"):
        runs.load_model(run)


# ---------------------------------------------------------------- the step, end to end
def synth_params(**prune) -> dict:
    params = config.load(ROOT / "config" / "demo.yaml")
    params["train"].update(epochs=1, batch_size=8, device="cpu", num_workers=0, optimizer="adamw", lr=0.003)
    params["synth"]["ucf101"].update(classes=3, groups=21, clips_per_group=1, frames=12, width=32, height=24)
    params["decode"]["short_side"] = 24
    params["evaluate"].update(clips=1, crops=1, latency_repeats=1)
    params["architectures"] = {"tsm": {"segments": 3, "size": 24}}
    params["prune"].update({"finetune_epochs": 1, "importance": "l2", **prune})
    return params


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory):
    """Synthetic UCF101 through the real download -> extract -> splits -> decode steps, and a
    dense TSM trained on it for one epoch."""
    from actionrepro.data import download
    from actionrepro.steps.extract import extract_dataset
    from actionrepro.steps import decode as decode_step
    from actionrepro.steps import splits as splits_step
    from actionrepro.engine.runner import train

    root = tmp_path_factory.mktemp("prune")
    params = synth_params()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        download.download_dataset("synth_ucf101", params)
        extract_dataset("synth_ucf101", progress=False)
        splits_step.write_manifests("synth_ucf101", params=params)
        decode_step.decode_dataset("synth_ucf101", params, workers=1)
        train("synth_ucf101", 1, "tsm", params)
    return root


@pytest.mark.parametrize("criterion", ["l2", "taylor"])
def test_prune_step_fine_tunes_a_pruned_run_that_evaluation_reloads(trained_root, monkeypatch, criterion):
    from actionrepro.runs import load_model as load_model_for_eval

    monkeypatch.chdir(trained_root)
    ratio = 0.5 if criterion == "l2" else 0.3
    out = prune_step.prune("synth_ucf101", 1, "tsm", ratio, synth_params(importance=criterion))
    assert out == runs.run_dir("synth_ucf101", 1, "tsm", f"pruned-{ratio:g}")
    for name in ("checkpoint.pt", "model.json", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    record = json.loads((out / "model.json").read_text())
    assert record["name"] == "tsm" and record["pruning"]["importance"] == criterion
    assert record["pruning"]["dense_run"] == "runs/synth_ucf101/split1/tsm/dense"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ratio"] == ratio and metrics["epochs"] == 1 and metrics["variant"] == f"pruned-{ratio:g}"
    assert metrics["params_after"] == metrics["params"] < metrics["params_before"]
    assert metrics["gflops_after"] < metrics["gflops_before"] and metrics["flops_reduction"] > 1
    assert metrics["speedup"]["cpu"] > 0 and metrics["latency_batch1_before"]["cpu"]["median_ms"] > 0
    model = load_model_for_eval(out)  # what evaluate does for pruned-* variants
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert profile.count_params(model) == metrics["params"] and model.input_spec.segments == 3
    if criterion == "l2":  # and the evaluation step itself
        from actionrepro.steps.evaluate import evaluate

        report = json.loads(evaluate("synth_ucf101", 1, "tsm", synth_params(), variant="pruned-0.5").read_text())
        assert report["variant"] == "pruned-0.5" and report["costs"]["params"] == metrics["params"]


def test_rerunning_the_prune_step_prunes_identically_so_the_fine_tune_is_not_redone(trained_root, monkeypatch,
                                                                                    caplog):
    monkeypatch.chdir(trained_root)
    params = synth_params(importance="taylor")
    out = prune_step.prune("synth_ucf101", 1, "tsm", 0.4, params)
    first = (out / "checkpoint.pt").read_bytes()
    with caplog.at_level(logging.INFO, logger="actionrepro.engine.loop"):
        prune_step.prune("synth_ucf101", 1, "tsm", 0.4, params)
    assert "already complete" in caplog.text and (out / "checkpoint.pt").read_bytes() == first


def test_prune_without_a_dense_run_names_the_train_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ActionReproError, match="actionrepro train synth_ucf101 1 tsn"):
        prune_step.prune("synth_ucf101", 1, "tsn", 0.3, synth_params())


def _prune_rank(rank: int, port: int, root: str) -> None:
    """One torchrun-style rank of the prune step; leaves a marker saying whether it pruned or replayed."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    os.chdir(root)
    torch.set_num_threads(1)
    for name in ("prune_model", "replay"):
        original = getattr(structure, name)

        def marked(*args, _original=original, _name=name, **kwargs):
            Path(f"rank{rank}.{_name}").touch()
            return _original(*args, **kwargs)

        setattr(structure, name, marked)
    prune_step.prune("synth_ucf101", 1, "tsm", 0.6, synth_params(importance="taylor"))


def test_under_torchrun_rank_zero_prunes_and_the_other_ranks_replay_its_record(trained_root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_prune_rank, args=(port, str(trained_root)), nprocs=2, join=True)
    markers = sorted(p.name for p in trained_root.glob("rank*.*"))
    assert markers == ["rank0.prune_model", "rank1.replay"]
    out = trained_root / runs.run_dir("synth_ucf101", 1, "tsm", "pruned-0.6")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["params_after"] < metrics["params_before"]
    model = runs.load_model(out)
    assert outputs(model, inputs(model, 1)).shape == (1, 3)
