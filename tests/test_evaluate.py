from __future__ import annotations

import json
import socket
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix
from torch import nn
from torch.utils.data import Dataset

import actionrepro.pruning.structure  # noqa: F401  (imported before a test swaps in a fake model registry)
from actionrepro import runs
from actionrepro.engine import evaluation
from actionrepro.steps import evaluate as evaluate_step
from actionrepro.errors import ActionReproError
from actionrepro.inputs import InputSpec

torch.set_num_threads(1)

SPEC = InputSpec(segments=2, size=4)


# ---------------------------------------------------------------- stand-ins
class ShowClass(nn.Module):
    """Scores class c when every pixel of a view equals c; the identity head comes from the checkpoint."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.head = nn.Linear(num_classes, num_classes)
        self.input_spec = SPEC
        self.register_buffer("classes", torch.arange(num_classes, dtype=torch.float32))

    def forward(self, rgb=None, flow=None):
        shown = rgb.mean(dim=(1, 2, 3, 4))[:, None]
        return self.head(-10.0 * (shown - self.classes) ** 2)


def identity_state(num_classes: int) -> dict:
    return {"head.weight": torch.eye(num_classes), "head.bias": torch.zeros(num_classes),
            "classes": torch.arange(num_classes, dtype=torch.float32)}


class ViewClips(Dataset):
    """Test-mode items as the real dataset yields them: rgb (V, T, 3, S, S), label, index.

    view_targets[i][v] is the class view v of video i shows to ShowClass."""

    def __init__(self, labels, view_targets, views, num_classes, excluded=None):
        self.labels, self.view_targets, self.views = list(labels), view_targets, views
        self.num_classes = num_classes
        self.videos = pd.DataFrame({"video_id": [f"v_{i:02d}.avi" for i in range(len(labels))],
                                    "label": self.labels, "class_name": [f"c{l}" for l in self.labels]})
        self.excluded = excluded if excluded is not None else self.videos.iloc[:0]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        targets = [self.view_targets[i][v % len(self.view_targets[i])] for v in range(self.views)]
        rgb = torch.stack([torch.full((SPEC.frames, 3, SPEC.size, SPEC.size), float(t)) for t in targets])
        return {"rgb": rgb, "label": self.labels[i], "index": i}


def predictions_of(data, batch_size=3, **kw):
    model = ShowClass(data.num_classes)
    model.load_state_dict(identity_state(data.num_classes))
    return evaluation.predict_all(model, data, batch_size, "cpu", progress=False, **{"loader_memory_gb": 8, **kw})


# ---------------------------------------------------------------- every video once
def test_seven_videos_in_batches_of_three_give_seven_predictions_each_id_once():
    data = ViewClips(labels=[0, 1, 2, 0, 1, 2, 0], view_targets=[[i % 3] for i in range(7)], views=1, num_classes=3)
    indices, labels, scores = predictions_of(data, batch_size=3)
    assert indices.tolist() == list(range(7))
    assert labels.tolist() == data.labels
    assert scores.shape == (7, 3)
    assert scores.argmax(1).tolist() == [i % 3 for i in range(7)]


def test_shards_cover_every_index_once_without_padding():
    for n, world in [(7, 2), (7, 3), (2, 4), (0, 2)]:
        shards = [list(evaluation.shard_indices(n, r, world)) for r in range(world)]
        assert sorted(sum(shards, [])) == list(range(n))


def test_check_complete_rejects_missing_and_repeated_videos():
    assert evaluation.check_complete(np.array([2, 0, 1]), 3, "t").tolist() == [1, 2, 0]
    with pytest.raises(ActionReproError, match="2 predictions for 3 test videos"):
        evaluation.check_complete(np.array([0, 1]), 3, "t")
    with pytest.raises(ActionReproError, match=r"repeated \[1\]"):
        evaluation.check_complete(np.array([0, 1, 1]), 3, "t")


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = ViewClips(labels=[0, 1, 2, 0, 1, 2, 0], view_targets=[[i % 3, 2] for i in range(7)],
                         views=2, num_classes=3)
        indices, labels, scores = predictions_of(data, batch_size=3, rank=rank, world=world)
        np.savez(f"{out}/rank{rank}.npz", indices=indices, labels=labels, scores=scores)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_gather_every_prediction_exactly_once(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    data = ViewClips(labels=[0, 1, 2, 0, 1, 2, 0], view_targets=[[i % 3, 2] for i in range(7)],
                     views=2, num_classes=3)
    single = predictions_of(data, batch_size=3)
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert got["indices"].tolist() == list(range(7))
        assert got["labels"].tolist() == single[1].tolist()
        np.testing.assert_allclose(got["scores"], single[2], rtol=1e-6)


# ---------------------------------------------------------------- view averaging
def test_scores_are_mean_of_per_view_softmax_not_softmax_of_mean_logits():
    logits = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0],   # video 0, views 0 and 1
                           [0.0, 2.0, 0.0], [0.0, 0.0, 4.0]])   # video 1
    got = evaluation.average_view_scores(logits, videos=2, views=2).numpy()

    def softmax(x):
        e = np.exp(np.asarray(x) - np.max(x))
        return e / e.sum()

    hand = np.array([(softmax([0, 0, 0]) + softmax([10, 0, 0])) / 2,
                     (softmax([0, 2, 0]) + softmax([0, 0, 4])) / 2])
    np.testing.assert_allclose(got, hand, rtol=1e-6)
    assert not np.allclose(got[0], softmax([5, 0, 0]))
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-6)


def test_fold_views_is_video_major_for_rgb_and_flow():
    rgb = torch.arange(2 * 3).float().reshape(2, 3, 1, 1, 1, 1).expand(2, 3, 2, 3, 4, 4)
    flow = torch.zeros(2, 3, 1, 4, 4, 4)
    inputs, videos, views = evaluation.fold_views({"rgb": rgb, "flow": flow, "label": torch.zeros(2)})
    assert (videos, views) == (2, 3)
    assert inputs["rgb"].shape == (6, 2, 3, 4, 4) and inputs["flow"].shape == (6, 1, 4, 4, 4)
    assert inputs["rgb"][:, 0, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_majority_of_views_wins_where_single_view_is_wrong():
    targets = [[1, 0, 0], [2, 2, 2]]  # video 0: first view misleading
    one = predictions_of(ViewClips([0, 2], targets, views=1, num_classes=3))[2]
    three = predictions_of(ViewClips([0, 2], targets, views=3, num_classes=3))[2]
    assert one.argmax(1).tolist() == [1, 2]
    assert three.argmax(1).tolist() == [0, 2]
    np.testing.assert_allclose(three[0], [2 / 3, 1 / 3, 0], atol=1e-4)


def test_views_forwarded_in_chunks_give_the_same_scores():
    data = ViewClips([0, 1, 2, 1], [[0, 1, 2], [1], [2, 2, 0], [0, 1, 1]], views=3, num_classes=3)
    whole = predictions_of(data, batch_size=4)[2]
    chunked = predictions_of(data, batch_size=4, max_clips=5)[2]
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)


def test_forward_in_chunks_never_exceeds_max_clips():
    seen = []

    def model(rgb=None):
        seen.append(rgb.shape[0])
        return rgb[:, :1]

    out = evaluation.forward_in_chunks(model, {"rgb": torch.arange(12.0)[:, None]}, max_clips=5)
    assert seen == [5, 5, 2] and out[:, 0].tolist() == list(range(12))


# ---------------------------------------------------------------- metrics
def hand_scores():
    """6 videos, 6 classes; rows are scores whose order is given by hand."""
    labels = np.array([0, 0, 1, 2, 2, 2])
    orders = [[0, 1, 2, 3, 4, 5],   # right
              [1, 0, 2, 3, 4, 5],   # wrong, label 2nd
              [1, 0, 2, 3, 4, 5],   # right
              [2, 0, 1, 3, 4, 5],   # right
              [0, 1, 3, 4, 5, 2],   # wrong, label last: top-5 miss
              [2, 1, 0, 3, 4, 5]]   # right
    scores = np.zeros((6, 6))
    for row, order in enumerate(orders):
        scores[row, order] = np.linspace(0.5, 0.0, 6)
    return labels, scores


def test_confusion_matrix_equals_sklearns_including_absent_classes():
    rng = np.random.default_rng(0)
    labels, pred = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    labels[labels == 3] = 4  # a class without test videos keeps its (zero) row
    ours = evaluation.confusion_matrix(labels, pred, 9)
    assert ours.tolist() == sklearn_confusion_matrix(labels, pred, labels=np.arange(9)).tolist()


def test_confusion_matrix_rejects_a_label_outside_the_classes():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        evaluation.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_metrics_match_hand_computation():
    labels, scores = hand_scores()
    names = [f"class{i}" for i in range(6)]
    m = evaluation.classification_metrics(labels, scores, names)
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == pytest.approx(5 / 6) and m["top5_k"] == 5
    assert m["per_class"] == {"class0": 0.5, "class1": 1.0, "class2": pytest.approx(2 / 3),
                              "class3": None, "class4": None, "class5": None}
    assert m["mean_class_acc"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert m["mean_class_acc"] == pytest.approx(balanced_accuracy_score(labels, scores.argmax(1)))
    assert m["confusion_matrix"] == [[1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 0, 2, 0, 0, 0],
                                     [0] * 6, [0] * 6, [0] * 6]
    assert m["classes"] == names and m["num_videos"] == 6


def test_top5_with_fewer_than_five_classes_is_top_all():
    m = evaluation.classification_metrics(np.array([0, 1]), np.array([[0.1, 0.9], [0.2, 0.8]]), ["a", "b"])
    assert m["top5_k"] == 2 and m["top5"] == 1.0 and m["top1"] == 0.5


def test_reversed_pair_accuracy_restricts_decision_to_the_pair():
    pairs = pd.DataFrame({"class_a": ["Open", "Push"], "class_b": ["Close", "Pull"],
                          "label_a": [0, 2], "label_b": [1, 3]})
    labels = np.array([0, 1, 2, 3, 4, 0])
    scores = np.array([[0.2, 0.1, 0.0, 0.1, 0.6, 0.0],   # in-pair right although argmax is 4
                       [0.5, 0.3, 0.1, 0.0, 0.1, 0.0],   # wrong
                       [0.0, 0.0, 0.1, 0.2, 0.7, 0.0],   # wrong
                       [0.0, 0.0, 0.3, 0.4, 0.3, 0.0],   # right
                       [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],   # class 4: in no pair, ignored
                       [0.9, 0.1, 0.0, 0.0, 0.0, 0.0]])  # right
    result = evaluation.reversed_pair_accuracy(labels, scores, pairs)
    assert result["reversed_pair_acc"] == pytest.approx(3 / 5)
    assert result["chance"] == 0.5 and result["num_videos"] == 5
    assert [p["acc"] for p in result["pairs"]] == [pytest.approx(2 / 3), 0.5]


# ---------------------------------------------------------------- model loading
def install_fake_registry(monkeypatch, calls=None):
    module = types.ModuleType("actionrepro.models.registry")

    def build_model(name, scale, num_classes, options):
        if calls is not None:
            calls.append((name, scale, num_classes, options))
        return ShowClass(num_classes)

    module.build_model = build_model
    monkeypatch.setitem(sys.modules, "actionrepro.models.registry", module)


def write_dense_run(run, num_classes, state=None, spec=SPEC, complete=True):
    """What train.py leaves: model.json and a checkpoint whose 'model' is the selected epoch."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.json").write_text(json.dumps({"name": "showclass", "scale": "tiny", "options": {"k": 1},
                                                "input_spec": spec.to_dict(), "num_classes": num_classes}))
    ckpt = {"model": state if state is not None else identity_state(num_classes), "epoch": 3}
    if complete:
        ckpt["complete"] = True
    torch.save(ckpt, run / "checkpoint.pt")


