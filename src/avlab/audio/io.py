"""Wav files in and out (soundfile) and resampling (torchaudio), with errors that name the file."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T

from avlab.data_utils import DatasetError


def read_wav(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and their rate, resampled to `sample_rate` if given.

    Multi-channel files are averaged to mono. A missing, empty or undecodable file raises
    DatasetError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: audio file is missing")
    _check_wav_not_truncated(path)
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


# Sizes a streaming writer leaves in a header it never went back to fix: "unknown", not a lie.
_UNKNOWN_CHUNK_SIZES = (0, 0xFFFFFFFF)


def _check_wav_not_truncated(path: Path) -> None:
    """Raise DatasetError if a RIFF/WAVE file holds less audio than its `data` chunk declares.

    libsndfile reads such a file without complaint and returns the samples that are there, so a
    download or copy cut short would silently become a shorter utterance.
    """
    with path.open("rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return  # not a plain WAV (or too short to be one): soundfile will judge it
        size = path.stat().st_size
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk_id, chunk_size = handle.read(4), int.from_bytes(handle.read(4), "little")
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size not in _UNKNOWN_CHUNK_SIZES and chunk_size > available:
                    raise DatasetError(
                        f"{path}: truncated WAV: its header declares {chunk_size} bytes of audio, "
                        f"the file holds {available}"
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)


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
    if tensor.device.type == "cpu" and tensor.dtype == torch.float32:
        out = _resampler(int(orig_rate), int(new_rate))(tensor)
    else:
        out = AF.resample(tensor, int(orig_rate), int(new_rate))
    return out.numpy() if is_numpy else out


@functools.lru_cache(maxsize=8)
def _resampler(orig_rate: int, new_rate: int) -> T.Resample:
    """A resampler whose sinc kernel is built once per rate pair: AF.resample rebuilds it on
    every call, which was most of the time of resampling one short clip."""
    return T.Resample(orig_rate, new_rate)


def to_float(audio: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1] (int16 is scaled by 1/32768)."""
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    return np.asarray(audio, dtype=np.float32)
