"""Small timm networks for residual inputs, trained from scratch (no ImageNet weights exist).

``npr_resnet`` follows NPR (Tan et al., CVPR 2024): a 3x3 stride-2 stem, then only the first
two stages of ResNet-50 (3 and 4 bottleneck blocks, 256 and 512 channels), global average
pooling and a linear head; about 1.44M parameters. A residual such as x - up(down(x)) carries
a local, high-frequency trace; the deep stages an ImageNet network needs for objects add
parameters and compute without helping to see it, and its 7x7 stem smears it.

Importing this module registers the networks with timm, so ``timm.create_model("npr_resnet")``
and ``forensics.backbones.create_backbone`` build them like any timm model.
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import Bottleneck, ResNet
from torch import nn

__all__ = ["SCRATCH_BACKBONES", "TruncatedResNet", "npr_resnet"]

# Backbones that have no pretrained weights: they always start from random init.
SCRATCH_BACKBONES = ("npr_resnet",)


class TruncatedResNet(ResNet):
    """A timm ResNet with only its first ``len(layers)`` stages and a 3x3 stride-2 stem.

    timm's ResNet always runs four stages; the ones cut off are empty and pass their input
    through, so ``forward_features``, ``forward_intermediates`` and ``feature_info`` (for
    Grad-CAM) work unchanged.
    """

    def __init__(self, layers: tuple[int, ...] = (3, 4), channels: tuple[int, ...] = (64, 128),
                 in_chans: int = 3, **kwargs):
        super().__init__(block=Bottleneck, layers=layers, channels=channels, in_chans=in_chans,
                         **kwargs)
        stem = self.conv1.out_channels
        self.conv1 = nn.Conv2d(in_chans, stem, kernel_size=3, stride=2, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        for index in range(len(layers) + 1, 5):
            setattr(self, f"layer{index}", nn.Sequential())


default_cfgs = generate_default_cfgs({
    # No url or hub id: there are no weights to download. mean = std = 0.5 maps [0, 1] RGB to
    # [-1, 1] before the residual is taken.
    "npr_resnet": {"url": "", "num_classes": 1000, "input_size": (3, 128, 128),
                   "pool_size": (16, 16), "crop_pct": 1.0, "interpolation": "nearest",
                   "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "first_conv": "conv1",
                   "classifier": "fc", "license": "apache-2.0"},
})


@register_model
def npr_resnet(pretrained: bool = False, **kwargs) -> TruncatedResNet:
    """NPR's classifier: 3x3 stride-2 stem, ResNet-50 stages 1-2, avg pool, linear head."""
    if pretrained:
        raise ValueError("npr_resnet has no pretrained weights: it is trained from scratch "
                         "(pass pretrained=False)")
    # features_only: its three feature maps (stem, stage 1, stage 2) unless out_indices says.
    return build_model_with_cfg(TruncatedResNet, "npr_resnet", pretrained=False,
                                feature_cfg={"out_indices": (0, 1, 2)}, **kwargs)
