"""The anomaly monitor tab's backend: an AI-VAD checkpoint scores every frame of an upload, as
its test step does (clips of the run's length, labelled by their last frame)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from avlab.checkpoints import load_checkpoint
from avlab.run import build_module
from avlab.tasks.vad.metrics import aligned, gaussian_smooth
from avlab.tasks.vad.module import AiVadModule

MODULE = f"{AiVadModule.__module__}.{AiVadModule.__name__}"
# Per stream, 1.0 is the most unusual training region (scores are min-max normalised by the
# training features' held-out distances), so a frame over 1.0 is beyond anything seen in training.
DEFAULT_THRESHOLD = 1.0


@dataclass
class VadScores:
    """Scores of an upload's target frames (every frame that ends a clip)."""

    frames: list[int]  # target frame index of each score
    scores: np.ndarray  # (T,) frame score: the sum of the stream scores
    smoothed: np.ndarray  # (T,) Gaussian-smoothed over time (the module's sigma)
    streams: dict[str, np.ndarray]  # stream -> (T,)
    boxes: list[np.ndarray]  # per target frame (M, 4) xyxy
    region_scores: list[np.ndarray]  # per target frame (M,)


class AnomalyMonitor:
    """A fitted AI-VAD checkpoint, ready to score uploads."""

    def __init__(self, path: str | Path, purpose: str = "vad", batch_size: int = 8) -> None:
        checkpoint, config = load_checkpoint(path, purpose, expect_module=MODULE)
        config.model.init_from = None
        self.module: AiVadModule = build_module(config)
        self.module.load_state_dict(checkpoint["state_dict"])
        if not self.module.net.density.is_fitted:
            raise ValueError(f"{purpose}={path}: the density model is not fitted (unfinished run?)")
        self.module.eval()
        self.clip_length = int(config.data.get("clip_length_in_frames", 2))
        self.batch_size = batch_size

    @property
    def streams(self) -> list[str]:
        """The streams this model scores (velocity, pose, appearance)."""
        return list(self.module.net.density.estimators())

    @torch.no_grad()
    def score(self, frames_rgb: list[np.ndarray]) -> VadScores:
        """Every target frame's score, per-stream scores and scored region boxes."""
        if len(frames_rgb) < self.clip_length:
            raise ValueError(
                f"{len(frames_rgb)} frame(s): the model reads clips of {self.clip_length} frames"
            )
        video = torch.from_numpy(np.stack(frames_rgb)).permute(0, 3, 1, 2).float() / 255.0
        targets = list(range(self.clip_length - 1, len(frames_rgb)))
        scores, boxes, regions = [], [], []
        self.module.net.reset_tracks()  # an upload is a video of its own
        streams: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(targets), self.batch_size):
            batch = targets[start : start + self.batch_size]
            clips = torch.stack([video[t - self.clip_length + 1 : t + 1] for t in batch])
            out = self.module.net(clips)
            scores.append(out.frame_scores)
            for stream, value in out.stream_scores.items():
                streams.setdefault(stream, []).append(value)
            boxes += [b.numpy() for b in out.boxes]
            regions += [torch.as_tensor(r).reshape(-1).numpy() for r in out.region_scores]
        frame_scores, by_stream = aligned(
            torch.cat(scores).float(),
            {s: torch.cat(v).float() for s, v in streams.items()},
            self.module.net.stream_lags(),
        )
        return VadScores(
            frames=targets,
            scores=frame_scores.numpy(),
            smoothed=gaussian_smooth(frame_scores, self.module.sigma).numpy(),
            streams={s: v.numpy() for s, v in by_stream.items()},
            boxes=boxes,
            region_scores=regions,
        )


def top_frames(scores: VadScores, k: int) -> list[int]:
    """Positions (into scores.frames) of the k highest-scoring frames, highest first."""
    return [int(i) for i in np.argsort(-scores.scores, kind="stable")[:k]]


def draw_regions(
    frame_rgb: np.ndarray, boxes: np.ndarray, region_scores: np.ndarray, threshold: float
) -> np.ndarray:
    """The frame with each region's box and score drawn (red over the threshold, yellow under)."""
    image = np.ascontiguousarray(frame_rgb).copy()
    scale = max(1, round(max(image.shape[:2]) / 240))
    for box, value in zip(boxes, region_scores, strict=True):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = (220, 30, 30) if value > threshold else (240, 200, 0)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, scale)
        cv2.putText(
            image,
            f"{value:.2f}",
            (x1, max(8, y1 - 2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.3 * scale,
            colour,
            1,
            cv2.LINE_AA,
        )
    return image


def score_figure(scores: VadScores, threshold: float, fps: float = 1.0):
    """Anomaly score over time against the threshold, with each stream's own score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    x = np.asarray(scores.frames) / fps
    ax.plot(x, scores.scores, color="black", linewidth=1.5, label="frame score")
    ax.plot(x, scores.smoothed, color="tab:purple", linestyle="--", label="smoothed")
    for stream, values in scores.streams.items():
        ax.plot(x, values, linewidth=0.8, alpha=0.7, label=stream)
    ax.axhline(threshold, color="red", linestyle=":", label=f"threshold {threshold:.2f}")
    over = scores.scores > threshold
    if over.any():
        ax.fill_between(
            x, 0, 1, where=over, color="red", alpha=0.12, transform=ax.get_xaxis_transform()
        )
    ax.set(xlabel="time (s)" if fps != 1.0 else "frame", ylabel="anomaly score")
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    fig.tight_layout()
    return fig


def stream_table(scores: VadScores) -> list[list[float | int]]:
    """Rows of frame, score, smoothed score, then each stream's score."""
    return [
        [frame, round(float(scores.scores[i]), 4), round(float(scores.smoothed[i]), 4)]
        + [round(float(v[i]), 4) for v in scores.streams.values()]
        for i, frame in enumerate(scores.frames)
    ]
