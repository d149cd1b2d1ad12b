"""Wav files in and out (soundfile) and resampling (torchaudio), with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from avlab.data_utils import DatasetError


def read_wav(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and their rate, resampled to `sample_rate` if given.

    Multi-channel files are averaged to mono. A missing, empty or undecodable file raises
    DatasetError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: audio file is missing")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read audio ({err})") from err
    if audio.shape[0] == 0:
        raise DatasetError(f"{path}: audio file holds no samples")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if sample_rate is not None and rate != sample_rate:
        audio, rate = resample(audio, rate, sample_rate), sample_rate
    return audio, int(rate)


def write_wav(
    path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16"
) -> None:
    """Write mono samples (int16, or float in [-1, 1], clipped) as a wav file."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"write_wav takes mono samples (N,), got shape {audio.shape}")
    if audio.dtype.kind == "f":
        audio = np.clip(audio, -1.0, 1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, int(sample_rate), subtype=subtype)


def resample(
    audio: np.ndarray | torch.Tensor, orig_rate: int, new_rate: int
) -> np.ndarray | torch.Tensor:
    """Band-limited resampling along the last axis; returns the input's type (int16 becomes float)."""
    if orig_rate == new_rate:
        return audio
    is_numpy = isinstance(audio, np.ndarray)
    tensor = torch.from_numpy(to_float(audio)) if is_numpy else audio.float()
    out = AF.resample(tensor, int(orig_rate), int(new_rate))
    return out.numpy() if is_numpy else out


def to_float(audio: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1] (int16 is scaled by 1/32768)."""
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    return np.asarray(audio, dtype=np.float32)
