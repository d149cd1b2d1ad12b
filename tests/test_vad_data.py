"""Video anomaly data: the scene generator writes the UCSDped layout, the loader reads it (and a
hand-made UCSDped fixture) through anomalib's dataset, and bad input is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import VideoBatch
from anomalib.data.utils import Split
from PIL import Image

from avlab.data_utils import SYNTH_STAMP, DatasetError
from avlab.tasks.vad.data import UCSDpedFrames, VadDataModule, scan_ucsd_split
from avlab.tasks.vad.synth import write_ucsd_scene

TINY = {"n_train": 1, "n_test": 2, "n_frames": 12, "anomalies": ["loiter", "bike"]}


def _write_fixture(root: Path, n_frames: int = 4, anomalous: tuple[int, ...] = (2, 3)) -> Path:
    """A tiny hand-made UCSDped2 folder: one grey training video, one test video with masks."""
    category = root / "UCSDped2"
    rng = np.random.default_rng(0)
    for split, video in (("Train", "Train001"), ("Test", "Test001")):
        (category / split / video).mkdir(parents=True)
        for t in range(n_frames):
            grey = rng.integers(0, 255, (24, 36), dtype=np.uint8)
            Image.fromarray(grey).save(category / split / video / f"{t + 1:03d}.tif")
    (category / "Test" / "Test001_gt").mkdir()
    for t in range(n_frames):
        mask = np.zeros((24, 36), np.uint8)
        if t in anomalous:
            mask[5:10, 5:12] = 255
        Image.fromarray(mask).save(category / "Test" / "Test001_gt" / f"{t + 1:03d}.bmp")
    return category


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_ucsd_scene(tmp_path_factory.mktemp("vad") / "scene", **TINY)


def test_generated_scene_has_the_ucsdped_layout_and_masks_mark_the_event(scene):
    assert sorted(p.name for p in (scene / "Train").iterdir()) == ["Train001"]
    assert sorted(p.name for p in (scene / "Test").iterdir()) == [
        "Test001",
        "Test001_gt",
        "Test002",
        "Test002_gt",
    ]
    frames = sorted((scene / "Test" / "Test002").glob("*.tif"))
    masks = sorted((scene / "Test" / "Test002_gt").glob("*.bmp"))
    assert [p.name for p in frames] == [f"{t:03d}.tif" for t in range(1, 13)]
    assert [p.stem for p in masks] == [p.stem for p in frames]
    with Image.open(frames[0]) as image:
        assert image.format == "TIFF" and image.size == (180, 120) and image.mode == "RGB"
    marked = [bool(np.asarray(Image.open(m)).any()) for m in masks]
    assert any(marked) and not all(marked), "the event must cover some frames, not all"
    assert json.loads((scene / SYNTH_STAMP).read_text())["params"]["n_frames"] == 12


def test_same_seed_gives_the_same_bytes(scene, tmp_path):
    again = write_ucsd_scene(tmp_path / "again", **TINY)
    for rel in ("Train/Train001/007.tif", "Test/Test002/005.tif", "Test/Test002_gt/009.bmp"):
        assert (scene / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_loader_reads_the_generated_scene_as_anomalib_video_items(scene):
    train = UCSDpedFrames(scene.parent, scene.name, "train", clip_length_in_frames=2)
    test = UCSDpedFrames(scene.parent, scene.name, "test", clip_length_in_frames=2)
    assert len(train) == 11 and len(test) == 22
    item = test[3]
    assert item.image.shape == (2, 3, 120, 180) and item.image.dtype == torch.float32
    assert item.gt_mask.shape == (120, 180)
    assert int(item.gt_label) == int(item.gt_mask.any())
    assert item.video_path.endswith("Test001") and int(item.frames) == 4
    assert train[0].gt_mask is None


def test_loader_reads_a_hand_made_ucsdped_fixture_with_frame_labels_from_masks(tmp_path):
    _write_fixture(tmp_path, n_frames=4, anomalous=(2, 3))
    test = UCSDpedFrames(tmp_path, "UCSDped2", "test", clip_length_in_frames=2)
    assert len(test) == 3
    assert [int(test[i].frames) for i in range(3)] == [1, 2, 3]
    assert [int(test[i].gt_label) for i in range(3)] == [0, 1, 1]
    assert test[0].image.shape == (2, 3, 24, 36), "grey frames become 3-channel"
    batch = VideoBatch.collate([test[i] for i in range(3)])
    assert batch.image.shape == (3, 2, 3, 24, 36) and batch.gt_label.tolist() == [0, 1, 1]


def test_missing_train_folder_is_named(tmp_path):
    category = _write_fixture(tmp_path)
    for frame in (category / "Train" / "Train001").iterdir():
        frame.unlink()
    (category / "Train" / "Train001").rmdir()
    (category / "Train").rmdir()
    with pytest.raises(DatasetError, match=r"UCSDped2/Train: missing Train folder"):
        UCSDpedFrames(tmp_path, "UCSDped2", "train")
    assert len(scan_ucsd_split(category, Split.TEST)) == 1, "the test split alone still reads"


def test_mask_count_mismatch_is_named(tmp_path):
    category = _write_fixture(tmp_path, n_frames=4)
    (category / "Test" / "Test001_gt" / "004.bmp").unlink()
    with pytest.raises(DatasetError, match=r"Test001_gt: 3 \.bmp masks for 4 frames"):
        UCSDpedFrames(tmp_path, "UCSDped2", "test")


def test_missing_ground_truth_folder_is_named(tmp_path):
    category = _write_fixture(tmp_path)
    for mask in (category / "Test" / "Test001_gt").iterdir():
        mask.unlink()
    (category / "Test" / "Test001_gt").rmdir()
    with pytest.raises(DatasetError, match=r"Test001_gt: missing ground-truth folder"):
        UCSDpedFrames(tmp_path, "UCSDped2", "test")


def test_unreadable_frame_is_named_when_read(tmp_path):
    category = _write_fixture(tmp_path, n_frames=4)
    broken = category / "Test" / "Test001" / "003.tif"
    broken.write_bytes(b"not a tiff")
    test = UCSDpedFrames(tmp_path, "UCSDped2", "test", clip_length_in_frames=2)
    test[0]
    with pytest.raises(DatasetError, match=r"Test001/003\.tif: cannot decode frame"):
        test[1]


def test_datamodule_generates_the_default_then_only_reads(tmp_path):
    module = VadDataModule(root=str(tmp_path), category="scene", synth=TINY, train_batch_size=4)
    module.prepare_data()
    module.setup()
    batch = next(iter(module.train_dataloader()))
    assert isinstance(batch, VideoBatch) and batch.image.shape == (4, 2, 3, 120, 180)
    assert len(set(batch.video_path)) == 1
    real = tmp_path / "real"
    _write_fixture(real)
    untouched = sorted(p.name for p in (real / "UCSDped2" / "Test").iterdir())
    VadDataModule(root=str(real), category="UCSDped2", synth=TINY).prepare_data()
    assert sorted(p.name for p in (real / "UCSDped2" / "Test").iterdir()) == untouched
    with pytest.raises(DatasetError, match="generation is off"):
        VadDataModule(root=str(tmp_path), category="absent", synth=None).prepare_data()
