"""AI-VAD's extractors, one config choice each: anomalib's pretrained ones or offline stand-ins.

    flow        raft (anomalib FlowExtractor, RAFT-large)   | farneback (OpenCV dense flow, no weights)
    regions     maskrcnn (anomalib RegionExtractor)         | motion (frame-difference boxes, no weights)
    pose        keypointrcnn (anomalib PoseExtractor)       | off
    appearance  clip (anomalib DeepExtractor, ViT-B/16)     | timm (a timm CNN's early stages) | off

Pretrained choices read their weights from the standard caches only: torchvision's under
`$TORCH_HOME/hub/checkpoints` (default ~/.cache/torch/hub/checkpoints) and CLIP's under
~/.cache/clip. `check_weights` looks for every needed file before anything is built and names
each missing one with the address to fetch it from, so an offline run fails at once, never
with a URLError half-way through.

Every extractor keeps anomalib's call signatures, so anomalib's `VideoRegionFeatureExtractor`
drives them unchanged:
    flow(first (N,3,H,W), last (N,3,H,W)) -> (N,2,H,W) pixel displacements (dx, dy)
    regions(first, last) -> per frame {boxes (M,4) xyxy, labels (M,), scores (M,), masks (M,1,H,W)}
    appearance(frames (N,3,H,W), boxes (M,5) [frame, x1, y1, x2, y2], N) -> (M, D)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import timm
import torch
from anomalib.models.video.ai_vad.clip import clip as anomalib_clip
from anomalib.models.video.ai_vad.features import (
    DeepExtractor,
    PoseExtractor,
    VelocityExtractor,
    VideoRegionFeatureExtractor,
)
from anomalib.models.video.ai_vad.flow import FlowExtractor
from anomalib.models.video.ai_vad.regions import RegionExtractor
from torch import nn
from torch.nn.functional import adaptive_avg_pool2d
from torchvision.models.detection import (
    KeypointRCNN_ResNet50_FPN_Weights,
    MaskRCNN_ResNet50_FPN_V2_Weights,
)
from torchvision.models.optical_flow import Raft_Large_Weights
from torchvision.ops import roi_align

from avlab.backbones import PretrainedWeightsError

FLOWS = ("raft", "farneback")
REGIONS = ("maskrcnn", "motion")
POSES = ("keypointrcnn", "off")
APPEARANCES = ("clip", "timm", "off")
OFFLINE_CHOICES = "model.flow=farneback model.regions=motion model.pose=off model.appearance=timm"
CLIP_NAME = "ViT-B/16"
TORCHVISION_WEIGHTS = {
    ("flow", "raft"): Raft_Large_Weights.DEFAULT,
    ("regions", "maskrcnn"): MaskRCNN_ResNet50_FPN_V2_Weights.DEFAULT,
    ("pose", "keypointrcnn"): KeypointRCNN_ResNet50_FPN_Weights.DEFAULT,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_cache_file(url: str) -> Path:
    """Where torchvision looks for a weights file before downloading it."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def clip_cache_file() -> tuple[Path, str]:
    """Where anomalib's CLIP loader looks for ViT-B/16, and the address it downloads from."""
    url = anomalib_clip._MODELS[CLIP_NAME]
    return Path(os.path.expanduser("~/.cache/clip")) / Path(urlparse(url).path).name, url


def needed_weights(choices: dict[str, str]) -> list[tuple[str, Path, str]]:
    """(config key=choice, cache file, download address) for every pretrained choice made."""
    needed = []
    for (key, choice), weights in TORCHVISION_WEIGHTS.items():
        if choices.get(key) == choice:
            needed.append(
                (f"model.{key}={choice}", torchvision_cache_file(weights.url), weights.url)
            )
    if choices.get("appearance") == "clip":
        path, url = clip_cache_file()
        needed.append(("model.appearance=clip", path, url))
    return needed


