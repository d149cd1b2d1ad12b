"""Generated single-speaker TTS corpus in the LJSpeech-1.1 layout, spoken by espeak-ng.

Sentences come from a small grammar over common English words (every word is in the CMU
dictionary), each sentence distinct. The layout is LJSpeech's, as published:
    root/metadata.csv      no header, `ID|raw text|normalized text`, UTF-8; the raw text of
                           some sentences holds digits (spelt out in the normalized text) and
                           double quotes, as real LJSpeech text does
    root/wavs/<ID>.wav     22,050 Hz mono PCM16 (espeak-ng's native rate)
IDs are `LJ001-0001` style: a chapter of `PER_CHAPTER` utterances, then the utterance number.

One voice (en-us, 175 words per minute), so the corpus is a single speaker. The same seed gives
the same sentences and IDs; the audio repeats up to espeak-ng's small take-to-take timing
variation (the library carries state from one take to the next). Utterances last about 1-4 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from avlab.audio import ESPEAK_SAMPLE_RATE, VoiceSettings, synthesize, write_wav
from avlab.data_utils import staged_folder, write_synth_stamp

METADATA = "metadata.csv"
WAVS = "wavs"
PER_CHAPTER = 500
VOICE = VoiceSettings(voice="en-us", rate=175, pitch=50, pitch_range=50)

ADJECTIVES = [
    "big",
    "small",
    "old",
    "young",
    "red",
    "green",
    "blue",
    "black",
    "white",
    "warm",
    "cold",
    "quiet",
    "happy",
    "sad",
    "bright",
    "dark",
    "long",
    "short",
    "soft",
    "loud",
    "new",
    "kind",
    "wild",
    "clean",
]
NOUNS = [
    "dog",
    "cat",
    "man",
    "woman",
    "child",
    "bird",
    "horse",
    "house",
    "garden",
    "river",
    "tree",
    "boat",
    "car",
    "table",
    "window",
    "door",
    "letter",
    "book",
    "song",
    "road",
    "city",
    "farmer",
    "doctor",
    "teacher",
    "friend",
    "king",
]
VERBS_PAST = [
    "saw",
    "found",
    "made",
    "took",
    "gave",
    "kept",
    "left",
    "held",
    "found",
    "brought",
    "painted",
    "watched",
]
PLACES = ["house", "garden", "river", "city", "road", "table", "window", "door", "boat", "tree"]
PREPOSITIONS = ["near", "behind", "under", "over", "beside", "inside"]
ADVERBS = ["slowly", "quickly", "quietly", "early", "today", "again"]
SPEECH_WORDS = ["yes", "no", "stop", "wait", "hello", "thanks"]
IRREGULAR_PLURALS = {"man": "men", "woman": "women", "child": "children", "city": "cities"}
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _pick(rng: np.random.Generator, words: tuple[str, ...] | list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def make_sentence(rng: np.random.Generator) -> tuple[str, str]:
    """One sentence from the grammar: (raw text, normalized text)."""
    adj, adj2 = _pick(rng, ADJECTIVES), _pick(rng, ADJECTIVES)
    noun, noun2 = _pick(rng, NOUNS), _pick(rng, NOUNS)
    verb, place = _pick(rng, VERBS_PAST), _pick(rng, PLACES)
    prep, adverb = _pick(rng, PREPOSITIONS), _pick(rng, ADVERBS)
    kind = int(rng.integers(6))
    if kind == 0:
        text = f"The {adj} {noun} {verb} the {noun2}."
    elif kind == 1:
        text = f"A {noun} {verb} the {adj} {noun2} {prep} the {place}."
    elif kind == 2:
        text = f"The {noun} was {adj} and {adj2}."
    elif kind == 3:
        text = f"Did the {adj} {noun} {adverb} see the {noun2}?"
    elif kind == 4:
        count = int(rng.integers(2, 9))
        plural = IRREGULAR_PLURALS.get(noun2, f"{noun2}s")
        raw = f"The {noun} {verb} {count} {adj} {plural} {adverb}."
        return raw, raw.replace(str(count), NUMBERS[count])
    else:
        text = f'The {noun} said "{_pick(rng, SPEECH_WORDS)}" to the {noun2}.'
    return text, text


def make_sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` distinct sentences (by normalized text), in a fixed order for a seed."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for _ in range(n * 50):
        raw, norm = make_sentence(rng)
        if norm not in seen:
            seen.add(norm)
            out.append((raw, norm))
            if len(out) == n:
                return out
    raise ValueError(f"the grammar yields fewer than {n} distinct sentences")


def utterance_id(index: int) -> str:
    """LJSpeech-style ID of the index-th utterance: LJ001-0001, ..."""
    chapter, number = divmod(index, PER_CHAPTER)
    return f"LJ{chapter + 1:03d}-{number + 1:04d}"


def write_ljspeech(root: Path, n_utterances: int = 1500, seed: int = 0) -> None:
    """Write `n_utterances` espeak-ng utterances of distinct sentences in the LJSpeech layout."""
    root = Path(root)
    sentences = make_sentences(n_utterances, seed)
    with staged_folder(root) as staging:
        lines = []
        for index, (raw, norm) in enumerate(tqdm(sentences, desc="tts: speaking", unit="utt")):
            uid = utterance_id(index)
            write_wav(staging / WAVS / f"{uid}.wav", synthesize(norm, VOICE), ESPEAK_SAMPLE_RATE)
            lines.append(f"{uid}|{raw}|{norm}\n")
        (staging / METADATA).write_text("".join(lines), encoding="utf-8")
        write_synth_stamp(
            staging,
            "avlab.tasks.tts.synth.write_ljspeech",
            {"n_utterances": n_utterances, "seed": seed},
        )
