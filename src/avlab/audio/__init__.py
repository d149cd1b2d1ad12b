"""Audio shared by tasks: wav I/O and resampling, log-mel features, the espeak-ng synthesiser."""

from avlab.audio.espeak import SAMPLE_RATE as ESPEAK_SAMPLE_RATE
from avlab.audio.espeak import EspeakError, VoiceSettings, synthesize
from avlab.audio.features import LogMel, log_mel
from avlab.audio.io import read_wav, resample, to_float, write_wav

__all__ = [
    "ESPEAK_SAMPLE_RATE",
    "EspeakError",
    "LogMel",
    "VoiceSettings",
    "log_mel",
    "read_wav",
    "resample",
    "synthesize",
    "to_float",
    "write_wav",
]
