"""Pronunciation networks: an audio encoder, a phone-recognition (CTC) head, and a
text-dependent mispronunciation head (per canonical phone: correct / substituted / deleted,
and which phone was said), in four variants that differ only in how the two tasks meet:

    simple        linear heads; the canonical phones attend once to the audio
    transformer   self-attention layers over the audio, decoder layers over the canonical
                  phones (self-attention + cross-attention to the audio), then the heads
    cross         co-attention: each task's features attend to the other's, every layer
    hierarchical  shared low-level layers, then task-specific layers whose output is gated
                  against the shared features

Shapes: features (B, T, n_mels) [or (B, S, 1) waveforms for wav2vec2] -> audio (B, T', D);
canonical (B, N) ids (0 = padding) -> (B, N, D). Every attention layer gets the key padding
mask of what it attends to, so a padded batch gives the same outputs as one utterance alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

N_PHONES = 39
N_DECISIONS = 3
VARIANTS = ("simple", "transformer", "cross", "hierarchical")


@dataclass
class PronunciationOutput:
    """Per audio frame CTC logits (blank = 0) and per canonical phone decision/diagnosis logits."""

    ctc_logits: torch.Tensor  # (B, T', 40)
    frame_lengths: torch.Tensor  # (B,)
    decision_logits: torch.Tensor  # (B, N, 3)
    diagnosis_logits: torch.Tensor  # (B, N, 39)
    frame_logits: torch.Tensor | None = None  # (B, T', 40) per-frame phone (0 = silence)


def padding_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool, True at padded positions (PyTorch's key_padding_mask convention)."""
    return torch.arange(size, device=lengths.device)[None, :] >= lengths[:, None]


def sinusoids(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim) sinusoidal position encodings."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10_000.0) / dim))
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq)
    return enc


