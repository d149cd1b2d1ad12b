"""The play command runs a checkpoint on a generated clip and writes its timeline and plot."""

import csv
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from avlab.run import build_module
from avlab.tasks.smile.data import FrameTransform
from avlab.tasks.smile.play import PlayArgs, load_net, main, play, read_frames, score_windows
from avlab.tasks.smile.synth import write_smile_clips


@pytest.fixture
def smile_checkpoint(make_cfg, tmp_path) -> Path:
    """A checkpoint laid out as train.py writes it (weights + resolved config)."""
    cfg = make_cfg("model.net.lstm_hidden=16")
    module = build_module(cfg)
    path = tmp_path / "run" / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "avlab_config": OmegaConf.to_container(cfg, resolve=True),
        },
        path,
    )
    return path


def test_play_on_a_generated_clip_writes_timeline_and_plot(smile_checkpoint, tmp_path, capsys):
    clips = tmp_path / "clips"
    write_smile_clips(clips, n_train=1, n_val=0, n_test=0, n_frames=14)
    clip_dir = next((clips / "clips").iterdir())
    out = tmp_path / "play"
    verdict = play(
        PlayArgs(ckpt=str(smile_checkpoint), input=str(clip_dir), out=str(out), stride=2)
    )
    printed = capsys.readouterr().out
    assert "smile [" in printed and f"verdict: {verdict.text}" in printed
    with (out / "timeline.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == [9, 11, 13]
    net, config = load_net(smile_checkpoint)
    transform = FrameTransform(image_size=config.data.image_size, seq_len=config.data.seq_len)
    _, smiles, _ = score_windows(net, read_frames(clip_dir), transform, stride=2)
    assert [float(r["smile"]) for r in rows] == pytest.approx(list(smiles), abs=1e-4)
    emotions = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert all(abs(sum(float(r[e]) for e in emotions) - 1) < 1e-3 for r in rows)
    with Image.open(out / "smile.png") as image:
        assert image.size[0] > 300


def test_play_rejects_bad_input_and_foreign_checkpoints(smile_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        read_frames(tmp_path / "empty")
    foreign = tmp_path / "foreign.ckpt"
    torch.save(
        {
            "state_dict": {},
            "avlab_config": {
                "model": {"module": {"_target_": "avlab.tasks.face_voice.module.FaceVoiceModule"}}
            },
        },
        foreign,
    )
    with pytest.raises(ValueError, match="a checkpoint of avlab.tasks.face_voice"):
        play(PlayArgs(ckpt=str(foreign), input=str(tmp_path / "empty")))
    with pytest.raises(SystemExit, match="missing"):
        main([f"ckpt={smile_checkpoint}"])
