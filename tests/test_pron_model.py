"""Pronunciation networks: padding never changes an utterance's outputs, in any variant, and the
CTC loss stays finite for the shortest utterances."""

from __future__ import annotations

import pytest
import torch

from avlab.tasks.pronunciation.data import IGNORE, collate
from avlab.tasks.pronunciation.model import VARIANTS, PronunciationNet
from avlab.tasks.pronunciation.module import PronunciationModule, ctc_loss


def _utterance(frames: int, phones: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    canonical = torch.randint(1, 40, (phones,), generator=g)
    return {
        "utt": f"S/{seed}",
        "features": torch.randn(frames, 80, generator=g),
        "canonical": canonical,
        "perceived": canonical.clone(),
        "frame_phones": torch.zeros(frames, dtype=torch.long),
        "decision": torch.zeros(phones, dtype=torch.long),
        "diagnosis": torch.full((phones,), IGNORE),
    }


def _run(net: PronunciationNet, batch: dict):
    return net(
        batch["features"], batch["features_lengths"], batch["canonical"], batch["canonical_lengths"]
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_padded_batch_gives_each_utterance_its_own_outputs(variant):
    torch.manual_seed(0)
    net = PronunciationNet(variant=variant, dim=32, heads=2, task_layers=1).eval()
    items = [_utterance(203, 17, 1), _utterance(61, 5, 2), _utterance(130, 11, 3)]
    with torch.no_grad():
        batched = _run(net, collate(items))
        for i, item in enumerate(items):
            alone = _run(net, collate([item]))
            t, n = int(alone.frame_lengths[0]), item["canonical"].shape[0]
            assert int(batched.frame_lengths[i]) == t
            torch.testing.assert_close(
                batched.ctc_logits[i, :t], alone.ctc_logits[0], atol=2e-5, rtol=1e-4
            )
            torch.testing.assert_close(
                batched.decision_logits[i, :n], alone.decision_logits[0], atol=2e-5, rtol=1e-4
            )
            torch.testing.assert_close(
                batched.diagnosis_logits[i, :n], alone.diagnosis_logits[0], atol=2e-5, rtol=1e-4
            )


def test_ctc_is_finite_for_the_shortest_utterances_and_too_short_ones():
    torch.manual_seed(0)
    net = PronunciationNet(variant="simple", dim=32, heads=2, task_layers=1)
    # 0.2 s with 4 phones (fits: 5 encoder frames), and 0.1 s with 9 phones (cannot fit).
    batch = collate([_utterance(20, 4, 1), _utterance(10, 9, 2)])
    out = _run(net, batch)
    assert out.frame_lengths.tolist() == [5, 3]
    loss = ctc_loss(out, batch["perceived"], batch["perceived_lengths"])
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_encoder_gets_its_own_learning_rate_group():
    net = PronunciationNet(variant="simple", dim=32, heads=2, task_layers=1)
    module = PronunciationModule(net, optimizer=torch.optim.AdamW, encoder_lr=1e-5)
    groups = module.parameter_groups()
    encoder = {id(p) for p in net.encoder.parameters()}
    for group in groups:
        in_encoder = {id(p) in encoder for p in group["params"]}
        assert len(in_encoder) == 1
        assert (group.get("lr") == 1e-5) == in_encoder.pop()
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_wav2vec2_encoder_builds_from_its_config_and_masks_padding():
    torch.manual_seed(0)
    w2v = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 64, "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16,
           "num_conv_pos_embedding_groups": 4}  # fmt: skip
    net = PronunciationNet(variant="transformer", encoder="wav2vec2", dim=32, heads=2,
                           task_layers=1, wav2vec2=w2v).eval()  # fmt: skip
    short, long = torch.randn(8000, 1), torch.randn(16000, 1)
    items = [_utterance(10, 4, 1), _utterance(10, 4, 2)]
    items[0]["features"], items[1]["features"] = long, short
    with torch.no_grad():
        both = _run(net, collate(items))
        alone = _run(net, collate(items[1:]))
    n = int(alone.frame_lengths[0])
    assert both.frame_lengths.tolist() == [49, n] and n == 24
    torch.testing.assert_close(
        both.decision_logits[1], alone.decision_logits[0], atol=1e-4, rtol=1e-3
    )
    with pytest.raises(FileNotFoundError, match="local Hugging Face folder"):
        PronunciationNet(encoder="wav2vec2", pretrained="/no/such/folder")
