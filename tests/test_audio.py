"""Shared audio: wav I/O with clear errors, resampling, log-mel, and the espeak-ng synthesiser."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from avlab.audio import (
    ESPEAK_SAMPLE_RATE,
    LogMel,
    VoiceSettings,
    read_wav,
    resample,
    synthesize,
    write_wav,
)
from avlab.data_utils import DatasetError

SENTENCE = "The birch canoe slid on the smooth planks."


def _tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


def _f0(audio: np.ndarray, rate: int) -> float:
    """Median pitch of the voiced frames, by autocorrelation (60-400 Hz)."""
    frame, estimates = int(0.04 * rate), []
    for start in range(0, len(audio) - frame, frame):
        x = audio[start : start + frame].astype(np.float64)
        if np.sqrt(np.mean(x**2)) < 0.05 * np.abs(audio).max():
            continue
        ac = np.correlate(x, x, "full")[frame - 1 :]
        lo, hi = rate // 400, rate // 60
        estimates.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(estimates))


def test_wav_round_trip_keeps_rate_and_samples(tmp_path):
    tone = _tone(440, 16000)
    write_wav(tmp_path / "a.wav", tone, 16000)
    audio, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and audio.dtype == np.float32
    assert np.abs(audio - tone).max() < 1e-3  # PCM16 quantisation only
    assert sf.info(str(tmp_path / "a.wav")).subtype == "PCM_16"


def test_reading_resamples_and_keeps_the_pitch(tmp_path):
    write_wav(tmp_path / "b.wav", _tone(1000, 22050), 22050)
    audio, rate = read_wav(tmp_path / "b.wav", sample_rate=16000)
    assert rate == 16000 and abs(len(audio) - 16000) <= 1
    assert abs(_peak_hz(audio, 16000) - 1000) < 2
    tensor = resample(torch.from_numpy(_tone(1000, 22050)), 22050, 16000)
    assert isinstance(tensor, torch.Tensor) and abs(tensor.shape[-1] - 16000) <= 1


def test_stereo_is_averaged_to_mono(tmp_path):
    sf.write(str(tmp_path / "s.wav"), np.stack([_tone(300, 8000), -_tone(300, 8000)], 1), 8000)
    audio, _ = read_wav(tmp_path / "s.wav")
    assert audio.ndim == 1 and np.abs(audio).max() < 1e-3


@pytest.mark.parametrize(
    "content", [b"", b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", b"not audio at all"]
)
def test_an_unreadable_wav_raises_an_error_naming_it(tmp_path, content):
    path = tmp_path / "speaker" / "00001.wav"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=r"speaker/00001.wav: cannot read audio"):
        read_wav(path)


def test_a_missing_wav_raises_an_error_naming_it(tmp_path):
    with pytest.raises(DatasetError, match="gone.wav: audio file is missing"):
        read_wav(tmp_path / "gone.wav")


def test_log_mel_shape_and_finite_on_digital_silence():
    mel = LogMel(sample_rate=16000, n_mels=40, hop_length=160)
    out = mel(torch.zeros(2, 16000))
    assert out.shape == (2, 40, 101)
    assert torch.isfinite(out).all()
    tone = mel(torch.from_numpy(_tone(1000, 16000))[None])
    # a 1 kHz tone puts its energy in a middle band, not in the lowest one
    assert tone[0, :, 50].argmax() > tone[0, :, 50].argmin()


def test_espeak_speaks_int16_at_22050_hz():
    audio = synthesize(SENTENCE)
    assert audio.dtype == np.int16 and ESPEAK_SAMPLE_RATE == 22050
    assert 1.0 < len(audio) / ESPEAK_SAMPLE_RATE < 6.0
    assert np.abs(audio).max() > 1000


def test_espeak_pitch_and_rate_settings_are_heard():
    low = synthesize(SENTENCE, VoiceSettings(variant="m3", pitch=20))
    high = synthesize(SENTENCE, VoiceSettings(variant="m3", pitch=80))
    assert _f0(high, ESPEAK_SAMPLE_RATE) > 1.3 * _f0(low, ESPEAK_SAMPLE_RATE)
    slow = synthesize(SENTENCE, VoiceSettings(rate=120))
    fast = synthesize(SENTENCE, VoiceSettings(rate=260))
    assert len(fast) < 0.7 * len(slow)


def test_espeak_from_many_threads_gives_whole_utterances():
    # Without the lock, concurrent takes would interleave their chunks: one long, one empty.
    voices = [VoiceSettings(variant="f2", rate=120), VoiceSettings(variant="m1", rate=260)]
    expected = [len(synthesize(SENTENCE, v)) for v in voices]
    assert expected[0] > 1.5 * expected[1]
    results: dict[int, np.ndarray] = {}

    def speak(i: int) -> None:
        results[i] = synthesize(SENTENCE, voices[i % 2])

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, audio in results.items():
        assert abs(len(audio) - expected[i % 2]) < 0.02 * expected[i % 2]


def test_an_unknown_voice_is_refused():
    from avlab.audio import EspeakError

    with pytest.raises(EspeakError, match="no-such-voice"):
        synthesize(SENTENCE, VoiceSettings(voice="no-such-voice"))


def test_a_truncated_wav_raises_an_error_naming_it(tmp_path):
    """A WAV cut short keeps a valid header; libsndfile would return the partial audio silently."""
    full = tmp_path / "full.wav"
    write_wav(full, (np.sin(np.arange(8000) / 5) * 0.5).astype(np.float32), 16_000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"cut\.wav: truncated WAV: .* declares 16000 bytes"):
        read_wav(cut)
    audio, rate = read_wav(full)
    assert rate == 16_000 and len(audio) == 8000
