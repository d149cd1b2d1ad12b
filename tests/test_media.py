"""Pictures reach the run folder and every logger; W&B jobs of one sweep share a group."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from avlab.audio.io import read_wav
from avlab.media import confusion_matrix_figure, log_audio, log_figure, roc_figure
from tests.conftest import train_py, train_py_env


def _module(tmp_path: Path, loggers: list) -> SimpleNamespace:
    trainer = SimpleNamespace(
        default_root_dir=str(tmp_path), is_global_zero=True, global_step=7, loggers=loggers
    )
    return SimpleNamespace(_trainer=trainer)


def test_log_figure_writes_the_png_and_sends_it_to_tensorboard(tmp_path):
    tensorboard = TensorBoardLogger(tmp_path, name="tb", version="")
    module = _module(tmp_path, [CSVLogger(tmp_path, name="csv"), tensorboard])
    fig = confusion_matrix_figure([[3, 1], [0, 4]], ["no", "yes"], "confusion")
    path = log_figure(module, "test/emotion_confusion_matrix", fig)
    tensorboard.experiment.flush()

    assert path == tmp_path / "media" / "test_emotion_confusion_matrix.png"
    assert plt.imread(path).shape[2] in (3, 4)  # a readable RGB(A) image
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    [image] = events.Images("test/emotion_confusion_matrix")
    assert image.step == 7 and image.width > 100
    assert not plt.get_fignums()  # the figure was closed


def test_log_figure_survives_a_logger_that_fails(tmp_path, caplog):
    class Broken:
        def log_image(self, **kwargs):
            raise RuntimeError("network down")

    Broken.__name__ = "WandbLogger"
    module = _module(tmp_path, [Broken()])
    path = log_figure(module, "test/smile_roc", roc_figure([0, 0.5, 1], [0, 0.9, 1], 0.9, "roc"))
    assert path.is_file() and "network down" in caplog.text


def test_log_audio_writes_a_wav_the_reader_reads_and_sends_it_to_tensorboard(tmp_path):
    tensorboard = TensorBoardLogger(tmp_path, name="tb", version="")
    tone = np.sin(2 * np.pi * 440 * np.arange(1600) / 16000).astype(np.float32) * 0.5
    path = log_audio(_module(tmp_path, [tensorboard]), "test/sample_0", tone, 16000)
    tensorboard.experiment.flush()

    audio, rate = read_wav(path)
    assert rate == 16000 and len(audio) == 1600
    assert np.abs(audio - tone).max() < 1e-3
    [clip] = EventAccumulator(str(tmp_path / "tb")).Reload().Audio("test/sample_0")
    assert clip.sample_rate == 16000 and clip.step == 7


@pytest.mark.slow
def test_wandb_offline_multirun_holds_the_pictures_and_the_sweep_group(tmp_path, data_dir):
    result = train_py(
        tmp_path,
        "-m",
        "hydra.sweep.dir=" + str(tmp_path / "sweep_2026"),
        "data=smile_tiny",
        "model.net.lstm_hidden=16",
        "logger=wandb",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=2",
        "trainer.num_sanity_val_steps=0",
        "optim.lr=1e-3,2e-3",
        log_dir=tmp_path,
        data_dir=data_dir,
        env=train_py_env(WANDB_MODE="offline", WANDB_SILENT="true"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        job_dir = tmp_path / "sweep_2026" / job
        assert (job_dir / "media" / "test_emotion_confusion_matrix.png").is_file()
        [run_dir] = list((job_dir / "wandb").glob("offline-run-*"))
        images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
        assert any("emotion_confusion_matrix" in p.name for p in images), images
        [log_file] = list(run_dir.glob("*.wandb"))
        record = log_file.read_bytes()
        assert b"smile_pretrain-sweep_2026" in record  # the shared group
        assert f"optim.lr={'0.001' if job == '0' else '0.002'}".encode() in record  # its tag
        assert len(images) == 2  # its own pictures only: job 1 did not log into job 0's run
