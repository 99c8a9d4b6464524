"""TSM: TSN plus a parameter-free residual temporal shift before conv1 of every residual block.

1/shift_div of the channels move one frame back, 1/shift_div one frame forward, on the residual
branch only, so 2D convs mix neighbouring frames at no parameter cost. Pretrained weights are
loaded before the shifts are inserted.
Options and anchors: docs/models.md ("TSM").
"""

from __future__ import annotations

from torch import nn

from actionrepro.errors import ConfigError
from actionrepro.models.layers import TemporalShift, check_dropout, check_rgb
from actionrepro.models.registry import ModelInfo, Published, register
from actionrepro.models.tsn import TSN, tsn_parts

TSM_INFO = ModelInfo(
    name="tsm",
    title="TSM-R50",
    reference="Lin et al., TSM: Temporal Shift Module, ICCV 2019; ResNet-50 recipe of the mmaction2 model zoo",
    tag="code",
    protocol="T=8 segments x 1 RGB frame, 224x224, residual shift of 1/8 channels each way in every block",
    published=(
        Published("ucf101", 94.50, "code",
                  "Kinetics-400 TSM init, split 1, 8 segments; test 8 segments x centre crop "
                  "(tsm_k400_pretrained_r50_1x1x8_25e_ucf101_rgb)",
                  "open-mmlab/mmaction2 configs/recognition/tsm/README.md @ 8eb44f7dd08e (0.x model zoo row and its "
                  "config tsm_k400_pretrained_r50_1x1x8_25e_ucf101_rgb.py)",
                  init="kinetics400", backbone="ResNet-50", splits="split1", views="1x1"),
        Published("hmdb51", 72.68, "code",
                  "Kinetics-400 TSM init, split 1, 8 segments; test 8 segments x centre crop "
                  "(tsm_k400_pretrained_r50_1x1x8_25e_hmdb51_rgb)",
                  "open-mmlab/mmaction2 configs/recognition/tsm/README.md @ 8eb44f7dd08e (0.x model zoo row); config "
                  "tsm_k400_pretrained_r50_1x1x8_25e_hmdb51_rgb.py @ 28ac80cb1a96",
                  init="kinetics400", backbone="ResNet-50", splits="split1", views="1x1"),
    ),
    backbone="ResNet-50",
)


def insert_shifts(backbone: nn.Module, segments: int, shift_div: int) -> list[TemporalShift]:
    """Put a TemporalShift in front of conv1 of every block of layer1..layer4 (residual shift)."""
    shifts = []
    for stage in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
        for block in stage:
            shift = TemporalShift(segments, shift_div)
            block.conv1 = nn.Sequential(shift, block.conv1)
            shifts.append(shift)
    return shifts


class TSM(TSN):
    """TSN whose backbone blocks shift channels in time; needs exactly the T it was built for."""

    temporal = True

    def forward(self, rgb=None, flow=None):
        check_rgb(rgb, self.name, frames=self.input_spec.frames)
        return super().forward(rgb, flow)


@register("tsm", info=TSM_INFO)
def build_tsm(scale: str, num_classes: int, *, pretrained: str = "none", backbone: str | None = None,
              segments: int = 8, size: int | None = None, dropout: float = 0.5, shift_div: int = 8) -> TSM:
    """TSM; same options as TSN plus shift_div (1/shift_div of the channels shift each way)."""
    if isinstance(shift_div, bool) or shift_div < 2:
        raise ConfigError(f"architectures.tsm.shift_div = {shift_div!r}; use an integer >= 2 (TSM uses 8)")
    net, spec = tsn_parts("tsm", scale, pretrained, backbone, segments, size)
    insert_shifts(net, spec.segments, shift_div)
    return TSM(net, num_classes, spec, check_dropout("tsm", dropout), name="tsm")
