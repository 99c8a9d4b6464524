"""The training engine: resume exactness, schedules, weight-decay groups, partial BN, validation
carving, checkpoints, the run directory's files. Tiny stand-in models and data, one thread."""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from actionrepro import config
from actionrepro.data import validation
from actionrepro.engine import loop, runner, step
from actionrepro.engine import checkpoint, determinism, optim
from actionrepro.errors import ActionReproError, ConfigError, DataError
from actionrepro.inputs import InputSpec

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SPEC = InputSpec(segments=2, size=8)


class TinyClips(Dataset):
    """Clips whose class is a colour pattern; augmentation noise from the global torch RNG (as a
    real dataset's random crops would be), so resuming is only exact if RNG states are restored."""

    def __init__(self, n=24, classes=3, noise=0.5, seed=0, frames=2, size=8):
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % classes for i in range(n)]
        self.base = torch.randn(classes, 1, 3, size, size, generator=g).expand(classes, frames, 3, size, size)
        self.noise, self.epoch, self.num_classes = noise, 0, classes
        self.epochs_seen = []

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        label = self.labels[i]
        rgb = self.base[label] + self.noise * torch.randn(self.base.shape[1:])
        return {"rgb": rgb.contiguous(), "label": label, "index": i}


class FixedClips(TinyClips):
    """Noise fixed per item (no RNG at load time): for comparisons across batch layouts."""

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 + i)
        label = self.labels[i]
        return {"rgb": (self.base[label] + self.noise * torch.randn(self.base.shape[1:], generator=g)).contiguous(),
                "label": label, "index": i}


class TinyNet(nn.Module):
    """Frames folded into the batch, conv-BN-ReLU twice, dropout, per-frame logits averaged (TSN)."""

    def __init__(self, classes=3, bn=True, dropout=0.3):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), norm(6), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1), norm(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8, classes)
        self.input_spec = SPEC

    def forward(self, rgb=None, flow=None):
        b, t = rgb.shape[:2]
        logits = self.fc(self.drop(self.features(rgb.flatten(0, 1))))
        return logits.view(b, t, -1).mean(1)

    def auxiliary_loss(self):
        return None


def demo_params(**train) -> dict:
    params = config.load(ROOT / "config" / "demo.yaml")
    params["train"].update({"epochs": 4, "batch_size": 4, "device": "cpu", "num_workers": 0, "amp": "off",
                            "optimizer": "sgd", "lr": 0.05, "warmup_epochs": 1, "schedule": "cosine"})
    params["train"].update(train)
    return params


def built(seed=0, **kw) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kw)


