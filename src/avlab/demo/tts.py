"""The speech synthesis tab's backend: text -> audio, mel spectrogram and attention picture,
through the TTS task's own synthesis (`avlab.tasks.tts.synthesize`)."""

from __future__ import annotations

from pathlib import Path

from avlab.checkpoints import load_checkpoint
from avlab.tasks.tts.data import SAMPLE_RATE
from avlab.tasks.tts.module import TTSModule
from avlab.tasks.tts.synthesize import Speech, load_tts_checkpoint, synthesise
from avlab.tasks.tts.vocoder import save_figure

MODULE = f"{TTSModule.__module__}.{TTSModule.__name__}"
MAX_CHARACTERS = 400


class Synthesiser:
    """A TTS checkpoint, ready to speak."""

    def __init__(self, path: str | Path, purpose: str = "tts", max_seconds: float = 10.0) -> None:
        load_checkpoint(path, purpose, expect_module=MODULE)  # names `purpose` in any error
        self.module = load_tts_checkpoint(path)
        self.max_seconds = max_seconds
        self.sample_rate = SAMPLE_RATE

    def speak(self, text: str) -> Speech:
        """The utterance of `text` (refuses empty or very long text with a clear message)."""
        text = (text or "").strip()
        if not text:
            raise ValueError("type a sentence to speak")
        if len(text) > MAX_CHARACTERS:
            raise ValueError(f"{len(text)} characters: the demo speaks up to {MAX_CHARACTERS}")
        return synthesise(self.module, text, self.max_seconds)


def speech_figure(speech: Speech, path: Path) -> Path:
    """The log-mel spectrogram and the attention (symbol x decoder step) as one PNG."""
    save_figure(
        path,
        [
            ("log-mel spectrogram (mel bin x frame)", speech.log_mel.T.numpy()),
            ("attention (text symbol x decoder step)", speech.attention.T.numpy()),
        ],
    )
    return path


def speech_summary(speech: Speech, sample_rate: int = SAMPLE_RATE) -> str:
    """One line: duration, decoder steps and whether the stop head ended the utterance."""
    how = "the stop head ended it" if speech.stopped else "cut at the time limit (no stop)"
    return (
        f"{len(speech.audio) / sample_rate:.2f} s, {len(speech.log_mel)} mel frames, "
        f"{len(speech.attention)} decoder steps over {len(speech.symbols)} symbols; {how}"
    )
