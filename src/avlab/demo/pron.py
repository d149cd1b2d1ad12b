"""The pronunciation feedback tab's backend: a recording and its sentence -> per canonical phone
correct / substituted / deleted, with what was heard instead (the model's decision and diagnosis
heads, `avlab.tasks.pronunciation.module.predicted_said`) and the phones its recogniser heard."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from avlab.audio.phones import ARPABET, word_phones
from avlab.checkpoints import load_checkpoint
from avlab.tasks.pronunciation.data import PHONE_ID
from avlab.tasks.pronunciation.module import PronunciationModule, greedy_ctc, predicted_said
from avlab.tasks.pronunciation.transcribe import listen
from avlab.tasks.pronunciation.transcribe import load_checkpoint as load_pronunciation_net

MODULE = f"{PronunciationModule.__module__}.{PronunciationModule.__name__}"
COLOURS = {"correct": "#2ca02c", "substituted": "#ff7f0e", "deleted": "#d62728"}
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


@dataclass(frozen=True)
class PhoneVerdict:
    """One canonical phone: what the model says was said (None = deleted)."""

    word_index: int
    word: str
    phone: str
    heard: str | None

    @property
    def verdict(self) -> str:
        if self.heard is None:
            return "deleted"
        return "correct" if self.heard == self.phone else "substituted"


@dataclass(frozen=True)
class Assessment:
    """The feedback on one recording."""

    phones: list[PhoneVerdict]
    recognised: list[str]  # the phones the CTC recogniser heard, in order

    def counts(self) -> dict[str, int]:
        """How many canonical phones got each verdict."""
        return {v: sum(p.verdict == v for p in self.phones) for v in COLOURS}


def sentence_phones(sentence: str) -> list[tuple[int, str, str]]:
    """(word index, word, phone) of a sentence from the CMU dictionary; unknown words are named."""
    words = _WORD.findall(sentence or "")
    if not words:
        raise ValueError("type the sentence that was read (English words)")
    unknown = [w for w in words if word_phones(w) is None]
    if unknown:
        raise ValueError(f"not in the CMU pronouncing dictionary: {', '.join(unknown)}")
    return [(i, word, phone) for i, word in enumerate(words) for phone in word_phones(word)]


class PronunciationCoach:
    """A pronunciation checkpoint, ready to assess recordings."""

    def __init__(self, path: str | Path, purpose: str = "pronunciation") -> None:
        load_checkpoint(path, purpose, expect_module=MODULE)  # names `purpose` in any error
        self.loaded = load_pronunciation_net(path)

    def assess(self, wav: str | Path | None, sentence: str) -> Assessment:
        """Per canonical phone of `sentence`, the verdict on the recording `wav`."""
        if wav is None:
            raise ValueError("record or upload the sentence being read")
        pairs = sentence_phones(sentence)
        canonical = [phone for _, _, phone in pairs]
        out = listen(self.loaded, wav, canonical)
        ids = torch.tensor([[PHONE_ID[p] for p in canonical]])
        said = predicted_said(out, ids)[0]
        phones = [
            PhoneVerdict(i, word, phone, ARPABET[int(s) - 1] if int(s) > 0 else None)
            for (i, word, phone), s in zip(pairs, said, strict=True)
        ]
        return Assessment(phones, greedy_ctc(out)[0])


def feedback_html(assessment: Assessment) -> str:
    """Canonical phones grouped by word, coloured by verdict, each with what was heard."""
    words: dict[int, list[PhoneVerdict]] = {}
    for p in assessment.phones:
        words.setdefault(p.word_index, []).append(p)
    parts = []
    for group in words.values():
        cells = "".join(_phone_cell(p) for p in group)
        parts.append(
            f'<span style="display:inline-block;margin:0 10px 8px 0;text-align:center">'
            f'<span style="display:block">{cells}</span>'
            f'<span style="font-size:0.85em;color:#555">{html.escape(group[0].word)}</span></span>'
        )
    legend = " ".join(
        f'<span style="color:{c};font-weight:600">■ {v}</span>' for v, c in COLOURS.items()
    )
    counts = ", ".join(f"{n} {v}" for v, n in assessment.counts().items())
    heard = html.escape(" ".join(assessment.recognised) or "(nothing)")
    return (
        f'<div class="avlab-pron">{"".join(parts)}<div>{legend}</div>'
        f'<div class="avlab-pron-counts">{counts}</div>'
        f'<div class="avlab-pron-heard">recogniser heard: {heard}</div></div>'
    )


def _phone_cell(p: PhoneVerdict) -> str:
    """One phone as a coloured box with its verdict and, if not correct, what was heard."""
    heard = "" if p.verdict == "correct" else f" → {p.heard or '∅'}"
    return (
        f'<span class="avlab-phone" data-verdict="{p.verdict}" data-phone="{p.phone}" '
        f'data-heard="{p.heard or ""}" title="{p.verdict}{html.escape(heard)}" '
        f'style="display:inline-block;padding:2px 5px;margin:1px;border-radius:4px;'
        f'color:white;background:{COLOURS[p.verdict]};font-family:monospace">'
        f"{p.phone}{html.escape(heard)}</span>"
    )
