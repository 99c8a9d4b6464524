"""A validation subset carved from a TRAIN split, never from the test split (model selection).

UCF101 clips of one group share actors and scenes, so whole groups go to validation; other
datasets are stratified by class.
"""

from __future__ import annotations

import re

import pandas as pd

from actionrepro.errors import ConfigError, DataError

UCF_GROUP = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


def ucf_group(video_id: str) -> int:
    """UCF101 group number from a video id (`v_ApplyEyeMakeup_g08_c01`): clips of one group share
    actors and scenes, so they must not straddle train and validation."""
    match = UCF_GROUP.search(str(video_id))
    if match is None:
        raise DataError(f"video id {video_id!r} has no UCF101 group tag (_gXX_cYY); cannot carve a "
                        "group-wise validation subset. Check the manifest, or set train.val_fraction: 0")
    return int(match.group(1))


def carve_validation(videos: pd.DataFrame, fraction: float, seed: int, by_group: bool) -> tuple[list[str], list[str]]:
    """Split the TRAIN split's videos (columns video_id, label) into (train_ids, val_ids).

    by_group (UCF101): whole groups go to validation (sklearn GroupShuffleSplit), as the official
    splits do for the test set. Otherwise (HMDB51): stratified by class (train_test_split).
    """
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    ids = videos["video_id"].astype(str).to_numpy()
    if not 0 < fraction < 1:
        raise ConfigError(f"train.val_fraction must be in (0, 1) to carve a validation subset, got {fraction}")
    if by_group:
        groups = [ucf_group(v) for v in ids]
        if len(set(groups)) < 2:
            raise DataError(f"the training split holds a single UCF101 group ({groups[0] if groups else 'none'}); "
                            "a group-wise validation subset needs at least two. Set train.val_fraction: 0")
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        train_idx, val_idx = next(splitter.split(ids, groups=groups))
    else:
        labels = videos["label"].to_numpy()
        try:
            train_idx, val_idx = train_test_split(range(len(ids)), test_size=fraction, stratify=labels,
                                                  random_state=seed)
        except ValueError as err:
            raise ConfigError(f"train.val_fraction={fraction} cannot carve a class-stratified validation subset "
                              f"from {len(ids)} training videos of {len(set(labels))} classes ({err}); "
                              "raise val_fraction or set it to 0") from err
    return sorted(ids[list(train_idx)]), sorted(ids[list(val_idx)])