class ConvBlock(nn.Module):
    """Residual depthwise-separable 1-D convolution over time; padded frames are zeroed first,
    so they read as the zero padding an unpadded utterance would see."""

    def __init__(self, dim: int, kernel: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.pointwise = nn.Conv1d(dim, dim, 1)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(x).masked_fill(mask[..., None], 0.0).transpose(1, 2)
        y = self.pointwise(self.act(self.depthwise(y))).transpose(1, 2)
        return x + self.drop(y)


class LogMelEncoder(nn.Module):
    """Log-mel frames -> 4x subsampled features: two strided 2-D convolutions, depthwise-
    separable 1-D conv blocks, then transformer layers (pre-norm, key padding masked)."""

    def __init__(
        self,
        n_mels: int = 80,
        dim: int = 144,
        channels: int = 64,
        conv_blocks: int = 2,
        layers: int = 2,
        heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        freq = (n_mels + 1) // 2
        freq = (freq + 1) // 2
        self.proj = nn.Linear(channels * freq, dim)
        self.blocks = nn.ModuleList(ConvBlock(dim, 5, dropout) for _ in range(conv_blocks))
        self.layers = nn.ModuleList(
            _self_attention_layer(dim, heads, ff_mult, dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.unsqueeze(1)  # (B, 1, T, F)
        for conv in (self.conv1, self.conv2):
            x = x.masked_fill(padding_mask(lengths, x.shape[2])[:, None, :, None], 0.0)
            x = torch.nn.functional.gelu(conv(x))
            lengths = (lengths - 1) // 2 + 1
        mask = padding_mask(lengths, x.shape[2])
        x = self.proj(x.transpose(1, 2).flatten(2))  # (B, T', D)
        x = x + sinusoids(x.shape[1], self.dim, x.device)
        for block in self.blocks:
            x = block(x, mask)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=mask)
        return self.norm(x), lengths


def _self_attention_layer(dim: int, heads: int, ff_mult: int, dropout: float) -> nn.Module:
    return nn.TransformerEncoderLayer(
        dim, heads, ff_mult * dim, dropout, activation="gelu", batch_first=True, norm_first=True
    )


def _decoder_layer(dim: int, heads: int, ff_mult: int, dropout: float) -> nn.Module:
    return nn.TransformerDecoderLayer(
        dim, heads, ff_mult * dim, dropout, activation="gelu", batch_first=True, norm_first=True
    )


class Wav2Vec2Encoder(nn.Module):
    """transformers' Wav2Vec2Model built from a config (random weights), or from a local Hugging
    Face folder with `pretrained`. Takes (B, S, 1) waveforms; layer-norm feature extractor so
    padding does not leak through group norm."""

    def __init__(self, dim: int, pretrained: str | None = None, **config: Any) -> None:
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        if pretrained:
            if not Path(pretrained).is_dir():
                raise FileNotFoundError(
                    f"model.pretrained={pretrained}: not a local Hugging Face folder (avlab does "
                    "not download weights; put config.json + weights there)"
                )
            self.model = Wav2Vec2Model.from_pretrained(pretrained)
        else:
            cfg = {"feat_extract_norm": "layer", "do_stable_layer_norm": True, **config}
            self.model = Wav2Vec2Model(Wav2Vec2Config(**cfg))
        self.proj = nn.Linear(self.model.config.hidden_size, dim)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        wave = features.squeeze(-1)
        attention = ~padding_mask(lengths, wave.shape[1])
        out = self.model(wave, attention_mask=attention.long()).last_hidden_state
        frames = self.model._get_feat_extract_output_lengths(lengths).long()
        return self.proj(out), frames.clamp(max=out.shape[1])


class CoAttentionLayer(nn.Module):
    """Each of two sequences attends to the other (masked), then its own feed-forward."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm_a, self.norm_b = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.a_to_b = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.b_to_a = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff_a = _feed_forward(dim, ff_mult, dropout)
        self.ff_b = _feed_forward(dim, ff_mult, dropout)

    def forward(
        self, a: torch.Tensor, mask_a: torch.Tensor, b: torch.Tensor, mask_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        na, nb = self.norm_a(a), self.norm_b(b)
        a = a + self.a_to_b(na, nb, nb, key_padding_mask=mask_b, need_weights=False)[0]
        b = b + self.b_to_a(nb, na, na, key_padding_mask=mask_a, need_weights=False)[0]
        return a + self.ff_a(a), b + self.ff_b(b)


def _feed_forward(dim: int, ff_mult: int, dropout: float) -> nn.Module:
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, ff_mult * dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(ff_mult * dim, dim),
        nn.Dropout(dropout),
    )


class Gate(nn.Module):
    """g * task + (1 - g) * shared, g = sigmoid(W [task, shared]) per feature."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, task: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.linear(torch.cat([task, shared], dim=-1)))
        return gate * task + (1 - gate) * shared


class PronunciationNet(nn.Module):
    """Encoder + CTC phone recognition + text-dependent mispronunciation detection/diagnosis."""

    def __init__(
        self,
        variant: str = "transformer",
        encoder: str = "logmel",
        dim: int = 144,
        heads: int = 4,
        task_layers: int = 2,
        ff_mult: int = 4,
        dropout: float = 0.1,
        logmel: dict[str, Any] | None = None,
        wav2vec2: dict[str, Any] | None = None,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"model.net.variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.dim = variant, dim
        if encoder == "logmel":
            self.encoder = LogMelEncoder(dim=dim, heads=heads, dropout=dropout, **(logmel or {}))
        elif encoder == "wav2vec2":
            self.encoder = Wav2Vec2Encoder(dim, pretrained, **(wav2vec2 or {}))
        else:
            raise ValueError(f"model.net.encoder must be logmel or wav2vec2, got {encoder!r}")
        self.phone_embedding = nn.Embedding(N_PHONES + 1, dim, padding_idx=0)
        args = (dim, heads, ff_mult, dropout)
        n = task_layers
        if variant == "simple":
            self.text_layers = nn.ModuleList([_decoder_layer(*args)])
        elif variant == "transformer":
            self.audio_layers = nn.ModuleList(_self_attention_layer(*args) for _ in range(n))
            self.text_layers = nn.ModuleList(_decoder_layer(*args) for _ in range(n))
        elif variant == "cross":
            self.text_layers = nn.ModuleList([_decoder_layer(*args)])
            self.co_layers = nn.ModuleList(CoAttentionLayer(*args) for _ in range(n))
        else:
            self.shared_layers = nn.ModuleList([_self_attention_layer(*args)])
            self.rec_layers = nn.ModuleList(_self_attention_layer(*args) for _ in range(n))
            self.det_layers = nn.ModuleList(_self_attention_layer(*args) for _ in range(n))
            self.rec_gate, self.det_gate = Gate(dim), Gate(dim)
            self.text_layers = nn.ModuleList(_decoder_layer(*args) for _ in range(n))
        self.norm_rec, self.norm_det = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ctc_head = nn.Linear(dim, N_PHONES + 1)
        # Frame-level phone classes from annotation times: its own head, so the CTC head stays
        # free to spike (sharing one head made CTC split long phones into repeats).
        self.frame_head = nn.Linear(dim, N_PHONES + 1)
        self.decision_head = nn.Linear(dim, N_DECISIONS)
        self.diagnosis_head = nn.Linear(dim, N_PHONES)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The audio encoder's parameters (for their own learning rate)."""
        return list(self.encoder.parameters())

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        canonical: torch.Tensor,
        canonical_lengths: torch.Tensor,
    ) -> PronunciationOutput:
        audio, frames = self.encoder(features, feature_lengths)
        mask_a = padding_mask(frames, audio.shape[1])
        mask_t = padding_mask(canonical_lengths, canonical.shape[1])
        text = self.phone_embedding(canonical) + sinusoids(
            canonical.shape[1], self.dim, audio.device
        )
        rec, det = self._tasks(audio, mask_a, text, mask_t)
        rec, det = self.norm_rec(rec), self.norm_det(det)
        return PronunciationOutput(
            self.ctc_head(rec),
            frames,
            self.decision_head(det),
            self.diagnosis_head(det),
            self.frame_head(rec),
        )

    def _tasks(
        self, audio: torch.Tensor, mask_a: torch.Tensor, text: torch.Tensor, mask_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The variant's recognition features (over audio) and detection features (over text)."""
        if self.variant == "hierarchical":
            shared = self._self_attend(self.shared_layers, audio, mask_a)
            rec = self.rec_gate(self._self_attend(self.rec_layers, shared, mask_a), shared)
            det_audio = self.det_gate(self._self_attend(self.det_layers, shared, mask_a), shared)
            return rec, self._decode(text, mask_t, det_audio, mask_a)
        if self.variant == "transformer":
            audio = self._self_attend(self.audio_layers, audio, mask_a)
        det = self._decode(text, mask_t, audio, mask_a)
        if self.variant == "cross":
            for layer in self.co_layers:
                audio, det = layer(audio, mask_a, det, mask_t)
        return audio, det

    @staticmethod
    def _self_attend(layers: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = layer(x, src_key_padding_mask=mask)
        return x

    def _decode(
        self, text: torch.Tensor, mask_t: torch.Tensor, audio: torch.Tensor, mask_a: torch.Tensor
    ) -> torch.Tensor:
        for layer in self.text_layers:
            text = layer(text, audio, tgt_key_padding_mask=mask_t, memory_key_padding_mask=mask_a)
        return text
