"""The generated L2-ARCTIC: 24 espeak-ng "learners" in 6 L1 groups, each with its own errors.

Every speaker is an espeak-ng voice variant with its own pitch, range and rate. Sentences come
from a small grammar over CMU-dictionary words; their canonical phones are the dictionary's.
Each L1 group mispronounces in its own way (substitutions such as th -> s, r -> l; deletion of
word-final consonants; a vowel inserted after a final consonant), on about 10-20 % of phones.
The audio is synthesised from the PERCEIVED phones, so the speech says exactly what the
annotation says, and phone times come from espeak-ng's phoneme events.

Written in the L2-ARCTIC v5 layout, as published:
    root/<SPK>/wav/arctic_a0001.wav             44.1 kHz mono PCM16
    root/<SPK>/transcript/arctic_a0001.txt      the sentence
    root/<SPK>/textgrid/arctic_a0001.TextGrid   forced alignment: tiers `words`, `phones`
                                                (canonical phones with stress digits)
    root/<SPK>/annotation/arctic_a0001.TextGrid tiers `words`, `phones`: `AH0` correct,
                                                `DH,D,s` substitution, `T,sil,d` deletion,
                                                `sil,AH,a` addition, `sil` / `sp` silences
Same seed, same sentences, errors, voices and labels; the audio repeats up to espeak-ng's
small take-to-take timing variation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import textgrid
from scipy.signal import resample_poly
from tqdm import tqdm

from avlab.audio import ESPEAK_SAMPLE_RATE, VoiceSettings, to_float, write_wav
from avlab.audio.espeak import EspeakError, synthesize_arpabet
from avlab.audio.phones import VOWELS, _cmudict, normalize_phone
from avlab.data_utils import staged_folder, write_synth_stamp

log = logging.getLogger(__name__)

WAV_RATE = 44_100
# L2-ARCTIC's 24 speakers, by L1 (4 each, 2 women and 2 men as published).
L1_SPEAKERS: dict[str, tuple[str, ...]] = {
    "arabic": ("ABA", "SKA", "YBAA", "ZHAA"),
    "mandarin": ("BWC", "LXC", "NCC", "TXHC"),
    "hindi": ("ASI", "RRBI", "SVBI", "TNI"),
    "korean": ("HJK", "HKK", "YDCK", "YKWK"),
    "spanish": ("EBVS", "ERMS", "MBMPS", "NJS"),
    "vietnamese": ("HQTV", "PNV", "THV", "TLV"),
}
FEMALE = frozenset(
    ["SKA", "ZHAA", "LXC", "NCC", "SVBI", "TNI", "HKK", "YKWK", "MBMPS", "NJS", "THV", "TLV"]
)

# Per L1: canonical phone -> the phones said instead, and how often a rule fires where it can.
# `delete_final`: chance a word-final consonant is dropped; `insert_after_final`: chance a vowel
# is added after a word-final consonant (and which vowel).
L1_ERRORS: dict[str, dict] = {
    "arabic": {"subs": {"P": ["B"], "V": ["F"], "IH": ["EH"], "CH": ["SH"]}, "p": 0.6,
               "delete_final": 0.03, "insert_after_final": (0.04, "IH")},
    "mandarin": {"subs": {"TH": ["S"], "DH": ["D", "Z"], "V": ["W"], "R": ["L"], "IH": ["IY"]},
                 "p": 0.55, "delete_final": 0.12, "insert_after_final": (0.0, "AH")},
    "hindi": {"subs": {"V": ["W"], "W": ["V"], "TH": ["T"], "DH": ["D"], "Z": ["JH"]},
              "p": 0.6, "delete_final": 0.03, "insert_after_final": (0.0, "AH")},
    "korean": {"subs": {"F": ["P"], "V": ["B"], "Z": ["JH"], "R": ["L"], "TH": ["S"]},
               "p": 0.6, "delete_final": 0.02, "insert_after_final": (0.08, "UW")},
    "spanish": {"subs": {"IH": ["IY"], "Z": ["S"], "V": ["B"], "SH": ["CH"], "DH": ["D"]},
                "p": 0.55, "delete_final": 0.05, "insert_after_final": (0.0, "EH")},
    "vietnamese": {"subs": {"TH": ["T"], "DH": ["Z"], "SH": ["S"], "AE": ["EH"], "L": ["N"]},
                   "p": 0.5, "delete_final": 0.12, "insert_after_final": (0.0, "AH")},
}  # fmt: skip

# The grammar: "the ADJ NOUN VERB the ADJ NOUN PREP the NOUN" and shorter forms.
WORDS = {
    "adj": [
        "big",
        "small",
        "red",
        "green",
        "thin",
        "rich",
        "quiet",
        "heavy",
        "bright",
        "cheap",
        "fresh",
        "smooth",
        "sharp",
        "warm",
        "cold",
        "brave",
        "lazy",
        "happy",
        "busy",
        "silver",
        "wooden",
        "famous",
        "clever",
        "strange",
        "vivid",
    ],
    "noun": [
        "boy",
        "girl",
        "dog",
        "horse",
        "ship",
        "village",
        "river",
        "father",
        "mother",
        "brother",
        "teacher",
        "voice",
        "zebra",
        "window",
        "table",
        "garden",
        "rabbit",
        "wheel",
        "fish",
        "child",
        "leather",
        "feather",
        "cheese",
        "bridge",
        "valley",
        "thunder",
        "shadow",
        "path",
        "chair",
        "ship",
    ],
    "verb": [
        "saw",
        "found",
        "liked",
        "moved",
        "washed",
        "visited",
        "pushed",
        "loved",
        "watched",
        "carried",
        "showed",
        "gave",
        "chose",
        "shared",
        "needed",
        "reached",
    ],
    "prep": ["with", "near", "over", "under", "behind", "beside", "through"],
}
SHAPES = (
    ("the", "adj", "noun", "verb", "the", "noun"),
    ("the", "noun", "verb", "the", "adj", "noun", "prep", "the", "noun"),
    ("a", "adj", "noun", "verb", "the", "noun", "prep", "the", "adj", "noun"),
    ("the", "adj", "noun", "prep", "the", "noun", "verb", "a", "noun"),
)
VOICE_VARIANTS = {True: ("f1", "f2", "f3", "f4", "f5"), False: ("m1", "m2", "m3", "m4", "m7")}


@dataclass(frozen=True)
class PhoneEvent:
    """One annotated phone: canonical (None = an addition) and perceived (None = a deletion)."""

    canonical: str | None
    perceived: str | None
    stress: str = ""  # the canonical phone's CMU stress digit, kept as the annotators write it

    def label(self) -> str:
        """The L2-ARCTIC annotation label of this phone."""
        if self.canonical is None:
            return f"sil,{self.perceived},a"
        if self.perceived is None:
            return f"{self.canonical},sil,d"
        if self.perceived != self.canonical:
            return f"{self.canonical},{self.perceived},s"
        return self.canonical + self.stress


def speaker_voice(speaker: str, rng: np.random.Generator) -> VoiceSettings:
    """A speaker's espeak voice: a variant of their gender, own pitch, range and rate."""
    female = speaker in FEMALE
    return VoiceSettings(
        voice="en-us",
        variant=str(rng.choice(VOICE_VARIANTS[female])),
        rate=int(rng.integers(140, 190)),
        pitch=int(rng.integers(55, 85) if female else rng.integers(25, 55)),
        pitch_range=int(rng.integers(30, 80)),
    )