def test_dense_run_is_rebuilt_from_model_json_and_its_state_dict(tmp_path, monkeypatch):
    calls = []
    install_fake_registry(monkeypatch, calls)
    write_dense_run(tmp_path / "dense", 4)
    model = runs.load_model(tmp_path / "dense")
    assert calls == [("showclass", "tiny", 4, {"k": 1})]
    assert not model.training
    assert torch.equal(model.head.weight, torch.eye(4))


def test_missing_checkpoint_error_names_the_file(tmp_path, monkeypatch):
    install_fake_registry(monkeypatch)
    run = tmp_path / "runs/synth_ucf101/split2/showclass/dense"
    write_dense_run(run, 4)
    (run / "checkpoint.pt").unlink()
    with pytest.raises(ActionReproError, match=r"checkpoint\.pt not found.*actionrepro train synth_ucf101 2 showclass"):
        runs.load_model(run)


def test_unfinished_training_run_is_refused(tmp_path, monkeypatch):
    install_fake_registry(monkeypatch)
    write_dense_run(tmp_path / "dense", 4, complete=False)
    with pytest.raises(ActionReproError, match="has not finished"):
        runs.load_model(tmp_path / "dense")


def test_damaged_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    install_fake_registry(monkeypatch)
    write_dense_run(tmp_path / "dense", 4)
    ckpt = tmp_path / "dense" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ActionReproError, match=r"checkpoint\.pt cannot be read"):
        runs.load_model(tmp_path / "dense")