def check_weights(choices: dict[str, str]) -> None:
    """Fail at once, naming every missing (or corrupt CLIP) weights file and where it belongs."""
    problems = []
    for what, path, url in needed_weights(choices):
        if not path.is_file():
            problems.append(f"  {what} needs {path}\n      (download {url} and copy it there)")
        elif what.endswith("clip") and not _sha256_matches(path, url):
            problems.append(
                f"  {what}: {path} exists but its SHA-256 does not match {url}; replace it"
            )
    if problems:
        raise PretrainedWeightsError(
            "AI-VAD: pretrained extractor weights are missing, and nothing is downloaded at run time:\n"
            + "\n".join(problems)
            + "\nCopy the files to those paths (set TORCH_HOME to use another torch cache), "
            f"or use the offline extractors: {OFFLINE_CHOICES}"
        )


def _sha256_matches(path: Path, url: str) -> bool:
    """Whether a CLIP file has the checksum its address names (anomalib re-downloads otherwise)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == url.split("/")[-2]


def _to_gray_u8(frames: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) floats in [0, 1] -> (N,H,W) uint8 luminance, as OpenCV wants it."""
    weights = frames.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    gray = (frames * weights).sum(1).clamp(0, 1) * 255
    return gray.round().to(torch.uint8).cpu().numpy()


class FarnebackFlow(nn.Module):
    """Dense optical flow by OpenCV's Farneback method: RAFT's output format, no weights."""

    def __init__(
        self,
        pyr_scale: float = 0.5,
        levels: int = 3,
        winsize: int = 9,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.1,
    ) -> None:
        super().__init__()
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)

    def forward(self, first_frame: torch.Tensor, last_frame: torch.Tensor) -> torch.Tensor:
        """(N,2,H,W) displacement (dx, dy) in pixels from first to last frame."""
        firsts, lasts = _to_gray_u8(first_frame), _to_gray_u8(last_frame)
        flows = [
            cv2.calcOpticalFlowFarneback(a, b, None, *self.params)
            for a, b in zip(firsts, lasts, strict=True)
        ]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(first_frame.device)


