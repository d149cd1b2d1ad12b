"""End to end on tiny generated data: a run logs loss beside chance and a bounded temperature,
and eval.py reproduces its test metrics from the checkpoint alone."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from avlab.run import evaluate, train
from tests.conftest import compose_config


@pytest.mark.slow
def test_short_run_logs_chance_and_temperature_and_eval_reproduces_it(make_cfg, tmp_path, data_dir):
    cfg = make_cfg(
        "experiment=face_voice",
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
    )
    record = train(cfg)
    assert record["status"] == "completed"
    metrics = record["metrics"]
    assert metrics["test/match_acc"] == pytest.approx(
        0.5 * (metrics["test/match_acc_v2f"] + metrics["test/match_acc_f2v"])
    )
    assert metrics["test/recall_at_1"] <= metrics["test/recall_at_5"]
    assert 0.0 < metrics["val/loss_chance"] <= math.log(cfg.data.batch_size) + 1e-6
    assert record["optimized_metric"] == "val/match_acc"

    out = Path(cfg.paths.output_dir)
    with (out / "csv/metrics.csv").open() as handle:
        temperatures = [
            float(r["train/temperature"])
            for r in csv.DictReader(handle)
            if r.get("train/temperature")
        ]
    assert temperatures and all(0.05 <= t <= 2.0 for t in temperatures)

    eval_cfg = compose_config(
        "eval", [f"ckpt={out / 'checkpoints/best.ckpt'}"], tmp_path / "eval", data_dir
    )
    result = evaluate(eval_cfg)
    for name, value in metrics.items():
        if name.startswith("test/"):
            assert result["metrics"][name] == pytest.approx(value, abs=1e-6), name
