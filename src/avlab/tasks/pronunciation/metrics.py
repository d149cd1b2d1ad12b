"""Mispronunciation detection and diagnosis (MDD) by the standard definitions.

Per canonical phone, compare what the annotators perceived with what the system says was said:
    true accept (TA)     pronounced correctly, system says correct
    false rejection (FR) pronounced correctly, system says mispronounced
    false accept (FA)    mispronounced, system says correct
    true rejection (TR)  mispronounced, system says mispronounced
precision = TR / (TR + FR), recall = TR / (TR + FA), F1 their harmonic mean; diagnosis accuracy
= the share of true rejections where the system also says WHAT was said (the substitute, or
nothing for a deletion). Sequences are put against the canonical phones by a Levenshtein
alignment (canonical <-> perceived, canonical <-> recognised).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DELETED = None  # what "was said" for a deleted canonical phone


def align_to_canonical(canonical: Sequence[str], said: Sequence[str]) -> list[str | None]:
    """For each canonical phone, the phone of `said` aligned to it (None = deleted), by a
    Levenshtein alignment; inserted phones of `said` are dropped. Ties prefer a match, then a
    substitution, then a deletion."""
    n, m = len(canonical), len(said)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = cost[i - 1][j - 1] + (canonical[i - 1] != said[j - 1])
            cost[i][j] = min(sub, cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    out: list[str | None] = [None] * n
    i, j = n, m
    while i > 0:
        if j > 0 and cost[i][j] == cost[i - 1][j - 1] + (canonical[i - 1] != said[j - 1]):
            out[i - 1] = said[j - 1]
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            out[i - 1] = DELETED
            i -= 1
        else:
            j -= 1
    return out


@dataclass
class MDDCounts:
    """TA / FR / FA / TR counts and correct diagnoses, summed over utterances."""

    ta: int = 0
    fr: int = 0
    fa: int = 0
    tr: int = 0
    diagnosed: int = 0

    def add(
        self,
        canonical: Sequence[str],
        true_said: Sequence[str | None],
        predicted_said: Sequence[str | None],
    ) -> None:
        """Count one utterance, given per canonical phone what was said and what the system
        says was said (None = deleted)."""
        for canon, truth, pred in zip(canonical, true_said, predicted_said, strict=True):
            correct, accepted = truth == canon, pred == canon
            if correct:
                self.ta += accepted
                self.fr += not accepted
            else:
                self.fa += accepted
                self.tr += not accepted
                self.diagnosed += (not accepted) and pred == truth

    def add_sequences(
        self, canonical: Sequence[str], perceived: Sequence[str], recognised: Sequence[str]
    ) -> None:
        """Count one utterance from phone sequences, each aligned to the canonical phones."""
        self.add(
            canonical,
            align_to_canonical(canonical, perceived),
            align_to_canonical(canonical, recognised),
        )

    def scores(self) -> dict[str, float]:
        """precision, recall, F1 and diagnosis accuracy (0 where undefined)."""
        precision = self.tr / (self.tr + self.fr) if self.tr + self.fr else 0.0
        recall = self.tr / (self.tr + self.fa) if self.tr + self.fa else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        diagnosis = self.diagnosed / self.tr if self.tr else 0.0
        return {
            "mdd_precision": precision,
            "mdd_recall": recall,
            "mdd_f1": f1,
            "diagnosis_acc": diagnosis,
        }