def test_checkpoint_of_another_shape_is_a_clear_error(tmp_path, monkeypatch):
    install_fake_registry(monkeypatch)
    write_dense_run(tmp_path / "dense", 4, state=identity_state(5))
    with pytest.raises(ActionReproError, match="does not fit model 'showclass'"):
        runs.load_model(tmp_path / "dense")


def test_changed_input_spec_since_training_is_a_clear_error(tmp_path, monkeypatch):
    install_fake_registry(monkeypatch)
    write_dense_run(tmp_path / "dense", 4, spec=InputSpec(segments=8, size=4))
    with pytest.raises(ActionReproError, match="records input_spec"):
        runs.load_model(tmp_path / "dense")


def test_pruned_variant_is_rebuilt_by_replaying_its_recorded_structure(tmp_path, monkeypatch):
    seen = []
    install_fake_registry(monkeypatch)
    sys.modules["actionrepro.models.registry"].model_options = lambda name: {"k": 1}
    monkeypatch.setattr("actionrepro.pruning.structure.replay", lambda model, record: seen.append(record))
    run = tmp_path / "pruned-0.3"
    write_dense_run(run, 3)
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "pruning": {"history": [], "ratio": 0.3}}))
    model = runs.load_model(run)
    assert seen == [{"history": [], "ratio": 0.3}]
    assert isinstance(model, ShowClass) and not model.training


