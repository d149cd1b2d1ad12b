"""SmileEmotionNet: shapes, ranges, offline-first weights."""

import pytest
import torch

from avlab.backbones import PretrainedWeightsError
from avlab.tasks.smile.model import SmileEmotionNet
from tests.conftest import compose_config


def test_outputs_per_sequence_and_per_frame():
    net = SmileEmotionNet(lstm_hidden=32).eval()
    out = net(torch.randn(2, 10, 3, 48, 48))
    assert out.smile_logit.shape == (2,) and out.emotion_logits.shape == (2, 7)
    assert out.frame_smile_logit.shape == (2, 10) and out.frame_emotion_logits.shape == (2, 10, 7)


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_grey_channel_scores_as_the_same_image_repeated_to_rgb(channels_last):
    """The loaders hand over one grey channel; the network repeats it for its 3-channel encoder."""
    torch.manual_seed(0)
    net = SmileEmotionNet(lstm_hidden=32, channels_last=channels_last).eval()
    grey = torch.randn(2, 4, 1, 48, 48)
    with torch.no_grad():
        one, three = net(grey), net(grey.expand(-1, -1, 3, -1, -1).contiguous())
    assert torch.allclose(one.emotion_logits, three.emotion_logits, atol=1e-5)
    assert torch.allclose(one.smile_logit, three.smile_logit, atol=1e-5)


def test_temporal_model_sees_frame_order():
    torch.manual_seed(0)
    net = SmileEmotionNet(lstm_hidden=32).eval()
    frames = torch.randn(1, 10, 3, 48, 48)
    forward = net(frames).frame_smile_logit
    backward = net(frames.flip(1)).frame_smile_logit.flip(1)
    assert not torch.allclose(forward, backward)


def test_bad_input_rank_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        SmileEmotionNet(lstm_hidden=8)(torch.randn(2, 3, 48, 48))


def test_random_init_by_default_and_missing_pretrained_file_is_clear(tmp_path):
    SmileEmotionNet(pretrained=None)
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        SmileEmotionNet(pretrained=str(tmp_path / "mobilenet.safetensors"))


def test_pretrained_weights_load_from_a_local_file(tmp_path):
    source = SmileEmotionNet(lstm_hidden=8)
    path = tmp_path / "backbone.pth"
    torch.save(source.encoder.state_dict(), path)
    loaded = SmileEmotionNet(pretrained=str(path), lstm_hidden=8)
    for name, tensor in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[name], tensor), name


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    plain = SmileEmotionNet(lstm_hidden=8).eval()
    nhwc = SmileEmotionNet(lstm_hidden=8, channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    frames = torch.randn(2, 10, 3, 48, 48)
    with torch.no_grad():
        a, b = plain(frames), nhwc(frames)
    assert torch.allclose(a.emotion_logits, b.emotion_logits, atol=1e-4)
    assert torch.allclose(a.smile_logit, b.smile_logit, atol=1e-4)


def test_the_designed_mobilenet_encoder_is_one_config_choice(tmp_path):
    cfg = compose_config("train", ["model=smile_mnv3"], tmp_path / "run", tmp_path / "data")
    assert cfg.model.net.backbone == "mobilenetv3_small_100"
    net = SmileEmotionNet(backbone=cfg.model.net.backbone, lstm_hidden=8).eval()
    assert net(torch.randn(1, 10, 3, 48, 48)).emotion_logits.shape == (1, 7)
