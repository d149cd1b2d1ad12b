"""Face–voice data: readers for the VoxCeleb1 layout and for paired folders, one DataModule.

Both readers give a list of identities, each with its face images and its voice recordings;
train / val / test are disjoint sets of identities. Every sample is a dict of tensors:
    face      (3, H, W) float in about [-1, 1]   one photo of the person
    voice     (S,)      float waveform            `clip_seconds` of one utterance at `sample_rate`
    identity  ()        long                      the person's index within the split
A training item is a person, with a photo and an utterance drawn afresh on every visit;
an evaluation item is a fixed (photo, utterance) pair, so every run scores the same pairs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from avlab.audio import read_wav
from avlab.data_order import order_for_trainer
from avlab.data_utils import (
    DatasetError,
    ensure_generated,
    make_loader,
    read_image_rgb,
    seeded_split,
)

log = logging.getLogger(__name__)

META_COLUMNS = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
META_SETS = ("dev", "test")
FACE_TRACK_VERSION = "1.6"
FACES_DIR_CANDIDATES = ("unzippedFaces", "faces")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
AUDIO_SUFFIXES = (".wav", ".flac")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Identity:
    """One person: a name and the files that show and voice them."""

    name: str
    faces: tuple[Path, ...]
    voices: tuple[Path, ...]


def read_voxceleb_meta(path: Path) -> list[dict[str, str]]:
    """Rows of VoxCeleb1's tab-separated vox1_meta.csv, checked: five fields, Set dev or test."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: VoxCeleb1 meta file not found")
    lines = path.read_text().splitlines()
    header = [c.strip() for c in lines[0].split("\t")] if lines else []
    if tuple(header) != META_COLUMNS:
        raise DatasetError(
            f"{path}, line 1: header must be {' <TAB> '.join(META_COLUMNS)}, got {header}"
        )
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != len(META_COLUMNS) or not all(fields):
            raise DatasetError(
                f"{path}, line {line_no}: expected {len(META_COLUMNS)} non-empty tab-separated "
                f"fields ({', '.join(META_COLUMNS)}), got {line!r}"
            )
        row = dict(zip(META_COLUMNS, fields, strict=True))
        if row["Set"] not in META_SETS:
            raise DatasetError(
                f"{path}, line {line_no}: Set must be dev or test, got {row['Set']!r}"
            )
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: no identities listed")
    return rows


def read_voxceleb(
    root: Path, meta_file: str = "vox1_meta.csv", wav_dir: str = "wav", faces_dir: str | None = None
) -> dict[str, list[Identity]]:
    """VoxCeleb1 identities by meta Set (dev / test): wav/<id>/<clip>/*.wav + faces/<name>/1.6/<clip>/*.jpg."""
    root = Path(root)
    faces_root = root / (faces_dir or _find_faces_dir(root))
    out: dict[str, list[Identity]] = {s: [] for s in META_SETS}
    for row in read_voxceleb_meta(root / meta_file):
        voices = _files_in(
            root / wav_dir / row["VoxCeleb1 ID"], "*/*", AUDIO_SUFFIXES, "wav folder"
        )
        track_root = faces_root / row["VGGFace1 ID"] / FACE_TRACK_VERSION
        faces = _files_in(track_root, "*/*", IMAGE_SUFFIXES, "face-track folder")
        out[row["Set"]].append(Identity(row["VoxCeleb1 ID"], faces, voices))
    return out


def _find_faces_dir(root: Path) -> str:
    """The face-track folder name: unzippedFaces (as published) or faces."""
    for name in FACES_DIR_CANDIDATES:
        if (root / name).is_dir():
            return name
    raise DatasetError(f"{root}: no face-track folder ({' or '.join(FACES_DIR_CANDIDATES)}) found")


