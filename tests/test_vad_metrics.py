"""Frame-level metrics of AI-VAD runs: temporal smoothing, AUROC/AUPR over videos, score plots."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from avlab.tasks.vad.metrics import (
    FrameScoreCollector,
    aligned,
    frame_metrics,
    gaussian_smooth,
    plot_video_scores,
)


def test_gaussian_smoothing_keeps_constants_and_mass_and_spreads_a_spike():
    assert torch.allclose(
        gaussian_smooth(torch.full((30,), 2.5, dtype=torch.float64), 3.0),
        torch.full((30,), 2.5, dtype=torch.float64),
    )
    spike = torch.zeros(61, dtype=torch.float64)
    spike[30] = 1.0
    smooth = gaussian_smooth(spike, 3.0)
    assert float(smooth.sum()) == pytest.approx(1.0)
    assert torch.allclose(smooth, smooth.flip(0)) and int(smooth.argmax()) == 30
    assert float(smooth[30]) == pytest.approx(1 / (3.0 * (2 * torch.pi) ** 0.5), rel=1e-2)
    assert torch.equal(gaussian_smooth(spike, 0.0), spike)


def _collector() -> FrameScoreCollector:
    """Two videos, fed out of order: a clean detection and a noisy one."""
    collector = FrameScoreCollector()
    collector.add(
        ["v2"] * 4,
        torch.tensor([3, 1, 2, 4]),
        torch.tensor([0.9, 0.1, 0.2, 0.8]),
        torch.tensor([1, 0, 0, 1]),
        {"velocity": torch.tensor([0.9, 0.1, 0.2, 0.8])},
    )
    collector.add(
        ["v1"] * 3,
        torch.tensor([1, 2, 3]),
        torch.tensor([0.3, 0.95, 0.85]),
        torch.tensor([0, 1, 0]),
        {"velocity": torch.tensor([0.0, 0.0, 0.0])},
    )
    return collector


def test_frame_metrics_pool_all_videos_frames():
    videos = _collector().videos()
    assert list(videos) == ["v1", "v2"] and videos["v2"].frames.tolist() == [1, 2, 3, 4]
    metrics = frame_metrics(videos)
    # 3 anomalous frames (0.95, 0.9, 0.8) vs 4 normal (0.85, 0.3, 0.2, 0.1): 11 of 12 pairs ordered
    assert metrics["frame_auroc"] == pytest.approx(11 / 12)
    # ranked: A A N A N N N -> precision 1, 1, 3/4 at the three anomalies: AP = (1 + 1 + 3/4) / 3
    assert metrics["frame_aupr"] == pytest.approx(11 / 12)
    # velocity alone: anomalous 0.9, 0.8, 0.0 vs normal 0.2, 0.1, 0.0, 0.0 -> (4 + 4 + 2 * 0.5) / 12
    assert frame_metrics(videos, stream="velocity")["frame_auroc"] == pytest.approx(0.75)


def test_a_lagged_stream_is_moved_earlier_and_the_frame_score_with_it():
    velocity = torch.tensor([0.1, 0.2, 0.1, 0.3, 0.2, 0.1], dtype=torch.float64)
    dwell = torch.tensor([0.0, 0.0, 0.0, 2.0, 2.0, 1.0], dtype=torch.float64)
    scores, streams = aligned(
        velocity + dwell, {"velocity": velocity, "dwell": dwell}, {"dwell": 2}
    )
    # frame t gets the dwell score measured at t + 2; the last two repeat the last measurement
    assert streams["dwell"].tolist() == [0.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    assert torch.equal(streams["velocity"], velocity)
    assert torch.allclose(scores, velocity + streams["dwell"])
    # a lag longer than the video leaves the last measurement everywhere
    assert aligned(dwell, {"dwell": dwell}, {"dwell": 9})[1]["dwell"].tolist() == [1.0] * 6


def test_the_collector_aligns_each_video_on_its_own():
    collector = FrameScoreCollector(lags={"dwell": 1})
    for video, dwell in (("a", [0.0, 1.0, 1.0]), ("b", [3.0, 0.0, 0.0])):
        values = torch.tensor(dwell)
        labels = torch.zeros(3, dtype=torch.long)
        collector.add([video] * 3, torch.arange(3), values, labels, {"dwell": values})
    videos = collector.videos()
    # no value crosses from one video into the other
    assert videos["a"].scores.tolist() == [1.0, 1.0, 1.0]
    assert videos["b"].scores.tolist() == [0.0, 0.0, 0.0]


def test_frame_metrics_are_undefined_for_one_class():
    collector = FrameScoreCollector()
    collector.add(["v"] * 3, torch.arange(3), torch.rand(3), torch.zeros(3, dtype=torch.long), {})
    assert frame_metrics(collector.videos()) == {}


def test_score_plot_is_a_png(tmp_path):
    video = _collector().videos()["v2"]
    plot_video_scores(tmp_path / "plots" / "v2.png", "v2", video, sigma=1.0)
    with Image.open(tmp_path / "plots" / "v2.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