# ---------------------------------------------------------------- the whole step
LABELS = [0, 1, 2, 3, 0, 1, 2]
# Videos 1 and 5 are wrong under 1 view and right under 3 (majority); video 6 is wrong under both.
VIEW_TARGETS = [[0], [3, 1, 1], [2], [3], [0], [3, 1, 1], [3]]


def install_fake_dataset(monkeypatch, built):
    module = types.ModuleType("actionrepro.data.dataset")

    def VideoClipDataset(dataset, split, subset, spec, params, mode="train", views=(1, 1), video_ids=None):
        assert (subset, mode, spec) == ("test", "test", SPEC)
        built.append(views)
        excluded = pd.DataFrame({"video_id": ["v_bad.avi"], "label": [2], "reason": ["cannot find video stream"]})
        return ViewClips(LABELS, VIEW_TARGETS, views[0] * views[1], num_classes=4, excluded=excluded)

    module.VideoClipDataset = VideoClipDataset
    monkeypatch.setitem(sys.modules, "actionrepro.data.dataset", module)


PARAMS = {"evaluate": {"clips": 1, "crops": 3, "batch_size": 3, "chunk_clips": 4, "latency_batch": 4, "latency_repeats": 2},
          "train": {"batch_size": 4, "device": "cpu", "num_workers": 0, "loader_memory_gb": 8}}


@pytest.fixture
def evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    install_fake_registry(monkeypatch)
    built = []
    install_fake_dataset(monkeypatch, built)
    run = tmp_path / "runs/synth_ucf101/split1/showclass/dense"
    write_dense_run(run, 4)
    manifests = tmp_path / "data/manifests/synth_ucf101"
    manifests.mkdir(parents=True)
    pd.DataFrame({"label": range(4), "class_name": ["Open", "Close", "Push", "#Pull"]}).to_csv(
        manifests / "classes.csv", index=False)
    pd.DataFrame({"class_a": ["Open", "Push"], "class_b": ["Close", "#Pull"], "label_a": [0, 2],
                  "label_b": [1, 3]}).to_csv(manifests / "reversal_pairs.csv", index=False)
    out = evaluate_step.evaluate("synth_ucf101", 1, "showclass", PARAMS)
    return run, out, built


