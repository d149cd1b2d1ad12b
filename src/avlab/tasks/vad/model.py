"""AiVadNet: anomalib's AI-VAD pipeline with each extractor chosen by config.

    clips (N, L, 3, H, W) floats in [0, 1]; the first and last frame of each clip are used
      -> flow (N, 2, H, W) and regions (per frame: M boxes)          extractors.py
      -> per frame {velocity (M, bins), pose (M, 34), deep (M, D)}    anomalib's VideoRegionFeatureExtractor
      -> per stream region scores (M,) -> frame score                density.py (anomalib's estimators)
    + the dwell stream (optional, `dwell`): background-model regions tracked over frames,
      scored by how far each track got                               dwell.py

A frame's score is anomalib's: per stream, the maximum over its regions; summed over streams.
A frame without moving regions scores 0 (anomalib would crash on it). With
`compress_scores=true` each stream's normalised region score s (0-1 on the training features)
becomes log(1 + s) before that: the same ranking within a stream, but a velocity NLL 10-20x
past the training range no longer drowns the appearance stream in the sum.

This composes anomalib's components rather than subclassing `AiVadModel`, whose constructor
always downloads all four pretrained networks and whose forward fails on a frame without regions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from avlab.tasks.vad.density import AiVadDensity
from avlab.tasks.vad.dwell import DwellStream
from avlab.tasks.vad.extractors import (
    RegionFeatures,
    RegionVelocity,
    build_appearance,
    build_flow,
    build_pose,
    build_regions,
    check_weights,
    off_choice,
)

# Submodules whose weights come from a cache file, not from our checkpoints (see module.py).
CACHED_WEIGHTS = {
    "flow": ("raft", "flow_extractor."),
    "regions": ("maskrcnn", "region_extractor."),
    "pose": ("keypointrcnn", "feature_extractor.pose_extractor."),
    "appearance": ("clip", "feature_extractor.deep_extractor."),
}

# Dwell settings left out of the feature description, so fits merge across them: `centred`
# moves where a score is reported, not what it measures; `reg_covar` is the speed GMM's floor,
# and a merge refits with the one it is given.
DWELL_NOT_DESCRIBED = ("centred", "reg_covar")
# Dwell values that mean what a config from before the key meant (off, or the old behaviour):
# left out too, so fits made before the key still merge.
DWELL_AS_BEFORE = {
    "heading": (None, {}, False),
    "size": (None, {}, False),
    "merges": ("continue",),
    "displacement": ("centre",),
}


@dataclass
class AiVadOutput:
    """Scores of a batch of clips, for the target (last) frame of each."""

    frame_scores: torch.Tensor  # (N,)
    stream_scores: dict[str, torch.Tensor]  # stream -> (N,) frame score of that stream alone
    boxes: list[torch.Tensor]  # per frame (M, 4) xyxy
    region_scores: list[torch.Tensor]  # per frame (M,)


class AiVadNet(nn.Module):
    """Extractors (frozen, always in eval mode) + the density estimators they feed."""

    def __init__(
        self,
        flow: str = "farneback",
        regions: str = "motion",
        pose: str | bool | None = "off",
        appearance: str | bool | None = "timm",
        pretrained: str | None = None,
        n_velocity_bins: int = 8,
        n_components_velocity: int = 2,
        n_neighbors_pose: int = 1,
        n_neighbors_deep: int = 1,
        max_bank_size: int | None = None,
        gmm_warm_start_steps: int = 5,
        gmm_reg_covar: float = 1e-4,
        min_bbox_area: int = 100,
        max_bbox_overlap: float = 0.65,
        velocity: dict | None = None,
        farneback: dict | None = None,
        motion: dict | None = None,
        maskrcnn: dict | None = None,
        timm: dict | None = None,
        stabilize: bool = False,
        compress_scores: bool = False,
        dwell: dict | None = None,
    ) -> None:
        super().__init__()
        self.stabilize = stabilize
        self.compress_scores = compress_scores
        self.choices = {
            "flow": flow,
            "regions": regions,
            "pose": off_choice(pose),
            "appearance": off_choice(appearance),
        }
        self.feature_config = _feature_config(
            self.choices,
            n_velocity_bins=n_velocity_bins,
            velocity=velocity,
            min_bbox_area=min_bbox_area,
            max_bbox_overlap=max_bbox_overlap,
            farneback=farneback,
            motion=motion,
            maskrcnn=maskrcnn,
            timm=timm,
        )
        if stabilize:  # older checkpoints' configs lack the key; absent means off
            self.feature_config["stabilize"] = True
        if dwell:  # likewise (DWELL_NOT_DESCRIBED, DWELL_AS_BEFORE)
            self.feature_config["dwell"] = {
                k: v
                for k, v in json.loads(json.dumps(dwell)).items()
                if k not in DWELL_NOT_DESCRIBED and v not in DWELL_AS_BEFORE.get(k, ())
            }
        check_weights(self.choices)
        self.flow_extractor = build_flow(flow, farneback)
        self.region_extractor = build_regions(
            regions, min_bbox_area, max_bbox_overlap, maskrcnn, motion
        )
        self.feature_extractor = RegionFeatures(
            velocity=RegionVelocity(n_velocity_bins, **(velocity or {})),
            pose=build_pose(pose),
            appearance=build_appearance(appearance, timm, pretrained),
        )
        self.density = AiVadDensity(
            use_velocity_features=True,
            use_pose_features=self.feature_extractor.use_pose_features,
            use_deep_features=self.feature_extractor.use_deep_features,
            n_components_velocity=n_components_velocity,
            n_neighbors_pose=n_neighbors_pose,
            n_neighbors_deep=n_neighbors_deep,
            max_bank_size=max_bank_size,
            warm_start_steps=gmm_warm_start_steps,
            reg_covar_velocity=gmm_reg_covar,
        )
        self.dwell = DwellStream(**dwell) if dwell else None
        for extractor in self.extractors():
            extractor.requires_grad_(False)

    def extractors(self) -> list[nn.Module]:
        """The frozen feature-extraction stages."""
        return [self.flow_extractor, self.region_extractor, self.feature_extractor]

    def cached_prefixes(self) -> list[str]:
        """State-dict prefixes of the extractors whose weights come from cache files."""
        return [
            prefix
            for key, (choice, prefix) in CACHED_WEIGHTS.items()
            if self.choices[key] == choice
        ]

    def train(self, mode: bool = True) -> AiVadNet:
        """Switch the density mode only: the extractors stay in eval mode (frozen BatchNorm)."""
        super().train(mode)
        for extractor in self.extractors():
            extractor.eval()
        return self

    @torch.no_grad()
    def observe_training_clips(self, clips: torch.Tensor, videos: list[str] | None = None) -> None:
        """Let extractors estimate camera-dependent settings from training clips (before fitting),
        and keep the clips' last frames for the dwell stream (`videos`: each clip's video)."""
        if self.dwell is not None:
            self.dwell.observe(clips[:, -1], _names(videos, len(clips)))
        if not getattr(self.region_extractor, "needs_calibration", False):
            return  # nothing to estimate: no flow to compute either
        first, last = clips[:, 0], clips[:, -1]
        if self.stabilize:
            _, last = stabilized(self.flow_extractor(first, last), last)
        self.region_extractor.calibrate(first, last)

    @torch.no_grad()
    def extract(self, clips: torch.Tensor) -> tuple[list[dict], list[dict]]:
        """Regions and per-region features of each clip's last frame."""
        first, last = clips[:, 0], clips[:, -1]
        flows = self.flow_extractor(first, last)
        if self.stabilize:
            flows, last = stabilized(flows, last)
        regions = self.region_extractor(first, last)
        features = self.feature_extractor(first, flows, regions)
        return regions, features

    def stream_lags(self) -> dict[str, int]:
        """Streams whose score describes an earlier clip step, by how many steps (see
        `avlab.tasks.vad.metrics.aligned`): the dwell stream's with `dwell.centred`."""
        return {"dwell": self.dwell.lag} if self.dwell is not None and self.dwell.lag else {}

    def reset_tracks(self) -> None:
        """Forget the dwell stream's tracks: the next clip starts a new video."""
        if self.dwell is not None:
            self.dwell.reset()

    def fit(self) -> None:
        """Fit (or merge into) the density estimators, and the dwell stream, from what was collected."""
        self.density.fit()
        if self.dwell is not None:
            self.dwell.fit()

    def forward(
        self, clips: torch.Tensor, videos: list[str] | None = None, held_out: bool = False
    ) -> list[dict] | AiVadOutput:
        """Training: per-frame feature dicts for the density update. Eval: scores.

        `videos`: each clip's video, for the dwell stream's tracks (clips must come in order,
        video by video; None = one video). `held_out`: the clips are training clips, each scored
        with its own video left out of the kNN banks (see `score`).
        """
        regions, features = self.extract(clips)
        if self.training:
            return features
        names = _names(videos, len(clips))
        out = self.score(regions, features, held_out=names if held_out else None)
        if self.dwell is not None and self.dwell.is_fitted:
            # (the dwell stream returns CPU scores: its tracks and background are numpy arrays)
            dwell = self.dwell.score(clips[:, -1], names).to(out.frame_scores.device)
            if self.compress_scores:
                dwell = compressed(dwell)
            out.stream_scores["dwell"] = dwell
            out.frame_scores = out.frame_scores + dwell
        return out

    @torch.no_grad()
    def score(
        self, regions: list[dict], features: list[dict], held_out: list[str] | None = None
    ) -> AiVadOutput:
        """Frame and region scores from each frame's region features (one density call per stream,
        or per video with `held_out`: each frame's training video, left out of the kNN banks)."""
        counts = [len(r["boxes"]) for r in regions]
        if held_out is None:
            streams = self.density.score_streams(_merged(features))
        else:
            streams = _scores_by_video(self.density, features, held_out)
        if self.compress_scores:
            streams = {s: compressed(scores) for s, scores in streams.items()}
        per_stream = {s: scores.split(counts) for s, scores in streams.items()}
        stream_scores = {
            s: torch.stack([_max_or_zero(x) for x in parts]) for s, parts in per_stream.items()
        }
        frame_scores = sum(stream_scores.values()) if stream_scores else torch.zeros(len(regions))
        region_scores = [
            sum(parts[i] for parts in per_stream.values()) for i in range(len(regions))
        ]
        return AiVadOutput(
            frame_scores, stream_scores, [r["boxes"] for r in regions], region_scores
        )