class MotionRegions(RegionExtractor):
    """Foreground boxes from the difference of two frames: anomalib's region format, no detector.

    Moving pixels are the blurred absolute difference above `binary_threshold` (0-255). A
    morphological closing (`closing` px) fills the unchanged inside of a uniformly coloured
    figure and a dilation (`dilation` px) joins its remaining fragments before the connected
    components become boxes.
    anomalib's own post-processing then drops small boxes and boxes mostly inside another.

    `binary_threshold: auto` and `min_bbox_area: auto` are estimated from the first training
    clips (`calibrate`), because both depend on the camera: the threshold is `noise_factor`
    times the frame-difference noise (a robust MAD estimate, so moving figures do not count),
    the smallest box a `min_area_fraction` of the median moving component's area. The
    estimates are buffers, so a checkpoint keeps them.
    """

    def __init__(
        self,
        min_bbox_area: int | str = 100,
        max_bbox_overlap: float = 0.65,
        kernel_size: int = 3,
        binary_threshold: float | str = 18,
        closing: int = 0,
        dilation: int = 2,
        noise_factor: float = 5.0,
        min_threshold: float = 3.0,
        min_area_fraction: float = 0.2,
    ) -> None:
        nn.Module.__init__(
            self
        )  # RegionExtractor.__init__ would build Mask R-CNN; nothing here needs it
        self.persons_only = False
        self.auto_threshold = binary_threshold == "auto"
        self.auto_area = min_bbox_area == "auto"
        self.min_bbox_area = 0 if self.auto_area else float(min_bbox_area)
        self.max_bbox_overlap = max_bbox_overlap
        self.kernel_size = kernel_size
        self.binary_threshold = min_threshold if self.auto_threshold else float(binary_threshold)
        self.closing = closing
        self.dilation = dilation
        self.noise_factor = noise_factor
        self.min_threshold = min_threshold
        self.min_area_fraction = min_area_fraction
        # (threshold, min box area, calibrated 0/1): estimated once, kept in checkpoints.
        self.register_buffer(
            "calibration",
            torch.tensor([self.binary_threshold, self.min_bbox_area, 0.0]),
            # Only estimated settings must travel in checkpoints; fixed ones are config, and
            # checkpoints written before this buffer existed still load.
            persistent=self.auto_threshold or self.auto_area,
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Take the calibrated threshold and area over from a checkpoint."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._apply_calibration()

    def _apply_calibration(self) -> None:
        """Use the estimated settings (when calibrated) for the auto ones."""
        threshold, area, done = self.calibration.tolist()
        if done:
            if self.auto_threshold:
                self.binary_threshold = threshold
            if self.auto_area:
                self.min_bbox_area = area

    @property
    def needs_calibration(self) -> bool:
        """Whether an auto setting is still to be estimated from training frame pairs."""
        return bool(self.auto_threshold or self.auto_area) and not bool(self.calibration[2])

    @torch.no_grad()
    def calibrate(self, first_frame: torch.Tensor, last_frame: torch.Tensor) -> None:
        """Estimate the auto settings from training frame pairs (once; later calls do nothing)."""
        if not self.needs_calibration:
            return
        k = (self.kernel_size, self.kernel_size)
        diffs = [
            cv2.absdiff(cv2.GaussianBlur(a, k, 0), cv2.GaussianBlur(b, k, 0))
            for a, b in zip(_to_gray_u8(first_frame), _to_gray_u8(last_frame), strict=True)
        ]
        if self.auto_threshold:
            values = np.concatenate([d.ravel() for d in diffs]).astype(np.float32)
            # The MAD of a difference of two noisy frames; figures are a minority of pixels.
            noise = float(np.median(np.abs(values - np.median(values)))) / 0.6745
            self.binary_threshold = max(self.min_threshold, self.noise_factor * noise)
        if self.auto_area:
            areas = [
                box[4]
                for d in diffs
                for box in cv2.connectedComponentsWithStats(self._moving(d))[2][1:]
            ]
            median = float(np.median(areas)) if areas else 0.0
            self.min_bbox_area = max(4.0, self.min_area_fraction * median)
        self.calibration = self.calibration.new_tensor(
            [self.binary_threshold, self.min_bbox_area, 1.0]
        )

    def _moving(self, diff: np.ndarray) -> np.ndarray:
        """Moving-pixel mask of a blurred frame difference: threshold, closing, dilation."""
        moving = (diff > self.binary_threshold).astype(np.uint8)
        if self.closing:
            moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, _disk(self.closing))
        if self.dilation:
            moving = cv2.dilate(moving, _disk(self.dilation))
        return moving

    def forward(
        self, first_frame: torch.Tensor, last_frame: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        """Per frame: boxes, labels (0), scores (0.5) and masks of the moving regions."""
        regions = [
            self._frame_regions(a, b)
            for a, b in zip(_to_gray_u8(first_frame), _to_gray_u8(last_frame), strict=True)
        ]
        regions = [{k: v.to(first_frame.device) for k, v in r.items()} for r in regions]
        return self.post_process_bbox_detections(regions)

    def _frame_regions(self, first: np.ndarray, last: np.ndarray) -> dict[str, torch.Tensor]:
        """Connected moving components of one frame pair."""
        k = (self.kernel_size, self.kernel_size)
        diff = cv2.absdiff(cv2.GaussianBlur(first, k, 0), cv2.GaussianBlur(last, k, 0))
        moving = self._moving(diff)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
        stats = stats[1:]
        boxes = (
            np.stack(
                [
                    stats[:, 0],
                    stats[:, 1],
                    stats[:, 0] + stats[:, 2] - 1,
                    stats[:, 1] + stats[:, 3] - 1,
                ],
                1,
            )
            if n > 1
            else np.zeros((0, 4))
        )
        masks = labels[None] == np.arange(1, n)[:, None, None]
        return {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32),
            "labels": torch.zeros(n - 1),
            "scores": torch.full((n - 1,), 0.5),
            "masks": torch.from_numpy(masks).unsqueeze(1).to(torch.int32),
        }


