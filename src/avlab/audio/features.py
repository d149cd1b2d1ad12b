"""Log-mel spectrograms (torchaudio), the front end every audio model here shares."""

from __future__ import annotations

import torch
import torchaudio.transforms as T
from torch import nn


class LogMel(nn.Module):
    """Waveforms (..., samples) -> log-mel energies (..., n_mels, frames).

    `floor` keeps the log finite on digital silence (espeak pads utterances with exact zeros).
    """

    def __init__(
        self,
        sample_rate: int = 16_000,
        n_mels: int = 64,
        n_fft: int = 512,
        hop_length: int = 160,
        f_min: float = 40.0,
        f_max: float | None = None,
        floor: float = 1e-6,
    ) -> None:
        super().__init__()
        self.mel = T.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
        )
        self.floor = floor
        self.n_mels = n_mels
        self.hop_length = hop_length

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel energies of a batch of waveforms."""
        # The STFT runs in float32 even under bf16/fp16 autocast: small energies underflow there.
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            return torch.log(self.mel(waveform.float()) + self.floor)


def log_mel(waveform: torch.Tensor, sample_rate: int = 16_000, **kwargs) -> torch.Tensor:
    """One-off log-mel of a waveform (..., samples); builds the filterbank each call."""
    return LogMel(sample_rate=sample_rate, **kwargs).to(waveform.device)(waveform)
