"""End to end: a real short run leaves a complete run folder; eval reproduces its test metrics."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch

from avlab.run import evaluate, find_resume_checkpoint, train
from tests.conftest import REPO, TINY_SMILE_DATA, compose_config, train_py

SHORT_RUN = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=3",
    "trainer.num_sanity_val_steps=0",
]


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state.values() if torch.is_floating_point(t))


def _last_logged(csv_path: Path, column: str) -> float:
    with csv_path.open() as handle:
        values = [row[column] for row in csv.DictReader(handle) if row.get(column)]
    return float(values[-1])


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, data_dir):
    """One short real training run shared by the tests of this module."""
    run_dir = tmp_path_factory.mktemp("run") / "smile_pretrain"
    cfg = compose_config("train", [*TINY_SMILE_DATA, *SHORT_RUN], run_dir, data_dir)
    return cfg, train(cfg)


@pytest.mark.slow
def test_run_folder_holds_config_checkpoints_metrics_and_logs(short_run):
    cfg, record = short_run
    out = Path(cfg.paths.output_dir)
    assert record["status"] == "completed"
    for name in (
        "config.yaml",
        "run_info.json",
        "metrics.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "csv/metrics.csv",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_checkpoint"].endswith("best.ckpt")
    assert saved["metrics"]["test/emotion_acc"] == pytest.approx(
        record["metrics"]["test/emotion_acc"]
    )
    assert saved["value"] == pytest.approx(record["value"])
    checkpoint = torch.load(out / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["avlab_config"]["name"] == "smile_pretrain"
    assert _all_finite(checkpoint["state_dict"])


@pytest.mark.slow
def test_eval_rebuilds_the_run_from_the_checkpoint_and_reproduces_test_metrics(
    short_run, tmp_path, data_dir
):
    cfg, record = short_run
    ckpt = Path(cfg.paths.output_dir) / "checkpoints/best.ckpt"
    eval_cfg = compose_config("eval", [f"ckpt={ckpt}"], tmp_path / "eval", data_dir)
    result = evaluate(eval_cfg)
    test_metrics = {k: v for k, v in record["metrics"].items() if k.startswith("test/")}
    assert test_metrics
    for name, value in test_metrics.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.slow
def test_eval_applies_data_overrides_to_the_stored_config(short_run, tmp_path, data_dir):
    cfg, _ = short_run
    ckpt = Path(cfg.paths.output_dir) / "checkpoints/best.ckpt"
    other_root = tmp_path / "elsewhere"
    eval_cfg = compose_config(
        "eval",
        [f"ckpt={ckpt}", f"data.root={other_root}", "data.sources.fer.synth.seed=7"],
        tmp_path / "eval",
        data_dir,
    )
    result = evaluate(eval_cfg)
    assert (other_root / "fer2013" / "fer2013.csv").is_file()
    saved = (tmp_path / "eval" / "config.yaml").read_text()
    assert str(other_root) in saved
    assert "test/emotion_acc" in result["metrics"]


def test_eval_refuses_a_missing_checkpoint_or_one_without_config(tmp_path, data_dir):
    eval_cfg = compose_config("eval", [f"ckpt={tmp_path / 'nope.ckpt'}"], tmp_path / "e1", data_dir)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        evaluate(eval_cfg)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    eval_cfg = compose_config("eval", [f"ckpt={foreign}"], tmp_path / "e2", data_dir)
    with pytest.raises(ValueError, match="no avlab config"):
        evaluate(eval_cfg)


@pytest.mark.slow
def test_injected_nan_is_skipped_counted_and_never_checkpointed(make_cfg):
    cfg = make_cfg("debug=inject_nan", "callbacks.nan_injector.steps=[2,3,6]")
    record = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert record["status"] == "completed"
    assert _last_logged(out / "csv/metrics.csv", "nan_guard/skipped_steps") == 3
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert _all_finite(checkpoint["state_dict"]), name


def test_resume_finds_last_checkpoint_and_refuses_a_finished_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints/last.ckpt"
    last.write_bytes(b"x")
    with pytest.raises(ValueError, match="last.ckpt: not a readable checkpoint"):
        find_resume_checkpoint(str(run))
    module = "avlab.tasks.smile.module.SmileEmotionModule"
    torch.save(
        {"state_dict": {}, "avlab_config": {"model": {"module": {"_target_": module}}}}, last
    )
    assert find_resume_checkpoint(str(run), module) == str(last)
    (run / "metrics.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(ValueError, match="finished"):
        find_resume_checkpoint(str(run))
    with pytest.raises(FileNotFoundError):
        find_resume_checkpoint(str(tmp_path / "missing"))


def _train_py(tmp_path: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """Run train.py as a user would, with outputs under tmp_path."""
    return train_py(tmp_path, *TINY_SMILE_DATA, *overrides, log_dir=tmp_path, data_dir=data_dir)


@pytest.mark.slow
def test_a_failed_single_run_exits_non_zero_and_records_why(tmp_path, data_dir):
    result = _train_py(tmp_path, data_dir, "debug=fdr", "optim.lr=-1")
    assert result.returncode != 0
    [record] = [json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")]
    assert record["status"] == "failed"
    assert "learning rate" in record["reason"]


@pytest.mark.slow
def test_multirun_records_failed_and_diverged_jobs_and_goes_on(tmp_path, data_dir):
    result = _train_py(
        tmp_path,
        data_dir,
        "-m",
        "debug=inject_nan",
        "callbacks.nan_guard.max_consecutive_skips=2",
        "callbacks.nan_guard.max_rollbacks=1",
        "callbacks.nan_injector.steps=[1,2,3,4,5,6,7,8,9]",
        "trainer.max_epochs=1",
        "optim.lr=1e-3,-1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")}
    assert {r["status"] for r in records.values()} == {"diverged", "failed"}
    assert "TrainingDivergedError" in records["0"]["reason"]


@pytest.mark.slow
def test_finetune_starts_from_the_pretrain_weights_only(short_run, make_cfg):
    from avlab.run import build_module

    cfg, _ = short_run
    ckpt = Path(cfg.paths.output_dir) / "checkpoints/best.ckpt"
    finetune = make_cfg("experiment=smile_finetune", f"model.init_from={ckpt}", "debug=fdr")
    module = build_module(finetune)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for name, tensor in module.state_dict().items():
        if name in stored:
            assert torch.equal(tensor, stored[name]), name
    assert "criterion.log_vars.smile" in module.state_dict()  # new in fine-tuning, not in pretrain
    record = train(finetune)
    assert record["status"] == "completed"
    assert "test/smile_auroc" in record["metrics"] and "test/emotion_acc" in record["metrics"]


def test_init_from_names_a_missing_path_and_refuses_another_tasks_checkpoint(make_cfg, tmp_path):
    from avlab.run import build_module

    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="model.init_from=.*nope.ckpt"):
        build_module(make_cfg("experiment=smile_finetune", f"model.init_from={missing}"))
    other = tmp_path / "other.ckpt"
    torch.save(
        {
            "state_dict": {},
            "avlab_config": {
                "model": {"module": {"_target_": "avlab.tasks.vad.module.AiVadModule"}}
            },
        },
        other,
    )
    with pytest.raises(ValueError, match="a checkpoint of avlab.tasks.vad.module.AiVadModule"):
        build_module(make_cfg("experiment=smile_finetune", f"model.init_from={other}"))


@pytest.mark.slow
def test_test_metrics_are_reported_per_source(short_run):
    _, record = short_run
    for key in (
        "test/genki/smile_auroc",
        "test/fer/emotion_acc",
        "test/smile_auroc",
        "test/emotion_acc",
    ):
        assert key in record["metrics"], key
    assert "test/genki/emotion_acc" not in record["metrics"]  # GENKI carries no emotion labels


@pytest.mark.slow
def test_overfitting_two_batches_drives_the_loss_down(make_cfg):
    """Model, masked loss and optimizer are wired right: a couple of batches can be learnt."""
    cfg = make_cfg(
        "debug=overfit",
        "trainer.max_epochs=10",
        "trainer.log_every_n_steps=1",
        "callbacks.model_checkpoint=null",
        "trainer.check_val_every_n_epoch=100",
        "test=false",
        "optim.lr=3e-3",
    )
    train(cfg)
    with (Path(cfg.paths.output_dir) / "csv/metrics.csv").open() as handle:
        losses = [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]
    assert losses[-1] < 0.5 * losses[0], losses


def test_eval_deletes_a_key_given_as_tilde_override(tmp_path, data_dir):
    """`~key` on eval's command line removes the key from the stored config (it used to become null)."""
    from omegaconf import OmegaConf

    from avlab.run import _apply_command_line_overrides

    eval_cfg = compose_config(
        "eval",
        ["ckpt=x.ckpt", "~trainer.gradient_clip_algorithm", "trainer.max_epochs=3"],
        tmp_path,
        data_dir,
    )
    stored = OmegaConf.create(
        {"trainer": {"gradient_clip_algorithm": "value", "max_epochs": 1, "devices": 1}}
    )
    _apply_command_line_overrides(stored, eval_cfg)
    assert "gradient_clip_algorithm" not in stored.trainer
    assert stored.trainer.max_epochs == 3 and stored.trainer.devices == 1


@pytest.mark.slow
def test_run_info_records_code_dependencies_and_hardware(short_run):
    """run_info.json names the commit, the uv.lock hash, the stack's versions and the machine;
    the same record reaches the loggers' hyperparameters."""
    import hashlib

    import lightning
    import yaml

    cfg, _ = short_run
    out = Path(cfg.paths.output_dir)
    info = json.loads((out / "run_info.json").read_text())
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert info["git_commit"] == head
    assert info["uv_lock_sha256"] == hashlib.sha256((REPO / "uv.lock").read_bytes()).hexdigest()
    assert info["packages"]["torch"] == torch.__version__.split("+")[0]
    assert info["packages"]["lightning"] == lightning.__version__
    flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].splitlines()[0].split())
    assert set(info["hardware"]["cpu_flags"]) <= flags and "avx2" in info["hardware"]["cpu_flags"]
    assert info["hardware"]["world_size"] == 1
    assert info["git_dirty"] == (out / "git.diff").is_file()
    hparams = yaml.safe_load((out / "csv" / "hparams.yaml").read_text())
    assert hparams["run_meta"]["git_commit"] == head
