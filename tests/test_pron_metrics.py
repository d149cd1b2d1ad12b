"""Mispronunciation detection and diagnosis on hand-worked examples (standard definitions)."""

from __future__ import annotations

import pytest
import torch

from avlab.tasks.pronunciation.metrics import MDDCounts, align_to_canonical

# (canonical, perceived by the annotators, recognised by the system) and what each counts.
EXAMPLES = {
    # DH said as D, and the system heard D: a true rejection, correctly diagnosed.
    "substitution, right diagnosis": ("DH AH K AE T", "D AH K AE T", "D AH K AE T"),
    # TH said as S, the system heard T: a true rejection, wrongly diagnosed.
    "substitution, wrong diagnosis": ("TH IH N", "S IH N", "T IH N"),
    # The final T was dropped, the system heard it anyway: a false accept.
    "deletion missed": ("K AE T", "K AE", "K AE T"),
    # The final G was dropped and the system heard it dropped: TR, diagnosis right.
    "deletion found": ("D AO G", "D AO", "D AO"),
    # A vowel added before S: no canonical phone is wrong, so four true accepts.
    "insertion": ("S T AA P", "AH S T AA P", "S T AA P"),
    # Said right, the system heard L for R: a false rejection.
    "false rejection": ("R EH D", "R EH D", "L EH D"),
}


def _count(*names: str) -> MDDCounts:
    counts = MDDCounts()
    for name in names:
        canonical, perceived, recognised = (s.split() for s in EXAMPLES[name])
        counts.add_sequences(canonical, perceived, recognised)
    return counts


def test_alignment_puts_deletions_and_insertions_in_their_place():
    assert align_to_canonical(["K", "AE", "T"], ["K", "AE"]) == ["K", "AE", None]
    assert align_to_canonical(["S", "T", "AA", "P"], ["AH", "S", "T", "AA", "P"]) == list(
        ["S", "T", "AA", "P"]
    )
    assert align_to_canonical(["DH", "AH"], ["D", "AH"]) == ["D", "AH"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("substitution, right diagnosis", (4, 0, 0, 1, 1)),
        ("substitution, wrong diagnosis", (2, 0, 0, 1, 0)),
        ("deletion missed", (2, 0, 1, 0, 0)),
        ("deletion found", (2, 0, 0, 1, 1)),
        ("insertion", (4, 0, 0, 0, 0)),
        ("false rejection", (2, 1, 0, 0, 0)),
    ],
)
def test_each_example_counts_as_worked_by_hand(name, expected):
    c = _count(name)
    assert (c.ta, c.fr, c.fa, c.tr, c.diagnosed) == expected


def test_precision_recall_f1_and_diagnosis_over_all_examples():
    scores = _count(*EXAMPLES).scores()
    # TR = 3, FR = 1, FA = 1, correct diagnoses = 2
    assert scores["mdd_precision"] == pytest.approx(3 / 4)
    assert scores["mdd_recall"] == pytest.approx(3 / 4)
    assert scores["mdd_f1"] == pytest.approx(3 / 4)
    assert scores["diagnosis_acc"] == pytest.approx(2 / 3)


def test_heads_never_diagnose_a_substitution_as_the_canonical_phone():
    from avlab.tasks.pronunciation.model import PronunciationOutput
    from avlab.tasks.pronunciation.module import predicted_said

    canonical = torch.tensor([[5, 7, 9]])
    decision = torch.tensor([[[0.0, 9, 0], [9, 0, 0], [0, 0, 9]]])  # substituted, correct, deleted
    diagnosis = torch.zeros(1, 3, 39)
    diagnosis[0, 0, 4] = 10.0  # the canonical phone itself scores best ...
    diagnosis[0, 0, 11] = 5.0  # ... so the substitute is the runner-up, id 12
    out = PronunciationOutput(torch.zeros(1, 4, 40), torch.tensor([4]), decision, diagnosis)
    assert predicted_said(out, canonical).tolist() == [[12, 7, 0]]
