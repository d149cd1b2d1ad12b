"""Video anomaly data in the UCSD Pedestrian frame-folder layout, read through anomalib's dataset.

    <root>/<category>/Train/<video>/*.tif         normal videos (frames sorted by name)
    <root>/<category>/Test/<video>/*.tif          test videos
    <root>/<category>/Test/<video>_gt/*.bmp       one mask per test frame (non-zero = anomalous)
    <root>/<category>/Test/<category>.m           frame-level labels of every test video

This is what UCSDped1/UCSDped2 ship (v1p2: `Test/UCSDped1.m` / `UCSDped2.m` hold the frame
labels of all test videos as MATLAB text, `TestVideoFile{end+1}.gt_frame = [60:152];`, one line
per video in order; pixel masks ship for only some test videos). A test video with a `_gt`
folder is labelled by its masks; one without is labelled by the `.m` file (an anomalous frame
then gets a whole-frame mask: frame-level ground truth only). Frame numbers are 1-based.

This layout is and the layout anomalib's UCSDped/Avenue/ShanghaiTech
datamodules read. Items are anomalib `VideoItem`s of `clip_length_in_frames` consecutive frames
(stride `frames_between_clips`), labelled by the last frame; batches are `VideoBatch`es.

anomalib's clip indexer derives from torchvision's `VideoClips`, which needs PyAV even for frame
folders (anomalib raises ImportError without it); `FrameFolderClipsIndexer` indexes the folders
itself, and checks them first so bad input fails with the file named.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from anomalib.data import VideoBatch
from anomalib.data.datasets.base.video import AnomalibVideoDataset, VideoTargetFrame
from anomalib.data.datasets.video.ucsd_ped import UCSDpedClipsIndexer, UCSDpedDataset
from anomalib.data.utils import Split
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, random_split
from torchvision.transforms.v2.functional import to_dtype, to_image
from torchvision.tv_tensors import Mask

from avlab.data_utils import DatasetError, ensure_generated
from avlab.tasks.vad.synth import write_ucsd_scene

log = logging.getLogger(__name__)

FRAME_SUFFIX = ".tif"
MASK_SUFFIX = ".bmp"
SPLIT_FOLDERS = {Split.TRAIN: "Train", Split.TEST: "Test"}
FULL_FRAME = (
    "full_frame:"  # mask_path prefix: labels from the .m file, "full_frame:<1-based frames>"
)
_M_LINE = re.compile(r"TestVideoFile\{end\+1\}\.gt_frame\s*=\s*\[([^\]]*)\]\s*;?")
_M_RANGE = re.compile(r"^(\d+)(?::(\d+))?$")


def read_ucsd_m(path: Path) -> list[list[int]]:
    """Per test video (in file order), its anomalous 1-based frame numbers from a UCSD `.m` file.

    Reads `TestVideoFile{end+1}.gt_frame = [a:b, c:d];` lines; `%` comments and other MATLAB
    lines (`TestVideoFile = {};`) are ignored. A malformed range names the file and line.
    """
    videos = []
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        code = line.split("%", 1)[0].strip()
        if "gt_frame" not in code:
            continue
        match = _M_LINE.search(code)
        if not match:
            raise DatasetError(
                f"{path}:{number}: cannot read {code!r} as TestVideoFile{{end+1}}.gt_frame = [a:b];"
            )
        frames: list[int] = []
        for token in (t for t in re.split(r"[,\s]+", match.group(1).strip()) if t):
            bounds = _M_RANGE.match(token)
            if not bounds:
                raise DatasetError(f"{path}:{number}: {token!r} is not a frame range a:b")
            first, last = int(bounds.group(1)), int(bounds.group(2) or bounds.group(1))
            if first < 1 or last < first:
                raise DatasetError(f"{path}:{number}: empty or non-positive frame range {token!r}")
            frames.extend(range(first, last + 1))
        videos.append(frames)
    if not videos:
        raise DatasetError(f"{path}: no TestVideoFile{{end+1}}.gt_frame lines")
    return videos


def find_ucsd_m(test_folder: Path) -> Path | None:
    """The `.m` frame-label file of a Test folder (UCSDped1.m, UCSDped2.m, ...), if any."""
    found = sorted(p for p in test_folder.glob("*.m") if p.is_file())
    if len(found) > 1:
        raise DatasetError(f"{test_folder}: several .m label files {[p.name for p in found]}")
    return found[0] if found else None


def list_frames(folder: Path, suffix: str) -> list[Path]:
    """A video folder's frame (or mask) files, sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() == suffix and not p.name.startswith(".")
    )


