"""TTS end to end: a short run on tiny data writes media, eval.py reproduces its test metrics,
synthesize writes a readable 22,050 Hz wav; the default run reaches the issue's bars."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avlab.audio import synthesize as espeak
from avlab.run import evaluate, train
from avlab.tasks.tts.data import MelFeatures
from avlab.tasks.tts.synth import VOICE
from avlab.tasks.tts.synthesize import main as synthesize_main
from tests.conftest import compose_config

BARS = {
    "test/stop_f1": (">=", 0.95),
    "test/focus_rate": (">=", 0.7),
    "test/duration_ok": (">=", 0.9),
    "test/stop_failures": ("<=", 0.05),
}


def test_short_run_with_injected_nan_skips_steps_keeps_weights_finite_and_writes_media(
    make_cfg, tmp_path, data_dir
):
    cfg = make_cfg(
        "experiment=tts",
        "debug=inject_nan",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "model.module.free_running_val=2",
        "data.batch_size=8",
    )
    record = train(cfg)
    assert record["status"] == "completed"
    assert record["metrics"]["nan_guard/skipped_steps"] == 2
    out = Path(cfg.paths.output_dir)
    assert list((out / "media").glob("epoch_000/val_*.png"))
    assert sf.info(str(next((out / "media").glob("epoch_000/*.wav")))).samplerate == 22_050
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(out / "checkpoints" / name, weights_only=True)
        weights = checkpoint["state_dict"].values()
        assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point()), name
    assert checkpoint["tts_symbols"][:2] == ["<pad>", "<eos>"]

    wav = tmp_path / "hello.wav"
    synthesize_main(
        [
            f"ckpt={out / 'checkpoints/best.ckpt'}",
            "text=The dog saw the cat.",
            f"out={wav}",
            "max_seconds=2",
        ]
    )
    info = sf.info(str(wav))
    assert info.samplerate == 22_050 and info.channels == 1
    assert 0 < info.frames <= 2.1 * 22_050


@pytest.mark.slow
def test_default_run_reaches_the_bars_on_held_out_sentences(make_cfg, tmp_path, data_dir):
    cfg = make_cfg("experiment=tts", tiny=False)
    record = train(cfg)
    assert record["status"] == "completed"
    metrics = record["metrics"]
    for name, (op, bar) in BARS.items():
        value = metrics[name]
        assert (value >= bar) if op == ">=" else (value <= bar), f"{name}={value} vs {op} {bar}"
    assert metrics["test/mcd"] <= 0.7 * metrics["test/mcd_baseline"]

    out = Path(cfg.paths.output_dir)
    ckpt = out / "checkpoints/best.ckpt"
    eval_cfg = compose_config("eval", [f"ckpt={ckpt}"], tmp_path / "eval", data_dir)
    result = evaluate(eval_cfg)
    assert result["metrics"]["test/mel_l1"] == pytest.approx(metrics["test/mel_l1"], abs=1e-5)

    sentence = "The old farmer found the small dog near the river."
    wav = tmp_path / "held_out.wav"
    synthesize_main([f"ckpt={ckpt}", f"text={sentence}", f"out={wav}"])
    audio, rate = sf.read(str(wav), dtype="float32")
    assert rate == 22_050
    features = MelFeatures(**cfg.data.features)
    reference = len(features(espeak(sentence, VOICE).astype(np.float32) / 32768))
    generated = math.ceil(len(audio) / cfg.data.features.hop_length)
    assert 0.8 <= generated / reference <= 1.25, (generated, reference)