def saved_model(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


class Killed(Exception):
    pass


def kill_after(epoch_to_die: int):
    def hook(epoch):
        if epoch == epoch_to_die:
            raise Killed(f"simulated kill after epoch {epoch}")
    return hook


# ---------------------------------------------------------------- resume
@pytest.mark.parametrize("train_cfg", [
    {"optimizer": "sgd", "nesterov": True, "label_smoothing": 0.1, "schedule": "cosine"},
    {"optimizer": "adamw", "lr": 0.01, "accumulate": 2, "schedule": "step", "step_milestones": [2]},
    {"optimizer": "sgd", "num_workers": 2},  # augmentation noise drawn inside worker processes
    {"optimizer": "sgd", "classifier_lr_mult": 5},  # four param groups in the optimizer state
], ids=["sgd-nesterov-smoothing", "adamw-accumulate-step", "workers", "classifier-lr-mult"])
def test_resume_after_kill_ends_with_bit_identical_weights(tmp_path, train_cfg):
    params = demo_params(**train_cfg)
    straight = tmp_path / "straight"
    loop.fit(built(), TinyClips(), TinyClips(n=9, seed=0), params, straight, progress=False)

    resumed = tmp_path / "resumed"
    with pytest.raises(Killed):
        loop.fit(built(), TinyClips(), TinyClips(n=9, seed=0), params, resumed, on_epoch_end=kill_after(2),
               progress=False)
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (resumed / "metrics.json").exists()
    # the process died: all RNGs move on before the re-run, which must not matter
    torch.rand(123), np.random.rand(7)
    data = TinyClips()
    loop.fit(built(), data, TinyClips(n=9, seed=0), params, resumed, progress=False)
    assert data.epochs_seen == [2, 3]  # only the missing epochs ran, each with its own epoch number

    a, b = saved_model(straight), saved_model(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ha, hb = pd.read_csv(straight / "history.csv"), pd.read_csv(resumed / "history.csv")
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    pd.testing.assert_frame_equal(ha[cols], hb[cols])


def test_weights_differ_without_rng_restore_so_the_resume_test_can_fail(tmp_path):
    """Guard for the test above: the stand-in data really depend on the RNG stream."""
    params = demo_params()
    out1, out2 = tmp_path / "a", tmp_path / "b"
    loop.fit(built(), TinyClips(), None, params, out1, progress=False)
    params["seed"] = 1
    loop.fit(built(), TinyClips(), None, params, out2, progress=False)
    a, b = saved_model(out1), saved_model(out2)
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


def test_same_seed_gives_same_weights_on_cpu(tmp_path):
    params = demo_params(epochs=2)
    loop.fit(built(), TinyClips(), None, params, tmp_path / "a", progress=False)
    loop.fit(built(), TinyClips(), None, params, tmp_path / "b", progress=False)
    a, b = saved_model(tmp_path / "a"), saved_model(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rerun_of_a_finished_run_trains_nothing(tmp_path):
    params = demo_params(epochs=2)
    out = tmp_path / "run"
    loop.fit(built(), TinyClips(), None, params, out, progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    data = TinyClips()
    loop.fit(built(), data, None, params, out, progress=False)
    assert data.epochs_seen == []
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("change", ["lr", "classifier lr", "starting weights"])
def test_checkpoint_from_other_settings_or_weights_is_not_resumed(tmp_path, caplog, change):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        loop.fit(built(), TinyClips(), None, demo_params(), out, on_epoch_end=kill_after(1), progress=False)
    data = TinyClips()
    params, model = {"lr": (demo_params(lr=0.02), built()),
                     "classifier lr": (demo_params(classifier_lr_mult=5), built()),
                     "starting weights": (demo_params(), built(seed=7))}[change]
    with caplog.at_level(logging.WARNING, logger="actionrepro.engine.loop"):
        loop.fit(model, data, None, params, out, progress=False)
    assert data.epochs_seen == [0, 1, 2, 3]
    assert "starting this run over" in caplog.text


# ---------------------------------------------------------------- checkpoints
def test_zero_epochs_records_the_given_weights_unchanged(tmp_path):
    model = built()
    start = copy.deepcopy(model.state_dict())
    metrics = loop.fit(model, TinyClips(), None, demo_params(), tmp_path / "run", epochs=0, progress=False)
    final = saved_model(tmp_path / "run")
    assert all(torch.equal(final[k], start[k]) for k in start)
    assert metrics["epochs"] == 0 and metrics["train_acc"] is None
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 0


def test_checkpoint_holds_plain_data_and_loads_with_weights_only(tmp_path):
    out = tmp_path / "run"
    loop.fit(built(), TinyClips(), None, demo_params(epochs=1), out, progress=False)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "history"} <= set(state)
    assert set(state["rng"][0]) == {"torch", "numpy", "python", "cuda"}
    assert state["epoch"] == 1 and state["complete"] is True
    assert not list(out.glob(".*.tmp")), "no temporary files left behind"


def test_checkpoint_with_pickled_objects_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "evil": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(ActionReproError, match="Delete it to restart"):
        checkpoint.load(path)
    path.write_bytes(b"truncated")
    with pytest.raises(ActionReproError, match=str(path)):
        checkpoint.load(path)


def test_rng_state_roundtrip_restores_every_generator():
    determinism.seed_everything(5)
    state = determinism.rng_state()
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    torch.rand(10), np.random.rand(10)
    determinism.set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


# ---------------------------------------------------------------- schedules and groups
def test_linear_warmup_then_cosine_reaches_zero_at_the_last_step():
    f = optim.lr_factor("cosine", total_steps=12, warmup_steps=4, steps_per_epoch=4)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(8) == pytest.approx(0.5)           # half way through the 8 cosine steps
    assert f(12) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(4, 13)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_step_schedule_multiplies_by_gamma_at_each_milestone_epoch():
    f = optim.lr_factor("step", total_steps=40, warmup_steps=0, steps_per_epoch=5, milestones=[2, 4], gamma=0.1)
    assert [f(s) for s in (0, 9, 10, 19, 20, 39)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_scheduler_sets_per_step_learning_rates_on_the_optimizer():
    model = nn.Linear(2, 2)
    cfg = demo_params(lr=0.4, warmup_epochs=0.5)["train"]
    opt = optim.build_optimizer(model, cfg)
    sched = optim.build_scheduler(opt, cfg, epochs=2, steps_per_epoch=4)  # 2 warmup steps of 8
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:3] == pytest.approx([0.2, 0.4, 0.4])
    assert seen[-1] == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))


def test_weight_decay_skips_norm_layers_and_biases():
    model = TinyNet()
    groups = optim.param_groups(model, weight_decay=1e-4, no_decay_norm_bias=True)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 1e-4 and groups[1]["weight_decay"] == 0.0
    for name, p in model.named_parameters():
        exempt = name.endswith("bias") or name.startswith(("features.1.", "features.4."))  # BN layers
        assert (id(p) in no_decay) == exempt, name
        assert (id(p) in decay) != exempt, name
    everything = optim.param_groups(model, weight_decay=1e-4, no_decay_norm_bias=False)
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(model.parameters()))