def _files_in(folder: Path, pattern: str, suffixes: tuple[str, ...], what: str) -> tuple[Path, ...]:
    """Sorted files with one of `suffixes` matching `pattern` in `folder`; an error if none."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: {what} is missing")
    files = tuple(sorted(p for p in folder.glob(pattern) if p.suffix.lower() in suffixes))
    if not files:
        raise DatasetError(f"{folder}: {what} holds no {'/'.join(suffixes)} files")
    return files


# A top-level file's person: its stem without a trailing `_<number>` or `-<number>`
# (ann_01.jpg, ann-2.jpg and ann.jpg are all ann).
PERSON_FROM_STEM = r"^(.+?)(?:[_-]\d+)?$"


def read_paired(
    root: Path,
    image_folder: str = "images",
    audio_folder: str = "audio",
    person_pattern: str = PERSON_FROM_STEM,
) -> list[Identity]:
    """Paired folders: image and audio files that share a path stem belong to one person.

    A file in a subfolder belongs to the person named by the subfolder (images/ann/01.jpg ->
    ann). A file at the top level belongs to the person that `person_pattern` (a regular
    expression whose first group is the person) finds in its stem, so ann_01.jpg and
    ann_02.jpg are one person: two photos of one person must never land in different splits
    or serve as each other's negatives. A file without its partner is an error.
    """
    pattern = re.compile(person_pattern)
    images = _by_stem(Path(root) / image_folder, IMAGE_SUFFIXES)
    audio = _by_stem(Path(root) / audio_folder, AUDIO_SUFFIXES)
    for have, lack, kind in ((images, audio, "audio"), (audio, images, "image")):
        orphans = sorted(set(have) - set(lack))
        if orphans:
            raise DatasetError(
                f"{have[orphans[0]]}: no {kind} file with the same stem "
                f"({len(orphans)} file(s) without a partner)"
            )
    people: dict[str, tuple[list[Path], list[Path]]] = {}
    for stem in sorted(images):
        name = stem.parent.as_posix() if stem.parent != Path(".") else _person(pattern, stem)
        faces, voices = people.setdefault(name, ([], []))
        faces.append(images[stem])
        voices.append(audio[stem])
    return [Identity(name, tuple(f), tuple(v)) for name, (f, v) in people.items()]


def _person(pattern: re.Pattern, stem: Path) -> str:
    """The person a top-level file's stem names, by `pattern`'s first group."""
    match = pattern.fullmatch(stem.name)
    if match is None or not match.group(1):
        raise DatasetError(
            f"{stem.name}: data.person_pattern {pattern.pattern!r} finds no person in this stem"
        )
    return match.group(1)


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[Path, Path]:
    """Files under `folder` with one of `suffixes`, keyed by their relative path without suffix."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder is missing")
    files = {
        p.relative_to(folder).with_suffix(""): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in suffixes
    }
    if not files:
        raise DatasetError(f"{folder}: holds no {'/'.join(suffixes)} files")
    return files


@dataclass
class Media:
    """Reads, caches and shapes faces and voices: square RGB images, fixed-length waveforms.

    Training crops a random stretch of each utterance and jitters each photo (flip, zoom);
    evaluation takes the middle stretch and the plain photo. With `cache`, decoded
    files stay in memory (fine for the generated default; turn it off for large real datasets).
    """

    image_size: int = 48
    sample_rate: int = 16_000
    clip_seconds: float = 1.5
    cache: bool = True

    def __post_init__(self) -> None:
        self._images: dict[Path, np.ndarray] = {}
        self._voices: dict[Path, np.ndarray] = {}

    @property
    def clip_samples(self) -> int:
        """Samples per voice clip."""
        return int(round(self.clip_seconds * self.sample_rate))

    def face(self, path: Path, rng: np.random.Generator | None) -> torch.Tensor:
        """(3, H, W) float image; `rng` set means augment."""
        image = self._images.get(path)
        if image is None:
            image = _square_resize(read_image_rgb(path), self.image_size)
            if self.cache:
                self._images[path] = image
        if rng is not None:
            image = self._augment(image, rng)
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
        return (tensor / 127.5 - 1.0).clamp(-1.5, 1.5)

    def _augment(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Flip and zoom into a random 85-100 % crop; colours stay, since hair and skin tone
        are part of who someone is (the photos already vary in light and white balance)."""
        if rng.random() < 0.5:
            image = image[:, ::-1]
        side = image.shape[0]
        crop = int(round(side * rng.uniform(0.85, 1.0)))
        y0, x0 = rng.integers(0, side - crop + 1, size=2)
        return _square_resize(np.ascontiguousarray(image[y0 : y0 + crop, x0 : x0 + crop]), side)

    def voice(self, path: Path, rng: np.random.Generator | None) -> torch.Tensor:
        """(S,) float waveform of `clip_seconds`: a random stretch if `rng` is set, else the middle."""
        audio = self._voices.get(path)
        if audio is None:
            audio, _ = read_wav(path, self.sample_rate)
            if self.cache:
                self._voices[path] = audio
        n = self.clip_samples
        if len(audio) < n:
            audio = np.pad(audio, (0, n - len(audio)))
        spare = len(audio) - n
        start = int(rng.integers(0, spare + 1)) if rng is not None else spare // 2
        return torch.from_numpy(np.ascontiguousarray(audio[start : start + n], dtype=np.float32))


def _square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of an image, resized to size x size."""
    height, width = image.shape[:2]
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    image = np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side])
    if side == size:
        return image
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def _sample(face: torch.Tensor, voice: torch.Tensor, identity: int) -> dict[str, torch.Tensor]:
    """Pack one sample."""
    return {"face": face, "voice": voice, "identity": torch.tensor(identity)}