def _disk(radius: int) -> np.ndarray:
    """A disk-shaped structuring element of the given radius."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


class TimmAppearance(nn.Module):
    """Appearance of each region: a timm CNN's early stages on the crop, average-pooled.

    Random weights by default (offline): early random convolutions still separate colour,
    texture and shape well enough for nearest-neighbour scoring; a weights file makes it a
    pretrained encoder. Drop-in for anomalib's CLIP `DeepExtractor`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        stage: int = 2,
        crop_size: int = 64,
        pool_grid: int = 1,
        square_crops: bool = False,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        kwargs = {"features_only": True, "out_indices": (stage,)}
        if pretrained:
            path = Path(str(pretrained)).expanduser()
            if not path.is_file():
                raise PretrainedWeightsError(
                    f"model.pretrained={pretrained!r}: no such file for the timm {backbone!r} "
                    "appearance encoder; pass a local weights file or model.pretrained=null"
                )
            kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
        self.encoder = timm.create_model(backbone, **kwargs)
        self.crop_size = crop_size
        self.pool_grid = pool_grid
        self.square_crops = square_crops
        self.output_dim = self.encoder.feature_info.channels()[-1] * pool_grid**2
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, batch: torch.Tensor, boxes: torch.Tensor, batch_size: int) -> torch.Tensor:
        """(M, D) features of the M boxes (rows `[frame, x1, y1, x2, y2]`)."""
        del batch_size
        if boxes.shape[0] == 0:
            return batch.new_zeros(0, self.output_dim)
        boxes = _squared(boxes) if self.square_crops else boxes
        crops = roi_align(
            batch, boxes.to(batch.dtype), output_size=[self.crop_size] * 2, aligned=True
        )
        with torch.no_grad():
            features = self.encoder((crops - self.mean) / self.std)[-1]
        return adaptive_avg_pool2d(features, self.pool_grid).flatten(1)


