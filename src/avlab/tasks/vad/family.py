"""The scene family's fixed seeds, and one scene fitted and scored without Lightning.

`HELD_OUT_SEEDS` were fixed before any feature setting was tuned and are never tuned on;
`TUNING_SEEDS` are the members looked at while tuning. The benchmark
(`benchmarks/vad_scene_family.py`) and the property tests (tests/test_vad_family.py) read both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.data import VideoBatch
from anomalib.data.utils import Split
from torch.utils.data import DataLoader

from avlab.data_utils import ensure_generated
from avlab.tasks.vad.data import UCSDpedFrames
from avlab.tasks.vad.metrics import FrameScoreCollector, VideoScores, frame_metrics
from avlab.tasks.vad.model import AiVadNet
from avlab.tasks.vad.synth import family_scene, write_ucsd_scene

HELD_OUT_SEEDS = tuple(range(100, 112))
TUNING_SEEDS = tuple(range(0, 6))
# The property scenes (tests/test_vad_family.py, benchmarks/vad_family_properties.py): small
# frames (h, w), and three test videos, Test001 a fast mover, Test002 an oversized figure,
# Test003 no event.
PROPERTY_SIZE = (72, 108)
PROPERTY_EVENTS = ("bike", "cart", "none")
NO_EVENT = "Test003"


def seed_list(text: str) -> list[int]:
    """'200-211' or '700,705' (or a mix, e.g. '100-104,110') -> member seeds, in order."""
    out = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        out += list(range(int(low), int(high) + 1)) if high else [int(low)]
    return out


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

    def video(self, name: str) -> VideoScores:
        """One test video's scores by its folder name (e.g. "Test001")."""
        found = [v for k, v in self.videos.items() if Path(k).name == name]
        if len(found) != 1:
            raise KeyError(
                f"{name}: {len(found)} test videos of that name in {sorted(self.videos)}"
            )
        return found[0]

    def passes_training_maximum(self, name: str) -> bool:
        """Whether any frame of test video `name` scores above the training frames' maximum."""
        return float(self.video(name).scores.max()) > self.train_max

    def frames_above_training_maximum(self, name: str = NO_EVENT) -> tuple[int, int]:
        """How many frames of test video `name` score above the training frames' maximum, and
        how many frames it has."""
        scores = self.video(name).scores
        return int((scores > self.train_max).sum()), len(scores)


def write_family_member(
    root: Path, seed: int, size: tuple[int, int] = (120, 180), **kwargs: Any
) -> Path:
    """Member `seed` of the scene family (UCSDped layout) at frame size (h, w), in `root`:
    generated unless `root` already holds it (the same parameters, written by this version of
    the generators); a stale one is written again (`avlab.data_utils.ensure_generated`)."""
    scene = family_scene(seed) | {"height": size[0], "width": size[1]}
    params = {"scene": scene, "seed": max(seed, 0), **kwargs}
    ensure_generated(root, f"scene family member {seed}", write_ucsd_scene, params)
    return Path(root)


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


def fit_property_scenes(
    folder: Path,
    seeds: Sequence[int],
    n_train: int,
    n_frames: int,
    settings: dict[str, Any],
    torch_seed: int = 0,
) -> list[FittedScene]:
    """Family members `seeds` at PROPERTY_SIZE (generated into `folder`, again if stale), each
    with `n_train` training videos and the three PROPERTY_EVENTS test videos of `n_frames` frames,
    fitted with a fresh `AiVadNet(**settings)` built after `torch.manual_seed(torch_seed)`."""
    scenes = []
    for seed in seeds:
        root = write_family_member(
            Path(folder) / f"s{seed}",
            seed,
            size=PROPERTY_SIZE,
            n_train=n_train,
            n_test=len(PROPERTY_EVENTS),
            n_frames=n_frames,
            anomalies=PROPERTY_EVENTS,
        )
        torch.manual_seed(torch_seed)
        scenes.append(fit_and_score(root, AiVadNet(**settings)))
    return scenes


def no_event_frames_above_training_maximum(scenes: Sequence[FittedScene]) -> tuple[int, int]:
    """How many frames of the scenes' no-event videos (NO_EVENT) score above their scene's
    training maximum, and how many frames those videos have."""
    above = total = 0
    for scene in scenes:
        if scene.video(NO_EVENT).labels.any():
            raise ValueError(f"{NO_EVENT} is meant to have no event, but has labelled frames")
        n_above, n_frames = scene.frames_above_training_maximum(NO_EVENT)
        above += n_above
        total += n_frames
    return above, total


def net_settings(model_yaml: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """AiVadNet keyword arguments of a `conf/model/aivad*.yaml`, with the offline extractors,
    and `overrides` (e.g. "dwell.window=16": dotted keys below `net`, values read as YAML)."""
    import yaml
    from omegaconf import OmegaConf

    net = yaml.safe_load(Path(model_yaml).read_text())["net"]
    kept = {
        k: v
        for k, v in net.items()
        if not k.startswith("_") and not (isinstance(v, str) and v.startswith("${"))
    }
    offline = {"flow": "farneback", "regions": "motion", "pose": "off", "appearance": "timm"}
    settings = kept | offline | {"pretrained": None}
    if overrides:
        merged = OmegaConf.merge(
            OmegaConf.create(settings), OmegaConf.from_dotlist(list(overrides))
        )
        settings = OmegaConf.to_container(merged)
    return settings
