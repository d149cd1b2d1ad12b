"""The "don't laugh" game: a verdict and a per-frame reading of smile intensity and emotions.

A player is OUT on the first frame whose smile intensity passes the threshold; in two-stage
mode a smile counts only when the emotion head also reads happiness above 0.5, so a forced
smile does not end the game. Each frame also gets an analysis label:

    genuine smile     smile high (> threshold), happiness > 0.5
    forced smile      smile high without happiness (typically neutral dominant)
    suppressed laugh  smile low (< low_threshold), happiness > 0.5
    sneer             smile mid (between the two thresholds), disgust dominant
    no smile          everything else
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avlab.tasks.smile.model import EMOTIONS

HAPPY, NEUTRAL, DISGUST = (
    EMOTIONS.index("happy"),
    EMOTIONS.index("neutral"),
    EMOTIONS.index("disgust"),
)
LABELS = ("genuine smile", "forced smile", "suppressed laugh", "sneer", "no smile")
THRESHOLD_RANGE = (0.5, 0.9)


@dataclass(frozen=True)
class GameRules:
    """Thresholds of the game; `threshold` must lie in [0.5, 0.9]."""

    threshold: float = 0.80
    two_stage: bool = False
    happiness: float = 0.5
    low_threshold: float = 0.3

    def __post_init__(self) -> None:
        low, high = THRESHOLD_RANGE
        if not low <= self.threshold <= high:
            raise ValueError(f"threshold must be in [{low}, {high}], got {self.threshold}")
        if not 0.0 <= self.low_threshold < self.threshold:
            raise ValueError(
                f"low_threshold must be in [0, threshold={self.threshold}), got {self.low_threshold}"
            )


@dataclass(frozen=True)
class FrameReading:
    """What the game reads from one frame (or window)."""

    smile: float
    emotion: str
    label: str
    counts: bool  # whether this frame's smile ends the game under the rules


@dataclass(frozen=True)
class Verdict:
    """OUT with the first frame that counted, or SAFE."""

    out: bool
    first_out_frame: int | None
    frames: tuple[FrameReading, ...]

    @property
    def text(self) -> str:
        return "OUT" if self.out else "SAFE"


def analysis_label(smile: float, emotion_probs: Sequence[float], rules: GameRules) -> str:
    """One of LABELS for a frame's smile intensity and emotion probabilities."""
    probs = np.asarray(emotion_probs, dtype=np.float64)
    happy = probs[HAPPY] > rules.happiness
    dominant = int(probs.argmax())
    if smile > rules.threshold:
        return "genuine smile" if happy else "forced smile"
    if smile < rules.low_threshold:
        return "suppressed laugh" if happy else "no smile"
    return "sneer" if dominant == DISGUST else "no smile"


def smile_counts(smile: float, emotion_probs: Sequence[float], rules: GameRules) -> bool:
    """Whether a frame's smile ends the game: over the threshold (and happy, in two-stage mode)."""
    if smile <= rules.threshold:
        return False
    return not rules.two_stage or float(emotion_probs[HAPPY]) > rules.happiness


def judge(
    smiles: Sequence[float], emotion_probs: Sequence[Sequence[float]], rules: GameRules
) -> Verdict:
    """Read every frame and give the verdict."""
    if len(smiles) != len(emotion_probs):
        raise ValueError(f"{len(smiles)} smile values but {len(emotion_probs)} emotion rows")
    readings = tuple(
        FrameReading(
            smile=float(smile),
            emotion=EMOTIONS[int(np.argmax(probs))],
            label=analysis_label(smile, probs, rules),
            counts=smile_counts(smile, probs, rules),
        )
        for smile, probs in zip(smiles, emotion_probs, strict=True)
    )
    first = next((i for i, r in enumerate(readings) if r.counts), None)
    return Verdict(out=first is not None, first_out_frame=first, frames=readings)
