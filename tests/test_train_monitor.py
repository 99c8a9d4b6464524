"""What a training run shows and records besides its numbers: log lines people can read in a log
file, a progress bar only on a terminal, TensorBoard event files that a resumed run appends to, and
the frozen settings record the loop reads. Tiny stand-ins from test_train, one thread."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import sys
from pathlib import Path

import pytest
import torch

from actionrepro import config
from actionrepro.engine import loop, runner
from actionrepro.engine.distributed import Context
from actionrepro.engine.settings import TrainSettings
from actionrepro.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from test_train import Killed, TinyClips, built, demo_params, install_fakes, saved_model  # noqa: E402

torch.set_num_threads(1)


@contextlib.contextmanager
def logging_into(stream):
    """The CLI's setup in small: actionrepro's log lines and stderr (where tqdm draws) into `stream`."""
    logger = logging.getLogger("actionrepro")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stderr(stream):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Terminal(io.StringIO):
    def isatty(self):
        return True


class DiesInEpoch(TinyClips):
    """Raises on the `at`-th clip of epoch `epoch` (0-based): a process killed mid-epoch."""

    def __init__(self, epoch, at, **kw):
        super().__init__(**kw)
        self.die_epoch, self.die_at, self.calls = epoch, at, 0

    def __getitem__(self, i):
        if self.epoch == self.die_epoch:
            self.calls += 1
            if self.calls > self.die_at:
                raise Killed("simulated kill mid-epoch")
        return super().__getitem__(i)


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ---------------------------------------------------------------- log files and terminals
def test_a_log_file_gets_readable_lines_with_eta_and_data_time_and_no_carriage_returns(tmp_path):
    path = tmp_path / "train.log"
    with open(path, "w") as stream, logging_into(stream):
        loop.fit(built(), TinyClips(), TinyClips(n=9, seed=0), demo_params(epochs=2, log_every=2,
                                                                             val_fraction=0.25),
                 tmp_path / "run", progress=True)
    text = path.read_text()
    assert "\r" not in text and "\x1b[" not in text  # no bar debris, no terminal escapes
    iteration_lines = [line for line in text.splitlines() if " iter " in line]
    assert len(iteration_lines) == 2 * 3  # 6 batches per epoch, a line every 2
    for line in iteration_lines:
        for field in ("loss", "acc", "lr", "data", "step", "clips/s", "eta"):
            assert f"{field} " in line, (field, line)
    assert "epoch 1/2 iter 2/6" in iteration_lines[0] and "epoch 2/2 iter 6/6" in iteration_lines[-1]
    epoch_lines = [line for line in text.splitlines() if "epoch 2/2:" in line]
    assert len(epoch_lines) == 1 and "val loss" in epoch_lines[0] and "eta 0:00:00" in epoch_lines[0]


def test_a_terminal_gets_a_progress_bar_instead_of_iteration_lines(tmp_path):
    terminal = Terminal()
    with logging_into(terminal):
        loop.fit(built(), TinyClips(), None, demo_params(epochs=1, log_every=2), tmp_path / "run", progress=True)
    shown = terminal.getvalue()
    assert "\r" in shown and "epoch 1/1" in shown  # tqdm drew and redrew its bar
    assert " iter " not in shown
    assert "epoch 1/1: loss" in shown  # the epoch summary still goes to the log


def test_progress_false_shows_no_iteration_lines(tmp_path):
    stream = io.StringIO()
    with logging_into(stream):
        loop.fit(built(), TinyClips(), None, demo_params(epochs=1, log_every=1), tmp_path / "run", progress=False)
    assert " iter " not in stream.getvalue() and "epoch 1/1: loss" in stream.getvalue()


# ---------------------------------------------------------------- TensorBoard
def test_train_writes_tensorboard_events_into_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    install_fakes(monkeypatch, [])
    out = runner.train("synth_ucf101", 1, "tsn", demo_params(epochs=2, log_every=2, val_fraction=0.2))
    assert list((out / "tb").glob("events.out.tfevents.*"))
    found = scalars(out / "tb")
    assert {"train/loss", "train/acc", "train/lr", "train/clips_per_s", "epoch/train_loss", "epoch/train_acc",
            "epoch/lr", "epoch/clips_per_s", "epoch/val_loss", "epoch/val_acc"} <= set(found)
    history = __import__("pandas").read_csv(out / "history.csv")
    epoch_loss = [value for _, value in found["epoch/train_loss"]]
    assert epoch_loss == pytest.approx(history.train_loss.tolist(), rel=1e-6)
    steps = [step for step, _ in found["train/loss"]]
    assert steps == sorted(set(steps)) and len(steps) >= 2 * 2


def test_no_tensorboard_when_switched_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    install_fakes(monkeypatch, [])
    out = runner.train("synth_ucf101", 1, "tsn", demo_params(epochs=1, tensorboard=False))
    assert not (out / "tb").exists() and (out / "metrics.json").is_file()


def test_a_run_resumed_after_a_mid_epoch_kill_appends_to_its_events_without_duplicates(tmp_path):
    params = demo_params(epochs=3, log_every=2)
    loop.fit(built(), TinyClips(), None, params, tmp_path / "straight", progress=False,
             tb_dir=tmp_path / "straight" / "tb")
    with pytest.raises(Killed):  # dies after epoch 1's checkpoint, 4 batches into epoch 2
        loop.fit(built(), DiesInEpoch(1, 16), None, params, tmp_path / "resumed", progress=False,
                 tb_dir=tmp_path / "resumed" / "tb")
    orphaned = scalars(tmp_path / "resumed" / "tb")["train/loss"]
    assert max(step for step, _ in orphaned) > 6  # the killed process wrote past its checkpoint
    loop.fit(built(), TinyClips(), None, params, tmp_path / "resumed", progress=False,
             tb_dir=tmp_path / "resumed" / "tb")
    straight, resumed = scalars(tmp_path / "straight" / "tb"), scalars(tmp_path / "resumed" / "tb")
    assert set(straight) == set(resumed)
    for tag in ("train/loss", "train/acc", "epoch/train_loss", "epoch/train_acc", "epoch/lr"):
        assert [s for s, _ in resumed[tag]] == [s for s, _ in straight[tag]], tag  # each step once, in order
        assert [v for _, v in resumed[tag]] == [v for _, v in straight[tag]], tag  # the same numbers


def test_tensorboard_and_log_lines_leave_the_numbers_alone(tmp_path):
    params = demo_params(epochs=2, log_every=1)
    loop.fit(built(), TinyClips(), TinyClips(n=9, seed=0), params, tmp_path / "quiet", progress=False)
    with logging_into(io.StringIO()):
        loop.fit(built(), TinyClips(), TinyClips(n=9, seed=0), params, tmp_path / "loud", progress=True,
                 tb_dir=tmp_path / "loud" / "tb")
    a, b = saved_model(tmp_path / "quiet"), saved_model(tmp_path / "loud")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_only_rank_zero_writes_events(tmp_path):
    settings = TrainSettings.from_params(demo_params())
    batches = loop.Batches(per_rank=2, per_epoch=6, accumulate=1)
    other = loop._open_monitor(settings, batches, ctx=Context(rank=1, world_size=2), progress=True,
                               tb_dir=tmp_path / "tb", start_epoch=0)
    assert other.writer is None and not other.active and not (tmp_path / "tb").exists()


# ---------------------------------------------------------------- settings
def test_train_settings_are_frozen_and_built_from_validated_params():
    params = demo_params(lr=0.02, clip_grad_norm=5)
    settings = TrainSettings.from_params(params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 1.0
    schema = config.schema()["properties"]["train"]["properties"]
    assert settings.log_every == schema["log_every"]["default"] and settings.tensorboard is True
    assert settings.accumulate == 1 and settings.momentum == 0.9  # schema defaults, filled by validate
    assert (settings.lr, settings.clip_grad_norm, settings.seed) == (0.02, 5.0, params["seed"])
    assert settings.step_milestones == tuple(params["train"]["step_milestones"])
    override = TrainSettings.from_params(params, epochs=1, lr=0.5)
    assert (override.epochs, override.lr) == (1, 0.5)
    with pytest.raises(ConfigError, match="epochs must be >= 0"):
        TrainSettings.from_params(params, epochs=-1)


def test_hand_built_params_without_defaults_are_refused_with_the_fix():
    raw = {"seed": 0, "train": {"epochs": 1, "batch_size": 2, "optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0,
                                "schedule": "cosine", "warmup_epochs": 0}}
    with pytest.raises(ConfigError, match="config.validate"):
        TrainSettings.from_params(raw)
    filled = {"seed": 0, "train": config.fill_defaults(raw["train"], config.schema()["properties"]["train"])}
    assert TrainSettings.from_params(filled).log_every == 50


def test_logging_and_tensorboard_settings_do_not_change_the_resume_fingerprint():
    base = TrainSettings.from_params(demo_params())
    same = TrainSettings.from_params(demo_params(log_every=1, tensorboard=False, num_workers=3))
    other = TrainSettings.from_params(demo_params(lr=0.02))
    fingerprint = lambda s: s.fingerprint({"dataset": "d"}, (10, 0), "w")  # noqa: E731
    assert fingerprint(base) == fingerprint(same) != fingerprint(other)