def make_sentence(rng: np.random.Generator) -> list[str]:
    """One sentence of the grammar, as words."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    return [w if w not in WORDS else str(rng.choice(WORDS[w])) for w in shape]


def canonical_words(words: list[str]) -> list[list[tuple[str, str]]]:
    """Each word's first CMU pronunciation as (phone, stress digit) pairs."""
    out = []
    for word in words:
        raw = _cmudict()[word][0]
        out.append([(normalize_phone(p), p[-1] if p[-1].isdigit() else "") for p in raw])
    return out


def mispronounce(
    words: list[list[tuple[str, str]]], l1: str, rng: np.random.Generator
) -> list[list[PhoneEvent]]:
    """Apply an L1 group's error rules to each word's canonical phones."""
    rules = L1_ERRORS[l1]
    p_insert, inserted = rules["insert_after_final"]
    out = []
    for word in words:
        events = []
        for k, (phone, stress) in enumerate(word):
            final = k == len(word) - 1 and phone not in VOWELS and len(word) > 1
            if phone in rules["subs"] and rng.random() < rules["p"]:
                said = str(rng.choice(rules["subs"][phone]))
                events.append(PhoneEvent(phone, said, stress))
            elif final and rng.random() < rules["delete_final"]:
                events.append(PhoneEvent(phone, None, stress))
            else:
                events.append(PhoneEvent(phone, phone, stress))
            if final and events[-1].perceived and rng.random() < p_insert:
                events.append(PhoneEvent(None, inserted))
        out.append(events)
    return out


def _interval_tier(name: str, items: list[tuple[float, float, str]], end: float):
    """A TextGrid interval tier covering [0, end], gaps filled with empty (silence) intervals."""
    tier = textgrid.IntervalTier(name=name, minTime=0.0, maxTime=end)
    t = 0.0
    for start, stop, label in items:
        if start > t + 1e-6:
            tier.addInterval(textgrid.Interval(t, start, ""))
        tier.addInterval(textgrid.Interval(start, stop, label))
        t = stop
    if end > t + 1e-6:
        tier.addInterval(textgrid.Interval(t, end, "sil"))
    return tier


def _write_textgrid(path: Path, tiers: list, end: float) -> None:
    """Write a TextGrid with the given tiers."""
    grid = textgrid.TextGrid(minTime=0.0, maxTime=end)
    for tier in tiers:
        grid.append(tier)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.write(str(path))


