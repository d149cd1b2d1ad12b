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
# espeakINITIALIZE_PHONEME_EVENTS: the callback also hears when each phoneme starts. It adds
# events only; the audio is the same sample for sample.
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES = 0x100  # espeakPHONEMES: read [[...]] as phoneme mnemonics
_ENDPAUSE = 0x1000
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_ERRORS = {-1: "internal error", 1: "buffer full", 2: "not found"}


class _EventId(ctypes.Union):
    """espeak_EVENT.id: a number, a name, or (phoneme events) up to 8 bytes of mnemonic."""

    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT of speak_lib.h; a list of them ends with type espeakEVENT_LIST_TERMINATED."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of the take
        ("sample", ctypes.c_int),  # samples from the start of the take
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
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


@dataclass(frozen=True)
class PhonemeEvent:
    """espeak-ng started phoneme `name` (its mnemonic, stress marks included) at `sample`."""

    name: str
    sample: int

    @property
    def is_pause(self) -> bool:
        """Pauses (`_`, `_:`, ...) and espeak's non-sounding markers (`;` palatalisation)."""
        bare = self.name.lstrip("',")
        return not bare or bare.startswith("_") or bare == ";"


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
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_PHONEME_EVENTS
        )
        if rate != SAMPLE_RATE:
            raise EspeakError(
                f"espeak_Initialize returned {rate}, expected sample rate {SAMPLE_RATE}"
            )
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
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
        if events:
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                event = events[i]
                if event.type == _EVENT_PHONEME:
                    name = event.id.string.decode("ascii", errors="replace")
                    self._events.append(PhonemeEvent(name, int(event.sample)))
                i += 1
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
        return self._take(text, settings, _CHARS_UTF8 | _ENDPAUSE)[0]

    def synthesize_phonemes(
        self, mnemonics: str, settings: VoiceSettings = VoiceSettings()
    ) -> tuple[np.ndarray, list[PhonemeEvent]]:
        """Speak espeak phoneme mnemonics (words separated by spaces, e.g. "D@ b'3:tS"): the
        int16 samples and, in order, when each phoneme (pauses included) starts."""
        return self._take(f"[[{mnemonics}]]", settings, _CHARS_UTF8 | _ENDPAUSE | _PHONEMES)

    def _take(
        self, text: str, settings: VoiceSettings, flags: int
    ) -> tuple[np.ndarray, list[PhonemeEvent]]:
        """One synthesis call under the lock: samples and phoneme events."""
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
            self._chunks, self._events = [], []
            self._check(
                self._lib.espeak_Synth(
                    encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, flags, None, None
                ),
                "synth",
            )
            self._check(self._lib.espeak_Synchronize(), "synchronize")
            chunks, self._chunks = self._chunks, []
            events, self._events = self._events, []
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return audio, events


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


def synthesize_phonemes(
    mnemonics: str, settings: VoiceSettings = VoiceSettings()
) -> tuple[np.ndarray, list[PhonemeEvent]]:
    """Speak espeak phoneme mnemonics: int16 samples at SAMPLE_RATE and phoneme start events."""
    return synthesizer().synthesize_phonemes(mnemonics, settings)


def synthesize_arpabet(
    words: list[list[str]], settings: VoiceSettings = VoiceSettings()
) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Speak ARPAbet words exactly as written: int16 samples at SAMPLE_RATE and, per phone,
    (phone, start sample, end sample) from espeak-ng's phoneme events.

    A phone ends where the next phoneme event (or the end of the audio) starts. espeak-ng's own
    allophones count as the phone asked for (`t#` flap for `t`, `r-` for `r`), and the linking
    `r` it adds after the NURSE vowel belongs to that ER. Raises EspeakError when the events
    cannot be matched to the phones (espeak merges a few vowel pairs, e.g. AY ER into `aI3`).
    """
    from avlab.audio.phones import espeak_mnemonics

    mnemonics = espeak_mnemonics(words)
    audio, events = synthesize_phonemes(mnemonics, settings)
    phones = [p for w in words for p in w]
    expected = [_bare(m) for word in mnemonics.split() for m in _split_mnemonics(word)]
    starts: list[int] = []
    sounding = [i for i, e in enumerate(events) if not e.is_pause]
    k = 0
    for i in sounding:
        name = _bare(events[i].name)
        if k < len(expected) and name == expected[k]:
            starts.append(i)
            k += 1
        elif k > 0 and name == "r" and expected[k - 1] == "3:":
            continue
        else:
            k = -1
            break
    if k != len(phones):
        said = " ".join(events[i].name for i in sounding)
        raise EspeakError(f"espeak-ng spoke ({said}) for the phones ({' '.join(phones)})")
    timed = []
    boundaries = set(starts) | {i for i, e in enumerate(events) if e.is_pause}
    for phone, i in zip(phones, starts, strict=True):
        nxt = next((j for j in range(i + 1, len(events)) if j in boundaries), None)
        end = events[nxt].sample if nxt is not None else len(audio)
        timed.append((phone, events[i].sample, min(end, len(audio))))
    return audio, timed


# Reduced forms espeak-ng substitutes by itself (unstressed word-final i: -> i).
_ALLOPHONES = {"i": "i:"}


def _bare(mnemonic: str) -> str:
    """A mnemonic without stress marks and espeak's allophone suffixes (`t#` -> t, `r-` -> r)."""
    bare = mnemonic.strip("',").rstrip("#-")
    return _ALLOPHONES.get(bare, bare)


def _split_mnemonics(word: str) -> list[str]:
    """Split a word of mnemonics as espeak_mnemonics wrote it back into one item per phone."""
    from avlab.audio.phones import ESPEAK_MNEMONICS

    known = sorted({*ESPEAK_MNEMONICS.values(), "@"}, key=len, reverse=True)
    out, pos = [], 0
    while pos < len(word):
        stress = word[pos] in "',"
        pos += stress
        match = next(m for m in known if word.startswith(m, pos))
        out.append(match)
        pos += len(match)
    return out