def test_evaluate_writes_both_protocols_with_each_test_video_once(evaluated):
    run, out, built = evaluated
    assert out == run / "eval.json" or out.resolve() == (run / "eval.json").resolve()
    assert built == [(1, 1), (1, 3)]
    for views in ("1x1", "1x3"):
        table = pd.read_csv(run / f"predictions_{views}.csv", keep_default_na=False)
        assert table["video_id"].tolist() == [f"v_{i:02d}.avi" for i in range(7)]
        assert table["label"].tolist() == LABELS
        scores = np.load(run / f"scores_{views}.npy")
        assert scores.shape == (7, 4)
        np.testing.assert_allclose(table["score"], scores[np.arange(7), LABELS], rtol=1e-6)
        result = json.loads((run / f"eval_{views}.json").read_text())
        assert result["num_videos"] == 7 and result["excluded"] == 1
        assert result["excluded_videos"][0]["video_id"] == "v_bad.avi"
        assert result["views"] == views and "softmax" in result["score"]
    assert not (run / "metrics.json").exists()


def test_evaluate_metrics_follow_the_predictions(evaluated):
    run, _, _ = evaluated
    one = json.loads((run / "eval_1x1.json").read_text())
    three = json.loads((run / "eval_1x3.json").read_text())
    assert one["top1"] == pytest.approx(4 / 7) and three["top1"] == pytest.approx(6 / 7)
    assert pd.read_csv(run / "predictions_1x1.csv")["pred"].tolist() == [0, 3, 2, 3, 0, 3, 3]
    assert three["per_class"] == {"Open": 1.0, "Close": 1.0, "Push": 0.5, "#Pull": 1.0}
    assert three["classes"] == ["Open", "Close", "Push", "#Pull"]
    assert three["confusion_matrix"][2] == [0, 0, 1, 1]
    # pairs (Open, Close), (Push, #Pull): under 1x1 videos 1 and 5 lose to #Pull, outside their pair,
    # but within it Close still beats Open; video 6 (Push shown as #Pull) is wrong within its pair
    assert one["reversed_pair_acc"] == pytest.approx(6 / 7)
    assert three["reversed_pair_acc"] == pytest.approx(6 / 7)


def test_evaluate_summary_holds_both_protocols_and_costs(evaluated):
    run, out, _ = evaluated
    summary = json.loads(out.read_text())
    assert set(summary["protocols"]) == {"1x1", "1x3"}
    assert summary["protocols"]["1x3"]["top1"] == pytest.approx(6 / 7)
    assert summary["protocols"]["1x3"]["reversed_pair_acc"] == pytest.approx(6 / 7)
    assert summary["paper_protocol"] == "1x3"
    costs = summary["costs"]
    assert costs["params"] == 4 * 4 + 4
    assert costs["gflops"] > 0
    assert set(costs["latency_ms"]) == {"batch_1", "batch_4"}
    assert costs["latency_ms"]["batch_4"]["repeats"] == 2
    assert costs["device"] == "cpu" and costs["threads"] >= 1