def test_sgd_nesterov_and_adamw_built_from_params():
    model = TinyNet()
    sgd = optim.build_optimizer(model, demo_params(optimizer="sgd", nesterov=True, momentum=0.8)["train"])
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    adamw = optim.build_optimizer(model, demo_params(optimizer="adamw")["train"], lr=0.123)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 0.123


# ---------------------------------------------------------------- step details
def test_partial_bn_trains_only_the_first_batchnorm(tmp_path):
    model = built()
    bn1, bn2 = model.features[1], model.features[4]
    before = copy.deepcopy(model.state_dict())
    loop.fit(model, TinyClips(), None, demo_params(epochs=1, partial_bn=True), tmp_path / "run", progress=False)
    after = saved_model(tmp_path / "run")
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert not torch.equal(before[f"features.1.{key}"], after[f"features.1.{key}"]), key
        assert torch.equal(before[f"features.4.{key}"], after[f"features.4.{key}"]), key
    assert bn1.weight.requires_grad and not bn2.weight.requires_grad
    assert not torch.equal(before["features.3.weight"], after["features.3.weight"])  # convs still learn


def test_partial_bn_keeps_frozen_layers_in_eval_mode_after_train():
    model = TinyNet()
    frozen = loop.freeze_partial_bn(model)
    loop.set_train_mode(model, frozen)
    assert frozen == [model.features[4]]
    assert model.features[1].training and not model.features[4].training and model.fc.training


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    small = demo_params(epochs=2, batch_size=4, accumulate=2, clip_grad_norm=None)
    big = demo_params(epochs=2, batch_size=8, accumulate=1, clip_grad_norm=None)
    loop.fit(built(bn=False, dropout=0.0), FixedClips(), None, small, tmp_path / "acc", progress=False)
    loop.fit(built(bn=False, dropout=0.0), FixedClips(), None, big, tmp_path / "big", progress=False)
    a, b = saved_model(tmp_path / "acc"), saved_model(tmp_path / "big")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_the_update():
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.full((3, 4), 100.0)).pow(2).sum()
    loss.backward()
    step.optimizer_step(opt, clip_grad_norm=0.01)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert moved.norm() == pytest.approx(0.01, rel=1e-4)
    assert all(p.grad is None for p in model.parameters())


class WithPenalty(TinyNet):
    """A model whose auxiliary loss pulls an otherwise unused parameter to zero."""

    def __init__(self):
        super().__init__(dropout=0.0)
        self.gate = nn.Parameter(torch.ones(4))

    def auxiliary_loss(self):
        return self.gate.pow(2).sum()