def _names(videos: list[str] | None, n: int) -> list[str]:
    """Each clip's video name; one unnamed video when not given."""
    return list(videos) if videos is not None else [""] * n


def _merged(features: list[dict]) -> dict:
    """Every frame's region features, concatenated per feature type."""
    return {key: torch.cat([f[key] for f in features]) for key in features[0]} if features else {}


def _scores_by_video(density: AiVadDensity, features: list[dict], videos: list[str]) -> dict:
    """Per stream, every frame's region scores in frame order, each video scored held out."""
    if not features:
        return {}
    parts: list[dict[str, torch.Tensor]] = [{} for _ in features]
    for video in dict.fromkeys(videos):
        rows = [i for i, v in enumerate(videos) if v == video]
        counts = [len(next(iter(features[i].values()))) for i in rows]
        scored = density.score_streams(_merged([features[i] for i in rows]), held_out=video)
        for stream, values in scored.items():
            for i, chunk in zip(rows, values.split(counts), strict=True):
                parts[i][stream] = chunk
    return {stream: torch.cat([p[stream] for p in parts]) for stream in parts[0]}


def compressed(scores: torch.Tensor) -> torch.Tensor:
    """log(1 + s) of normalised scores (negatives, below the training minimum, count as 0):
    monotone, near-linear over the training range, logarithmic past it."""
    return torch.log1p(scores.clamp(min=0))


