"""AI-VAD extractors: each config choice builds what it names, the offline ones measure what they
should, and a pretrained choice without its cache file fails at once, naming the file."""

from __future__ import annotations

import inspect

import cv2
import numpy as np
import pytest
import torch
from anomalib.models.video.ai_vad.features import VelocityExtractor
from anomalib.models.video.ai_vad.flow import FlowExtractor
from anomalib.models.video.ai_vad.regions import RegionExtractor
from omegaconf import OmegaConf
from torchvision.models.optical_flow import Raft_Large_Weights, raft_large

from avlab.backbones import PretrainedWeightsError
from avlab.tasks.vad.extractors import (
    FarnebackFlow,
    MotionRegions,
    RegionVelocity,
    TimmAppearance,
    torchvision_cache_file,
)
from avlab.tasks.vad.model import AiVadNet
from avlab.tasks.vad.module import AiVadModule
from tests.conftest import CONF


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point torch's and CLIP's caches at empty folders and make any download attempt fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr("requests.get", no_network)
    return tmp_path


def _textured(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random texture in [0, 1] (optical flow needs structure to lock onto)."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4, w // 4)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _rgb(gray: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(gray).expand(3, *gray.shape).unsqueeze(0).float()


def test_farneback_recovers_a_known_shift():
    base = _textured(64, 96)
    shifted = np.roll(base, shift=(1, 2), axis=(0, 1))  # 2 px right, 1 px down
    flow = FarnebackFlow()(_rgb(base), _rgb(shifted))
    assert flow.shape == (1, 2, 64, 96)
    centre = flow[0, :, 16:48, 24:72].mean(dim=(1, 2))
    assert centre[0] == pytest.approx(2.0, abs=0.3) and centre[1] == pytest.approx(1.0, abs=0.3)


def test_motion_regions_box_a_moving_square_and_ignore_the_static_background():
    background = _textured(60, 80) * 0.3
    patch = 0.5 + 0.5 * _textured(16, 16, seed=1)
    first, last = background.copy(), background.copy()
    first[20:36, 10:26] = patch
    last[20:36, 13:29] = patch
    regions = MotionRegions(min_bbox_area=50, dilation=1)(_rgb(first), _rgb(last))
    assert len(regions) == 1 and regions[0]["boxes"].shape == (1, 4)
    x1, y1, x2, y2 = regions[0]["boxes"][0].tolist()
    assert 8 <= x1 <= 11 and 18 <= y1 <= 21 and 27 <= x2 <= 31 and 34 <= y2 <= 38
    assert regions[0]["masks"].shape == (1, 1, 60, 80)
    still = MotionRegions()(_rgb(background), _rgb(background))
    assert still[0]["boxes"].shape == (0, 4)


def test_motion_regions_closing_joins_the_two_edges_of_a_uniform_square():
    background = _textured(60, 80) * 0.3
    first, last = background.copy(), background.copy()
    first[20:36, 10:26] = 0.9
    last[20:36, 13:29] = 0.9  # only its leading and trailing edges change
    split = MotionRegions(min_bbox_area=50, dilation=1)(_rgb(first), _rgb(last))
    joined = MotionRegions(min_bbox_area=50, closing=8, dilation=1)(_rgb(first), _rgb(last))
    assert len(split[0]["boxes"]) == 2 and len(joined[0]["boxes"]) == 1


def test_region_velocity_matches_anomalib_on_its_grid_and_is_vectorised():
    torch.manual_seed(0)
    flows = torch.randn(2, 2, 40, 50) * 2
    boxes = torch.tensor(
        [[0, 2.0, 3.0, 30.0, 35.0], [1, 10.0, 5.0, 45.0, 38.0], [1, 0.0, 0.0, 12.0, 9.0]]
    )
    theirs = VelocityExtractor(n_bins=8)(flows, boxes)
    ours = RegionVelocity(n_bins=8, grid=224, min_magnitude=0.0, normalize="bin")(flows, boxes)
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert RegionVelocity()(flows, boxes[:0]).shape == (0, 8)


def test_region_velocity_region_normalisation_reads_a_uniform_motion():
    flows = torch.zeros(1, 2, 32, 32)
    flows[0, 1] = 1.5  # anomalib's angle is atan2(flow[0], flow[1]): this is bin 4 of 8
    features = RegionVelocity(8, grid=16, min_magnitude=0.3, normalize="region")(
        flows, torch.tensor([[0, 0.0, 0.0, 31.0, 31.0]])
    )
    expected = torch.zeros(8)
    expected[4] = 1.5
    assert torch.allclose(features[0], expected, atol=1e-5)


def test_timm_appearance_gives_one_vector_per_box_and_none_for_no_boxes():
    extractor = TimmAppearance(
        backbone="resnet18", stage=1, crop_size=32, pool_grid=2, square_crops=True
    ).eval()
    frames = torch.rand(2, 3, 40, 60)
    boxes = torch.tensor([[0, 1.0, 2.0, 20.0, 38.0], [1, 30.0, 5.0, 59.0, 15.0]])
    features = extractor(frames, boxes, 2)
    assert features.shape == (2, extractor.output_dim) and extractor.output_dim == 64 * 4
    assert extractor(frames, boxes[:0], 2).shape == (0, extractor.output_dim)


@pytest.mark.parametrize(
    ("appearance", "streams"),
    [("timm", {"velocity", "appearance"}), ("off", {"velocity"}), (False, {"velocity"})],
)
def test_offline_switches_build_the_named_extractors(appearance, streams, empty_caches):
    net = AiVadNet(flow="farneback", regions="motion", pose="off", appearance=appearance)
    assert isinstance(net.flow_extractor, FarnebackFlow)
    assert isinstance(net.region_extractor, MotionRegions)
    assert net.feature_extractor.pose_extractor is None
    assert set(net.density.estimators()) == streams
    assert (net.feature_extractor.deep_extractor is not None) == ("appearance" in streams)
    assert net.cached_prefixes() == []


@pytest.mark.parametrize(
    ("key", "choice"),
    [("flow", "lucaskanade"), ("regions", "yolo"), ("pose", "on"), ("appearance", "dino")],
)
def test_an_unknown_choice_lists_the_valid_ones(key, choice, empty_caches):
    with pytest.raises(ValueError, match=rf"model\.{key}={choice!r}: choose one of"):
        AiVadNet(**{key: choice})


def test_missing_pretrained_weights_are_named_with_where_to_put_them_before_any_work(empty_caches):
    with pytest.raises(PretrainedWeightsError) as info:
        AiVadNet(flow="raft", regions="maskrcnn", pose="keypointrcnn", appearance="clip")
    message = str(info.value)
    torch_cache = empty_caches / "torch" / "hub" / "checkpoints"
    for filename in (
        "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
        "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        "keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
    ):
        assert str(torch_cache / filename) in message
        assert f"https://download.pytorch.org/models/{filename}" in message
    assert str(empty_caches / "home" / ".cache" / "clip" / "ViT-B-16.pt") in message
    assert "model.flow=farneback model.regions=motion" in message


def test_a_pretrained_choice_loads_its_cache_file_and_leaves_it_out_of_checkpoints(empty_caches):
    torch.manual_seed(0)
    weights = raft_large(weights=None).state_dict()
    path = torchvision_cache_file(Raft_Large_Weights.DEFAULT.url)
    path.parent.mkdir(parents=True)
    torch.save(weights, path)
    net = AiVadNet(flow="raft", appearance="off")
    assert isinstance(net.flow_extractor, FlowExtractor)
    name = next(iter(weights))
    assert torch.equal(net.flow_extractor.model.state_dict()[name], weights[name])
    module = AiVadModule(net)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("net.flow_extractor.") for k in checkpoint["state_dict"])
    assert any(k.startswith("net.density.") for k in checkpoint["state_dict"])
    fresh = AiVadModule(AiVadNet(flow="raft", appearance="off"))
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)


