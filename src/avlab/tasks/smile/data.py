"""Smile + emotion data: readers for GENKI-4K, FER2013 and our both-labels clips, one DataModule.

Every sample becomes a dict of tensors:
    frames        (T, 3, H, W) float, normalised; a still image is repeated T times with jitter
    smile         ()  float in [0, 1]   smile_mask   ()  bool: whether `smile` is a label
    emotion       ()  long in 0..6      emotion_mask ()  bool: whether `emotion` is a label
    source        ()  long, index of the sample's source in the DataModule's `sources`
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, WeightedRandomSampler

from avlab.checkpoint_io import atomic_write
from avlab.data_order import order_for_trainer
from avlab.data_utils import (
    DatasetError,
    ensure_generated,
    make_loader,
    read_image_gray,
    seeded_split,
)
from avlab.tasks.smile.model import NUM_EMOTIONS

log = logging.getLogger(__name__)

FER_SIDE = 48
FER_USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLITS = ("train", "val", "test")


def read_genki_labels(root: Path) -> np.ndarray:
    """Read GENKI-4K's labels.txt: one `smile yaw pitch roll` line per image, no header."""
    path = Path(root) / "labels.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: GENKI-4K labels.txt not found")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError as err:
            raise DatasetError(f"{path}, line {line_no}: not numbers: {line!r}") from err
        if len(values) != 4:
            raise DatasetError(
                f"{path}, line {line_no}: expected 4 values `smile yaw pitch roll`, got {len(values)}"
            )
        if values[0] not in (0.0, 1.0):
            raise DatasetError(
                f"{path}, line {line_no}: smile label must be 0 or 1, got {values[0]}"
            )
        rows.append(values)
    if not rows:
        raise DatasetError(f"{path}: no labels")
    return np.asarray(rows, dtype=np.float32)


def genki_image_path(root: Path, index: int) -> Path:
    """Path of the image on line `index` (0-based) of labels.txt: files/file0001.jpg is line 1."""
    return Path(root) / "files" / f"file{index + 1:04d}.jpg"


def read_fer2013_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a FER2013 CSV (either published header) into images, emotions and split names.

    Returns uint8 images (N, 48, 48), int64 emotions (N,) and splits (N,) in train/val/test.
    Both `emotion,pixels,Usage` and the ICML variant `emotion, Usage, pixels` are accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: FER2013 CSV not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not a readable FER2013 CSV ({err})") from err
    frame.columns = [c.strip() for c in frame.columns]
    missing = {"emotion", "pixels", "Usage"} - set(frame.columns)
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {sorted(missing)}; header is {list(frame.columns)}"
        )
    images = np.empty((len(frame), FER_SIDE, FER_SIDE), dtype=np.uint8)
    emotions = np.empty(len(frame), dtype=np.int64)
    splits = np.empty(len(frame), dtype=object)
    for i, (emotion, pixels, usage) in enumerate(
        zip(frame["emotion"], frame["pixels"], frame["Usage"], strict=True)
    ):
        where = f"{path}, row {i + 2}"  # line number in the file: header is line 1
        emotions[i] = _parse_emotion(emotion, where)
        images[i] = _parse_pixels(pixels, where)
        split = FER_USAGE_TO_SPLIT.get(usage.strip())
        if split is None:
            raise DatasetError(
                f"{where}: Usage must be one of {list(FER_USAGE_TO_SPLIT)}, got {usage!r}"
            )
        splits[i] = split
    return images, emotions, splits


def _parse_emotion(text: str, where: str) -> int:
    """An emotion index 0..6, or a DatasetError naming the row."""
    try:
        value = int(text.strip())
    except ValueError as err:
        raise DatasetError(f"{where}: emotion is not an integer: {text!r}") from err
    if not 0 <= value < NUM_EMOTIONS:
        raise DatasetError(f"{where}: emotion must be in 0..{NUM_EMOTIONS - 1}, got {value}")
    return value