def test_auxiliary_loss_is_added_to_the_training_loss(tmp_path):
    torch.manual_seed(0)
    model = WithPenalty()
    loop.fit(model, TinyClips(), None, demo_params(epochs=1, weight_decay=0.0), tmp_path / "run", progress=False)
    gate = saved_model(tmp_path / "run")["gate"]
    assert gate.abs().max() < 0.9  # only the auxiliary term gives it a gradient
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["train_loss"].iloc[0] > 3.0  # ~ln(3) cross-entropy + a gate penalty near 4


def test_mixed_precision_and_channels_last_are_ignored_on_cpu_with_a_log_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="actionrepro.engine.loop"):
        metrics = loop.fit(built(), TinyClips(), None, demo_params(epochs=1, amp="bf16", channels_last=True),
                         tmp_path / "run", progress=False)
    assert metrics["amp"] == "off" and metrics["device"] == "cpu"
    assert "amp=bf16 ignored on cpu" in caplog.text and "channels_last ignored" in caplog.text


def test_an_empty_training_set_is_a_clear_data_error(tmp_path):
    with pytest.raises(DataError, match="no training clips"):
        loop.fit(built(), TinyClips(n=0), None, demo_params(), tmp_path / "run", progress=False)


def test_global_batch_must_divide_over_processes(tmp_path):
    from actionrepro.engine.distributed import Context

    with pytest.raises(ConfigError, match="batch_size=5"):
        loop.fit(built(), TinyClips(), None, demo_params(batch_size=5), tmp_path / "run",
               ctx=Context(world_size=2), progress=False)


# ---------------------------------------------------------------- validation and selection
def ucf_manifest() -> pd.DataFrame:
    rows = []
    for c, name in enumerate(["ApplyEyeMakeup", "Archery", "Basketball"]):
        for g in range(1, 26):
            for clip in range(1, 3):
                rows.append({"video_id": f"{name}/v_{name}_g{g:02d}_c{clip:02d}.avi", "label": c,
                             "subset": "test" if g <= 7 else "train"})
    return pd.DataFrame(rows)


def test_ucf_validation_takes_whole_groups_from_the_train_split_only():
    manifest = ucf_manifest()
    train_videos = manifest[manifest.subset == "train"]
    test_ids = set(manifest.video_id[manifest.subset == "test"])
    keep, val = validation.carve_validation(train_videos, 0.2, seed=0, by_group=True)
    assert set(keep) | set(val) == set(train_videos.video_id) and not set(keep) & set(val)
    assert not set(val) & test_ids
    val_groups, keep_groups = {validation.ucf_group(v) for v in val}, {validation.ucf_group(v) for v in keep}
    assert not val_groups & keep_groups and all(g >= 8 for g in val_groups)
    assert len(val_groups) == 4  # ceil(0.2 * 18 training groups)
    assert validation.carve_validation(train_videos, 0.2, seed=0, by_group=True) == (keep, val)  # seeded
    assert validation.carve_validation(train_videos, 0.2, seed=1, by_group=True) != (keep, val)


def test_hmdb_validation_is_stratified_by_class():
    videos = pd.DataFrame({"video_id": [f"c{c}/clip{i}#x.avi" for c in range(4) for i in range(70)],
                           "label": [c for c in range(4) for _ in range(70)]})
    keep, val = validation.carve_validation(videos, 0.1, seed=0, by_group=False)
    counts = videos.set_index("video_id").loc[val, "label"].value_counts()
    assert sorted(counts.index) == [0, 1, 2, 3] and set(counts) == {7}
    assert len(keep) == 252 and not set(keep) & set(val)


def test_validation_needs_group_tags_for_ucf():
    with pytest.raises(DataError, match="no UCF101 group tag"):
        validation.carve_validation(pd.DataFrame({"video_id": ["a.avi", "b.avi"], "label": [0, 1]}), 0.5, 0, True)