def speak_utterance(
    spoken: list[list[PhoneEvent]], voice: VoiceSettings
) -> tuple[np.ndarray, list[list[tuple[PhoneEvent, float, float]]]]:
    """Synthesise the perceived phones; each event gets (start, end) seconds. A deleted phone
    gets the last 10 ms of the phone before it, as annotators mark a deletion's place."""
    said_words = [[e.perceived for e in w if e.perceived] for w in spoken]
    audio, timed = synthesize_arpabet([w for w in said_words if w], voice)
    times = iter(timed)
    out = []
    for word in spoken:
        placed = []
        for event in word:
            if event.perceived:
                _, start, end = next(times)
                start, end = start / ESPEAK_SAMPLE_RATE, end / ESPEAK_SAMPLE_RATE
                if end - start < 0.005:
                    # espeak-ng starts some cluster consonants (b-r, p-l) on the same sample
                    # as the one before: share that one's time.
                    prev = placed[-1] if placed else None
                    if prev is None or prev[2] - prev[1] < 0.02:
                        raise EspeakError(f"espeak-ng gave {event.perceived} no time")
                    start = prev[2] = (prev[1] + prev[2]) / 2
                placed.append([event, start, end])
            else:
                prev = placed[-1] if placed else None
                if prev is None or prev[2] - prev[1] < 0.03:
                    raise EspeakError("a deleted phone needs a phone of 30 ms+ before it")
                cut = max(prev[1] + 0.005, prev[2] - 0.01)
                placed.append([event, cut, prev[2]])
                prev[2] = cut
        out.append([tuple(p) for p in placed])
    return to_float(audio), out


def write_utterance(
    speaker_dir: Path, utt_id: str, words: list[str], placed, audio: np.ndarray
) -> None:
    """Write one utterance's wav, transcript, alignment and annotation in the L2-ARCTIC layout."""
    end = len(audio) / ESPEAK_SAMPLE_RATE
    # Polyphase (x2 exactly): several times faster than a sinc kernel built per call.
    wav = resample_poly(audio, WAV_RATE // ESPEAK_SAMPLE_RATE, 1).astype(np.float32)
    write_wav(speaker_dir / "wav" / f"{utt_id}.wav", wav, WAV_RATE)
    (speaker_dir / "transcript").mkdir(parents=True, exist_ok=True)
    (speaker_dir / "transcript" / f"{utt_id}.txt").write_text(" ".join(words).capitalize())
    word_items = [(w[0][1], w[-1][2], word) for word, w in zip(words, placed, strict=True)]
    phone_items = [(s, e, ev.label()) for w in placed for ev, s, e in w]
    # The forced alignment knows only the canonical phones; an added phone's time goes to
    # the phone it follows.
    aligned: list[tuple[float, float, str]] = []
    for w in placed:
        for ev, s, e in w:
            if ev.canonical is None and aligned:
                aligned[-1] = (aligned[-1][0], e, aligned[-1][2])
            else:
                aligned.append((s, e, ev.canonical + ev.stress))
    words_tier = _interval_tier("words", word_items, end)
    _write_textgrid(
        speaker_dir / "annotation" / f"{utt_id}.TextGrid",
        [words_tier, _interval_tier("phones", phone_items, end)],
        end,
    )
    _write_textgrid(
        speaker_dir / "textgrid" / f"{utt_id}.TextGrid",
        [words_tier, _interval_tier("phones", aligned, end)],
        end,
    )


def write_l2arctic(
    root: Path, utterances_per_speaker: int = 60, n_sentences: int = 400, seed: int = 0
) -> None:
    """Write the generated L2-ARCTIC (all 24 speakers) into `root`.

    Every speaker reads `utterances_per_speaker` sentences drawn from a pool of `n_sentences`
    (as L2-ARCTIC's speakers read the same prompts, sentences recur across speakers).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    pool = [make_sentence(rng) for _ in range(n_sentences)]
    speakers = [(spk, l1) for l1, group in L1_SPEAKERS.items() for spk in group]
    params = {
        "utterances_per_speaker": utterances_per_speaker,
        "n_sentences": n_sentences,
        "seed": seed,
    }
    retried = 0
    with staged_folder(root) as folder:
        for spk, l1 in tqdm(speakers, desc="generating L2-ARCTIC speakers", leave=False):
            spk_rng = np.random.default_rng([seed, sum(map(ord, spk))])
            voice = speaker_voice(spk, spk_rng)
            order = spk_rng.permutation(len(pool))
            written, k = 0, 0
            while written < utterances_per_speaker:
                words = pool[int(order[k % len(order)])]
                k += 1
                spoken = mispronounce(canonical_words(words), l1, spk_rng)
                try:
                    audio, placed = speak_utterance(spoken, voice)
                except EspeakError:
                    retried += 1  # espeak merged two phones: draw another sentence
                    continue
                written += 1
                write_utterance(folder / spk, f"arctic_a{written:04d}", words, placed, audio)
        write_synth_stamp(folder, f"{__name__}.write_l2arctic", params)
    log.info("generated L2-ARCTIC layout in %s (%d takes redrawn)", root, retried)
