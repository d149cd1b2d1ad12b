"""Smile loaders on small fixtures in each real format: good files load, bad ones name themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avlab.data_utils import DatasetError, ensure_generated
from avlab.tasks.smile.data import (
    FrameTransform,
    Genki4kDataset,
    SmileClipDataset,
    SmileDataModule,
    genki_image_path,
    read_clip_labels,
    read_fer2013_csv,
    read_genki_labels,
)


def _gray(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def _write_genki(root: Path, labels: list[str]) -> Path:
    (root / "files").mkdir(parents=True)
    for i in range(len(labels)):
        Image.fromarray(_gray(i, 60 + 7 * i)).save(root / "files" / f"file{i + 1:04d}.jpg")
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    return root


def _fer_row(emotion, usage, pixels=None) -> list[str]:
    pixels = " ".join(map(str, _gray(1).ravel())) if pixels is None else pixels
    return [str(emotion), pixels, usage]


def _write_fer(
    path: Path, rows: list[list[str]], header="emotion,pixels,Usage", order=(0, 1, 2)
) -> Path:
    lines = [header] + [",".join(row[i] for i in order) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_genki_reads_labels_and_images_of_any_size(tmp_path):
    root = _write_genki(tmp_path / "GENKI-4K", ["1 0.1 -0.2 0.0", "0 0 0 0", "1 -0.3 0.1 0.05"])
    labels = read_genki_labels(root)
    assert labels.shape == (3, 4) and labels[:, 0].tolist() == [1, 0, 1]
    dataset = Genki4kDataset(root, None, FrameTransform(image_size=32, seq_len=10))
    sample = dataset[2]
    assert sample["frames"].shape == (10, 1, 32, 32)
    assert sample["smile"].item() == 1.0 and sample["smile_mask"] and not sample["emotion_mask"]


def test_genki_faces_are_decoded_once_and_give_the_same_frames(tmp_path):
    root = _write_genki(tmp_path / "GENKI-4K", ["1 0 0 0", "0 0 0 0"])
    dataset = Genki4kDataset(root, None, FrameTransform(image_size=32, seq_len=10))
    uncached = Genki4kDataset(root, None, FrameTransform(image_size=32, seq_len=10), cache=False)
    first = dataset[1]["frames"]
    assert torch.equal(uncached[1]["frames"], first)
    genki_image_path(root, 1).unlink()  # a second read would fail: the crop must come from memory
    assert torch.equal(dataset[1]["frames"], first)
    with pytest.raises(DatasetError, match="missing"):
        uncached[1]


def test_genki_bad_label_line_names_file_and_line(tmp_path):
    root = _write_genki(tmp_path / "g", ["1 0 0 0", "1 0 0", "0 0 0 0"])
    with pytest.raises(DatasetError, match=r"labels\.txt, line 2: expected 4 values"):
        read_genki_labels(root)
    (root / "labels.txt").write_text("1 0 0 0\n2 0 0 0\n")
    with pytest.raises(DatasetError, match="line 2: smile label must be 0 or 1"):
        read_genki_labels(root)


def test_corrupt_image_gives_clear_error_naming_the_file(tmp_path):
    root = _write_genki(tmp_path / "g", ["1 0 0 0", "0 0 0 0"])
    (root / "files" / "file0002.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    dataset = Genki4kDataset(root, None, FrameTransform(image_size=32))
    dataset[0]
    with pytest.raises(DatasetError, match=r"file0002\.jpg: cannot decode image"):
        dataset[1]


def test_genki_missing_image_is_reported_at_setup(tmp_path):
    root = _write_genki(tmp_path / "g", ["1 0 0 0", "0 0 0 0"])
    (root / "files" / "file0001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing, first .*file0001\.jpg"):
        Genki4kDataset(root, None, FrameTransform())


def test_fer_both_published_headers_read_the_same(tmp_path):
    rows = [_fer_row(3, "Training"), _fer_row(0, "PublicTest"), _fer_row(6, "PrivateTest")]
    standard = _write_fer(tmp_path / "fer2013.csv", rows)
    icml = _write_fer(
        tmp_path / "icml_face_data.csv", rows, header="emotion, Usage, pixels", order=(0, 2, 1)
    )
    for path in (standard, icml):
        images, emotions, splits = read_fer2013_csv(path)
        assert images.shape == (3, 48, 48) and images.dtype == np.uint8
        assert emotions.tolist() == [3, 0, 6]
        assert splits.tolist() == ["train", "val", "test"]
        assert np.array_equal(images[0], _gray(1))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_fer_row(3, "Training", pixels="1 2 3"), "row 3: expected 2304 pixels, got 3"),
        (_fer_row(9, "Training"), "row 3: emotion must be in 0..6"),
        (_fer_row("x", "Training"), "row 3: emotion is not an integer"),
        (_fer_row(2, "Validation"), "row 3: Usage must be one of"),
        (
            _fer_row(2, "Training", pixels=" ".join(["300"] * 2304)),
            "row 3: pixel values must be in 0..255",
        ),
    ],
)
def test_fer_malformed_row_names_file_and_row(tmp_path, row, message):
    path = _write_fer(tmp_path / "fer2013.csv", [_fer_row(1, "Training"), row])
    with pytest.raises(DatasetError, match=f"fer2013.csv, {message}"):
        read_fer2013_csv(path)


def _write_clips(root: Path, rows: list[tuple[str, str, str, str]], frames: int = 10) -> Path:
    for clip, *_ in rows:
        (root / "clips" / clip).mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(_gray(t, 40)).save(root / "clips" / clip / f"frame_{t:02d}.jpg")
    text = "clip,split,smile,emotion\n" + "\n".join(",".join(r) for r in rows) + "\n"
    (root / "labels.csv").write_text(text)
    return root


def test_clip_dataset_carries_both_labels(tmp_path):
    root = _write_clips(tmp_path / "c", [("a", "train", "0.8", "3"), ("b", "test", "0.1", "4")])
    sample = SmileClipDataset(root, "test", FrameTransform(image_size=32))[0]
    assert sample["frames"].shape == (10, 1, 32, 32)
    assert sample["smile"].item() == pytest.approx(0.1) and sample["emotion"].item() == 4
    assert sample["smile_mask"] and sample["emotion_mask"]


def test_clip_labels_bad_row_names_file_and_row(tmp_path):
    root = _write_clips(tmp_path / "c", [("a", "train", "1.7", "3")])
    with pytest.raises(
        DatasetError, match=r"labels\.csv, row 2: smile intensity must be in \[0, 1\]"
    ):
        read_clip_labels(root)


def test_eval_frames_are_identical_across_reads_and_training_frames_vary(tmp_path):
    root = _write_genki(tmp_path / "g", ["1 0 0 0"])
    eval_ds = Genki4kDataset(root, None, FrameTransform(image_size=32, augment=False))
    assert torch.equal(eval_ds[0]["frames"], eval_ds[0]["frames"])
    train_ds = Genki4kDataset(root, None, FrameTransform(image_size=32, augment=True))
    assert not torch.equal(train_ds[0]["frames"], train_ds[0]["frames"])
    frames = eval_ds[0]["frames"]
    assert not torch.equal(frames[0], frames[1]), "a still must be jittered over time"


def test_mix_draws_sources_in_the_configured_ratio(tmp_path):
    genki = _write_genki(tmp_path / "genki", [f"{i % 2} 0 0 0" for i in range(40)])
    rows = [_fer_row(i % 7, "Training") for i in range(200)] + [
        _fer_row(1, "PublicTest"),
        _fer_row(2, "PrivateTest"),
    ]
    (tmp_path / "fer").mkdir()
    _write_fer(tmp_path / "fer" / "fer2013.csv", rows)
    dm = SmileDataModule(
        root=str(tmp_path),
        sources={
            "genki": {"format": "genki4k", "path": str(genki), "synth": None},
            "fer": {"format": "fer2013", "path": "fer", "synth": None},
        },
        image_size=16,
        batch_size=50,
        mix={"genki": 0.5, "fer": 0.5},
        val_fraction=0.1,
        test_fraction=0.1,
    )
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(0)
    sources = torch.cat([b["source"] for b in dm.train_dataloader()])
    genki_share = (sources == 0).float().mean().item()
    assert 0.4 < genki_share < 0.6, genki_share  # 32 GENKI vs 200 FER samples unmixed: 0.14


def test_real_dataset_folders_are_never_written_and_missing_ones_are_clear(tmp_path):
    real = _write_genki(tmp_path / "real", ["1 0 0 0"])
    before = sorted(p.name for p in real.rglob("*"))

    def must_not_run(root, **params):
        raise AssertionError("generator ran on a real dataset")

    ensure_generated(real, "genki", must_not_run, {"n": 10})
    assert sorted(p.name for p in real.rglob("*")) == before
    with pytest.raises(DatasetError, match="not found, and generation is off"):
        ensure_generated(tmp_path / "absent", "genki", must_not_run, None)


def test_generated_data_is_reused_only_when_params_and_generator_version_match(
    tmp_path, monkeypatch
):
    import avlab.data_utils as data_utils

    runs = []

    def generate(root, **params):
        runs.append(params)
        with data_utils.staged_folder(root) as folder:
            data_utils.write_synth_stamp(folder, "test.generate", params)

    root = tmp_path / "genki"
    ensure_generated(root, "genki", generate, {"n": 10})
    ensure_generated(root, "genki", generate, {"n": 10})
    assert len(runs) == 1  # same params, same generator version: reused
    ensure_generated(root, "genki", generate, {"n": 12})
    assert len(runs) == 2  # params changed
    monkeypatch.setattr(data_utils, "SYNTH_VERSION", data_utils.SYNTH_VERSION + 1)
    ensure_generated(root, "genki", generate, {"n": 12})
    assert len(runs) == 3  # a newer generator does not reuse what an older one wrote


def _write_fer_folders(root: Path, per_class: int = 2) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(
            ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
        ):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(_gray(10 * c + i)).save(root / split / name / f"{split}_{i}.jpg")
    return root


def test_fer_image_folder_variant_maps_class_names_to_fer_order(tmp_path):
    from avlab.tasks.smile.data import read_fer2013_folders

    paths, emotions, splits = read_fer2013_folders(_write_fer_folders(tmp_path / "fer"))
    assert len(paths) == 28 and set(splits) == {"train", "test"}
    by_folder = {p.parent.name: int(e) for p, e in zip(paths, emotions, strict=True)}
    assert by_folder == {
        "angry": 0,
        "disgust": 1,
        "fear": 2,
        "happy": 3,
        "sad": 4,
        "surprise": 5,
        "neutral": 6,
    }
    (tmp_path / "fer" / "train" / "contempt").mkdir()
    with pytest.raises(DatasetError, match="unknown class folder"):
        read_fer2013_folders(tmp_path / "fer")


def test_fer_folder_source_holds_val_out_of_train(tmp_path):
    _write_fer_folders(tmp_path / "fer", per_class=10)
    dm = SmileDataModule(
        root=str(tmp_path),
        sources={"fer": {"format": "fer2013_folders", "path": "fer", "synth": None}},
        image_size=16,
        val_fraction=0.2,
    )
    dm.setup()
    sizes = {split: len(ds) for split, ds in dm.datasets["fer"].items()}
    assert sizes == {"train": 56, "val": 14, "test": 70}


def test_genki_face_crop_finds_a_real_face_and_counts_images_without_one(tmp_path, caplog):
    import skimage.data

    root = tmp_path / "g"
    (root / "files").mkdir(parents=True)
    Image.fromarray(skimage.data.astronaut()).save(root / "files" / "file0001.jpg")
    Image.fromarray(_gray(3, 120)).save(root / "files" / "file0002.jpg")  # noise: no face
    (root / "labels.txt").write_text("1 0 0 0\n0 0 0 0\n")
    dm = SmileDataModule(
        root=str(tmp_path),
        sources={"genki": {"format": "genki4k", "path": "g", "synth": None}},
        image_size=32,
        val_fraction=0.0,
        test_fraction=0.0,
    )
    with caplog.at_level("INFO"):
        boxes = dm._face_boxes(root, 2, "haar")
    x, y, w, h = boxes[0]
    assert 100 < x < 250 and 0 <= y < 120 and 80 < w <= 512  # the astronaut's face, with margin
    assert boxes[1] is None
    assert "face found in 1 of 2 images; 1 fell back to a centre crop" in caplog.text


def test_face_boxes_are_cached_between_runs_and_searched_again_when_an_image_changes(
    tmp_path, monkeypatch, caplog
):
    from avlab.tasks.smile import data as smile_data
    from avlab.tasks.smile.synth import write_genki4k

    root = write_genki4k(tmp_path / "g", n=12, seed=5)
    before = sorted(p.name for p in root.rglob("*"))
    cache = tmp_path / "cache"

    def boxes(path: Path = root) -> dict:
        dm = SmileDataModule(
            root=str(tmp_path),
            sources={"genki": {"format": "genki4k", "path": "g", "synth": None}},
            image_size=32,
            face_box_cache=str(cache),
        )
        return dm._face_boxes(path, 12, "haar")

    searched = boxes()
    assert len(list(cache.glob("*.json"))) == 1
    assert sum(box is not None for box in searched.values()) >= 6  # faces were found

    # A second run reads them: the detector is never asked.
    real_box = smile_data.FaceCropper.box
    monkeypatch.setattr(smile_data.FaceCropper, "box", lambda *a: pytest.fail("searched again"))
    with caplog.at_level("INFO"):
        assert boxes() == searched
    assert "face boxes read from" in caplog.text
    assert sorted(p.name for p in root.rglob("*")) == before  # the dataset folder is only read

    # A changed image (another size) makes the cache miss, and the boxes are searched again.
    calls = []
    monkeypatch.setattr(
        smile_data.FaceCropper, "box", lambda self, im: calls.append(1) or real_box(self, im)
    )
    image = genki_image_path(root, 3)
    Image.fromarray(_gray(7, 90)).save(image)
    again = boxes()
    assert len(calls) == 12 and again[3] is None and again[0] == searched[0]

    # A cache file that is not what we wrote (a box that is not 4 integers, or no JSON at all)
    # is ignored with a warning, and rewritten.
    [file] = cache.glob("*.json")
    stored = json.loads(file.read_text())
    stored["boxes"][0] = [1, 2, "x", 4]
    for text in (json.dumps(stored), "not json {"):
        file.write_text(text)
        calls.clear()
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert boxes() == again
        assert len(calls) == 12 and "ignoring the face-box cache" in caplog.text
    calls.clear()
    assert boxes() == again and not calls


def test_a_face_box_cache_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path, caplog):
    from avlab.tasks.smile.synth import write_genki4k

    root = write_genki4k(tmp_path / "g", n=4, seed=5)
    (tmp_path / "not_a_folder").write_text("")
    dm = SmileDataModule(
        root=str(tmp_path),
        sources={"genki": {"format": "genki4k", "path": "g", "synth": None}},
        image_size=32,
        face_box_cache=str(tmp_path / "not_a_folder" / "boxes"),
    )
    with caplog.at_level("WARNING"):
        boxes = dm._face_boxes(root, 4, "haar")
    assert sorted(boxes) == [0, 1, 2, 3]
    assert "could not keep the face boxes" in caplog.text


def test_fer_row_with_an_extra_field_names_the_file(tmp_path):
    path = _write_fer(tmp_path / "fer2013.csv", [_fer_row(1, "Training")])
    path.write_text(path.read_text() + "2," + " ".join(["7"] * 2304) + ",Training,extra\n")
    # Before: a bare pandas ParserError that did not say which file.
    with pytest.raises(DatasetError, match=r"fer2013\.csv: not a readable FER2013 CSV .*line 3"):
        read_fer2013_csv(path)


def test_clip_labels_short_row_names_file_and_row(tmp_path):
    root = _write_clips(tmp_path / "c", [("a", "train", "0.5", "3")])
    (root / "labels.csv").write_text((root / "labels.csv").read_text() + "a,test,0.2\n")
    # Before: a raw TypeError from float(None).
    with pytest.raises(DatasetError, match=r"labels\.csv, row 3: expected the 4 fields"):
        read_clip_labels(root)


def test_clip_with_the_wrong_number_of_frames_is_named(tmp_path):
    root = _write_clips(tmp_path / "c", [("short", "test", "0.2", "1")], frames=7)
    with pytest.raises(DatasetError, match=r"clips/short: clip has 7 frames, the model takes 10"):
        SmileClipDataset(root, "test", FrameTransform(image_size=32))[0]


def test_fer_folder_variant_with_a_missing_class_or_empty_test_is_refused(tmp_path):
    import shutil

    from avlab.tasks.smile.data import read_fer2013_folders

    root = _write_fer_folders(tmp_path / "fer")
    shutil.rmtree(root / "train" / "disgust")
    with pytest.raises(DatasetError, match=r"train: class folder\(s\) \['disgust'\] missing"):
        read_fer2013_folders(root)
    root = _write_fer_folders(tmp_path / "fer2")
    for image in (root / "test").rglob("*.jpg"):
        image.unlink()
    with pytest.raises(DatasetError, match=r"fer2/test: no images"):
        read_fer2013_folders(root)


def test_an_empty_split_names_the_sources(tmp_path):
    _write_clips(tmp_path / "c", [("a", "train", "0.5", "3"), ("b", "train", "0.2", "1")])
    dm = SmileDataModule(
        root=str(tmp_path),
        sources={"clips": {"format": "clips", "path": "c", "synth": None}},
        image_size=16,
    )
    dm.setup()
    with pytest.raises(DatasetError, match=r"the val split is empty: .*clips: .*c\)"):
        dm.val_dataloader()


def test_fer_csv_with_a_wrong_header_lists_what_it_found(tmp_path):
    path = _write_fer(
        tmp_path / "fer2013.csv", [_fer_row(1, "Training")], header="label,pixels,Usage"
    )
    with pytest.raises(DatasetError, match=r"fer2013\.csv: missing column\(s\) \['emotion'\]"):
        read_fer2013_csv(path)
