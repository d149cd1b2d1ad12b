"""A small autoregressive text-to-mel model with attention, a stop-token head and a VAE latent.

The shape is DCTTS's Text2Mel (Tachibana et al. 2017) with Tacotron's extras:
    TextEncoder    symbols (B, N)                 -> keys, values (B, N, d)   dilated convolutions
    ReferenceEncoder  target mel (B, T, n_mels)   -> mean, log-variance (B, z)   the VAE latent
    AudioEncoder   previous frames (B, S, n_mels) -> queries (B, S, d)        causal convolutions
    attention      softmax(queries . keys / sqrt d) over the text -> context (B, S, d)
    AudioDecoder   [context, queries, z] (B, S, ...) -> r mel frames + stop logit per step
    Postnet        (optional) a residual non-causal convolution stack over the whole mel
A decoder step emits `reduction` (r) mel frames; S = ceil(T / r). The decoder's input at step s
is the last frame of step s-1 (zeros at s = 0), through a dropout prenet. Every convolution on
the audio side is causal, so training runs all steps at once (teacher forcing) while synthesis
runs step by step on its own output: the model is autoregressive without a recurrent cell,
which is what makes training on a CPU fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TTSOutput:
    """What one teacher-forced pass returns (S decoder steps, T = S * r frames)."""

    mel: Tensor  # (B, T, n_mels) decoder output, normalised log-mel
    mel_post: Tensor  # (B, T, n_mels) after the postnet (= mel without one)
    stop_logits: Tensor  # (B, S)
    attention: Tensor  # (B, S, N)
    mu: Tensor  # (B, z)
    logvar: Tensor  # (B, z)


def bounded_logvar(logvar: Tensor, limit: float) -> Tensor:
    """Log-variance squashed smoothly into (-limit, limit), so exp() never overflows."""
    return limit * torch.tanh(logvar / limit)


def sinusoid(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal position encodings (..., dim) of real-valued positions."""
    freqs = torch.exp(
        torch.arange(0, dim, 2, device=positions.device) * (-math.log(10_000.0) / dim)
    )
    angles = positions[..., None].float() * freqs
    return torch.cat([angles.sin(), angles.cos()], -1)


def masked_energies(energies: Tensor, keep: Tensor) -> Tensor:
    """Energies with the positions where `keep` is False set to the dtype's lowest finite value.

    Not -inf: a row with every position masked would give NaN in softmax, and -inf overflows
    in half precision.
    """
    return energies.masked_fill(~keep, torch.finfo(energies.dtype).min)


