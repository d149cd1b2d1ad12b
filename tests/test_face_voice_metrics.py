"""Retrieval metrics: 1:2 matching, recall@k, EER and AUC on hand-made embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avlab.tasks.face_voice.metrics import (
    cross_modal_metrics,
    equal_error_rate,
    match_accuracy,
    recall_at_k,
)


def _people(n: int, per_person: int, dim: int = 16, noise: float = 0.0, seed: int = 0):
    """Face and voice embeddings of n people, per_person items each, around one centre per person."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    ids = torch.arange(n).repeat_interleave(per_person)
    face = F.normalize(centres[ids] + noise * torch.randn(len(ids), dim, generator=g), dim=1)
    voice = F.normalize(centres[ids] + noise * torch.randn(len(ids), dim, generator=g), dim=1)
    return face, voice, ids


def test_perfect_embeddings_score_perfectly():
    face, voice, ids = _people(10, 2)
    metrics = cross_modal_metrics(face, voice, ids)
    assert metrics["match_acc"] == 1.0
    assert metrics["recall_at_1"] == 1.0
    assert metrics["auc"] == 1.0
    assert metrics["eer"] == 0.0


def test_unrelated_embeddings_score_chance():
    face, _, ids = _people(40, 3, seed=1)
    voice, _, _ = _people(40, 3, seed=2)
    metrics = cross_modal_metrics(face, voice, ids)
    assert abs(float(metrics["match_acc"]) - 0.5) < 0.05
    assert abs(float(metrics["auc"]) - 0.5) < 0.05
    assert abs(float(metrics["eer"]) - 0.5) < 0.06
    assert float(metrics["recall_at_1"]) < 0.15


def test_match_accuracy_counts_every_triple_with_ties_as_half():
    # One query; its person has gallery scores 0.9 and 0.2, the other person 0.5 and 0.9.
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[0.9, 0.0], [0.2, 0.0], [0.5, 0.0], [0.9, 0.0]])
    acc = match_accuracy(query, gallery, torch.tensor([0]), torch.tensor([0, 0, 1, 1]))
    # pairs (pos, neg): (.9,.5) win, (.9,.9) tie, (.2,.5) loss, (.2,.9) loss -> 1.5 / 4
    assert float(acc) == 0.375


def test_recall_at_k_ranks_against_one_entry_per_identity():
    gallery = torch.eye(6)
    ids = torch.arange(6)
    query = F.normalize(torch.eye(6)[[1, 1, 2]] + 0.1 * torch.eye(6)[[0, 2, 2]], dim=1)
    recall = recall_at_k(query, gallery, torch.tensor([0, 1, 2]), ids, ks=(1, 2, 10))
    # the first query ranks identity 1 above its own identity 0
    assert float(recall[1]) == pytest.approx(2 / 3)
    assert float(recall[2]) == 1.0
    assert float(recall[10]) == 1.0


def test_equal_error_rate_of_overlapping_scores():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    eer = float(equal_error_rate(scores, labels))
    assert 0.3 < eer < 0.37  # one of three positives and one of three negatives on the wrong side


def test_recall_at_k_counts_ties_against_the_query():
    """A collapsed model (every embedding the same) must score no better than chance."""
    ids = torch.arange(10)
    same = torch.nn.functional.normalize(torch.ones(10, 4), dim=1)
    recall = recall_at_k(same, same, ids, ids, ks=(1, 5, 10))
    assert float(recall[1]) == 0.0
    assert float(recall[5]) == 0.0
    assert float(recall[10]) == 1.0


def test_a_collapsed_model_scores_chance_on_every_metric():
    """All embeddings equal: nothing is learnt, and no metric may say otherwise."""
    ids = torch.arange(12).repeat_interleave(2)
    same = torch.nn.functional.normalize(torch.ones(24, 8), dim=1)
    metrics = cross_modal_metrics(same, same.clone(), ids)
    assert float(metrics["match_acc"]) == 0.5
    assert float(metrics["recall_at_1"]) == 0.0 and float(metrics["recall_at_5"]) == 0.0
    assert float(metrics["auc"]) == pytest.approx(0.5)
    assert float(metrics["eer"]) == pytest.approx(0.5, abs=0.05)
