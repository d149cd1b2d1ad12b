"""Generated smile/emotion data: readable in the real formats, deterministic, and not trivial."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from avlab.faces import Expression, FaceIdentity, Viewing, render_clip, render_face
from avlab.tasks.smile.synth import (
    SYNTHESIZERS,
    write_fer2013,
    write_genki4k,
    write_smile_clips,
)

HAPPY = 3


def per_pixel_auroc(images: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """How well each pixel's value alone separates the classes: max(AUC, 1 - AUC) per pixel.

    Mann-Whitney rank formula, AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with
    tied values given their average rank (computed from per-pixel histograms of uint8 values).
    """
    values = images.reshape(len(images), -1).astype(np.int64)
    n_pixels = values.shape[1]
    offsets = np.arange(n_pixels) * 256
    counts = np.bincount((values + offsets).ravel(), minlength=n_pixels * 256).reshape(
        n_pixels, 256
    )
    average_rank = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2.0
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    rank_sum = (
        average_rank.ravel()[(values[positive] + offsets).ravel()].reshape(n_pos, n_pixels).sum(0)
    )
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.abs(auc - 0.5) + 0.5


def read_fer_pixels(csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 48, 48) and emotions of a FER2013 CSV."""
    frame = pd.read_csv(csv)
    images = np.stack([np.array(p.split(), dtype=np.uint8) for p in frame["pixels"]])
    return images.reshape(-1, 48, 48), frame["emotion"].to_numpy()


@pytest.fixture(scope="module")
def genki(tmp_path_factory) -> Path:
    return write_genki4k(tmp_path_factory.mktemp("genki") / "GENKI-4K", n=60, seed=0)


