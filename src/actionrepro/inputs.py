"""What a model consumes: each model declares an InputSpec; the dataset builds exactly that.

Batches are dicts passed to the model as keyword arguments (`model(**batch_inputs)`):
  rgb  float32 (B, T, 3, H, W) with T = segments * frames_per_segment (segment-major),
       or for sampling="dense" T = clip_len; ImageNet-normalised.
  flow float32 (B, K, 2*flow_len, H, W), K = flow_segments stacks of flow_len consecutive flow
       frames, channels interleaved x1, y1, x2, y2, ... (TSN convention); (v - 128) / 128.
At test time a dataset yields V = clips * crops views per video; the evaluator folds them into
the batch and averages the scores per video. Frame indices are 0-based everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class InputSpec:
    rgb: bool = True
    flow: bool = False
    sampling: Literal["segments", "dense"] = "segments"
    segments: int = 8              # sampling="segments": one position per equal segment (TSN)
    frames_per_segment: int = 1    # consecutive frames at each position (USTN: 5)
    clip_len: int = 16             # sampling="dense": contiguous frames in one clip
    stride: int = 1                # sampling="dense": step between sampled frames
    flow_segments: int = 0         # flow stacks per clip (STPN: 3, STFN: = segments)
    flow_len: int = 10             # flow frames per stack -> 2 * flow_len channels
    size: int = 224                # square crop side fed to the network

    def __post_init__(self):
        if not (self.rgb or self.flow):
            raise ValueError("an InputSpec needs rgb, flow or both")
        if self.flow and self.flow_segments < 1:
            raise ValueError("flow=True needs flow_segments >= 1")

    @property
    def frames(self) -> int:
        """RGB frames per clip (the T of the rgb tensor)."""
        return self.clip_len if self.sampling == "dense" else self.segments * self.frames_per_segment

    def to_dict(self) -> dict:
        return asdict(self)
