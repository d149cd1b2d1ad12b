"""Cross-modal retrieval metrics on unseen identities, from L2-normalised embeddings.

All take query embeddings (Nq, D) with identity labels (Nq,) and gallery embeddings (Ng, D)
with labels (Ng,); similarity is the dot product (cosine, since embeddings are normalised).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import binary_auroc, binary_eer

_CHUNK = 64  # queries per block in the 1:2 count: bounds memory at CHUNK x Ng x Ng booleans


def match_accuracy(
    query: torch.Tensor, gallery: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor
) -> torch.Tensor:
    """1:2 matching accuracy (chance 0.5): the query is closer to its own person than to another.

    Averaged over every (query, same-person item, other-person item) triple, ties counting
    half: the exact expectation of the usual protocol that draws such triples at random.
    """
    scores = query @ gallery.T
    same = query_ids[:, None] == gallery_ids[None, :]
    wins, trials = scores.new_zeros(()), scores.new_zeros(())
    for start in range(0, len(scores), _CHUNK):
        s, pos = scores[start : start + _CHUNK], same[start : start + _CHUNK]
        pair = pos[:, :, None] & ~pos[:, None, :]  # [q, positive j, negative k]
        diff = s[:, :, None] - s[:, None, :]
        wins = wins + ((diff > 0) & pair).sum() + 0.5 * ((diff == 0) & pair).sum()
        trials = trials + pair.sum()
    if trials == 0:
        raise ValueError("1:2 matching needs queries with a same-person and an other-person item")
    return wins / trials


def identity_gallery(
    embeddings: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One normalised mean embedding per identity, and the identities in that order."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    sums = embeddings.new_zeros(len(unique), embeddings.shape[1]).index_add_(0, inverse, embeddings)
    return torch.nn.functional.normalize(sums, dim=1), unique


def recall_at_k(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_ids: torch.Tensor,
    gallery_ids: torch.Tensor,
    ks: tuple[int, ...] = (1, 5),
) -> dict[int, torch.Tensor]:
    """Share of queries whose own identity ranks in the top k of the identity gallery.

    The gallery holds one entry per identity (the mean of its gallery items); a k at least
    the gallery's size gives 1. Ties count against the query: an entry scoring the same as
    the query's own ranks above it, so a collapsed model (all embeddings equal) scores 0 for
    every k below the gallery size, not 1. This is why it is not torchmetrics'
    `retrieval_hit_rate`: that sorts the scores and lets a tie fall in index order, so a
    collapsed model would score whatever the order of the gallery gives it.
    """
    entries, entry_ids = identity_gallery(gallery, gallery_ids)
    scores = query @ entries.T
    own = (query_ids[:, None] == entry_ids[None, :]).float()
    own_score = (scores * own).sum(dim=1, keepdim=True)
    rank = (scores >= own_score).sum(dim=1) - 1  # 0 = best; other entries that tie rank above
    return {k: (rank < k).float().mean() for k in ks}


def verification(
    query: torch.Tensor, gallery: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Cross-modal verification over all (query, gallery) pairs: ROC AUC and equal error rate."""
    scores = (query @ gallery.T).flatten()
    labels = (query_ids[:, None] == gallery_ids[None, :]).flatten().long()
    return {"auc": binary_auroc(scores, labels), "eer": equal_error_rate(scores, labels)}


def equal_error_rate(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The error rate where false accepts equal false rejects (torchmetrics' `binary_eer`).

    torchmetrics takes the ROC point where the two rates are closest and averages them; our
    earlier hand-written version interpolated between the two points around the crossing. They
    differ by less than one pair's share of the ROC (tests/test_library_equivalence.py).
    Scores outside [0, 1] are squashed by a sigmoid inside torchmetrics, which keeps the ROC.
    """
    return binary_eer(scores, labels.long())


def cross_modal_metrics(
    face: torch.Tensor, voice: torch.Tensor, ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every retrieval metric of a split: 1:2 matching both ways, recall@1/5 voice->face, EER, AUC."""
    v2f = match_accuracy(voice, face, ids, ids)
    f2v = match_accuracy(face, voice, ids, ids)
    recall = recall_at_k(voice, face, ids, ids, (1, 5))
    return {
        "match_acc": 0.5 * (v2f + f2v),
        "match_acc_v2f": v2f,
        "match_acc_f2v": f2v,
        "recall_at_1": recall[1],
        "recall_at_5": recall[5],
        **verification(voice, face, ids, ids),
    }
