"""Face–voice data: both real layouts as written by the generator, read back by the loaders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from PIL import Image

from avlab.data_utils import DatasetError
from avlab.tasks.face_voice.data import (
    FaceVoiceDataModule,
    Media,
    read_paired,
    read_voxceleb,
    read_voxceleb_meta,
)
from avlab.tasks.face_voice.synth import sample_person, write_paired, write_voxceleb

# 10 people, the last 3 in test; the determinism test writes the same again.
TINY_VOX = dict(
    n_identities=10,
    n_test=3,
    clips_per_identity=2,
    utterances_per_clip=1,
    frames_per_clip=1,
    image_size=48,
    seed=3,
)


@pytest.fixture(scope="module")
def vox_root(tmp_path_factory) -> Path:
    """A small generated dataset in the VoxCeleb1 layout: 10 people, the last 3 in test."""
    root = tmp_path_factory.mktemp("fv") / "vox"
    return write_voxceleb(root, **TINY_VOX)


@pytest.fixture(scope="module")
def paired_root(tmp_path_factory) -> Path:
    """A small generated dataset of paired folders: 10 people, 2 pairs each."""
    root = tmp_path_factory.mktemp("fv") / "paired"
    return write_paired(root, n_identities=10, pairs_per_identity=2, image_size=48, seed=4)


def _copy(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / root.name
    shutil.copytree(root, target)
    return target


def test_voxceleb_layout_is_what_the_published_readers_expect(vox_root):
    meta = pd.read_csv(vox_root / "vox1_meta.csv", sep="\t")
    assert list(meta.columns) == ["VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set"]
    assert meta["VoxCeleb1 ID"].tolist()[:2] == ["id10001", "id10002"]
    assert (meta["Set"] == "test").sum() == 3 and set(meta["Gender"]) <= {"m", "f"}
    wavs = sorted((vox_root / "wav" / "id10001").glob("*/*.wav"))
    assert len(wavs) == 2 and wavs[0].name == "00001.wav"
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.duration > 1.0
    name = meta["VGGFace1 ID"][0]
    frames = sorted((vox_root / "unzippedFaces" / name / "1.6").glob("*/*.jpg"))
    assert len(frames) == 2 and len(frames[0].stem) == 7
    assert Image.open(frames[0]).size == (48, 48)
    # face tracks and utterances come from the same YouTube clips
    assert {f.parent.name for f in frames} == {w.parent.name for w in wavs}


def test_voxceleb_datamodule_splits_by_identity(vox_root):
    dm = FaceVoiceDataModule(
        root=str(vox_root), val_fraction=0.3, batch_size=3, eval_pairs_per_identity=2
    )
    dm.prepare_data()
    dm.setup()
    names = {split: {p.name for p in people} for split, people in dm.people.items()}
    assert names["test"] == {"id10008", "id10009", "id10010"}
    assert len(names["val"]) == 2 and len(names["train"]) == 5
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["face"].shape == (3, 3, 48, 48) and batch["voice"].shape == (3, 24000)
    assert len(set(batch["identity"].tolist())) == 3  # a training batch never repeats a person
    test_items = [item["identity"].item() for item in dm.test_dataloader().dataset]
    assert test_items == [0, 1, 2, 0, 1, 2]  # round by round: each person's first pair, then second


def test_evaluation_items_are_the_same_every_time(vox_root):
    dm = FaceVoiceDataModule(root=str(vox_root), val_fraction=0.3)
    dm.setup()
    first, again = dm.val_dataloader().dataset[0], dm.val_dataloader().dataset[0]
    assert torch.equal(first["face"], again["face"]) and torch.equal(first["voice"], again["voice"])


def test_paired_folders_pair_files_by_stem(paired_root):
    people = read_paired(paired_root)
    assert len(people) == 10
    for person in people:
        assert [f.stem for f in person.faces] == [v.stem for v in person.voices] == ["00", "01"]
        assert person.faces[0].parent.name == person.voices[0].parent.name == person.name
    dm = FaceVoiceDataModule(
        root=str(paired_root), layout="paired", val_fraction=0.2, test_fraction=0.2, batch_size=2
    )
    dm.setup()
    sizes = {split: len(people) for split, people in dm.people.items()}
    assert sizes == {"train": 6, "val": 2, "test": 2}
    batch = next(iter(dm.val_dataloader()))
    assert batch["face"].shape[0] == 2 and torch.isfinite(batch["voice"]).all()


def test_flat_paired_folders_make_one_person_per_stem(tmp_path, paired_root):
    for kind, suffix in (("images", ".jpg"), ("audio", ".wav")):
        (tmp_path / kind).mkdir()
        for i, src in enumerate(sorted((paired_root / kind).rglob(f"*{suffix}"))[:3]):
            shutil.copy(src, tmp_path / kind / f"clip{i}{suffix}")
    people = read_paired(tmp_path)
    assert [p.name for p in people] == ["clip0", "clip1", "clip2"]


def test_flat_files_of_one_person_stay_together(tmp_path, paired_root):
    sources = {
        kind: sorted((paired_root / kind).rglob(f"*{suffix}"))
        for kind, suffix in (("images", ".jpg"), ("audio", ".wav"))
    }
    stems = ["ann_01", "ann_02", "bob-1", "bob-2", "cy"]
    for kind, files in sources.items():
        (tmp_path / kind).mkdir()
        for stem, src in zip(stems, files, strict=False):
            shutil.copy(src, tmp_path / kind / f"{stem}{src.suffix}")
    people = {p.name: [f.stem for f in p.faces] for p in read_paired(tmp_path)}
    # Before, each file was a person, so ann_01 could be ann_02's negative in another split.
    assert people == {"ann": ["ann_01", "ann_02"], "bob": ["bob-1", "bob-2"], "cy": ["cy"]}
    by_prefix = read_paired(tmp_path, person_pattern=r"(\w).*")
    assert sorted(p.name for p in by_prefix) == ["a", "b", "c"]


def test_face_tracks_may_live_under_faces(vox_root, tmp_path):
    root = _copy(vox_root, tmp_path)
    (root / "unzippedFaces").rename(root / "faces")
    people = read_voxceleb(root)
    assert all(f.parts[-5] == "faces" for p in people["dev"] for f in p.faces)
    shutil.rmtree(root / "faces")
    with pytest.raises(DatasetError, match="no face-track folder"):
        read_voxceleb(root)


def test_an_unreadable_wav_is_named_in_the_error(vox_root, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not really a wav file")
    with pytest.raises(DatasetError, match="broken.wav"):
        Media().voice(bad, None)


def test_a_missing_face_folder_is_named_in_the_error(vox_root, tmp_path):
    root = _copy(vox_root, tmp_path)
    name = read_voxceleb_meta(root / "vox1_meta.csv")[4]["VGGFace1 ID"]
    shutil.rmtree(root / "unzippedFaces" / name)
    with pytest.raises(DatasetError, match=f"{name}.*face-track folder is missing"):
        read_voxceleb(root)


def test_a_malformed_meta_row_is_named_with_its_line(vox_root, tmp_path):
    root = _copy(vox_root, tmp_path)
    meta = root / "vox1_meta.csv"
    lines = meta.read_text().splitlines()
    lines[3] = "id10003\tSomebody\tm"  # two fields missing
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"vox1_meta.csv, line 4: expected 5"):
        read_voxceleb_meta(meta)


def test_a_file_without_its_partner_is_refused(paired_root, tmp_path):
    root = _copy(paired_root, tmp_path)
    orphan = next((root / "audio").rglob("01.wav"))
    orphan.unlink()
    with pytest.raises(DatasetError, match="01.jpg: no audio file"):
        read_paired(root)


def test_the_same_seed_writes_the_same_images_and_meta(vox_root, tmp_path):
    again = write_voxceleb(tmp_path / "again", **TINY_VOX)
    assert (again / "vox1_meta.csv").read_bytes() == (vox_root / "vox1_meta.csv").read_bytes()
    frame = next((vox_root / "unzippedFaces").rglob("*.jpg")).relative_to(vox_root)
    assert (again / frame).read_bytes() == (vox_root / frame).read_bytes()
    wavs = sorted(p.relative_to(vox_root) for p in (vox_root / "wav").rglob("*.wav"))
    assert wavs == sorted(p.relative_to(again) for p in (again / "wav").rglob("*.wav"))


def test_faces_and_voices_share_latent_traits_with_noise():
    people = [sample_person(np.random.default_rng([9, i]), i) for i in range(400)]
    male = np.array([p.gender == "m" for p in people])
    pitch = np.array([p.voice.pitch for p in people])
    assert pitch[male].mean() + 20 < pitch[~male].mean()

    def corr(x, y):
        return float(np.corrcoef(x, y)[0, 1])

    age = np.array([p.age for p in people])
    build = np.array([p.build for p in people])
    assert corr(age, [p.face.hair_darkness for p in people]) < -0.8
    assert corr(age[male], pitch[male]) < -0.6
    assert corr(build, [p.voice.rate for p in people]) < -0.7
    assert 0.7 < corr(build, [p.face.face_width for p in people]) < 0.99  # learnable, not exact
    # nothing else links the modalities: skin tone says nothing about the voice
    assert abs(corr([p.face.skin_tone for p in people], pitch)) < 0.15
