"""Generated smile/emotion datasets, written in the real datasets' on-disk formats.

GENKI-4K (`write_genki4k`)
    root/files/file0001.jpg ... fileNNNN.jpg   RGB JPEG, sizes 80-200 px, some non-square
    root/labels.txt   n lines, no header: `smile yaw pitch roll`; smile 0/1 (intensity > 0.5),
                      pose in radians with 6 decimals; line i <-> file{i:04d}.jpg
FER2013 (`write_fer2013`)
    root/fer2013.csv  header `emotion,pixels,Usage`; pixels = 2304 space-separated uint8
                      (48x48 grey, row-major); Usage Training / PublicTest / PrivateTest, in
                      that order. Variant "icml": root/icml_face_data.csv with header
                      `emotion, Usage, pixels` (leading spaces, as published).
Smile clips (`write_smile_clips`), our own format carrying both labels
    root/clips/<clip_id>/frame_00.jpg ... frame_{T-1:02d}.jpg   RGB JPEG, size x size
    root/labels.csv   header `clip,split,smile,emotion`: smile intensity in [0, 1] with 3
                      decimals, emotion 0-6 in FER order (0 angry, 1 disgust, 2 fear, 3 happy,
                      4 sad, 5 surprise, 6 neutral), split train / val / test

Every writer builds its dataset in a hidden sibling folder and renames it into place at the
end, so a half-written dataset never looks complete, and leaves a stamp
(`.avlab_synth.json`) naming the generator and its parameters. The same seed gives the same
bytes. Each image (or clip) is a new person.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from avlab.data_utils import staged_folder, write_synth_stamp
from avlab.faces.render import (
    ANGRY,
    DISGUST,
    EMOTIONS,
    FEAR,
    HAPPY,
    NEUTRAL,
    SAD,
    SURPRISE,
    Expression,
    FaceIdentity,
    Viewing,
    encode_jpeg,
    jpeg_roundtrip,
    render_clip,
    render_face,
)

FER_SIDE = 48
FER_USAGES = ("Training", "PublicTest", "PrivateTest")
# A face detector's crop is tighter than a GENKI photo (the face fills it: Viewing.scale x)
# and roughly registered (less offset, scale and roll jitter: `_aligned_crop`).
FER_FRAMING = 1.8
CLIP_FRAMING = 1.7
_UNHAPPY_EMOTIONS = (ANGRY, DISGUST, FEAR, SAD, SURPRISE)


def _item_rng(seed: int, index: int) -> np.random.Generator:
    """An independent generator per item, so item i does not depend on how many came before."""
    return np.random.default_rng([int(seed), int(index)])


def _with_smile_label(expr: Expression, smiling: bool, rng: np.random.Generator) -> Expression:
    """The expression, its smile intensity redrawn if it falls on the wrong side of 0.5."""
    if (expr.smile > 0.5) == smiling:
        return expr
    smile = rng.uniform(0.55, 1.0) if smiling else rng.uniform(0.0, 0.3)
    return replace(expr, smile=float(smile))


def _genki_expression(rng: np.random.Generator, smiling: bool) -> Expression:
    """Smiles are mostly happy faces, some forced; non-smiles span the other emotions."""
    if smiling:
        emotion = HAPPY if rng.uniform() < 0.85 else NEUTRAL
    elif rng.uniform() < 0.4:
        emotion = NEUTRAL
    else:
        emotion = int(rng.choice(_UNHAPPY_EMOTIONS))
    return _with_smile_label(Expression.sample(rng, emotion), smiling, rng)


def _genki_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of a GENKI-like photo: 80-200 px, about a third not square."""
    side = int(rng.integers(80, 201))
    if rng.uniform() < 0.65:
        return side, side
    return side, int(np.clip(round(side * rng.uniform(0.75, 1.3)), 64, 240))


