"""Frame-level anomaly metrics: AUROC and AUPR over all test frames, with optional temporal
Gaussian smoothing of each video's scores (as the AI-VAD paper), and per-video score plots."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # plots are files; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from scipy.ndimage import gaussian_filter1d  # noqa: E402
from torchmetrics.functional.classification import binary_auroc, binary_average_precision  # noqa: E402

log = logging.getLogger(__name__)


def gaussian_smooth(scores: torch.Tensor, sigma: float) -> torch.Tensor:
    """Scores (T,) convolved with a Gaussian of `sigma` frames (scipy's gaussian_filter1d, kernel
    radius 4 sigma); edges repeat the end values."""
    if sigma <= 0 or len(scores) < 2:
        return scores
    smooth = gaussian_filter1d(scores.detach().cpu().double().numpy(), sigma, mode="nearest")
    return torch.from_numpy(smooth).to(scores)


@dataclass
class VideoScores:
    """One test video's target frames in order, with scores and ground truth."""

    frames: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    streams: dict[str, torch.Tensor] = field(default_factory=dict)


def shifted_earlier(values: torch.Tensor, lag: int) -> torch.Tensor:
    """values (T,) moved `lag` steps earlier: step t gets step t + lag's value; the last `lag`
    steps repeat the last value (the latest measurement there is)."""
    if lag <= 0 or len(values) == 0:
        return values
    tail = values[-1:].expand(min(lag, len(values)))
    return torch.cat([values[lag:], tail])


def aligned(
    scores: torch.Tensor, streams: dict[str, torch.Tensor], lags: dict[str, int]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One video's frame scores and stream scores with each stream in `lags` moved `lag` steps
    earlier, and the frame score (the sum of the streams) moved with it.

    A stream measured over a window of past frames describes the window's centre, not its last
    frame: the dwell stream's displacement over frames t-12..t is reported at t-6 (issue 13).
    """
    streams = dict(streams)
    for stream, lag in lags.items():
        if lag > 0 and stream in streams:
            moved = shifted_earlier(streams[stream], lag)
            scores = scores - streams[stream] + moved
            streams[stream] = moved
    return scores, streams


class FrameScoreCollector:
    """Accumulates per-frame scores of test batches, grouped by video.

    `lags`: streams whose score describes an earlier frame, by how many clip steps (see
    `aligned`); each video's scores are aligned when read.
    """

    def __init__(self, lags: dict[str, int] | None = None) -> None:
        self.rows: dict[str, list[tuple[int, float, int, dict[str, float]]]] = defaultdict(list)
        self.lags = dict(lags or {})

    def add(
        self,
        videos: list[str],
        frames: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        streams: dict[str, torch.Tensor],
    ) -> None:
        """Record one batch: video path, target frame index, score and label per clip."""
        for i, video in enumerate(videos):
            extra = {name: float(values[i]) for name, values in streams.items()}
            self.rows[video].append((int(frames[i]), float(scores[i]), int(labels[i]), extra))

    def videos(self) -> dict[str, VideoScores]:
        """Every video's scores sorted by frame index."""
        result = {}
        for video, rows in sorted(self.rows.items()):
            rows = sorted(rows, key=lambda row: row[0])
            names = list(rows[0][3])
            scores, streams = aligned(
                torch.tensor([r[1] for r in rows], dtype=torch.float64),
                {n: torch.tensor([r[3][n] for r in rows], dtype=torch.float64) for n in names},
                self.lags,
            )
            result[video] = VideoScores(
                frames=torch.tensor([r[0] for r in rows]),
                scores=scores,
                labels=torch.tensor([r[2] for r in rows]),
                streams=streams,
            )
        return result

    def reset(self) -> None:
        """Forget everything recorded."""
        self.rows.clear()


def frame_metrics(
    videos: dict[str, VideoScores], sigma: float = 0.0, stream: str | None = None
) -> dict[str, float]:
    """frame_auroc and frame_aupr over all videos' frames ({} if only one class is present)."""
    if not videos:
        return {}
    scores = torch.cat(
        [gaussian_smooth(v.streams[stream] if stream else v.scores, sigma) for v in videos.values()]
    )
    labels = torch.cat([v.labels for v in videos.values()])
    if labels.min() == labels.max():
        return {}
    return {
        "frame_auroc": float(binary_auroc(scores, labels)),
        "frame_aupr": float(binary_average_precision(scores, labels)),
    }


def plot_video_scores(path: Path, name: str, video: VideoScores, sigma: float) -> None:
    """PNG of one video's raw and smoothed frame scores, ground-truth anomalous frames shaded."""
    fig = video_scores_figure(name, video, sigma)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def video_scores_figure(name: str, video: VideoScores, sigma: float):
    """One video's raw and smoothed frame scores, ground-truth anomalous frames shaded."""
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for start, stop in _runs(video.labels):
        ax.axvspan(
            video.frames[start] - 0.5,
            video.frames[stop - 1] + 0.5,
            color="tab:red",
            alpha=0.18,
            lw=0,
        )
    ax.plot(video.frames, video.scores, color="0.6", lw=0.8, label="score")
    if sigma > 0:
        ax.plot(
            video.frames,
            gaussian_smooth(video.scores, sigma),
            color="tab:blue",
            lw=1.6,
            label=f"smoothed (sigma={sigma:g})",
        )
    ax.set(
        xlabel="frame",
        ylabel="anomaly score",
        title=f"{name} (shaded: ground-truth anomalous frames)",
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def _runs(labels: torch.Tensor) -> list[tuple[int, int]]:
    """[start, stop) index ranges where labels are 1."""
    runs, start = [], None
    for i, value in enumerate(labels.tolist() + [0]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            runs.append((start, i))
            start = None
    return runs
