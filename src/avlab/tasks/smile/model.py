"""Smile + emotion network: a per-frame CNN, a bidirectional LSTM over time, two heads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from avlab.backbones import feature_width, timm_backbone

NUM_EMOTIONS = 7
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass
class SmileOutput:
    """Sequence-level and per-frame outputs; logits stay unsquashed for the losses."""

    smile_logit: torch.Tensor  # (B,)
    emotion_logits: torch.Tensor  # (B, 7)
    frame_smile_logit: torch.Tensor  # (B, T)
    frame_emotion_logits: torch.Tensor  # (B, T, 7)

    @property
    def smile_intensity(self) -> torch.Tensor:
        """Smile intensity in [0, 1] per sequence."""
        return self.smile_logit.sigmoid()

    @property
    def frame_smile_intensity(self) -> torch.Tensor:
        """Smile intensity in [0, 1] per frame."""
        return self.frame_smile_logit.sigmoid()


class SmileEmotionNet(nn.Module):
    """A timm CNN per frame -> BiLSTM -> smile-intensity head and 7-class emotion head.

    Input frames are (B, T, C, H, W). Heads score every time step of the LSTM output; the
    sequence prediction averages the per-frame logits, so the same network serves a whole
    clip and the frame-by-frame game.

    The per-frame encoder is any timm model name. The default config uses `resnet10t`;
    `model=smile_mnv3` selects the designed `mobilenetv3_small_100`, which learns this task
    far more slowly from random weights (BENCHMARKS.md) and is the choice when you have its
    pretrained weights. `channels_last` runs the encoder in NHWC layout
    (avlab.backbones.to_channels_last): the same numbers, faster
    on CPU (1.15x for resnet10t at 48 px, 2x for MobileNetV3; BENCHMARKS.md) and the layout
    tensor cores want with mixed precision. `encoder_args` go to the timm constructor: the
    default config halves resnet10t's widths, 3.4x less time per training step on a CPU
    (BENCHMARKS.md, "The default run meets its bar").
    """

    def __init__(
        self,
        backbone: str = "resnet10t",
        pretrained: str | bool | None = None,
        in_chans: int = 3,
        lstm_hidden: int = 128,
        lstm_layers: int = 1,
        dropout: float = 0.2,
        num_emotions: int = NUM_EMOTIONS,
        channels_last: bool = False,
        encoder_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = timm_backbone(backbone, pretrained, in_chans, encoder_args, channels_last)
        self.in_chans = in_chans
        self.temporal = nn.LSTM(
            input_size=feature_width(self.encoder),
            hidden_size=lstm_hidden,
            num_layers=lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if lstm_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.smile_head = nn.Linear(2 * lstm_hidden, 1)
        self.emotion_head = nn.Linear(2 * lstm_hidden, num_emotions)

    def forward(self, frames: torch.Tensor) -> SmileOutput:
        """Score a batch of frame sequences (B, T, C, H, W); a grey C = 1 is repeated to `in_chans`."""
        if frames.ndim != 5:
            raise ValueError(f"frames must be (B, T, C, H, W), got shape {tuple(frames.shape)}")
        batch, steps = frames.shape[:2]
        images = frames.flatten(0, 1)
        if images.shape[1] == 1 and self.in_chans != 1:
            images = images.expand(-1, self.in_chans, -1, -1)
        features = self.encoder(images).view(batch, steps, -1)
        hidden, _ = self.temporal(features)  # (B, T, 2*hidden)
        hidden = self.dropout(hidden)
        frame_smile = self.smile_head(hidden).squeeze(-1)
        frame_emotion = self.emotion_head(hidden)
        return SmileOutput(
            smile_logit=frame_smile.mean(dim=1),
            emotion_logits=frame_emotion.mean(dim=1),
            frame_smile_logit=frame_smile,
            frame_emotion_logits=frame_emotion,
        )
