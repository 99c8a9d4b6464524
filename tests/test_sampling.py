from __future__ import annotations

import numpy as np
import pytest

from actionrepro.data import sampling
from actionrepro.inputs import InputSpec


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_train_segment_positions_stay_inside_their_own_segment():
    n, segments = 103, 8
    edges = np.arange(segments + 1) * n // segments
    seen = [set() for _ in range(segments)]
    for seed in range(300):
        idx = sampling.segment_indices(n, segments, 1, "train", rng(seed))
        assert idx.shape == (segments,)
        for i, p in enumerate(idx):
            assert edges[i] <= p < edges[i + 1]
            seen[i].add(int(p))
    # the random offset covers each whole segment, first and last frame included
    for i in range(segments):
        assert seen[i] == set(range(edges[i], edges[i + 1]))
    assert n - 1 in seen[-1]


def test_test_mode_segment_positions_are_segment_centres():
    idx = sampling.segment_indices(80, 8, 1, "test")
    assert idx.tolist() == [5, 15, 25, 35, 45, 55, 65, 75]


def test_local_window_is_centred_on_the_position_and_consecutive():
    idx = sampling.segment_indices(80, 4, 5, "test").reshape(4, 5)
    centres = sampling.segment_indices(80, 4, 1, "test")
    assert (idx[:, 2] == centres).all()
    assert (np.diff(idx, axis=1) == 1).all()
    # an even window puts the extra frame after the position
    assert sampling.segment_indices(80, 1, 4, "test").tolist() == [39, 40, 41, 42]


def test_window_at_the_ends_is_clamped_not_out_of_range():
    idx = sampling.segment_indices(10, 1, 5, "train", fraction=0.0)
    assert idx.tolist() == [0, 0, 0, 1, 2]
    idx = sampling.segment_indices(10, 1, 5, "train", fraction=0.99)
    assert idx.tolist() == [7, 8, 9, 9, 9]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9])
def test_short_videos_repeat_frames_and_never_leave_the_video(n):
    for mode in ("train", "test"):
        for seed in range(50):
            idx = sampling.segment_indices(n, 8, 5, mode, rng(seed))
            assert idx.shape == (40,)
            assert idx.min() >= 0 and idx.max() <= n - 1
            assert (np.diff(idx.reshape(8, 5)[:, 2]) >= 0).all()  # positions keep temporal order


def test_dense_train_start_is_random_and_clip_fits():
    starts = set()
    for seed in range(400):
        idx = sampling.dense_indices(40, 8, 2, "train", rng(seed))
        assert (np.diff(idx) == 2).all()
        assert 0 <= idx[0] and idx[-1] <= 39
        starts.add(int(idx[0]))
    assert starts == set(range(0, 40 - 15 + 1))  # every start that fits, the last frame included


def test_dense_test_clip_is_centred():
    idx = sampling.dense_indices(100, 16, 1, "test")
    assert idx[0] == 42 and idx[-1] == 57  # 42 frames before, 42 after


def test_dense_clip_longer_than_video_loops_within_range():
    idx = sampling.dense_indices(5, 8, 1, "train", rng(1))
    assert idx.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    idx = sampling.dense_indices(10, 8, 3, "test")
    assert idx.max() <= 9 and len(idx) == 8


def test_view_starts_are_evenly_spaced_and_in_range():
    starts = sampling.view_starts(100, 10, 10)
    assert len(starts) == 10
    assert starts.min() >= 0 and starts.max() + 10 <= 100
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1 and gaps.min() >= 8


def test_test_segment_views_use_different_offsets_inside_each_segment():
    spec = InputSpec(segments=4)
    views = sampling.test_clip_indices(100, spec, 5)
    assert views.shape == (5, 4)
    edges = np.arange(5) * 100 // 4
    for i in range(4):
        col = views[:, i]
        assert (np.diff(col) > 0).all()  # 5 distinct, ordered offsets
        assert edges[i] <= col.min() and col.max() < edges[i + 1]
    # one view is exactly the test-mode clip
    assert (sampling.test_clip_indices(100, spec, 1)[0] == sampling.clip_indices(spec, 100, "test")).all()


def test_test_dense_views_start_at_view_starts():
    spec = InputSpec(sampling="dense", clip_len=8, stride=4)
    views = sampling.test_clip_indices(200, spec, 3)
    assert views[:, 0].tolist() == sampling.view_starts(200, 29, 3).tolist()
    assert (sampling.test_clip_indices(200, spec, 1)[0] == sampling.clip_indices(spec, 200, "test")).all()


def test_flow_stacks_are_consecutive_and_fit_in_the_video():
    for seed in range(200):
        idx = sampling.flow_stack_indices(59, 3, 10, "train", rng(seed))
        assert idx.shape == (3, 10)
        assert (np.diff(idx, axis=1) == 1).all()
        assert idx.min() >= 0 and idx.max() <= 58
        assert (np.diff(idx[:, 0]) > 0).all()
    last = sampling.flow_stack_indices(59, 1, 10, "train", fraction=0.999)
    assert last[0, -1] == 58  # the last flow frame is reachable


def test_flow_stacks_in_short_videos_repeat_the_last_flow_frame():
    idx = sampling.flow_stack_indices(4, 3, 10, "test")
    assert idx.shape == (3, 10)
    assert idx.tolist()[0] == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]


def test_same_rng_seed_gives_same_indices_and_other_seed_differs():
    a = sampling.segment_indices(300, 8, 1, "train", rng(5))
    b = sampling.segment_indices(300, 8, 1, "train", rng(5))
    c = sampling.segment_indices(300, 8, 1, "train", rng(6))
    assert (a == b).all() and not (a == c).all()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        sampling.segment_indices(0, 8, 1, "test")
    with pytest.raises(ValueError):
        sampling.segment_indices(10, 8, 1, "train")  # train needs an rng
    with pytest.raises(ValueError):
        sampling.segment_indices(10, 8, 1, "val")
    with pytest.raises(ValueError):
        sampling.flow_stack_indices(0, 3, 10, "test")