def scan_ucsd_split(category_root: Path, split: Split) -> pd.DataFrame:
    """One row per video of a split (image_path, mask_path, split, n_frames), checked for bad layout.

    Errors name the folder: a missing Train/Test folder, a split without videos, a test video
    without its `_gt` folder, or a mask count that differs from the frame count.
    """
    folder = Path(category_root) / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: missing {SPLIT_FOLDERS[split]} folder of the UCSDped layout "
            f"(expected {category_root}/Train/<video>/*.tif and Test/<video>/*.tif)"
        )
    rows = []
    videos = []
    for video in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.endswith("_gt")):
        frames = list_frames(video, FRAME_SUFFIX)
        if not frames:
            log.warning("%s: no %s frames, skipped (not a video folder)", video, FRAME_SUFFIX)
            continue
        videos.append((video, len(frames)))
    if not videos:
        raise DatasetError(f"{folder}: no video folders with {FRAME_SUFFIX} frames")
    m_labels = _m_labels(folder, len(videos)) if split == Split.TEST else None
    for index, (video, n_frames) in enumerate(videos):
        rows.append(
            {
                "root": str(category_root),
                "folder": folder.name,
                "image_path": str(video),
                "mask_path": _mask_folder(video, n_frames, split, m_labels, index),
                "split": split.value,
                "n_frames": n_frames,
            }
        )
    return pd.DataFrame(rows)


def _m_labels(folder: Path, n_videos: int) -> tuple[Path, list[list[int]]] | None:
    """The Test folder's `.m` frame labels (file, per video), checked against the video count."""
    path = find_ucsd_m(folder)
    if path is None:
        return None
    labels = read_ucsd_m(path)
    if len(labels) != n_videos:
        raise DatasetError(
            f"{path}: {len(labels)} gt_frame lines for {n_videos} test videos in {folder}"
        )
    return path, labels


def _mask_folder(
    video: Path,
    n_frames: int,
    split: Split,
    m_labels: tuple[Path, list[list[int]]] | None = None,
    index: int = 0,
) -> str:
    """The checked `_gt` mask folder of a test video, else its `.m` frame labels ("" for training)."""
    if split == Split.TRAIN:
        return ""
    masks = video.with_name(video.name + "_gt")
    if not masks.is_dir():
        if m_labels is None:
            raise DatasetError(
                f"{masks}: missing ground-truth folder for test video {video}, and no "
                f"{video.parent}/<category>.m frame-label file"
            )
        path, labels = m_labels
        beyond = [f for f in labels[index] if f > n_frames]
        if beyond:
            raise DatasetError(
                f"{path}: gt_frame line {index + 1} ({video.name}) names frame {beyond[0]}, "
                f"the video has {n_frames}"
            )
        return FULL_FRAME + ",".join(map(str, labels[index]))
    n_masks = len(list_frames(masks, MASK_SUFFIX))
    if n_masks != n_frames:
        raise DatasetError(
            f"{masks}: {n_masks} {MASK_SUFFIX} masks for {n_frames} frames in {video}"
        )
    return str(masks)


def read_frame(path: Path) -> torch.Tensor:
    """A frame as (3, H, W) float in [0, 1]; grey frames are repeated to RGB."""
    try:
        with Image.open(path) as image:
            return to_dtype(to_image(image.convert("RGB")), torch.float32, scale=True)
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: frame file is missing") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: cannot decode frame ({err})") from err


