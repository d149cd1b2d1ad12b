"""The pronunciation presets end to end: every variant composes from its config and trains a
step on tiny generated data; eval.py reproduces a run's test metrics from the checkpoint alone;
and (slow) the default run reaches the issue's bars on held-out speakers."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from avlab.audio.phones import ARPABET
from avlab.run import evaluate, train
from avlab.tasks.pronunciation.transcribe import transcribe
from tests.conftest import compose_config, run_train_py

METRICS = (
    "per",
    "mdd_precision",
    "mdd_recall",
    "mdd_f1",
    "diagnosis_acc",
    "error_acc",
    "error_f1_weighted",
    "error_f1_macro",
)


@pytest.mark.parametrize("variant", ["simple", "transformer", "cross", "hierarchical"])
def test_each_variant_composes_and_trains_a_step(make_cfg, variant):
    cfg = make_cfg("experiment=pronunciation", f"model=pron_{variant}", "trainer.fast_dev_run=true")
    assert cfg.data.root.endswith("pronunciation_tiny/l2arctic")
    assert cfg.model.net.variant == variant and cfg.optimized_metric.startswith("val/")
    record = train(cfg)
    metrics = record["metrics"]
    assert math.isfinite(metrics["train/loss"]) and metrics["train/loss"] > 0
    assert {f"test/{m}" for m in METRICS} <= set(metrics)


@pytest.mark.slow
def test_short_run_logs_samples_and_eval_reproduces_its_test_metrics(
    make_cfg, tmp_path, data_dir, caplog
):
    cfg = make_cfg(
        "experiment=pronunciation",
        "model=pron_simple",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
    )
    with caplog.at_level(logging.INFO, logger="avlab.tasks.pronunciation.module"):
        record = train(cfg)
    assert record["status"] == "completed" and record["optimized_metric"] == "val/mdd_f1"
    # One sample table per validation epoch, in the run log.
    assert caplog.text.count("validation samples, epoch") == 2
    assert "errors_predicted" in caplog.text and "canonical" in caplog.text
    out = Path(cfg.paths.output_dir)
    eval_cfg = compose_config(
        "eval", [f"ckpt={out / 'checkpoints/best.ckpt'}"], tmp_path / "eval", data_dir
    )
    result = evaluate(eval_cfg)
    tested = {k: v for k, v in record["metrics"].items() if k.startswith("test/")}
    assert {f"test/{m}" for m in METRICS} <= set(tested)
    for name, value in tested.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-6), name

    # The checkpoint transcribes a wav file on its own (phones the model hears).
    wav = next(Path(cfg.data.root).glob("TLV/wav/*.wav"))
    phones = transcribe(out / "checkpoints/best.ckpt", wav)
    assert isinstance(phones, list) and set(phones) <= set(ARPABET)


@pytest.mark.slow
def test_default_run_reaches_the_bars_on_held_out_speakers(tmp_path):
    record = run_train_py(tmp_path, "experiment=pronunciation")
    metrics = record["metrics"]
    assert record["status"] == "completed"
    assert metrics["test/per"] <= 0.15, metrics
    assert metrics["test/mdd_f1"] >= 0.70, metrics