def _parse_pixels(text: str, where: str) -> np.ndarray:
    """2304 space-separated uint8 values as a 48x48 image, or a DatasetError naming the row."""
    fields = text.split()
    if len(fields) != FER_SIDE * FER_SIDE:
        raise DatasetError(f"{where}: expected {FER_SIDE * FER_SIDE} pixels, got {len(fields)}")
    try:
        values = np.array(fields, dtype=np.int64)
    except ValueError as err:
        raise DatasetError(f"{where}: pixels are not integers ({err})") from err
    if values.min() < 0 or values.max() > 255:
        raise DatasetError(f"{where}: pixel values must be in 0..255")
    return values.astype(np.uint8).reshape(FER_SIDE, FER_SIDE)


def read_clip_labels(root: Path) -> pd.DataFrame:
    """Read the both-labels clip index `labels.csv` (clip,split,smile,emotion)."""
    path = Path(root) / "labels.csv"
    if not path.is_file():
        raise DatasetError(f"{path}: clip labels.csv not found")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    required = ("clip", "split", "smile", "emotion")
    if not rows or any(key not in rows[0] for key in required):
        raise DatasetError(f"{path}: header must contain {','.join(required)}")
    for i, row in enumerate(rows):
        where = f"{path}, row {i + 2}"
        if None in row or any(value is None for value in row.values()):
            raise DatasetError(
                f"{where}: expected the {len(rows[0])} fields of the header, got "
                f"{len([v for k, v in row.items() if k is not None and v is not None])}"
                + (f" and {len(row[None])} more" if None in row else "")
            )
        if row["split"] not in SPLITS:
            raise DatasetError(f"{where}: split must be one of {SPLITS}, got {row['split']!r}")
        try:
            smile = float(row["smile"])
        except ValueError as err:
            raise DatasetError(f"{where}: smile is not a number: {row['smile']!r}") from err
        if not 0.0 <= smile <= 1.0:
            raise DatasetError(f"{where}: smile intensity must be in [0, 1], got {smile}")
        row["smile"] = smile
        row["emotion"] = _parse_emotion(row["emotion"], where)
    return pd.DataFrame(rows)


SOURCE_FORMATS = ("genki4k", "fer2013", "fer2013_folders", "clips")
FER_FOLDER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_FOLDER_SPLITS = {"train": "train", "test": "test"}