def test_every_extractor_setting_in_the_model_config_is_a_constructor_parameter():
    net = OmegaConf.load(CONF / "model" / "aivad.yaml").net
    owners = {
        "farneback": FarnebackFlow,
        "motion": MotionRegions,
        "maskrcnn": RegionExtractor,
        "timm": TimmAppearance,
        "velocity": RegionVelocity,
    }
    for key, owner in owners.items():
        accepted = set(inspect.signature(owner.__init__).parameters)
        assert set(net[key]) <= accepted, (
            f"model.net.{key}: {set(net[key]) - accepted} unknown to {owner.__name__}"
        )
    assert set(net) - {"_target_", "_convert_"} <= set(
        inspect.signature(AiVadNet.__init__).parameters
    )


def test_explicit_speed_and_size_read_the_regions_flow_and_box():
    from avlab.tasks.vad.extractors import RegionVelocity

    flows = torch.zeros(1, 2, 40, 60)
    flows[0, 0, 10:20, 10:30] = 5.0  # a figure moving 5 px right inside the box
    box = torch.tensor([[0.0, 10.0, 10.0, 29.0, 19.0]])
    with_both = RegionVelocity(8, 16, 0.3, "region", speed=True, size=True)(flows, box)
    assert with_both.shape == (1, 11)
    assert with_both[0, 8].item() == pytest.approx(np.log1p(5.0), abs=0.05)
    assert with_both[0, 9:].tolist() == pytest.approx([np.log(10.0), np.log(20.0)])
    slow = flows / 5
    assert RegionVelocity(8, 16, 0.3, "region", speed=True)(slow, box)[0, 8] < 0.8