def _squared(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes grown to squares about their centres, so a crop keeps the region's aspect ratio."""
    centre = (boxes[:, 1:3] + boxes[:, 3:5]) / 2
    half = (boxes[:, 3:5] - boxes[:, 1:3]).amax(dim=1, keepdim=True) / 2
    return torch.cat([boxes[:, :1], centre - half, centre + half], dim=1)


class RegionVelocity(VelocityExtractor):
    """anomalib's velocity feature, vectorised over regions and sampled on a coarser grid, with
    the region's speed and size made explicit.

    Flow vectors sampled on a `grid` x `grid` lattice over each box fall into `n_bins`
    direction bins (anomalib's angle convention). Each bin holds the summed magnitude of its
    vectors divided by
      normalize="bin"     the number of vectors in that bin (anomalib: a per-bin mean speed;
                          a bin holding a handful of noisy vectors weighs as much as a full one)
      normalize="region"  the number of vectors in the whole box (a magnitude-weighted
                          direction histogram; steadier on small or fragmented regions)
    Only vectors at least `min_magnitude` px long count (0 = all, as anomalib), so the static
    background inside a box does not dilute the speeds.

    Why speed and size are added: a histogram averages the box's flow, and on a flat-coloured
    figure dense flow is found only at its edges (the inside has no texture to follow), so a
    fast figure's few edge vectors are averaged with the rest of the box and its speed drowns.
    `speed=true` appends log(1 + the `speed_percentile` of the box's flow magnitudes), which the
    edge vectors set; `size=true` appends the log of the box's height and width (square crops
    of the appearance stream are resized to one size, so it cannot see an oversized figure).
    """

    def __init__(
        self,
        n_bins: int = 8,
        grid: int = 32,
        min_magnitude: float = 0.0,
        normalize: str = "bin",
        speed: bool = False,
        speed_percentile: float = 0.9,
        size: bool = False,
    ) -> None:
        super().__init__(n_bins=n_bins)
        if normalize not in ("bin", "region"):
            raise ValueError(f"model.velocity.normalize={normalize!r}: choose bin or region")
        self.grid = grid
        self.min_magnitude = min_magnitude
        self.normalize = normalize
        self.speed = speed
        self.speed_percentile = speed_percentile
        self.size = size

    @property
    def output_dim(self) -> int:
        """Feature width: the direction bins, then speed and size if on."""
        return self.n_bins + int(self.speed) + 2 * int(self.size)

    def forward(self, flows: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(M, output_dim) velocity features of the M boxes (rows `[frame, x1, y1, x2, y2]`)."""
        if boxes.shape[0] == 0:
            return flows.new_zeros(0, self.output_dim)
        sampled = roi_align(flows, boxes.to(flows.dtype), output_size=[self.grid] * 2)
        magnitude = torch.linalg.vector_norm(sampled, dim=1).flatten(1)
        theta = torch.atan2(sampled[:, 0], sampled[:, 1]).flatten(1)
        bins = ((theta + torch.pi) / (2 * torch.pi) * self.n_bins).long().clamp(0, self.n_bins - 1)
        counted = (magnitude >= self.min_magnitude).to(magnitude.dtype)
        sums = magnitude.new_zeros(len(boxes), self.n_bins).scatter_add_(
            1, bins, magnitude * counted
        )
        counts = magnitude.new_zeros(len(boxes), self.n_bins).scatter_add_(1, bins, counted)
        if self.normalize == "region":
            counts = counts.sum(dim=1, keepdim=True).expand_as(sums)
        parts = [torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))]
        if self.speed:
            parts.append(
                torch.log1p(torch.quantile(magnitude, self.speed_percentile, dim=1))[:, None]
            )
        if self.size:
            extent = (boxes[:, 3:5] - boxes[:, 1:3] + 1).clamp(min=1).to(flows.dtype)
            parts.append(torch.log(extent.flip(1)))
        return torch.cat(parts, dim=1)


class RegionFeatures(VideoRegionFeatureExtractor):
    """anomalib's per-region feature extractor with the pose and appearance encoders chosen by config."""

    def __init__(
        self, velocity: nn.Module, pose: nn.Module | None, appearance: nn.Module | None
    ) -> None:
        nn.Module.__init__(self)  # the parent would build Keypoint R-CNN and CLIP unconditionally
        self.use_velocity_features = True
        self.use_pose_features = pose is not None
        self.use_deep_features = appearance is not None
        self.velocity_extractor = velocity
        self.pose_extractor = pose
        self.deep_extractor = appearance


def build_flow(choice: str, farneback: dict | None = None) -> nn.Module:
    """The optical-flow extractor named by `model.flow`."""
    if choice == "raft":
        return FlowExtractor()
    if choice == "farneback":
        return FarnebackFlow(**(farneback or {}))
    raise ValueError(f"model.flow={choice!r}: choose one of {FLOWS}")


def build_regions(
    choice: str,
    min_bbox_area: int = 100,
    max_bbox_overlap: float = 0.65,
    maskrcnn: dict | None = None,
    motion: dict | None = None,
) -> nn.Module:
    """The region extractor named by `model.regions` (both drop small and overlapping boxes)."""
    if choice == "maskrcnn":
        return RegionExtractor(
            min_bbox_area=min_bbox_area, max_bbox_overlap=max_bbox_overlap, **(maskrcnn or {})
        )
    if choice == "motion":
        return MotionRegions(
            min_bbox_area=min_bbox_area, max_bbox_overlap=max_bbox_overlap, **(motion or {})
        )
    raise ValueError(f"model.regions={choice!r}: choose one of {REGIONS}")


def build_pose(choice: str | bool | None) -> nn.Module | None:
    """The pose extractor named by `model.pose`, or None when off."""
    choice = off_choice(choice)
    if choice == "keypointrcnn":
        return PoseExtractor()
    if choice == "off":
        return None
    raise ValueError(f"model.pose={choice!r}: choose one of {POSES}")


def build_appearance(
    choice: str | bool | None, timm_args: dict | None = None, pretrained: str | None = None
) -> nn.Module | None:
    """The appearance extractor named by `model.appearance`, or None when off."""
    choice = off_choice(choice)
    if choice == "clip":
        return DeepExtractor()
    if choice == "timm":
        return TimmAppearance(**(timm_args or {}), pretrained=pretrained)
    if choice == "off":
        return None
    raise ValueError(f"model.appearance={choice!r}: choose one of {APPEARANCES}")


def off_choice(choice: str | bool | None) -> str:
    """YAML reads a bare `off` as False; treat False/None/"off" alike."""
    return "off" if choice in (None, False, "off", "none") else str(choice)