class ResidualConv(nn.Module):
    """x + Conv(ReLU(Conv(x))): dilated 1-D convolutions, causal (left-padded) or centred."""

    def __init__(self, channels: int, kernel: int, dilation: int, causal: bool, dropout: float):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.causal = causal
        self.conv1 = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        pad = (self.pad, 0) if self.causal else (self.pad // 2, self.pad - self.pad // 2)
        y = self.conv2(self.dropout(F.relu(self.conv1(F.pad(x, pad)))))
        return x + y


def conv_stack(channels: int, dilations: list[int], causal: bool, dropout: float) -> nn.Sequential:
    """Residual dilated convolutions, kernel 3."""
    return nn.Sequential(*(ResidualConv(channels, 3, d, causal, dropout) for d in dilations))


class IncrementalCausalStack:
    """Runs a causal `conv_stack` one step at a time, keeping each layer's past inputs, so
    synthesis costs one step of work per step instead of re-running the whole prefix.
    Gives the same outputs as the stack over the full sequence (in eval mode)."""

    def __init__(self, stack: nn.Sequential) -> None:
        self.stack = stack
        self.inputs: list[list[Tensor]] = [[] for _ in stack]

    def step(self, x: Tensor) -> Tensor:
        """(B, C) input of the next step -> (B, C) output of the stack at that step."""
        for layer, past in zip(self.stack, self.inputs, strict=True):
            past.append(x)
            now, dilation = len(past) - 1, layer.conv1.dilation[0]
            taps = [
                past[now - k * dilation] if now - k * dilation >= 0 else torch.zeros_like(x)
                for k in range(layer.conv1.kernel_size[0] - 1, -1, -1)
            ]
            h = F.conv1d(torch.stack(taps, -1), layer.conv1.weight, layer.conv1.bias)
            x = x + layer.conv2(F.relu(h))[..., 0]
        return x


class TextEncoder(nn.Module):
    """Symbols -> keys and values for the attention."""

    def __init__(self, n_symbols: int, dim: int, dilations: list[int], dropout: float):
        super().__init__()
        self.embed = nn.Embedding(n_symbols, dim, padding_idx=0)
        self.convs = conv_stack(dim, dilations, causal=False, dropout=dropout)
        self.out = nn.Conv1d(dim, 2 * dim, 1)

    def forward(self, text: Tensor) -> tuple[Tensor, Tensor]:
        x = self.convs(self.embed(text).transpose(1, 2))
        keys, values = self.out(x).transpose(1, 2).chunk(2, dim=-1)
        positions = torch.arange(text.shape[1], device=text.device)
        return keys + sinusoid(positions, keys.shape[-1]), values


class ReferenceEncoder(nn.Module):
    """Target mel -> mean and (bounded) log-variance of the utterance's latent."""

    def __init__(self, n_mels: int, dim: int, latent_dim: int, logvar_limit: float):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(n_mels, dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(dim, dim, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.out = nn.Linear(dim, 2 * latent_dim)
        self.logvar_limit = logvar_limit

    def forward(self, mel: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        h = self.convs(mel.transpose(1, 2))  # (B, dim, ceil(T/2))
        steps = torch.arange(h.shape[-1], device=mel.device)
        keep = (steps[None] < (lengths[:, None] + 1) // 2).to(h.dtype)
        pooled = (h * keep[:, None]).sum(-1) / keep.sum(-1, keepdim=True).clamp_min(1.0)
        mu, logvar = self.out(pooled).chunk(2, dim=-1)
        return mu, bounded_logvar(logvar, self.logvar_limit)


class TTSNet(nn.Module):
    """Text (B, N) -> normalised log-mel (B, T, n_mels), attention and stop logits; see the module doc.

    `n_symbols` bounds the text front end's table (the module checks it); `latent_dim` 0 turns
    the VAE latent off; `postnet_dilations` empty turns the postnet off.
    """

    def __init__(
        self,
        n_symbols: int = 96,
        n_mels: int = 80,
        reduction: int = 4,
        dim: int = 128,
        text_dilations: list[int] = (1, 3, 9, 1, 3),
        audio_dilations: list[int] = (1, 3, 9, 27),
        decoder_dilations: list[int] = (1, 3, 9, 1),
        postnet_dilations: list[int] = (1, 3),
        prenet_dropout: float = 0.5,
        dropout: float = 0.05,
        latent_dim: int = 8,
        logvar_limit: float = 10.0,
        position_rate: float = 0.6,
    ) -> None:
        super().__init__()
        # Symbols per decoder step: query positions are scaled by it so that text and audio
        # positions meet on the diagonal (Deep Voice 3's position rate). The module sets it
        # from the training data before fitting; it is saved with the weights.
        self.register_buffer("position_rate", torch.tensor(float(position_rate)))
        self.n_symbols, self.n_mels, self.reduction, self.dim = n_symbols, n_mels, reduction, dim
        self.latent_dim = latent_dim
        self.text_encoder = TextEncoder(n_symbols, dim, list(text_dilations), dropout)
        self.prenet = nn.Sequential(
            nn.Linear(n_mels, dim), nn.ReLU(), nn.Dropout(prenet_dropout), nn.Linear(dim, dim)
        )
        self.audio_encoder = conv_stack(dim, list(audio_dilations), causal=True, dropout=dropout)
        self.reference = (
            ReferenceEncoder(n_mels, dim, latent_dim, logvar_limit) if latent_dim else None
        )
        self.latent_proj = nn.Linear(latent_dim, dim) if latent_dim else None
        self.decoder_in = nn.Conv1d(2 * dim, dim, 1)
        self.decoder = conv_stack(dim, list(decoder_dilations), causal=True, dropout=dropout)
        self.mel_out = nn.Conv1d(dim, n_mels * reduction, 1)
        # The stop head also sees where the attention is: its expected position as a share of
        # the text, and its weight on the final symbol (EOS).
        self.stop_out = nn.Conv1d(dim + 2, 1, 1)
        self.postnet = (
            nn.Sequential(
                nn.Conv1d(n_mels, dim, 1),
                conv_stack(dim, list(postnet_dilations), causal=False, dropout=dropout),
                nn.Conv1d(dim, n_mels, 1),
            )
            if postnet_dilations
            else None
        )

    def decoder_inputs(self, mel: Tensor) -> Tensor:
        """Teacher forcing: the last frame of each previous step, zeros before the first."""
        last = mel[:, self.reduction - 1 :: self.reduction]
        return F.pad(last, (0, 0, 1, 0))[:, : last.shape[1]]

    def latent(self, mel: Tensor | None, lengths: Tensor | None, batch: int) -> tuple[Tensor, ...]:
        """(z, mu, logvar): sampled in training, the mean at evaluation, 0 (the prior's mean)
        when there is no reference mel."""
        device = self.mel_out.weight.device
        if self.reference is None or mel is None:
            zeros = torch.zeros(batch, max(self.latent_dim, 1), device=device)
            return zeros[:, : self.latent_dim], zeros, zeros
        mu, logvar = self.reference(mel, lengths)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return z, mu, logvar

    def step_outputs(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        text_keep: Tensor,
        z: Tensor,
        window: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attention and decoder over S steps of queries: (frames (B, S*r, M), stop (B, S), attn)."""
        attention, x = self._attend(queries, keys, values, text_keep, z, window)
        return (*self._heads(self.decoder(x), attention, text_keep), attention)

    def _attend(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        text_keep: Tensor,
        z: Tensor,
        window: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Attention (B, S, N) and the decoder's input (B, dim, S)."""
        energies = queries @ keys.transpose(1, 2) / math.sqrt(self.dim)
        keep = text_keep[:, None, :] if window is None else text_keep[:, None, :] & window
        attention = torch.softmax(masked_energies(energies, keep), dim=-1)
        context = attention @ values
        x = self.decoder_in(torch.cat([context, queries], -1).transpose(1, 2))
        if self.latent_proj is not None:
            x = x + self.latent_proj(z)[:, :, None]
        return attention, x

    def _heads(self, h: Tensor, attention: Tensor, text_keep: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder states (B, dim, S) -> r mel frames per step (B, S*r, M) and stop logits (B, S)."""
        frames = self.mel_out(h).transpose(1, 2)  # (B, S, r*M)
        frames = frames.reshape(frames.shape[0], -1, self.n_mels)
        lengths = text_keep.sum(-1, keepdim=True)  # (B, 1)
        position = (attention * torch.arange(attention.shape[-1], device=h.device)).sum(-1)
        position = position / (lengths - 1).clamp_min(1)
        on_eos = attention.gather(-1, (lengths - 1)[:, None, :].expand(-1, attention.shape[1], 1))
        where = torch.stack([position, on_eos[..., 0]], 1)  # (B, 2, S)
        return frames, self.stop_out(torch.cat([h, where], 1))[:, 0]

    def encode_queries(self, previous: Tensor) -> Tensor:
        """Queries from the previous frames (B, S, M), causally."""
        x = self.prenet(previous).transpose(1, 2)
        queries = self.audio_encoder(x).transpose(1, 2)
        steps = torch.arange(previous.shape[1], device=previous.device) * self.position_rate
        return queries + sinusoid(steps, queries.shape[-1])

    def postprocess(self, mel: Tensor) -> Tensor:
        """The postnet's residual refinement (identity without a postnet)."""
        if self.postnet is None:
            return mel
        return mel + self.postnet(mel.transpose(1, 2)).transpose(1, 2)

    def forward(
        self, text: Tensor, text_lengths: Tensor, mel: Tensor, mel_lengths: Tensor
    ) -> TTSOutput:
        """Teacher-forced pass; `mel` (B, T, M) normalised, T a multiple of r."""
        keys, values = self.text_encoder(text)
        text_keep = torch.arange(text.shape[1], device=text.device)[None] < text_lengths[:, None]
        z, mu, logvar = self.latent(mel, mel_lengths, text.shape[0])
        queries = self.encode_queries(self.decoder_inputs(mel))
        frames, stop, attention = self.step_outputs(queries, keys, values, text_keep, z)
        return TTSOutput(frames, self.postprocess(frames), stop, attention, mu, logvar)

    @torch.no_grad()
    def generate(
        self,
        text: Tensor,
        text_lengths: Tensor,
        max_steps: int,
        stop_threshold: float = 0.5,
        window: tuple[int, int] = (1, 3),
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Free-running synthesis: (mel (B, T, M) after the postnet, frames per utterance (B,),
        attention (B, S, N)). An utterance stops at the first step whose stop probability
        passes `stop_threshold` (its frames count includes that step); one that never stops
        gets max_steps * r frames.

        Attention is kept monotonic as DCTTS synthesises: each step may attend only from
        `window[0]` symbols behind to `window[1]` symbols ahead of the previous step's peak.
        The latent is the prior's mean (z = 0).
        """
        batch, n_text = text.shape
        keys, values = self.text_encoder(text)
        text_keep = torch.arange(n_text, device=text.device)[None] < text_lengths[:, None]
        z, _, _ = self.latent(None, None, batch)
        positions = torch.arange(n_text, device=text.device)
        peak = torch.zeros(batch, dtype=torch.long, device=text.device)
        previous = torch.zeros(batch, self.n_mels, device=text.device)
        encoder = IncrementalCausalStack(self.audio_encoder)
        decoder = IncrementalCausalStack(self.decoder)
        frames_out, attentions = [], []
        stopped_at = torch.full((batch,), -1, dtype=torch.long, device=text.device)
        for step in range(max_steps):
            query = encoder.step(self.prenet(previous))
            query = query + sinusoid(step * self.position_rate, query.shape[-1])
            near = (positions[None] >= peak[:, None] - window[0]) & (
                positions[None] <= peak[:, None] + window[1]
            )
            attention, x = self._attend(
                query[:, None], keys, values, text_keep, z, window=near[:, None]
            )
            last, stop = self._heads(decoder.step(x[..., 0])[..., None], attention, text_keep)
            frames_out.append(last)
            attentions.append(attention[:, 0])
            peak = attention[:, 0].argmax(-1)
            done = (torch.sigmoid(stop[:, 0]) > stop_threshold) & (stopped_at < 0)
            stopped_at[done] = step
            if bool((stopped_at >= 0).all()):
                break
            previous = last[:, -1]
        mel = self.postprocess(torch.cat(frames_out, 1))
        steps = torch.where(stopped_at >= 0, stopped_at + 1, torch.full_like(stopped_at, max_steps))
        return mel, steps * self.reduction, torch.stack(attentions, 1)
