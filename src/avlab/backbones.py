"""Image backbones built from their config, random by default, pretrained only when asked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
from torch import nn


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be had."""


def timm_backbone(
    name: str,
    pretrained: str | bool | None = None,
    in_chans: int = 3,
    model_args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A timm feature extractor (no classifier) with random weights unless `pretrained` is set.

    `pretrained` is None/False (random init), a path to a weights file (.safetensors/.pth/.bin)
    or True / "hub" to let timm fetch its default weights, which needs the network.
    `model_args` go to the timm model's constructor (e.g. a ResNet's `channels`, `stem_width`);
    pretrained weights only fit the architecture they were trained with.
    """
    extra = dict(model_args or {})
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **extra)
    if pretrained is True or str(pretrained) == "hub":
        return _from_hub(name, in_chans, extra)
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(
            f"model.pretrained={pretrained!r}: no such file. Pass a local weights file for "
            f"timm's {name!r} (e.g. model.safetensors from its hub page), "
            "or model.pretrained=null for random initialisation."
        )
    return timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        num_classes=0,
        in_chans=in_chans,
        **extra,
    )


def feature_width(backbone: nn.Module) -> int:
    """Width of a timm backbone's pooled output (after its head conv, where it has one)."""
    return getattr(backbone, "head_hidden_size", None) or backbone.num_features


def _from_hub(name: str, in_chans: int, extra: dict) -> nn.Module:
    """Let timm download its default weights, turning an offline failure into a clear message."""
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_chans, **extra)
    except Exception as err:  # timm raises many kinds (URLError, HF hub errors, OSError)
        raise PretrainedWeightsError(
            f"could not fetch pretrained weights for {name!r} ({type(err).__name__}: {err}). "
            "This machine may be offline: download the weights elsewhere and pass "
            "model.pretrained=/path/to/weights.safetensors, or use model.pretrained=null."
        ) from err