def _rendered(func: Callable[[Any], Any], items: Iterable[Any], bar: tqdm) -> Iterator[Any]:
    """`func` over `items` in order, on as many processes as torch has threads (the run's
    `threads` policy). Every item draws from its own seeded generator, so the bytes do not
    depend on how many processes rendered them; rendering is most of generation's time."""
    items = list(items)
    workers = min(torch.get_num_threads(), max(1, len(items) // 200))
    if workers <= 1:
        for item in items:
            yield func(item)
            bar.update()
        return
    # fork: the children need only numpy and OpenCV, already imported, and start at once.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for result in pool.imap(func, items, chunksize=32):
            yield result
            bar.update()


def _genki_item(job: tuple[int, int]) -> tuple[bytes, str]:
    """GENKI image `index` of generator `seed`: its JPEG bytes and its labels.txt line."""
    seed, index = job
    rng = _item_rng(seed, index)
    expr = _genki_expression(rng, smiling=rng.uniform() < 0.5)
    view = Viewing.sample(rng)
    image = render_face(FaceIdentity.sample(rng), expr, view, _genki_size(rng), rng)
    line = f"{int(expr.smile > 0.5)} {view.yaw:.6f} {view.pitch:.6f} {view.roll:.6f}\n"
    return encode_jpeg(image, view.jpeg_quality), line


def write_genki4k(root: str | Path, n: int = 2000, seed: int = 0) -> Path:
    """Write a GENKI-4K-format folder of `n` face photos, about half of them smiling."""
    root = Path(root)
    with staged_folder(root) as folder:
        (folder / "files").mkdir()
        lines = []
        bar = tqdm(total=n, desc=f"GENKI-4K -> {root}", unit="img", mininterval=0.5)
        jobs = ((seed, i) for i in range(n))
        for i, (jpeg, line) in enumerate(_rendered(_genki_item, jobs, bar)):
            (folder / "files" / f"file{i + 1:04d}.jpg").write_bytes(jpeg)
            lines.append(line)
        bar.close()
        (folder / "labels.txt").write_text("".join(lines))
        write_synth_stamp(folder, f"{__name__}.write_genki4k", {"n": n, "seed": seed})
    return root


def _aligned_crop(view: Viewing, framing: float) -> Viewing:
    """The viewing as a face detector's crop sees it: zoomed in, re-centred, roll reduced."""
    return replace(
        view,
        scale=framing * (1.0 + 0.5 * (view.scale - 1.0)),
        dx=0.4 * view.dx,
        dy=0.4 * view.dy,
        roll=0.5 * view.roll,
    )


def _fer_image(rng: np.random.Generator, emotion: int) -> np.ndarray:
    """One 48x48 grey face crop showing `emotion`, JPEG-degraded like the web originals."""
    view = _aligned_crop(Viewing.sample(rng), FER_FRAMING)
    rgb = render_face(
        FaceIdentity.sample(rng), Expression.sample(rng, emotion), view, FER_SIDE, rng
    )
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return jpeg_roundtrip(grey, max(50, view.jpeg_quality))


def _fer_row(job: tuple[int, int, int, int]) -> str:
    """The CSV pixels field of FER image `index` of split `split_no` showing `emotion`."""
    seed, split_no, index, emotion = job
    pixels = _fer_image(_item_rng(seed, split_no * 10**8 + index), emotion)
    return " ".join(map(str, pixels.ravel().tolist()))


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """n emotion labels, each class as often as n allows, in random order."""
    return rng.permutation(np.arange(n) % len(EMOTIONS))


def write_fer2013(
    root: str | Path,
    n_train: int = 2800,
    n_public: int = 350,
    n_private: int = 350,
    seed: int = 1,
    variant: str = "standard",
) -> Path:
    """Write a FER2013-format CSV of 48x48 grey faces.

    Unlike the real FER2013, whose classes are imbalanced (disgust is ~1.5 %), every split
    here is class-balanced. `variant="icml"` writes icml_face_data.csv with the ICML header.
    """
    if variant not in ("standard", "icml"):
        raise ValueError(f"variant must be 'standard' or 'icml', got {variant!r}")
    root = Path(root)
    counts = dict(zip(FER_USAGES, (n_train, n_public, n_private), strict=True))
    with staged_folder(root) as folder:
        bar = tqdm(
            total=sum(counts.values()), desc=f"FER2013 -> {root}", unit="img", mininterval=0.5
        )
        jobs = []
        for split_no, (usage, count) in enumerate(counts.items()):
            labels = _balanced_labels(count, _item_rng(seed, 10**9 + split_no))
            jobs += [(seed, split_no, i, int(emotion), usage) for i, emotion in enumerate(labels)]
        pixels = _rendered(_fer_row, [job[:4] for job in jobs], bar)
        rows = [(job[3], text, job[4]) for job, text in zip(jobs, pixels, strict=True)]
        bar.close()
        if variant == "icml":
            text = "emotion, Usage, pixels\n" + "".join(f"{e},{u},{p}\n" for e, p, u in rows)
            (folder / "icml_face_data.csv").write_text(text)
        else:
            text = "emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows)
            (folder / "fer2013.csv").write_text(text)
        params = dict(
            n_train=n_train, n_public=n_public, n_private=n_private, seed=seed, variant=variant
        )
        write_synth_stamp(folder, f"{__name__}.write_fer2013", params)
    return root


def write_smile_clips(
    root: str | Path,
    n_train: int = 480,
    n_val: int = 60,
    n_test: int = 60,
    n_frames: int = 10,
    size: int = 64,
    seed: int = 2,
) -> Path:
    """Write our both-labels clip dataset: emotion-balanced clips with smile intensity."""
    root = Path(root)
    splits = {"train": n_train, "val": n_val, "test": n_test}
    rows = ["clip,split,smile,emotion\n"]
    with staged_folder(root) as folder:
        bar = tqdm(
            total=sum(splits.values()), desc=f"smile clips -> {root}", unit="clip", mininterval=0.5
        )
        index = 0
        for split_no, (split, count) in enumerate(splits.items()):
            for emotion in _balanced_labels(count, _item_rng(seed, 10**9 + split_no)):
                clip_id = f"clip{index:05d}"
                smile = _write_clip(
                    folder / "clips" / clip_id, _item_rng(seed, index), int(emotion), n_frames, size
                )
                rows.append(f"{clip_id},{split},{smile:.3f},{int(emotion)}\n")
                index += 1
                bar.update()
        bar.close()
        (folder / "labels.csv").write_text("".join(rows))
        params = dict(
            n_train=n_train, n_val=n_val, n_test=n_test, n_frames=n_frames, size=size, seed=seed
        )
        write_synth_stamp(folder, f"{__name__}.write_smile_clips", params)
    return root


def _write_clip(
    clip_dir: Path, rng: np.random.Generator, emotion: int, n_frames: int, size: int
) -> float:
    """Render one clip's frames as JPEGs into clip_dir; returns its smile intensity label."""
    clip_dir.mkdir(parents=True)
    expr = Expression.sample(rng, emotion)
    view = _aligned_crop(Viewing.sample(rng), CLIP_FRAMING)
    frames, _ = render_clip(FaceIdentity.sample(rng), expr, view, n_frames, size, rng)
    quality = max(50, view.jpeg_quality)
    for t, frame in enumerate(frames):
        (clip_dir / f"frame_{t:02d}.jpg").write_bytes(encode_jpeg(frame, quality))
    return round(expr.smile, 3)


SYNTHESIZERS = {"genki4k": write_genki4k, "fer2013": write_fer2013, "clips": write_smile_clips}
