"""Face–voice network: unit-length embeddings from either voice encoder, configurable heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avlab.backbones import PretrainedWeightsError
from avlab.tasks.face_voice.model import FaceVoiceNet, ProjectionHead

SMALL_WAV2VEC2 = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16] * 7,
    "num_conv_pos_embeddings": 8,
    "num_conv_pos_embedding_groups": 4,
}


@pytest.mark.parametrize("voice_encoder", ["cnn", "wav2vec2"])
def test_embeddings_are_unit_length_and_trainable(voice_encoder):
    net = FaceVoiceNet(
        face_backbone="test_resnet",
        voice_encoder=voice_encoder,
        wav2vec2=SMALL_WAV2VEC2,
        cnn={"channels": [16, 16, 16, 32]},
        embed_dim=24,
    )
    out = net(torch.randn(3, 3, 48, 48), 0.1 * torch.randn(3, 16000))
    assert out.face.shape == out.voice.shape == (3, 24)
    assert torch.allclose(out.face.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out.voice.norm(dim=1), torch.ones(3), atol=1e-5)
    (out.face * out.voice).sum().backward()
    assert all(p.grad is not None for p in net.voice_head.parameters())


def test_wav2vec2_is_built_from_its_config_with_random_weights():
    net = FaceVoiceNet(
        face_backbone="test_resnet", voice_encoder="wav2vec2", wav2vec2=SMALL_WAV2VEC2
    )
    config = net.voice_encoder.model.config
    assert (config.hidden_size, config.num_hidden_layers) == (32, 1)


@pytest.mark.parametrize(
    ("depth", "layer_norm", "linears", "norms"),
    [(1, True, 1, 0), (3, True, 3, 2), (2, False, 2, 0)],
)
def test_projection_head_depth_and_layer_norm(depth, layer_norm, linears, norms):
    head = ProjectionHead(10, 4, depth=depth, width=8, layer_norm=layer_norm, dropout=0.1)
    assert sum(isinstance(m, nn.Linear) for m in head.modules()) == linears
    assert sum(isinstance(m, nn.LayerNorm) for m in head.modules()) == norms
    assert head(torch.randn(5, 10)).shape == (5, 4)


def test_unknown_voice_encoder_and_missing_pretrained_weights_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="'cnn' or 'wav2vec2'"):
        FaceVoiceNet(face_backbone="test_resnet", voice_encoder="hubert")
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        FaceVoiceNet(face_backbone="test_resnet", pretrained=str(tmp_path / "missing.safetensors"))