# ---------------------------------------------------------------- through the real pipeline
REAL_PARAMS = """
seed: 0
datasets: [synth_hmdb51]
splits: [1]
models: [tsn]
scale: tiny
download: {verify_tls: true, retries: 1, timeout_s: 5, backoff_s: 0.1}
synth:
  ucf101: {classes: 2, groups: 21, clips_per_group: 1, width: 32, height: 24, fps: 25, frames: 16, corrupt_fraction: 0.0}
  hmdb51: {classes: 4, train_per_class: 2, test_per_class: 3, unused_per_class: 0, width: 32, height: 24, fps: 25,
           frames: 12, corrupt_fraction: 0.25}
decode: {short_side: 24, jpeg_quality: 90, timeout_s: 30, max_bad_fraction: 0.5}
flow: {algorithm: farneback, bound: 20}
augment: {hflip: {synth_hmdb51: true}, scales: [1.0, 0.875]}
architectures: {}
train: {epochs: 1, batch_size: 4, optimizer: adamw, lr: 0.003, weight_decay: 0.0001, schedule: cosine,
        warmup_epochs: 0, amp: "off", num_workers: 0, device: cpu}
evaluate: {clips: 2, crops: 3, batch_size: 4, chunk_clips: 4, latency_batch: 4, latency_repeats: 2}
prune: {ratios: [0.3], importance: l2, global_pruning: false, iterative_steps: 1, round_to: null,
        finetune_epochs: 1, finetune_lr: 0.001}
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """synth_hmdb51 (some videos corrupt) -> extract -> splits -> decode -> train tsn 1 epoch -> evaluate."""
    import os

    from actionrepro import config
    from actionrepro.engine import runner
    from actionrepro.data import download
    from actionrepro.steps.extract import extract_dataset
    from actionrepro.steps import decode as decode_step
    from actionrepro.steps import splits as splits_step

    root = tmp_path_factory.mktemp("real")
    (root / "p.yaml").write_text(REAL_PARAMS)
    before = os.getcwd()
    os.chdir(root)
    try:
        params = config.load("p.yaml")
        download.download_dataset("synth_hmdb51", params)
        extract_dataset("synth_hmdb51")
        splits_step.write_manifests("synth_hmdb51", params=params)
        decode_step.decode_dataset("synth_hmdb51", params, workers=1)
        runner.train("synth_hmdb51", 1, "tsn", params)
        out = evaluate_step.evaluate("synth_hmdb51", 1, "tsn", params)
        manifest = pd.read_csv("data/manifests/synth_hmdb51/split1.csv", keep_default_na=False, dtype=str)
        quarantine = pd.read_csv("data/frames/synth_hmdb51/quarantine.csv", keep_default_na=False, dtype=str)
        yield root / out, manifest[manifest.subset == "test"], set(quarantine["video_id"])
    finally:
        os.chdir(before)


def test_real_pipeline_predicts_every_unquarantined_test_video_once(real_run):
    out, test_rows, quarantined = real_run
    quarantined_tests = quarantined & set(test_rows["video_id"])
    assert quarantined_tests, "the fixture's corrupt videos must include test videos"
    run = out.parent
    summary = json.loads(out.read_text())
    assert set(summary["protocols"]) == {"1x1", "2x3"}
    for views in ("1x1", "2x3"):
        result = json.loads((run / f"eval_{views}.json").read_text())
        table = pd.read_csv(run / f"predictions_{views}.csv", keep_default_na=False, dtype={"video_id": str})
        excluded = {v["video_id"] for v in result["excluded_videos"]}
        assert result["num_videos"] == len(table) == table["video_id"].nunique()
        assert result["num_videos"] + result["excluded"] == len(test_rows) == 12
        assert excluded == quarantined_tests
        assert set(table["video_id"]) | excluded == set(test_rows["video_id"])
        assert not set(table["video_id"]) & excluded
        assert np.load(run / f"scores_{views}.npy").shape == (len(table), 4)
        assert 0.0 <= result["reversed_pair_acc"] <= 1.0 and len(result["reversed_pairs"]["pairs"]) == 2


def test_real_pipeline_costs_are_measured_for_the_trained_model(real_run):
    out, _, _ = real_run
    costs = json.loads(out.read_text())["costs"]
    assert costs["gflops"] > 0 and costs["params"] > 0
    assert set(costs["latency_ms"]) == {"batch_1", "batch_4"}
    assert "eval" not in json.loads((out.parent / "metrics.json").read_text())  # train.py's file, untouched


def _torchrun_worker(rank: int, world: int, port: int, root: str) -> None:
    """What torchrun gives each process: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT."""
    import os

    from actionrepro import config

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.chdir(root)
    evaluate_step.evaluate("synth_hmdb51", 1, "tsn", config.load("p.yaml"))


def test_real_evaluate_under_two_torchrun_ranks_matches_one_process(real_run):
    out, _, _ = real_run
    run = out.parent
    single = {v: (pd.read_csv(run / f"predictions_{v}.csv", keep_default_na=False),
                  np.load(run / f"scores_{v}.npy")) for v in ("1x1", "2x3")}
    for v in single:
        (run / f"predictions_{v}.csv").unlink()
    torch.multiprocessing.spawn(_torchrun_worker, args=(2, _free_port(), str(run.parents[4])), nprocs=2)
    for v, (table, scores) in single.items():
        ddp_table = pd.read_csv(run / f"predictions_{v}.csv", keep_default_na=False)
        assert ddp_table["video_id"].tolist() == table["video_id"].tolist()
        assert ddp_table["pred"].tolist() == table["pred"].tolist()
        np.testing.assert_allclose(np.load(run / f"scores_{v}.npy"), scores, rtol=1e-4, atol=1e-6)
