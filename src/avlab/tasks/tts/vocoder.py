"""Griffin-Lim (torchaudio) from the data's log-mel back to a waveform, and pictures of mels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.transforms as T

from avlab.tasks.tts.data import SAMPLE_RATE, MelFeatures

_CACHE: dict[tuple, tuple[T.InverseMelScale, T.GriffinLim]] = {}


def _inverters(n_mels: int, n_fft: int, hop: int, f_min: float, f_max: float | None, iters: int):
    key = (n_mels, n_fft, hop, f_min, f_max, iters)
    if key not in _CACHE:
        _CACHE[key] = (
            T.InverseMelScale(n_fft // 2 + 1, n_mels, SAMPLE_RATE, f_min, f_max),
            T.GriffinLim(n_fft=n_fft, hop_length=hop, power=2.0, n_iter=iters),
        )
    return _CACHE[key]


@torch.no_grad()
def griffin_lim(
    log_mel: torch.Tensor, features: Mapping[str, Any] | None = None, n_iter: int = 32
) -> np.ndarray:
    """(frames, n_mels) natural-log mel power (the data's features) -> float32 waveform at 22,050 Hz."""
    spec = MelFeatures(**(features or {}))
    mel_spec = spec.logmel.mel
    inverse_mel, gl = _inverters(
        spec.logmel.n_mels,
        mel_spec.n_fft,
        spec.logmel.hop_length,
        mel_spec.f_min,
        mel_spec.f_max,
        n_iter,
    )
    power = (torch.exp(log_mel.float().T) - spec.logmel.floor).clamp_min(0.0)
    linear = inverse_mel(power).clamp_min(0.0)
    audio = gl(linear).numpy()
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return (audio / peak * 0.9 if peak > 0 else audio).astype(np.float32)


def save_figure(path: Path, panels: list[tuple[str, np.ndarray]]) -> None:
    """Stack (title, 2-D array) panels vertically into one PNG (arrays drawn with time on x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels)), squeeze=False)
    for ax, (title, image) in zip(axes[:, 0], panels, strict=True):
        ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