def read_fer2013_folders(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Read the FER2013 image-folder variant: train/<class>/*.jpg and test/<class>/*.jpg.

    Returns image paths, emotions (FER order) and splits; it ships no validation split, so
    the caller holds some of train out.
    """
    root = Path(root)
    paths, emotions, splits = [], [], []
    for folder, split in FER_FOLDER_SPLITS.items():
        if not (root / folder).is_dir():
            raise DatasetError(f"{root / folder}: FER2013 folder variant needs train/ and test/")
        unknown = sorted(
            p.name
            for p in (root / folder).iterdir()
            if p.is_dir() and p.name not in FER_FOLDER_CLASSES
        )
        if unknown:
            raise DatasetError(
                f"{root / folder}: unknown class folder(s) {unknown}; expected {FER_FOLDER_CLASSES}"
            )
        missing = [name for name in FER_FOLDER_CLASSES if not (root / folder / name).is_dir()]
        if missing:
            raise DatasetError(
                f"{root / folder}: class folder(s) {missing} missing; the FER2013 folder "
                f"variant has all of {FER_FOLDER_CLASSES}"
            )
        found = 0
        for emotion, name in enumerate(FER_FOLDER_CLASSES):
            for path in sorted((root / folder / name).glob("*")):
                if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    paths.append(path)
                    emotions.append(emotion)
                    splits.append(split)
                    found += 1
        if found == 0:
            raise DatasetError(f"{root / folder}: no images under its <class>/ folders")
    return paths, np.asarray(emotions, dtype=np.int64), np.asarray(splits, dtype=object)


class FaceCropper:
    """Finds the face with OpenCV's Haar frontal-face cascade; centre crop where none is found.

    GENKI-4K images vary in size and are not aligned. The box is widened by `margin` so the
    whole face (brows to chin) stays in view. How many images fell back is counted.
    """

    def __init__(self, margin: float = 0.25, min_size: int = 24) -> None:
        cascade = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.detector = cv2.CascadeClassifier(str(cascade))
        if self.detector.empty():
            raise RuntimeError(
                f"{cascade}: cannot load OpenCV's Haar cascade (opencv-python-headless<5 ships it)"
            )
        self.margin = margin
        self.min_size = min_size
        self.scale_factor = 1.1
        self.min_neighbors = 4
        self.fallbacks = 0

    def settings(self) -> dict[str, Any]:
        """What the boxes depend on besides the images."""
        return {
            "detector": "haarcascade_frontalface_default",
            "scale_factor": self.scale_factor,
            "min_neighbors": self.min_neighbors,
            "min_size": self.min_size,
            "margin": self.margin,
            "opencv": cv2.__version__,
        }

    def box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """The largest face as a square (x, y, side, side) box with margin, or None."""
        faces = self.detector.detectMultiScale(
            image,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        if len(faces) == 0:
            self.fallbacks += 1
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        side = int(max(w, h) * (1 + 2 * self.margin))
        cx, cy = x + w // 2, y + h // 2
        side = min(side, image.shape[0], image.shape[1])
        x0 = int(np.clip(cx - side // 2, 0, image.shape[1] - side))
        y0 = int(np.clip(cy - side // 2, 0, image.shape[0] - side))
        return x0, y0, side, side


class FaceBoxCache:
    """Face boxes of one image folder, kept as JSON under `folder` (None = no cache).

    The key is the folder's resolved path, each image's size and modification time and the
    detector's settings, so a changed image, another detector setting or another OpenCV
    version finds no match and the boxes are searched again. The file is data, not code: one
    that does not parse or does not hold a box (or null) per image is ignored and rewritten.
    """

    def __init__(
        self, folder: Path | None, images_root: Path, paths: Sequence[Path], settings: dict
    ) -> None:
        self.count = len(paths)
        self.file = None
        self.key: dict[str, Any] = {}
        if folder is not None:
            images = str(Path(images_root).resolve())
            name = hashlib.sha256(images.encode()).hexdigest()[:20]
            self.file = Path(folder) / f"{name}.json"
            self.key = {"folder": images, "settings": settings, "files": _files_digest(paths)}

    def load(self) -> dict[int, tuple[int, int, int, int] | None] | None:
        """The cached boxes if the file matches these images and settings, else None."""
        if self.file is None or not self.file.is_file():
            return None
        try:
            stored = json.loads(self.file.read_text())
            if stored.get("key") != self.key:
                return None
            boxes = stored["boxes"]
            if not isinstance(boxes, list) or len(boxes) != self.count:
                return None
            return {i: _valid_box(box) for i, box in enumerate(boxes)}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            log.warning("%s: ignoring the face-box cache (%s); searching again", self.file, error)
            return None

    def save(self, boxes: Mapping[int, tuple[int, int, int, int] | None]) -> None:
        """Write the boxes (atomically: a half-written file is never read)."""
        if self.file is None:
            return
        data = {
            "key": self.key,
            "boxes": [
                None if boxes[i] is None else [int(v) for v in boxes[i]] for i in range(self.count)
            ],
        }
        try:
            atomic_write(self.file, lambda handle: handle.write(json.dumps(data).encode()))
        except OSError as error:  # a read-only cache costs the next run the search, nothing more
            log.warning("%s: could not keep the face boxes (%s)", self.file, error)


def _files_digest(paths: Sequence[Path]) -> str:
    """A digest of every file's name, size and modification time, in order."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def _valid_box(box: Any) -> tuple[int, int, int, int] | None:
    """A stored box back as a tuple of four non-negative ints (null stays None)."""
    if box is None:
        return None
    if not (isinstance(box, list) and len(box) == 4):
        raise ValueError(f"a box must be null or 4 integers, got {box!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box):
        raise ValueError(f"a box must be null or 4 non-negative integers, got {box!r}")
    return tuple(box)


def crop_box(image: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The image inside a box; the whole image for None (the transform centre-crops it)."""
    if box is None:
        return image
    x, y, w, h = box
    return image[y : y + h, x : x + w]


@dataclass(frozen=True)
class FrameTransform:
    """Resize, augment and turn an image (or clip) into a normalised (T, 1, H, W) tensor.

    A still image is repeated `seq_len` times with light per-frame jitter (a shift of up to
    `max_shift` pixels, a brightness change of up to `brightness`), so a still-image dataset
    feeds the same temporal model as video. The randomness comes from the generator passed
    in: evaluation passes one seeded by the sample index, so every run sees the same frames.
    `still_len` repeats a still that many times instead (None = `seq_len`): ten jittered copies
    of one image teach little more than three and cost the encoder 3.3x the work.
    """

    image_size: int = 64
    seq_len: int = 10
    max_shift: int = 2
    brightness: float = 0.05
    augment: bool = False
    still_len: int | None = None

    def still(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """A still grayscale image -> a jittered (T, 1, H, W) sequence."""
        base = self._prepare(image, rng)
        frames = np.empty((self.still_len or self.seq_len, *base.shape), dtype=np.float32)
        for frame in frames:
            self._jitter(base, rng, out=frame)
        return self._to_tensor(frames)

    def clip(self, frames: Sequence[np.ndarray], rng: np.random.Generator) -> torch.Tensor:
        """A grayscale clip of exactly `seq_len` frames -> (T, 1, H, W), augmented alike."""
        if len(frames) != self.seq_len:
            raise ValueError(f"clip has {len(frames)} frames, expected {self.seq_len}")
        flip = self.augment and rng.random() < 0.5
        out = [self._resize(f[:, ::-1] if flip else f) for f in frames]
        return self._to_tensor(np.stack(out))

    def _prepare(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Centre-crop to a square, optionally augment (flip, zoom), resize."""
        image = _center_square(image)
        if self.augment:
            if rng.random() < 0.5:
                image = image[:, ::-1]
            side = image.shape[0]
            crop = int(round(side * rng.uniform(0.85, 1.0)))
            y0, x0 = rng.integers(0, side - crop + 1, size=2)
            image = image[y0 : y0 + crop, x0 : x0 + crop]
        return self._resize(image)

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """Resize a 2-D uint8 image to the model's square input size."""
        image = np.ascontiguousarray(_center_square(image))
        if image.shape[0] == self.image_size:
            return image
        interp = cv2.INTER_AREA if image.shape[0] > self.image_size else cv2.INTER_LINEAR
        return cv2.resize(image, (self.image_size, self.image_size), interpolation=interp)

    def _jitter(self, image: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> None:
        """One frame of the repeated still, written into float32 `out`: shifted (rolled) by a
        few pixels, brightness varied."""
        dy, dx = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
        _roll_into(image, int(dy), int(dx), out)
        # A float32 array times a Python float multiplies in float32, in place or not.
        out *= 1.0 + rng.uniform(-self.brightness, self.brightness)

    @staticmethod
    def _to_tensor(frames: np.ndarray) -> torch.Tensor:
        """(T, H, W) gray in 0..255 -> (T, 1, H, W) float normalised to about [-1, 1].

        One channel: the network repeats it to its encoder's `in_chans` as a free view. Copying
        it three times here tripled every batch's memory traffic, and in the evaluation loader
        (10 frames a sample) that copy and its collation took most of the loading time.
        """
        # numpy's float32 ufuncs round each step as torch's did; three torch calls on a small
        # array cost more than the arithmetic (a tenth of the training loader's time).
        array = np.divide(frames, np.float32(127.5), dtype=np.float32)
        array -= np.float32(1.0)
        np.maximum(array, np.float32(-1.5), out=array)  # clamp's order: max, then min
        np.minimum(array, np.float32(1.5), out=array)
        return torch.from_numpy(array.reshape(len(array), 1, *array.shape[1:]))


def _roll_into(image: np.ndarray, dy: int, dx: int, out: np.ndarray) -> None:
    """`np.roll(image, (dy, dx), axis=(0, 1))` written into `out` (of any dtype) as four block
    copies: np.roll's general path costs more than the copy itself on a 48x48 frame."""
    height, width = image.shape
    dy, dx = dy % height, dx % width
    out[dy:, dx:] = image[: height - dy, : width - dx]
    out[dy:, :dx] = image[: height - dy, width - dx :]
    out[:dy, dx:] = image[height - dy :, : width - dx]
    out[:dy, :dx] = image[height - dy :, width - dx :]


def _center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of a 2-D image."""
    height, width = image.shape[:2]
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    return image[y0 : y0 + side, x0 : x0 + side]


def _sample(
    frames: torch.Tensor, smile: float | None, emotion: int | None, source: int
) -> dict[str, torch.Tensor]:
    """Pack one sample; a missing label gets a placeholder and a False mask."""
    return {
        "frames": frames,
        "smile": _scalar(0.0 if smile is None else float(smile)),
        "smile_mask": _scalar(smile is not None),
        "emotion": _scalar(0 if emotion is None else int(emotion)),
        "emotion_mask": _scalar(emotion is not None),
        "source": _scalar(int(source)),
    }


def _scalar(value: float | bool | int) -> torch.Tensor:
    """`torch.tensor(value)`, made once per value and type and shared by every sample holding
    it (five torch.tensor calls were a tenth of the training loader's time). Collation copies
    it into the batch; nothing may change it in place."""
    return _shared_scalar(value, str(value))  # str: -0.0 equals 0.0 but is another tensor


@functools.lru_cache(maxsize=4096, typed=True)
def _shared_scalar(value: float | bool | int, text: str) -> torch.Tensor:
    return torch.tensor(value)


class _SeededDataset(Dataset):
    """Base: a per-item generator that is random in training and fixed by index otherwise."""

    def __init__(self, transform: FrameTransform, source: int, eval_seed: int) -> None:
        self.transform = transform
        self.source = source
        self.eval_seed = eval_seed

    def _rng(self, index: int) -> np.random.Generator:
        if self.transform.augment:
            # Drawn from torch's generator, which seed_everything(workers=True) seeds per worker.
            return np.random.default_rng(int(torch.randint(0, 2**62, ())))
        return np.random.default_rng((self.eval_seed, self.source, index))


class Genki4kDataset(_SeededDataset):
    """GENKI-4K as published: files/fileNNNN.jpg + labels.txt; smile labels only."""

    def __init__(
        self,
        root: Path,
        indices: Sequence[int] | None,
        transform: FrameTransform,
        source: int = 0,
        eval_seed: int = 0,
        boxes: Mapping[int, tuple[int, int, int, int] | None] | None = None,
        cache: bool = True,
    ) -> None:
        super().__init__(transform, source, eval_seed)
        self.root = Path(root)
        self.boxes = boxes or {}
        # Decoded face crops, kept after the first epoch (GENKI-4K: about 4,000 small grey
        # crops, tens of MB): JPEG decoding was a third of a training epoch's loading time.
        self.cache = cache
        self._faces: dict[int, np.ndarray] = {}
        labels = read_genki_labels(self.root)
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
        self.smile = labels[:, 0]
        paths = (genki_image_path(self.root, i) for i in self.indices)
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{self.root}: {len(missing)} image(s) listed in labels.txt are missing, "
                f"first {missing[0]}"
            )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = int(self.indices[item])
        image = self._faces.get(index)
        if image is None:
            image = crop_box(
                read_image_gray(genki_image_path(self.root, index)), self.boxes.get(index)
            )
            if self.cache:
                self._faces[index] = np.ascontiguousarray(image)
        frames = self.transform.still(image, self._rng(index))
        return _sample(frames, smile=float(self.smile[index]), emotion=None, source=self.source)


class Fer2013Dataset(_SeededDataset):
    """FER2013 images of one split (CSV rows or image-folder files); emotion labels only."""

    def __init__(
        self,
        images: np.ndarray | Sequence[Path],
        emotions: np.ndarray,
        transform: FrameTransform,
        source: int = 0,
        eval_seed: int = 0,
    ) -> None:
        super().__init__(transform, source, eval_seed)
        self.images = images
        self.emotions = emotions

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        image = self.images[item]
        if isinstance(image, Path):
            image = read_image_gray(image)
        frames = self.transform.still(image, self._rng(item))
        return _sample(frames, smile=None, emotion=int(self.emotions[item]), source=self.source)


class SmileClipDataset(_SeededDataset):
    """Our both-labels clips: clips/<clip>/frame_00.jpg.. + labels.csv (clip,split,smile,emotion)."""

    def __init__(
        self,
        root: Path,
        split: str,
        transform: FrameTransform,
        source: int = 0,
        eval_seed: int = 0,
    ) -> None:
        super().__init__(transform, source, eval_seed)
        self.root = Path(root)
        labels = read_clip_labels(self.root)
        self.rows = labels[labels["split"] == split].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.rows)

    def frame_paths(self, clip: str) -> list[Path]:
        """The clip's frame files in time order, or a DatasetError if there are none."""
        paths = sorted((self.root / "clips" / clip).glob("frame_*.jpg"))
        if not paths:
            raise DatasetError(f"{self.root / 'clips' / clip}: clip has no frame_*.jpg files")
        return paths

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        row = self.rows.iloc[item]
        paths = self.frame_paths(row["clip"])
        if len(paths) != self.transform.seq_len:
            raise DatasetError(
                f"{self.root / 'clips' / row['clip']}: clip has {len(paths)} frames, the model "
                f"takes {self.transform.seq_len} (data.seq_len)"
            )
        frames = [read_image_gray(p) for p in paths]
        tensor = self.transform.clip(frames, self._rng(item))
        return _sample(tensor, smile=row["smile"], emotion=row["emotion"], source=self.source)


def _synthesizers() -> Mapping[str, Any]:
    """The generators of the default datasets (imported lazily: only needed when generating)."""
    from avlab.tasks.smile.synth import SYNTHESIZERS

    return SYNTHESIZERS


class SmileDataModule(L.LightningDataModule):
    """Mixes smile/emotion sources whose labels differ; each sample says which labels it has.

    `sources` maps a name (used in logs and metric names) to a mapping with
    `format` (genki4k | fer2013 | clips), `path` (relative to `root`, or absolute) and
    `synth` (generator parameters for the default dataset, or null for real data only).
    `mix` optionally gives each source's share of the training draws (e.g. {genki: 0.5,
    fer: 0.5}); by default every training sample is drawn once per epoch.
    """

    def __init__(
        self,
        root: str,
        sources: Mapping[str, Mapping[str, Any] | None],
        image_size: int = 64,
        seq_len: int = 10,
        max_shift: int = 2,
        brightness: float = 0.05,
        augment: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        mix: Mapping[str, float] | None = None,
        eval_seed: int = 0,
        train_still_frames: int | None = None,
        face_box_cache: str | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.face_box_cache = Path(face_box_cache) if face_box_cache else None
        self.sources = {name: dict(spec) for name, spec in sources.items() if spec}
        if not self.sources:
            raise ValueError("SmileDataModule needs at least one source")
        for name, spec in self.sources.items():
            if spec.get("format") not in SOURCE_FORMATS:
                raise ValueError(f"source {name!r}: unknown format {spec.get('format')!r}")
        self.mix = dict(mix) if mix else None
        if self.mix and set(self.mix) - set(self.sources):
            raise ValueError(
                f"mix names unknown sources {sorted(set(self.mix) - set(self.sources))}"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self.fractions = (val_fraction, test_fraction)
        self.eval_seed = eval_seed
        if train_still_frames is not None:
            clips = [n for n, spec in self.sources.items() if spec["format"] == "clips"]
            if train_still_frames < 1 or (clips and train_still_frames != seq_len):
                raise ValueError(
                    f"train_still_frames={train_still_frames}: must be >= 1, and equal to "
                    f"seq_len ({seq_len}) when clip sources ({', '.join(clips) or 'none'}) "
                    "share the training batches; set data.train_still_frames=null"
                )
        self.train_transform = FrameTransform(
            image_size, seq_len, max_shift, brightness, augment, train_still_frames
        )
        self.eval_transform = FrameTransform(image_size, seq_len, max_shift, brightness, False)
        self.datasets: dict[str, dict[str, Dataset]] = {}

    @property
    def source_names(self) -> list[str]:
        """Source names in index order (the `source` field of a sample indexes this list)."""
        return list(self.sources)

    def source_path(self, name: str) -> Path:
        """Where a source lives: its `path` joined to `root` (an absolute path wins)."""
        return self.root / self.sources[name].get("path", name)

    def prepare_data(self) -> None:
        """Generate missing default datasets; real datasets are only read."""
        synthesizers = _synthesizers()
        for name, spec in self.sources.items():
            generator = synthesizers.get(spec["format"])
            if spec.get("synth") is not None and generator is None:
                raise ValueError(
                    f"source {name!r}: no generator for format {spec['format']!r}; set synth: null"
                )
            ensure_generated(
                self.source_path(name), f"{name} ({spec['format']})", generator, spec.get("synth")
            )

    def setup(self, stage: str | None = None) -> None:
        """Read every source and build its train/val/test datasets."""
        if self.datasets:
            return
        for index, name in enumerate(self.sources):
            self.datasets[name] = self._build_source(name, index)
            sizes = {split: len(ds) for split, ds in self.datasets[name].items()}
            log.info("source %s (%s): %s", name, self.source_path(name), sizes)

    def _build_source(self, name: str, index: int) -> dict[str, Dataset]:
        """Train/val/test datasets of one source."""
        spec, path = self.sources[name], self.source_path(name)
        builders = {
            "genki4k": self._genki_splits,
            "fer2013": self._fer_csv_splits,
            "fer2013_folders": self._fer_folder_splits,
            "clips": self._clip_splits,
        }
        return builders[spec["format"]](path, index, spec)

    def _genki_splits(self, path: Path, index: int, spec: Mapping[str, Any]) -> dict[str, Dataset]:
        """GENKI-4K has no official split: a fixed permutation holds out val and test."""
        labels = read_genki_labels(path)
        boxes = self._face_boxes(path, len(labels), spec.get("face_crop", "haar"))
        splits = seeded_split(len(labels), self.fractions, self.split_seed)
        return {
            split: Genki4kDataset(
                path, indices, self._transform(split), index, self.eval_seed, boxes
            )
            for split, indices in splits.items()
        }

    def _face_boxes(self, path: Path, count: int, mode: str) -> dict[int, Any]:
        """Face boxes of every GENKI image (mode haar), found once at setup; {} for centre crops.

        With `face_box_cache` set, the boxes are kept in a JSON file there, keyed by the image
        folder, every image's size and modification time, the detector's settings and OpenCV's
        version; a run that finds a matching file skips the search (9 s for 2,000 images). The
        dataset folder itself is never written."""
        if mode == "center":
            return {}
        if mode != "haar":
            raise ValueError(f"face_crop must be 'haar' or 'center', got {mode!r}")
        paths = [genki_image_path(path, i) for i in range(count)]
        cropper = FaceCropper()
        cache = FaceBoxCache(self.face_box_cache, path, paths, cropper.settings())
        boxes = cache.load()
        if boxes is not None:
            log.info("%s: face boxes read from %s", path, cache.file)
            return boxes
        boxes = {i: cropper.box(read_image_gray(p)) for i, p in enumerate(paths)}
        log.info(
            "%s: face found in %d of %d images; %d fell back to a centre crop",
            path,
            count - cropper.fallbacks,
            count,
            cropper.fallbacks,
        )
        cache.save(boxes)
        return boxes

    def _fer_csv_splits(
        self, path: Path, index: int, spec: Mapping[str, Any]
    ) -> dict[str, Dataset]:
        """FER2013 CSV: Usage gives the split."""
        images, emotions, usage = read_fer2013_csv(_fer_csv(path))
        return {
            split: Fer2013Dataset(
                images[usage == split],
                emotions[usage == split],
                self._transform(split),
                index,
                self.eval_seed,
            )
            for split in SPLITS
        }

    def _fer_folder_splits(
        self, path: Path, index: int, spec: Mapping[str, Any]
    ) -> dict[str, Dataset]:
        """FER2013 image folders: train/ and test/; val is held out of train."""
        paths, emotions, usage = read_fer2013_folders(path)
        train_idx = np.flatnonzero(usage == "train")
        held = seeded_split(len(train_idx), (self.fractions[0], 0.0), self.split_seed)
        chosen = {
            "train": train_idx[held["train"]],
            "val": train_idx[held["val"]],
            "test": np.flatnonzero(usage == "test"),
        }
        return {
            split: Fer2013Dataset(
                [paths[i] for i in rows],
                emotions[rows],
                self._transform(split),
                index,
                self.eval_seed,
            )
            for split, rows in chosen.items()
        }

    def _clip_splits(self, path: Path, index: int, spec: Mapping[str, Any]) -> dict[str, Dataset]:
        """Our clips: labels.csv gives the split."""
        return {
            split: SmileClipDataset(path, split, self._transform(split), index, self.eval_seed)
            for split in SPLITS
        }

    def _transform(self, split: str) -> FrameTransform:
        return self.train_transform if split == "train" else self.eval_transform

    def _concat(self, split: str) -> ConcatDataset:
        parts = [self.datasets[name][split] for name in self.sources]
        nonempty = [p for p in parts if len(p) > 0]
        if not nonempty:
            raise DatasetError(
                f"the {split} split is empty: none of the sources "
                f"({', '.join(f'{n}: {self.source_path(n)}' for n in self.sources)}) "
                f"holds {split} samples"
            )
        return ConcatDataset(nonempty)

    def train_dataloader(self) -> DataLoader:
        dataset = self._concat("train")
        sampler = self._mix_sampler(dataset) if self.mix else None
        loader = self._loader(dataset, shuffle=sampler is None, sampler=sampler, drop_last=True)
        return order_for_trainer(loader, self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._concat("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._concat("test"), shuffle=False)

    def _mix_sampler(self, dataset: ConcatDataset) -> WeightedRandomSampler:
        """Draw each source in proportion to `mix`, whatever its size."""
        weights = []
        for part in dataset.datasets:
            name = self.source_names[part.source]
            weights.append(np.full(len(part), self.mix.get(name, 0.0) / len(part)))
        return WeightedRandomSampler(np.concatenate(weights).tolist(), num_samples=len(dataset))

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return make_loader(dataset, self.num_workers, batch_size=self.batch_size, **kwargs)


def _fer_csv(path: Path) -> Path:
    """FER2013's CSV: the path itself, or fer2013.csv / icml_face_data.csv inside it."""
    if path.is_file():
        return path
    for name in ("fer2013.csv", "icml_face_data.csv"):
        if (path / name).is_file():
            return path / name
    raise DatasetError(f"{path}: no fer2013.csv or icml_face_data.csv found")