def test_auto_motion_threshold_follows_the_camera_noise_and_travels_in_the_checkpoint():
    from avlab.tasks.vad.extractors import MotionRegions

    def pair(noise: float) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        base = torch.full((4, 3, 48, 64), 0.5)
        return tuple((base + noise / 255 * torch.randn(base.shape, generator=g)) for _ in "ab")

    quiet, noisy = MotionRegions(binary_threshold="auto"), MotionRegions(binary_threshold="auto")
    quiet.calibrate(*pair(1.0))
    noisy.calibrate(*pair(12.0))
    assert quiet.binary_threshold == quiet.min_threshold  # a clean camera: the floor
    assert noisy.binary_threshold > 3 * quiet.binary_threshold
    noisy.calibrate(*pair(1.0))  # calibrated once: later batches change nothing
    restored = MotionRegions(binary_threshold="auto")
    restored.load_state_dict(noisy.state_dict())
    assert restored.binary_threshold == pytest.approx(noisy.binary_threshold)
    assert "calibration" not in MotionRegions(binary_threshold=12).state_dict()


def _shake(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`image` as seen by a camera moved so the scene shifts by (dx, dy) px (sub-pixel, bilinear)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    size = (image.shape[1], image.shape[0])
    return cv2.warpAffine(image, matrix, size, borderMode=cv2.BORDER_REPLICATE)


def test_stabilize_cancels_camera_shake_and_keeps_the_moving_figure():
    # A textured ground, one flat figure moving 3 px right, and the camera shaken by a
    # sub-pixel amount between the two frames: without stabilisation the ground's texture
    # "moves" everywhere; with it, the figure is the one moving region and keeps its speed.
    ground = (0.25 + 0.5 * _textured(96, 128, seed=3)).astype(np.float32)
    first, last = ground.copy(), ground.copy()
    first[40:64, 30:40] = 0.95
    last[40:64, 33:43] = 0.95
    last = _shake(last, 0.7, -0.5)
    clips = torch.stack([_rgb(first)[0], _rgb(last)[0]]).unsqueeze(0)
    velocity = {"min_magnitude": 0.3, "normalize": "region", "speed": True}
    motion = {"binary_threshold": 12, "dilation": 4}  # conf/model/aivad.yaml
    settings = dict(appearance="off", min_bbox_area=20, velocity=velocity, motion=motion)
    shaken = AiVadNet(**settings).eval()
    steady = AiVadNet(**settings, stabilize=True).eval()

    flow = shaken.flow_extractor(clips[:, 0], clips[:, -1])
    from avlab.tasks.vad.model import camera_shift

    assert camera_shift(flow)[0].tolist() == pytest.approx([0.7, -0.5], abs=0.15)

    boxes_shaken = shaken.extract(clips)[0][0]["boxes"]
    regions, features = steady.extract(clips)
    boxes = regions[0]["boxes"]
    covered = ((boxes_shaken[:, 2:] - boxes_shaken[:, :2] + 1).prod(dim=1)).sum()
    assert covered > 10 * 26 * 13  # the texture "moves" everywhere, not just the figure
    assert len(boxes) == 1
    x1, y1, x2, y2 = boxes[0].tolist()
    assert 24 <= x1 <= 31 and 41 <= x2 <= 48 and 34 <= y1 <= 41 and 62 <= y2 <= 70
    speed = features[0][next(iter(features[0]))][0, 8]  # log1p(90th-percentile speed)
    assert float(torch.expm1(speed)) == pytest.approx(3.0, abs=1.0)
    assert "stabilize" in steady.feature_config and "stabilize" not in shaken.feature_config


def test_compressed_scores_keep_each_streams_ranking_but_stop_one_outlier_ruling_the_sum(
    monkeypatch,
):
    # Frame A: one region far past the training range in velocity only (a figure cut by the
    # frame's edge); frame B: past it in both streams. Summed raw, A's single outlier outranks
    # B; summed after log(1 + s), B (anomalous in both) comes first, while within one stream
    # the order of the regions is unchanged.
    net = AiVadNet(min_bbox_area=20).eval()
    scores = {
        "velocity": torch.tensor([20.0, 0.2, 5.0]),
        "appearance": torch.tensor([0.1, 0.0, 4.0]),
    }
    monkeypatch.setattr(net.density, "score_streams", lambda features: dict(scores))
    regions = [{"boxes": torch.zeros(2, 4)}, {"boxes": torch.zeros(1, 4)}]  # A: 2 regions, B: 1
    features = [{"x": torch.zeros(2, 1)}, {"x": torch.zeros(1, 1)}]

    raw = net.score(regions, features)
    assert raw.frame_scores[0] > raw.frame_scores[1]

    net.compress_scores = True
    squeezed = net.score(regions, features)
    assert squeezed.frame_scores[1] > squeezed.frame_scores[0]
    for stream in scores:  # each stream's frame score is a monotone map of the raw one
        assert torch.allclose(
            squeezed.stream_scores[stream], torch.log1p(raw.stream_scores[stream])
        )