class FaceVoiceTrainSet(Dataset):
    """Item i is person i: a random photo and a random stretch of a random utterance of theirs."""

    def __init__(self, people: list[Identity], media: Media, augment: bool = True) -> None:
        self.people = people
        self.media = media
        self.augment = augment

    def __len__(self) -> int:
        return len(self.people)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # Drawn from torch's generator, which seed_everything(workers=True) seeds per worker.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        person = self.people[index]
        face = person.faces[int(rng.integers(len(person.faces)))]
        voice = person.voices[int(rng.integers(len(person.voices)))]
        face_rng = rng if self.augment else None
        return _sample(self.media.face(face, face_rng), self.media.voice(voice, rng), index)


class FaceVoicePairs(Dataset):
    """Fixed (photo, utterance) pairs, up to `pairs_per_identity` per person, spread over their files.

    Pairs are ordered round by round (everyone's first pair, then everyone's second, ...), so a
    batch holds distinct people as long as it is no larger than the split.
    """

    def __init__(self, people: list[Identity], media: Media, pairs_per_identity: int = 4) -> None:
        self.people = people
        self.media = media
        per_person = [_spread_pairs(p, pairs_per_identity) for p in people]
        rounds = max((len(p) for p in per_person), default=0)
        self.pairs = [
            (i, *pairs[k])
            for k in range(rounds)
            for i, pairs in enumerate(per_person)
            if k < len(pairs)
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        person_index, face, voice = self.pairs[index]
        person = self.people[person_index]
        return _sample(
            self.media.face(person.faces[face], None),
            self.media.voice(person.voices[voice], None),
            person_index,
        )


def _spread_pairs(person: Identity, k: int) -> list[tuple[int, int]]:
    """k (face index, voice index) pairs spread evenly over a person's files."""
    n = min(k, max(len(person.faces), len(person.voices)))
    faces = np.linspace(0, len(person.faces) - 1, n).round().astype(int)
    voices = np.linspace(0, len(person.voices) - 1, n).round().astype(int)
    return list(zip(faces.tolist(), voices.tolist(), strict=True))


class DistinctIdentityBatchSampler(Sampler[list[int]]):
    """Batches of distinct people: each round shuffles everyone and cuts full batches.

    Duplicates would put a person's own face among their negatives; `repeats` rounds make
    one epoch, so a small set of people still gives enough steps per epoch.
    """

    def __init__(self, n_people: int, batch_size: int, repeats: int = 1) -> None:
        if batch_size > n_people:
            raise ValueError(f"batch_size {batch_size} exceeds the {n_people} training identities")
        self.n_people, self.batch_size, self.repeats = n_people, batch_size, repeats

    def __len__(self) -> int:
        return self.repeats * (self.n_people // self.batch_size)

    def with_batch_size(self, batch_size: int) -> DistinctIdentityBatchSampler:
        """The same sampler at another batch size (DDP draws the global batch and splits it)."""
        return DistinctIdentityBatchSampler(self.n_people, batch_size, self.repeats)

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.repeats):
            order = torch.randperm(self.n_people).tolist()
            for start in range(0, self.n_people - self.batch_size + 1, self.batch_size):
                yield order[start : start + self.batch_size]


def _synthesizers() -> Mapping[str, Any]:
    """The default dataset generators (imported lazily: only needed when generating)."""
    from avlab.tasks.face_voice.synth import SYNTHESIZERS

    return SYNTHESIZERS


class FaceVoiceDataModule(L.LightningDataModule):
    """Face–voice pairs of disjoint train / val / test identities from one dataset folder.

    `layout` voxceleb: test identities are those VoxCeleb1's meta marks `Set = test`, and
    `val_fraction` of the dev identities (a fixed permutation, `split_seed`) are held out
    for validation. `layout` paired: the people are split by `val_fraction` / `test_fraction`.
    `synth` holds the generator parameters of the default dataset (null: real data only).
    """

    def __init__(
        self,
        root: str,
        layout: str = "voxceleb",
        synth: Mapping[str, Any] | None = None,
        meta_file: str = "vox1_meta.csv",
        wav_dir: str = "wav",
        faces_dir: str | None = None,
        image_folder: str = "images",
        audio_folder: str = "audio",
        person_pattern: str = PERSON_FROM_STEM,
        sample_rate: int = 16_000,
        clip_seconds: float = 1.5,
        image_size: int = 48,
        augment: bool = True,
        cache: bool = True,
        batch_size: int = 64,
        epoch_repeats: int = 1,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        eval_pairs_per_identity: int = 4,
    ) -> None:
        super().__init__()
        if layout not in ("voxceleb", "paired"):
            raise ValueError(f"data.layout must be 'voxceleb' or 'paired', got {layout!r}")
        self.root, self.layout, self.synth = Path(root), layout, dict(synth) if synth else None
        self.voxceleb_args = (meta_file, wav_dir, faces_dir)
        self.paired_args = (image_folder, audio_folder, person_pattern)
        self.media = Media(image_size, sample_rate, clip_seconds, cache)
        self.augment = augment
        self.batch_size = batch_size
        self.epoch_repeats = epoch_repeats
        self.num_workers = num_workers
        self.fractions, self.split_seed = (val_fraction, test_fraction), split_seed
        self.eval_pairs_per_identity = eval_pairs_per_identity
        self.people: dict[str, list[Identity]] = {}

    def prepare_data(self) -> None:
        """Generate the default dataset if it is missing; a real dataset is only read."""
        ensure_generated(
            self.root, f"face-voice ({self.layout})", _synthesizers()[self.layout], self.synth
        )

    def setup(self, stage: str | None = None) -> None:
        """Read the dataset and split its identities."""
        if self.people:
            return
        self.people = self._split_people()
        for split, people in self.people.items():
            if len(people) < 2:
                raise DatasetError(
                    f"{self.root}: the {split} split has {len(people)} identities; matching needs 2+"
                )
        sizes = {s: len(p) for s, p in self.people.items()}
        log.info("face-voice data %s (%s): identities per split %s", self.root, self.layout, sizes)

    def _split_people(self) -> dict[str, list[Identity]]:
        """Train / val / test identity lists."""
        if self.layout == "voxceleb":
            by_set = read_voxceleb(self.root, *self.voxceleb_args)
            dev, test = by_set["dev"], by_set["test"]
            split = seeded_split(len(dev), (self.fractions[0], 0.0), self.split_seed)
            return {
                "train": [dev[i] for i in split["train"]],
                "val": [dev[i] for i in split["val"]],
                "test": test,
            }
        people = read_paired(self.root, *self.paired_args)
        split = seeded_split(len(people), self.fractions, self.split_seed)
        return {name: [people[i] for i in split[name]] for name in SPLITS}

    def train_dataloader(self) -> DataLoader:
        people = self.people["train"]
        sampler = DistinctIdentityBatchSampler(len(people), self.batch_size, self.epoch_repeats)
        loader = self._loader(
            FaceVoiceTrainSet(people, self.media, self.augment), batch_sampler=sampler
        )
        return order_for_trainer(loader, self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = FaceVoicePairs(self.people[split], self.media, self.eval_pairs_per_identity)
        return self._loader(dataset, batch_size=self.batch_size, shuffle=False)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return make_loader(dataset, self.num_workers, **kwargs)
