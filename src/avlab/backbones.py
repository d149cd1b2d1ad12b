"""Image backbones built from their config, random by default, pretrained only when asked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be had."""


def timm_backbone(
    name: str,
    pretrained: str | bool | None = None,
    in_chans: int = 3,
    model_args: Mapping[str, Any] | None = None,
    channels_last: bool = False,
) -> nn.Module:
    """A timm feature extractor (no classifier) with random weights unless `pretrained` is set.

    `pretrained` is None/False (random init), a path to a weights file (.safetensors/.pth/.bin)
    or True / "hub" to let timm fetch its default weights, which needs the network.
    `model_args` go to the timm model's constructor (e.g. a ResNet's `channels`, `stem_width`);
    pretrained weights only fit the architecture they were trained with. `channels_last`: see
    `to_channels_last`.
    """
    backbone = _create(name, pretrained, in_chans, dict(model_args or {}))
    return to_channels_last(backbone) if channels_last else backbone


def to_channels_last(module: nn.Module) -> nn.Module:
    """`module` with its weights in NHWC (channels-last) layout, and its 4-D input put in that
    layout before each forward: the same numbers, faster convolutions on CPU (oneDNN) and the
    layout tensor cores want under mixed precision. Checkpoints load into it unchanged."""
    module.to(memory_format=torch.channels_last)
    module.register_forward_pre_hook(_channels_last_input)
    return module


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    images, *rest = args
    return (images.contiguous(memory_format=torch.channels_last), *rest)


def _create(name: str, pretrained: str | bool | None, in_chans: int, extra: dict) -> nn.Module:
    """The timm model: random, from the hub, or from a local weights file."""
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
