"""Smile's loaders give the batches they gave before they were made cheaper, value for value.

The default run's accuracy figures (three seeds, conf/experiment/smile_pretrain.yaml) were
measured on those batches; a faster loader must not change a single one. The reference below is
the per-sample code the loaders had before (np.roll, torch arithmetic, five torch.tensor calls),
run on the same datamodule under the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import hydra
import numpy as np
import pytest
import torch

from avlab.tasks.smile import data as smile_data
from avlab.tasks.smile.data import FrameTransform


def _reference_still(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    base = self._prepare(image, rng)
    frames = [_reference_jitter(self, base, rng) for _ in range(self.still_len or self.seq_len)]
    return _reference_to_tensor(np.stack(frames))


def _reference_clip(self, frames: Sequence[np.ndarray], rng: np.random.Generator):
    flip = self.augment and rng.random() < 0.5
    out = [self._resize(f[:, ::-1] if flip else f) for f in frames]
    return _reference_to_tensor(np.stack(out))


def _reference_jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
    frame = np.roll(image, (int(dy), int(dx)), axis=(0, 1)).astype(np.float32)
    return frame * (1.0 + rng.uniform(-self.brightness, self.brightness))


def _reference_to_tensor(frames: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    return (tensor / 127.5 - 1.0).clamp(-1.5, 1.5).unsqueeze(1)


def _reference_sample(frames, smile, emotion, source):
    return {
        "frames": frames,
        "smile": torch.tensor(0.0 if smile is None else float(smile)),
        "smile_mask": torch.tensor(smile is not None),
        "emotion": torch.tensor(0 if emotion is None else int(emotion)),
        "emotion_mask": torch.tensor(emotion is not None),
        "source": torch.tensor(source),
    }


def _batches(datamodule) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Two training epochs and the validation and test passes, batch by batch."""
    train = datamodule.train_dataloader()
    epochs = []
    for epoch in range(2):
        train.set_epoch(epoch)
        epochs += list(train)
    return {
        "train": epochs,
        "val": list(datamodule.val_dataloader()),
        "test": list(datamodule.test_dataloader()),
    }


def _assert_identical(new: list[dict], reference: list[dict], split: str) -> None:
    assert len(new) == len(reference) > 0, split
    for step, (ours, theirs) in enumerate(zip(new, reference, strict=True)):
        assert ours.keys() == theirs.keys(), (split, step)
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype, (split, step, key)
            assert ours[key].shape == theirs[key].shape, (split, step, key)
            # Bitwise: torch.equal would call -0.0 and 0.0 equal.
            assert ours[key].numpy().tobytes() == theirs[key].numpy().tobytes(), (
                split,
                step,
                key,
            )


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=smile_tiny"],  # the default run's stills: one frame in training, ten in eval
        ["data=smile_tiny", "data.train_still_frames=null"],  # ten jittered frames a still
        ["data=smile_clips_tiny"],  # clips: flip and resize only
    ],
    ids=["stills", "stills-10-frames", "clips"],
)
def test_loaders_give_the_batches_of_the_reference_code(make_cfg, monkeypatch, overrides):
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")
    cfg = make_cfg("experiment=smile_pretrain", *overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    new = _batches(datamodule)
    with monkeypatch.context() as patch:
        patch.setattr(FrameTransform, "still", _reference_still)
        patch.setattr(FrameTransform, "clip", _reference_clip)
        patch.setattr(smile_data, "_sample", _reference_sample)
        reference = _batches(datamodule)
    for split in new:
        _assert_identical(new[split], reference[split], split)


def test_a_sample_holds_the_tensors_it_held_before():
    """dataset[i] (read by the demo and the evaluation scripts) is unchanged too: strides,
    dtypes and values of the frames, and of each label."""
    rng_seed = 7
    image = np.random.default_rng(0).integers(0, 256, (61, 53), dtype=np.uint8)
    transform = FrameTransform(image_size=48, seq_len=10, augment=True)
    ours = transform.still(image, np.random.default_rng(rng_seed))
    theirs = _reference_still(transform, image, np.random.default_rng(rng_seed))
    assert ours.stride() == theirs.stride() and ours.dtype == theirs.dtype
    assert ours.numpy().tobytes() == theirs.numpy().tobytes()
    for labels in [(1.0, None, 0), (None, 3, 1), (0.25, 6, 2), (-0.0, None, 0), (0.0, 1, 1)]:
        new, old = smile_data._sample(ours, *labels), _reference_sample(ours, *labels)
        for key in old:
            assert new[key].dtype == old[key].dtype, key
            assert new[key].numpy().tobytes() == old[key].numpy().tobytes(), (labels, key)