def read_mask_frame(path: Path) -> torch.Tensor:
    """A ground-truth mask as (H, W) uint8 0/1."""
    try:
        with Image.open(path) as image:
            return Mask(to_image(image.convert("L")).squeeze(0) > 0, dtype=torch.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: cannot decode mask ({err})") from err


class FrameFolderClipsIndexer(UCSDpedClipsIndexer):
    """anomalib's UCSDped clip indexer without torchvision's VideoClips (no PyAV needed).

    Provides what anomalib's `ClipsIndexer.get_item` uses: `clips`, `num_clips`,
    `get_clip_location`, `get_clip` and `get_mask`, over sorted frame files.
    """

    def __init__(
        self,
        video_paths: Sequence[str],
        mask_paths: Sequence[str],
        clip_length_in_frames: int = 2,
        frames_between_clips: int = 1,
    ) -> None:
        # VideoClips.__init__ is skipped on purpose: it would decode every path as a video file.
        self.video_paths = list(video_paths)
        self.mask_paths = list(mask_paths)
        self.frame_files = [list_frames(Path(v), FRAME_SUFFIX) for v in self.video_paths]
        self.mask_files = [
            list_frames(Path(m), MASK_SUFFIX) if m and not m.startswith(FULL_FRAME) else []
            for m in self.mask_paths
        ]
        self.frame_labels = [
            {int(f) for f in m[len(FULL_FRAME) :].split(",") if f}
            if m.startswith(FULL_FRAME)
            else None
            for m in self.mask_paths
        ]
        self.video_fps = [None] * len(self.video_paths)
        self.video_pts = [torch.arange(len(f)) for f in self.frame_files]
        self.clips = [
            _unfold(pts, clip_length_in_frames, frames_between_clips) for pts in self.video_pts
        ]
        self.cumulative_sizes = torch.tensor([len(c) for c in self.clips]).cumsum(0).tolist()

    def num_clips(self) -> int:
        """Number of clips over all videos."""
        return self.cumulative_sizes[-1] if self.cumulative_sizes else 0

    def get_clip_location(self, idx: int) -> tuple[int, int]:
        """(video index, clip index within that video) of global clip `idx`."""
        video_idx = next(i for i, end in enumerate(self.cumulative_sizes) if idx < end)
        start = self.cumulative_sizes[video_idx - 1] if video_idx else 0
        return video_idx, idx - start

    def get_clip(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], int]:
        """(frames (L, 3, H, W), empty audio, {}, video index) of clip `idx`."""
        if idx >= self.num_clips():
            raise IndexError(f"clip {idx} out of range ({self.num_clips()} clips)")
        video_idx, clip_idx = self.get_clip_location(idx)
        files = self.frame_files[video_idx]
        frames = [read_frame(files[int(t)]) for t in self.clips[video_idx][clip_idx]]
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) > 1:
            raise DatasetError(
                f"{self.video_paths[video_idx]}: frames of different sizes {sorted(shapes)}"
            )
        return torch.stack(frames), torch.empty((1, 0)), {}, video_idx

    def get_mask(self, idx: int) -> torch.Tensor | None:
        """(L, H, W) ground-truth masks of clip `idx`, None for training videos."""
        video_idx, clip_idx = self.get_clip_location(idx)
        frame_ids = self.clips[video_idx][clip_idx]
        labels = self.frame_labels[video_idx]
        if labels is not None:
            with Image.open(self.frame_files[video_idx][0]) as first:
                width, height = first.size
            flags = torch.tensor([int(t) + 1 in labels for t in frame_ids], dtype=torch.uint8)
            return Mask(flags.view(-1, 1, 1).expand(-1, height, width).contiguous())
        if not self.mask_files[video_idx]:
            return None
        files = self.mask_files[video_idx]
        return torch.stack(
            [read_mask_frame(files[int(t)]) for t in self.clips[video_idx][clip_idx]]
        )


def _unfold(pts: torch.Tensor, length: int, step: int) -> torch.Tensor:
    """(n_clips, length) frame indices of the clips of one video."""
    if len(pts) < length:
        return torch.empty((0, length), dtype=torch.long)
    return pts.unfold(0, length, step)


class UCSDpedFrames(UCSDpedDataset):
    """anomalib's UCSDped dataset over our checked scan and PyAV-free indexer."""

    def __init__(
        self,
        root: str | Path,
        category: str,
        split: Split | str,
        clip_length_in_frames: int = 2,
        frames_between_clips: int = 1,
        target_frame: VideoTargetFrame = VideoTargetFrame.LAST,
        videos: Sequence[str] | None = None,
    ) -> None:
        """`videos` (folder paths) keeps only those videos of the split (the val/test halves)."""
        AnomalibVideoDataset.__init__(  # the parent's __init__ would scan with anomalib's unchecked reader
            self,
            clip_length_in_frames=clip_length_in_frames,
            frames_between_clips=frames_between_clips,
            target_frame=target_frame,
        )
        self.root_category = Path(root) / category
        self.split = Split(split)
        self.indexer_cls = FrameFolderClipsIndexer
        samples = scan_ucsd_split(self.root_category, self.split)
        if videos is not None:
            samples = samples[samples.image_path.isin(list(videos))].reset_index(drop=True)
        self.samples = samples

    def __getitem__(self, index: int):
        """anomalib's clip item, with a mask-size mismatch named instead of a broadcast error."""
        item = super().__getitem__(index)
        if item.gt_mask is not None and item.gt_mask.shape[-2:] != item.image.shape[-2:]:
            video_idx, _ = self.indexer.get_clip_location(index)
            raise DatasetError(
                f"{self.indexer.mask_paths[video_idx]}: masks of size "
                f"{tuple(item.gt_mask.shape[-2:])}, frames of {tuple(item.image.shape[-2:])}"
            )
        return item