def test_best_validation_epoch_is_the_model_kept_and_says_so(tmp_path):
    out = tmp_path / "run"
    per_epoch = {}

    def remember(epoch):
        per_epoch[epoch] = torch.load(out / "checkpoint.pt", weights_only=True)["model"]

    params = demo_params(epochs=4, val_fraction=0.25, lr=0.2)
    metrics = loop.fit(built(), TinyClips(noise=2.0), TinyClips(n=12, noise=2.0, seed=0), params, out,
                     on_epoch_end=remember, progress=False)
    history = pd.read_csv(out / "history.csv")
    best = int(history.epoch[history.val_acc.idxmax()])  # first maximum: ties keep the earlier epoch
    assert best < 4, "the stand-in run must peak before its last epoch, or the swap below is untested"
    assert metrics["selection"] == "best_val_acc" and metrics["selected_epoch"] == best
    assert "TRAIN split" in metrics["selection_rule"] and "never" in metrics["selection_rule"]
    assert metrics["val_acc"] == pytest.approx(history.val_acc.max())
    final = saved_model(out)
    assert all(torch.equal(final[k], per_epoch[best][k]) for k in final)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["model_epoch"] == best


def test_without_validation_the_last_epoch_is_kept(tmp_path):
    out = tmp_path / "run"
    metrics = loop.fit(built(), TinyClips(), None, demo_params(epochs=2), out, progress=False)
    assert metrics["selection"] == "last_epoch" and metrics["selected_epoch"] == 2
    assert metrics["val_acc"] is None
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "train_acc", "lr", "clips_per_s", "epoch_seconds"]
    assert list(history.epoch) == [1, 2]


# ---------------------------------------------------------------- train(): names -> run directory
def install_fakes(monkeypatch, built_sets):
    """A stand-in dataset module and registry with the real signatures (until they land)."""
    manifest = ucf_manifest()
    module = types.ModuleType("actionrepro.data.dataset")

    class FakeVideoClipDataset(TinyClips):
        def __init__(self, dataset, split, subset, spec, params, mode="train", views=(1, 1), video_ids=None):
            rows = manifest[manifest.subset == subset]
            if video_ids is not None:
                rows = rows[rows.video_id.isin(video_ids)]
            self.videos = rows.reset_index(drop=True)
            self.excluded = manifest.iloc[:2]
            super().__init__(n=len(rows), classes=3)
            self.labels = list(self.videos.label)
            built_sets.append({"subset": subset, "mode": mode, "views": views, "ids": list(self.videos.video_id),
                               "spec": spec})

    module.VideoClipDataset = FakeVideoClipDataset
    monkeypatch.setitem(sys.modules, "actionrepro.data.dataset", module)
    monkeypatch.setattr("actionrepro.models.registry.build_model",
                        lambda name, scale, num_classes, options: TinyNet(classes=num_classes))
    classes = Path("data/manifests/synth_ucf101/classes.csv")
    classes.parent.mkdir(parents=True)
    pd.DataFrame({"label": [0, 1, 2], "class_name": ["ApplyEyeMakeup", "Archery", "Basketball"]}).to_csv(
        classes, index=False)
    return manifest


def test_train_writes_the_run_directory_and_validates_on_train_videos_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = []
    manifest = install_fakes(monkeypatch, sets)
    params = demo_params(epochs=2, val_fraction=0.2)
    out = runner.train("synth_ucf101", 1, "tsn", params)
    assert out == Path("runs/synth_ucf101/split1/tsn/dense")
    for name in ("checkpoint.pt", "history.csv", "metrics.json", "model.json"):
        assert (out / name).is_file(), name
    record = json.loads((out / "model.json").read_text())
    assert record["name"] == "tsn" and record["num_classes"] == 3 and record["input_spec"] == SPEC.to_dict()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["excluded_videos"] == 2 and metrics["selection"] == "best_val_acc"
    assert metrics["dataset"] == "synth_ucf101" and metrics["model"] == "tsn" and metrics["seed"] == 0
    assert "whole UCF101 groups" in metrics["selection_rule"]
    assert all(s["subset"] == "train" for s in sets)  # the test list is never opened
    fit_train, val = sets[1], sets[2]
    test_ids = set(manifest.video_id[manifest.subset == "test"])
    assert val["mode"] == "test" and val["views"] == (1, 1)
    assert not set(val["ids"]) & test_ids and not set(val["ids"]) & set(fit_train["ids"])
    assert metrics["num_val_videos"] == len(val["ids"]) and metrics["num_train_videos"] == len(fit_train["ids"])


