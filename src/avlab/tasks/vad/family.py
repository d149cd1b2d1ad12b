"""The scene family's fixed seeds, and one scene fitted and scored without Lightning.

`HELD_OUT_SEEDS` were fixed before any feature setting was tuned and are never tuned on;
`TUNING_SEEDS` are the members looked at while tuning. The benchmark
(`benchmarks/vad_scene_family.py`) and the property tests (tests/test_vad_family.py) read both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.data import VideoBatch
from anomalib.data.utils import Split
from torch.utils.data import DataLoader

from avlab.tasks.vad.data import UCSDpedFrames
from avlab.tasks.vad.metrics import FrameScoreCollector, VideoScores, frame_metrics
from avlab.tasks.vad.model import AiVadNet
from avlab.tasks.vad.synth import family_scene, write_ucsd_scene

HELD_OUT_SEEDS = tuple(range(100, 112))
TUNING_SEEDS = tuple(range(0, 6))


@dataclass
class FittedScene:
    """Per test video scores and labels of one fitted scene, and the training frames' maximum.

    `train_max` scores each training video with its own rows left out of the kNN banks (the
    appearance stream): in the bank a training region is its own nearest neighbour, so its
    in-sample score is 0 and the maximum would be the velocity stream's alone, a threshold no
    test frame, whose appearance score is never 0, is measured against fairly. The velocity GMM
    scores in-sample: refitted without the video on two or three training videos it overfits,
    and the maximum then rises past every event (BENCHMARKS.md, issue 13).
    """

    videos: dict[str, VideoScores]
    train_max: float

    def auroc(self, sigma: float = 3.0) -> float:
        """Frame AUROC over every test frame (scores smoothed over `sigma` frames)."""
        return frame_metrics(self.videos, sigma).get("frame_auroc", float("nan"))


def write_family_member(
    root: Path, seed: int, size: tuple[int, int] = (120, 180), **kwargs: Any
) -> Path:
    """Generate member `seed` of the scene family (UCSDped layout) at frame size (h, w)."""
    scene = family_scene(seed) | {"height": size[0], "width": size[1]}
    return write_ucsd_scene(root, scene=scene, seed=max(seed, 0), **kwargs)


def _batches(root: Path, split: Split, batch_size: int, clip_length: int = 2) -> DataLoader:
    """Clips of one split of a generated scene (root = the category folder)."""
    dataset = UCSDpedFrames(root.parent, root.name, split, clip_length_in_frames=clip_length)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=VideoBatch.collate)


@torch.no_grad()
def fit_on(net: AiVadNet, root: Path, batch_size: int = 16, clip_length: int = 2) -> AiVadNet:
    """Fit (or, when already fitted, merge into) `net` with one pass over a scene's Train/ videos."""
    net.train()
    for batch in _batches(root, Split.TRAIN, batch_size, clip_length):
        net.observe_training_clips(batch.image, batch.video_path)
        for frame_features, video in zip(net(batch.image), batch.video_path, strict=True):
            net.density.update(frame_features, group=video)
    net.fit()
    return net.eval()


@torch.no_grad()
def score_on(net: AiVadNet, root: Path, batch_size: int = 16, clip_length: int = 2) -> FittedScene:
    """Score a scene's Test/ frames with a fitted `net`, and note its training frames' maximum
    (each training video scored as a new one would be: see `FittedScene.train_max`)."""
    net.eval()
    scored = {}
    for split in (Split.TRAIN, Split.TEST):
        collector = FrameScoreCollector(net.stream_lags())
        net.reset_tracks()
        for batch in _batches(root, split, batch_size, clip_length):
            out = net(batch.image, videos=batch.video_path, held_out=split == Split.TRAIN)
            labels = batch.gt_label if split == Split.TEST else torch.zeros_like(batch.frames)
            collector.add(
                batch.video_path, batch.frames, out.frame_scores, labels, out.stream_scores
            )
        scored[split] = collector.videos()
    train_max = max(float(v.scores.max()) for v in scored[Split.TRAIN].values())
    return FittedScene(scored[Split.TEST], train_max)


def fit_and_score(
    root: Path, net: AiVadNet, batch_size: int = 16, clip_length: int = 2
) -> FittedScene:
    """Fit `net` on a scene's Train/ videos (one pass, as the training epoch does) and score Test/."""
    return score_on(fit_on(net, root, batch_size, clip_length), root, batch_size, clip_length)


def event_raises_score(video: VideoScores, sigma: float = 0.0, percentile: float = 95.0) -> bool:
    """Whether the anomalous frames' highest score beats the `percentile` of the normal frames'."""
    scores = video.scores.numpy()
    if sigma:
        from avlab.tasks.vad.metrics import gaussian_smooth

        scores = gaussian_smooth(video.scores, sigma).numpy()
    labels = video.labels.numpy().astype(bool)
    if not labels.any() or labels.all():
        return False
    return bool(scores[labels].max() > np.percentile(scores[~labels], percentile))


def net_settings(model_yaml: Path) -> dict[str, Any]:
    """AiVadNet keyword arguments of a `conf/model/aivad*.yaml`, with the offline extractors."""
    import yaml

    net = yaml.safe_load(Path(model_yaml).read_text())["net"]
    kept = {
        k: v
        for k, v in net.items()
        if not k.startswith("_") and not (isinstance(v, str) and v.startswith("${"))
    }
    offline = {"flow": "farneback", "regions": "motion", "pose": "off", "appearance": "timm"}
    return kept | offline | {"pretrained": None}
