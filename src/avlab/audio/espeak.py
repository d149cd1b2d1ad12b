"""Speech synthesis with espeak-ng through ctypes, from the library inside the espeakng-loader wheel.

libespeak-ng keeps global state and is not thread-safe: a process holds one synthesiser,
initialised once, and every call into the library goes through one lock.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 22_050  # what espeak-ng's synchronous mode produces

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_ERRORS = {-1: "internal error", 1: "buffer full", 2: "not found"}

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_LOCK = threading.Lock()
_INSTANCE: EspeakSynthesizer | None = None


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or refused a request."""


@dataclass(frozen=True)
class VoiceSettings:
    """How one speaker sounds: espeak voice + variant, words per minute, pitch and its range (0-99)."""

    voice: str = "en-us"
    variant: str | None = None  # e.g. "m3", "f2" (espeak-ng-data/voices/!v)
    rate: int = 175  # words per minute, 80-450
    pitch: int = 50  # base pitch, 0-99
    pitch_range: int = 50  # intonation range, 0 monotone - 99

    @property
    def name(self) -> str:
        """The name espeak_SetVoiceByName takes: `voice` or `voice+variant`."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


class EspeakSynthesizer:
    """The process's one espeak-ng instance; get it with `synthesizer()`, not by constructing it."""

    def __init__(self) -> None:
        import espeakng_loader

        try:
            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as err:
            raise EspeakError(
                f"cannot load libespeak-ng from the espeakng-loader wheel: {err}"
            ) from err
        self._declare_signatures()
        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate != SAMPLE_RATE:
            raise EspeakError(
                f"espeak_Initialize returned {rate}, expected sample rate {SAMPLE_RATE}"
            )
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        # Kept on self: ctypes would free the trampoline while the library still calls it.
        self._callback = _CALLBACK(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _declare_signatures(self) -> None:
        """Argument and return types of the few functions we call."""
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]

    def _collect(self, samples, n_samples: int, events) -> int:
        """Synthesis callback: copy each int16 chunk out of espeak's buffer; 0 means go on."""
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(n_samples,)).copy())
        return 0

    def _check(self, code: int, what: str) -> None:
        """Turn an espeak_ERROR into an exception naming the call."""
        if code != 0:
            raise EspeakError(f"espeak-ng {what}: {_ERRORS.get(code, code)}")

    def synthesize(self, text: str, settings: VoiceSettings = VoiceSettings()) -> np.ndarray:
        """Speak `text` with `settings`: mono int16 samples at SAMPLE_RATE.

        The library carries a little state from one take to the next (the same call twice
        gives slightly different timing), so takes repeat exactly only in the same order
        from a fresh process.
        """
        encoded = text.encode("utf-8")
        with _LOCK:
            self._check(
                self._lib.espeak_SetVoiceByName(settings.name.encode()), f"voice {settings.name!r}"
            )
            for param, value in (
                (_PARAM_RATE, settings.rate),
                (_PARAM_PITCH, settings.pitch),
                (_PARAM_RANGE, settings.pitch_range),
                (_PARAM_VOLUME, 100),
            ):
                self._check(
                    self._lib.espeak_SetParameter(param, int(value), 0), f"parameter {param}"
                )
            self._chunks = []
            flags = _CHARS_UTF8 | _ENDPAUSE
            self._check(
                self._lib.espeak_Synth(
                    encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, flags, None, None
                ),
                "synth",
            )
            self._check(self._lib.espeak_Synchronize(), "synchronize")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def synthesizer() -> EspeakSynthesizer:
    """The process's espeak-ng synthesiser, initialised on first use."""
    global _INSTANCE
    with _LOCK:
        if _INSTANCE is None:
            _INSTANCE = EspeakSynthesizer()
        return _INSTANCE


def synthesize(text: str, settings: VoiceSettings = VoiceSettings()) -> np.ndarray:
    """Speak `text` with the process's synthesiser: mono int16 samples at SAMPLE_RATE."""
    return synthesizer().synthesize(text, settings)