class VadDataModule(L.LightningDataModule):
    """Train, validation and test clips of one UCSDped-layout category; the default is generated.

    `synth` holds `write_ucsd_scene` parameters for the generated default (null = real data
    only; a folder avlab did not generate is only ever read). UCSD, Avenue and ShanghaiTech ship
    no validation set, so `val_fraction` of the test videos (whole videos, chosen by a
    `split_seed`ed permutation, at least one) become the validation split that model selection
    and sweeps use (`val/frame_auroc`); the rest stay the test split. `val_fraction: 0` = no
    validation.
    """

    def __init__(
        self,
        root: str,
        category: str,
        synth: dict[str, Any] | None = None,
        clip_length_in_frames: int = 2,
        frames_between_clips: int = 1,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        val_fraction: float = 0.25,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction}: must be in [0, 1)")
        self.root = Path(root)
        self.category = category
        self.synth = synth
        self.clip_length_in_frames = clip_length_in_frames
        self.frames_between_clips = frames_between_clips
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.datasets: dict[str, UCSDpedFrames] = {}

    @property
    def category_root(self) -> Path:
        """The folder holding Train/ and Test/."""
        return self.root / self.category

    def prepare_data(self) -> None:
        """Generate the default scene if missing (or generated with other parameters)."""
        ensure_generated(
            self.category_root, f"video scene {self.category!r}", write_ucsd_scene, self.synth
        )

    def split_test_videos(self) -> tuple[list[str], list[str]]:
        """(validation videos, test videos): a seeded split of Test/ by whole video."""
        videos = list(scan_ucsd_split(self.category_root, Split.TEST).image_path)
        if self.val_fraction == 0:
            return [], videos
        if len(videos) < 2:
            raise DatasetError(
                f"{self.category_root / 'Test'}: {len(videos)} test video, need 2 to hold one out "
                "for validation (or set data.val_fraction=0)"
            )
        n_val = min(len(videos) - 1, max(1, round(self.val_fraction * len(videos))))
        val_part, test_part = random_split(
            videos,
            [n_val, len(videos) - n_val],
            generator=torch.Generator().manual_seed(self.split_seed),
        )
        return sorted(val_part), sorted(test_part)

    def setup(self, stage: str | None = None) -> None:
        """Index the train videos and the validation and test halves of Test/."""
        if self.datasets:
            return
        val_videos, test_videos = self.split_test_videos()
        parts = {"train": (Split.TRAIN, None), "test": (Split.TEST, test_videos)}
        if val_videos:
            parts["val"] = (Split.TEST, val_videos)
        for name, (split, videos) in parts.items():
            self.datasets[name] = UCSDpedFrames(
                self.root,
                self.category,
                split,
                self.clip_length_in_frames,
                self.frames_between_clips,
                videos=videos,
            )
        if val_videos:
            log.info(
                "validation videos (held out of Test/): %s",
                ", ".join(Path(v).name for v in val_videos),
            )

    def train_dataloader(self) -> DataLoader:
        """Training clips in order (the density fit does not care, and per-video grouping reads well)."""
        return self._loader("train", self.train_batch_size)

    def val_dataloader(self) -> DataLoader | list:
        """Validation clips in video and frame order (none when val_fraction is 0)."""
        return self._loader("val", self.eval_batch_size) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        """Test clips in video and frame order."""
        return self._loader("test", self.eval_batch_size)

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        """A DataLoader collating anomalib VideoBatches."""
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=VideoBatch.collate,
            persistent_workers=self.num_workers > 0,
        )
