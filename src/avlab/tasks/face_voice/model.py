"""Face–voice network: a face encoder and a voice encoder, each projected into one shared,
L2-normalised embedding space where a person's face and voice should lie close together.

    face  (B, 3, H, W) -> timm backbone -> (B, F) -> projection head -> (B, E), unit length
    voice (B, S)       -> log-mel CNN or Wav2Vec2 -> (B, A) -> projection head -> (B, E), unit length
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avlab.audio import LogMel
from avlab.backbones import feature_width, timm_backbone


@dataclass
class FaceVoiceOutput:
    """Unit-length embeddings of the faces and the voices of a batch, (B, E) each."""

    face: torch.Tensor
    voice: torch.Tensor


class ProjectionHead(nn.Module):
    """An MLP: `depth - 1` hidden blocks (Linear, LayerNorm?, GELU, Dropout) then a Linear.

    depth 1 is a single linear map. The output is not normalised here; the network does it.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int = 2,
        width: int = 256,
        layer_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"projection head depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(depth - 1):
            layers += [
                nn.Linear(dim, width),
                nn.LayerNorm(width) if layer_norm else nn.Identity(),
                nn.GELU(),
                nn.Dropout(dropout),
            ]
            dim = width
        layers.append(nn.Linear(dim, out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.mlp(x)


class LogMelCNN(nn.Module):
    """A small x-vector-style speaker encoder: log-mel -> 1-D convs over time -> mean+std pooling.

    Mel bands are the convolution's channels, so absolute frequency (pitch, formants) stays
    visible; statistics pooling summarises the whole clip (level and spread of each feature).
    """

    def __init__(
        self,
        sample_rate: int = 16_000,
        n_mels: int = 64,
        channels: Sequence[int] = (96, 96, 96, 192),
        kernels: Sequence[int] = (5, 3, 3, 1),
        strides: Sequence[int] = (2, 1, 1, 1),
        dilations: Sequence[int] = (1, 2, 3, 1),
    ) -> None:
        super().__init__()
        if not len(channels) == len(kernels) == len(strides) == len(dilations):
            raise ValueError("channels, kernels, strides and dilations need one entry per layer")
        self.features = LogMel(sample_rate=sample_rate, n_mels=n_mels)
        self.input_norm = nn.BatchNorm1d(n_mels)
        layers: list[nn.Module] = []
        dim = n_mels
        for out, k, s, d in zip(channels, kernels, strides, dilations, strict=True):
            layers += [
                nn.Conv1d(dim, out, k, stride=s, dilation=d, padding=d * (k - 1) // 2, bias=False),
                nn.BatchNorm1d(out),
                nn.ReLU(inplace=True),
            ]
            dim = out
        self.convs = nn.Sequential(*layers)
        self.out_dim = 2 * dim

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms -> (B, 2C) statistics."""
        hidden = self.convs(self.input_norm(self.features(waveform)))  # (B, C, T')
        return torch.cat([hidden.mean(dim=2), hidden.std(dim=2)], dim=1)


class Wav2Vec2Encoder(nn.Module):
    """A transformers Wav2Vec2 built from a config with random weights, mean-pooled over time."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        self.model = Wav2Vec2Model(Wav2Vec2Config(**dict(config or {})))
        self.out_dim = self.model.config.hidden_size

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms -> (B, hidden) mean of the last hidden states."""
        # Wav2Vec2 expects each clip at zero mean and unit variance, as its feature extractor gives.
        centred = waveform - waveform.mean(dim=1, keepdim=True)
        normalised = centred / (centred.std(dim=1, keepdim=True) + 1e-5)
        return self.model(normalised).last_hidden_state.mean(dim=1)


class FaceEncoder(nn.Module):
    """A timm image backbone (random unless `pretrained` names local weights), pooled features.

    `channels_last` (on by default) keeps weights and images in NHWC layout
    (avlab.backbones.to_channels_last): oneDNN's convolutions (and cuDNN's under mixed
    precision) run faster on it; a checkpoint's tensors load into it unchanged.
    """

    def __init__(
        self,
        backbone: str = "resnet10t",
        pretrained: str | bool | None = None,
        backbone_args: Mapping[str, Any] | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = timm_backbone(
            backbone, pretrained, model_args=backbone_args, channels_last=channels_last
        )
        self.out_dim = feature_width(self.backbone)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, out_dim) pooled features."""
        return self.backbone(images)


class FaceVoiceNet(nn.Module):
    """Embeds faces and voices into one unit-length space; `voice_encoder` picks cnn or wav2vec2."""

    def __init__(
        self,
        face_backbone: str = "resnet10t",
        pretrained: str | bool | None = None,
        face_backbone_args: Mapping[str, Any] | None = None,
        voice_encoder: str = "cnn",
        sample_rate: int = 16_000,
        cnn: Mapping[str, Any] | None = None,
        wav2vec2: Mapping[str, Any] | None = None,
        embed_dim: int = 128,
        head: Mapping[str, Any] | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.face_encoder = FaceEncoder(
            face_backbone, pretrained, face_backbone_args, channels_last
        )
        if voice_encoder == "cnn":
            self.voice_encoder: nn.Module = LogMelCNN(sample_rate=sample_rate, **dict(cnn or {}))
        elif voice_encoder == "wav2vec2":
            self.voice_encoder = Wav2Vec2Encoder(wav2vec2)
        else:
            raise ValueError(
                f"model.net.voice_encoder must be 'cnn' or 'wav2vec2', got {voice_encoder!r}"
            )
        head = dict(head or {})
        self.face_head = ProjectionHead(self.face_encoder.out_dim, embed_dim, **head)
        self.voice_head = ProjectionHead(self.voice_encoder.out_dim, embed_dim, **head)

    def embed_faces(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, E) unit-length face embeddings."""
        return F.normalize(self.face_head(self.face_encoder(images)), dim=-1)

    def embed_voices(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, E) unit-length voice embeddings."""
        return F.normalize(self.voice_head(self.voice_encoder(waveforms)), dim=-1)

    def forward(self, images: torch.Tensor, waveforms: torch.Tensor) -> FaceVoiceOutput:
        """Embed a batch of faces and a batch of voices."""
        return FaceVoiceOutput(face=self.embed_faces(images), voice=self.embed_voices(waveforms))