def test_train_accepts_a_built_model_with_epoch_and_lr_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    install_fakes(monkeypatch, [])
    model = TinyNet()
    calls = []
    out = runner.train("synth_ucf101", 1, "tsn", demo_params(epochs=5), variant="pruned-0.3", model=model,
                   epochs=1, lr=0.001, init=lambda m: calls.append(m), model_record={"pruned": {"ratio": 0.3}})
    assert out.name == "pruned-0.3" and calls == [model]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["lr"] == 0.001
    assert json.loads((out / "model.json").read_text())["pruned"] == {"ratio": 0.3}


def test_train_without_manifests_names_the_missing_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    install_fakes(monkeypatch, [])
    Path("data/manifests/synth_ucf101/classes.csv").unlink()
    with pytest.raises(DataError, match="actionrepro splits synth_ucf101"):
        runner.train("synth_ucf101", 1, "tsn", demo_params())


# ---------------------------------------------------------------- through the real dataset and registry
def _make_synthetic(params: dict) -> None:
    from actionrepro.data import download
    from actionrepro.steps.extract import extract_dataset
    from actionrepro.steps import decode as decode_step
    from actionrepro.steps import splits as splits_step

    download.download_dataset("synth_ucf101", params)
    extract_dataset("synth_ucf101", progress=False)
    splits_step.write_manifests("synth_ucf101", params=params)
    decode_step.decode_dataset("synth_ucf101", params, workers=1)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    """A tiny synthetic UCF101 through the real download -> extract -> splits -> decode steps."""
    root = tmp_path_factory.mktemp("synth")
    params = real_params()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        _make_synthetic(params)
    return root


def real_params(**train) -> dict:
    params = demo_params(**{"epochs": 2, "batch_size": 8, "optimizer": "adamw", "lr": 0.003, **train})
    params["synth"]["ucf101"].update(classes=3, groups=21, clips_per_group=1, frames=12, width=32, height=24)
    params["decode"]["short_side"] = 24
    params["architectures"] = {"tsn": {"segments": 3, "size": 24}}
    return params


def test_train_through_the_real_dataset_and_registry_gives_a_rebuildable_model(synth_root, monkeypatch):
    from actionrepro.data.dataset import VideoClipDataset
    from actionrepro.models.registry import build_model

    monkeypatch.chdir(synth_root)
    out = runner.train("synth_ucf101", 1, "tsn", real_params(val_fraction=0.2))
    metrics = json.loads((out / "metrics.json").read_text())
    record = json.loads((out / "model.json").read_text())
    manifest = pd.read_csv("data/manifests/synth_ucf101/split1.csv")
    train_ids = set(manifest.video_id[manifest.subset == "train"])
    assert metrics["num_train_videos"] + metrics["num_val_videos"] == len(train_ids)
    assert metrics["selection"] == "best_val_acc" and metrics["excluded_videos"] == 0
    model = build_model(record["name"], record["scale"], record["num_classes"], record["options"])
    model.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
    assert model.input_spec.to_dict() == record["input_spec"] and record["num_classes"] == 3
    assert VideoClipDataset("synth_ucf101", 1, "train", model.input_spec, real_params(), "train").num_classes == 3


def test_killed_and_rerun_train_step_matches_an_uninterrupted_one(synth_root, monkeypatch):
    monkeypatch.chdir(synth_root)
    params = real_params(epochs=3)
    straight = runner.train("synth_ucf101", 1, "tsn", params, variant="straight")
    with pytest.raises(Killed):
        runner.train("synth_ucf101", 1, "tsn", params, variant="killed", on_epoch_end=kill_after(1))
    resumed = runner.train("synth_ucf101", 1, "tsn", params, variant="killed")
    a, b = saved_model(straight), saved_model(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
