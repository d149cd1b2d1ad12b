"""The don't-laugh game: analysis labels and verdicts, table-driven."""

import pytest

from avlab.tasks.smile.game import LABELS, GameRules, analysis_label, judge
from avlab.tasks.smile.model import EMOTIONS


def probs(**named: float) -> list[float]:
    """Emotion probabilities from names; the rest share what is left."""
    rest = (1.0 - sum(named.values())) / (len(EMOTIONS) - len(named))
    return [named.get(name, rest) for name in EMOTIONS]


RULES = GameRules()


@pytest.mark.parametrize(
    ("smile", "emotions", "label"),
    [
        (0.95, probs(happy=0.9), "genuine smile"),
        (0.85, probs(happy=0.6), "genuine smile"),
        (0.90, probs(neutral=0.7), "forced smile"),
        (0.85, probs(happy=0.4, neutral=0.5), "forced smile"),
        (0.10, probs(happy=0.8), "suppressed laugh"),
        (0.25, probs(happy=0.55), "suppressed laugh"),
        (0.50, probs(disgust=0.6), "sneer"),
        (0.35, probs(disgust=0.4), "sneer"),
        (0.05, probs(neutral=0.9), "no smile"),
        (0.50, probs(neutral=0.6), "no smile"),
        (0.10, probs(disgust=0.9), "no smile"),  # disgust without a half-smile is not a sneer
    ],
)
def test_analysis_labels(smile, emotions, label):
    assert label in LABELS
    assert analysis_label(smile, emotions, RULES) == label


@pytest.mark.parametrize(
    ("two_stage", "smiles", "emotions", "out", "first"),
    [
        (False, [0.1, 0.5, 0.85, 0.2], [probs(neutral=0.9)] * 4, True, 2),
        (True, [0.1, 0.5, 0.85, 0.2], [probs(neutral=0.9)] * 4, False, None),
        (True, [0.9, 0.95], [probs(neutral=0.9), probs(happy=0.8)], True, 1),
        (False, [0.2, 0.79, 0.80], [probs(happy=0.9)] * 3, False, None),  # strictly above threshold
        (False, [], [], False, None),
    ],
)
def test_verdict_in_both_modes(two_stage, smiles, emotions, out, first):
    verdict = judge(smiles, emotions, GameRules(two_stage=two_stage))
    assert verdict.out is out and verdict.first_out_frame == first
    assert verdict.text == ("OUT" if out else "SAFE")
    assert len(verdict.frames) == len(smiles)


def test_threshold_is_settable_within_its_range_only():
    assert judge([0.6], [probs(happy=0.9)], GameRules(threshold=0.5)).out
    assert not judge([0.6], [probs(happy=0.9)], GameRules(threshold=0.9)).out
    for bad in (0.3, 0.95):
        with pytest.raises(ValueError, match=r"threshold must be in \[0.5, 0.9\]"):
            GameRules(threshold=bad)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 smile values but 1 emotion rows"):
        judge([0.1, 0.2], [probs()], RULES)