def stabilized(flows: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow without the camera's own displacement, and the later frame moved back by it."""
    shift = camera_shift(flows)
    return flows - shift[:, :, None, None], shifted(last, shift)


def camera_shift(flows: torch.Tensor) -> torch.Tensor:
    """(N, 2) the camera's own displacement (dx, dy) between the two frames: the median flow.

    Moving figures cover a minority of a frame, so the median over all pixels is the
    background's motion, which is the camera's (0 for a still camera; a flat background, where
    flow finds nothing to follow, also gives 0, and there a shake changes no pixel anyway).
    """
    return flows.flatten(2).median(dim=2).values


def shifted(frames: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """`frames` (N, C, H, W) resampled at x + shift (bilinear, edges repeated): a later frame
    moved back onto the earlier one it was displaced from by `shift` (N, 2) pixels."""
    n, _, h, w = frames.shape
    theta = frames.new_zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 2 * shift[:, 0] / w
    theta[:, 1, 2] = 2 * shift[:, 1] / h
    grid = torch.nn.functional.affine_grid(theta, list(frames.shape), align_corners=False)
    return torch.nn.functional.grid_sample(
        frames, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def _feature_config(choices: dict[str, str], **settings) -> dict:
    """What the features mean, as plain JSON types: a merge of two fitted models needs it equal
    on both sides (the weights of a random-init encoder travel in the checkpoint instead)."""
    return json.loads(
        json.dumps({**choices, **{k: {} if v is None else v for k, v in settings.items()}})
    )


def _max_or_zero(scores: torch.Tensor) -> torch.Tensor:
    """A frame's score in one stream: its highest region score, 0 without regions."""
    return scores.max() if scores.numel() else scores.new_zeros(())