@pytest.fixture(scope="module")
def fer(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fer") / "fer2013"
    return write_fer2013(root, n_train=56, n_public=14, n_private=21, seed=1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips") / "smile_clips"
    return write_smile_clips(root, n_train=8, n_val=3, n_test=3, seed=2)


def test_genki_folder_reads_like_genki4k(genki):
    names = sorted(p.name for p in (genki / "files").iterdir())
    assert names == [f"file{i:04d}.jpg" for i in range(1, 61)]
    sizes = set()
    for name in names:
        with Image.open(genki / "files" / name) as img:
            img.load()
            assert img.format == "JPEG" and img.mode == "RGB"
            sizes.add(img.size)
    assert len(sizes) > 10, "GENKI images should come in varied sizes"
    assert any(w != h for w, h in sizes), "some GENKI images should be non-square"
    lines = (genki / "labels.txt").read_text().splitlines()
    labels = np.array([[float(v) for v in line.split(" ")] for line in lines])
    assert labels.shape == (60, 4)
    assert set(labels[:, 0]) == {0.0, 1.0}
    assert np.abs(labels[:, 1:]).max() < 1.0 and labels[:, 1:].std() > 0.05


def test_fer_csv_reads_with_pandas(fer):
    csv = fer / "fer2013.csv"
    assert csv.read_text().splitlines()[0] == "emotion,pixels,Usage"
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["emotion", "pixels", "Usage"]
    assert frame["Usage"].value_counts().to_dict() == {
        "Training": 56,
        "PrivateTest": 21,
        "PublicTest": 14,
    }
    assert all(len(p.split()) == 2304 for p in frame["pixels"])
    for usage, rows in frame.groupby("Usage"):
        assert sorted(rows["emotion"].unique()) == list(range(7)), usage
        assert rows["emotion"].value_counts().nunique() == 1, f"{usage} is not class-balanced"
    images, _ = read_fer_pixels(csv)
    assert images.std() > 20


def test_fer_icml_variant_keeps_leading_spaces(tmp_path):
    root = write_fer2013(tmp_path / "icml", n_train=7, n_public=7, n_private=7, variant="icml")
    frame = pd.read_csv(root / "icml_face_data.csv")
    assert list(frame.columns) == ["emotion", " Usage", " pixels"]
    assert all(len(p.split()) == 2304 for p in frame[" pixels"])
    assert not (root / "fer2013.csv").exists()


def test_clip_folder_has_frames_and_both_labels(clips):
    labels = pd.read_csv(clips / "labels.csv")
    assert list(labels.columns) == ["clip", "split", "smile", "emotion"]
    assert labels["split"].value_counts().to_dict() == {"train": 8, "val": 3, "test": 3}
    assert labels["smile"].between(0, 1).all() and labels["emotion"].between(0, 6).all()
    assert (labels["smile"] > 0.5).any() and (labels["smile"] < 0.5).any()
    for clip in labels["clip"]:
        frames = sorted((clips / "clips" / clip).iterdir())
        assert [f.name for f in frames] == [f"frame_{t:02d}.jpg" for t in range(10)]
        with Image.open(frames[0]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
    text = (clips / "labels.csv").read_text().splitlines()
    assert all(len(line.split(",")[2].split(".")[1]) == 3 for line in text[1:])


def test_same_seed_gives_identical_files(tmp_path):
    for name in ("a", "b"):
        write_smile_clips(tmp_path / name, n_train=2, n_val=1, n_test=1, seed=5)
        write_genki4k(tmp_path / name / "genki", n=5, seed=5)
    files_a = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    files_b = sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    assert files_a == files_b and len(files_a) > 40
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = write_genki4k(tmp_path / "c", n=5, seed=6)
    assert (other / "labels.txt").read_bytes() != (
        tmp_path / "a" / "genki" / "labels.txt"
    ).read_bytes()


def test_writer_stamps_its_folder_and_leaves_no_partial(genki):
    stamp = json.loads((genki / ".avlab_synth.json").read_text())
    assert stamp["generator"].endswith("write_genki4k")
    assert stamp["params"] == {"n": 60, "seed": 0}
    assert [p.name for p in genki.parent.iterdir()] == [genki.name]
    assert set(SYNTHESIZERS) == {"genki4k", "fer2013", "clips"}


def test_writer_refuses_to_overwrite_a_real_dataset(tmp_path):
    real = tmp_path / "GENKI-4K"
    real.mkdir()
    (real / "labels.txt").write_text("1 0 0 0\n")
    with pytest.raises(FileExistsError, match="not generated by avlab"):
        write_genki4k(real, n=3)
    assert (real / "labels.txt").read_text() == "1 0 0 0\n"


def test_renderer_shapes():
    rng = np.random.default_rng(0)
    person, expression = FaceIdentity.sample(rng), Expression.sample(rng, emotion=HAPPY)
    image = render_face(person, expression, Viewing.sample(rng), (50, 70), rng)
    assert image.shape == (50, 70, 3) and image.dtype == np.uint8
    frames, smiles = render_clip(person, expression, Viewing.sample(rng), 10, 32, rng)
    assert frames.shape == (10, 32, 32, 3) and smiles.shape == (10,)
    assert np.abs(smiles - expression.smile).max() < 0.1
    assert np.abs(frames[1:].astype(int) - frames[:-1]).mean() > 1, "the head should move"


def test_pixel_auroc_flags_a_planted_marker():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 8, 8))
    positive = np.arange(200) % 2 == 0
    assert per_pixel_auroc(images, positive).max() < 0.7
    images[positive, 3, 3] = 255
    images[~positive, 3, 3] = rng.integers(0, 200, (~positive).sum())
    assert per_pixel_auroc(images, positive).max() > 0.95


def test_no_single_pixel_separates_happy_or_smile(tmp_path):
    fer = write_fer2013(tmp_path / "fer", n_train=602, n_public=0, n_private=0, seed=3)
    images, emotions = read_fer_pixels(fer / "fer2013.csv")
    assert per_pixel_auroc(images, emotions == HAPPY).max() < 0.80

    genki = write_genki4k(tmp_path / "genki", n=600, seed=3)
    smiles = np.loadtxt(genki / "labels.txt")[:, 0] == 1
    grey = [
        cv2.resize(
            cv2.imread(str(genki / "files" / f"file{i:04d}.jpg"), cv2.IMREAD_GRAYSCALE),
            (48, 48),
            interpolation=cv2.INTER_AREA,
        )
        for i in range(1, 601)
    ]
    assert per_pixel_auroc(np.stack(grey), smiles).max() < 0.80
