"""Every preset composes and runs; overrides compose; mistakes get Hydra's clear errors."""

from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from avlab.run import instantiate_loggers, train
from tests.conftest import CONF

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DEBUG_PRESETS = sorted(p.stem for p in (CONF / "debug").glob("*.yaml") if p.stem != "default")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_one_fast_dev_run_step(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}", "debug=fdr")
    record = train(cfg)
    assert record["status"] == "completed"
    assert any(key.startswith("test/") for key in record["metrics"])
    assert (Path(cfg.paths.output_dir) / "metrics.json").is_file()


@pytest.mark.parametrize("preset", DEBUG_PRESETS)
def test_every_debug_preset_composes_with_other_overrides(make_cfg, preset):
    cfg = make_cfg(
        f"debug={preset}", "precision=bf16-mixed", "logger=[csv,tensorboard]", "optim.lr=1e-4"
    )
    assert cfg.trainer.precision == "bf16-mixed"
    assert set(cfg.logger) == {"csv", "tensorboard"}
    assert cfg.optim.optimizer.lr == pytest.approx(1e-4)
    assert cfg.trainer.accelerator == "cpu"


def test_default_run_is_the_smile_pretrain_experiment(make_cfg):
    cfg = make_cfg(tiny=False)
    assert cfg.name == "smile_pretrain"
    assert set(cfg.data.sources) == {"genki", "fer"}
    assert cfg.model.pretrained is None


@pytest.mark.parametrize(
    "override", ["optim=adamw_typo", "experiment=smile_pretrian", "logger=cvs"]
)
def test_typo_in_a_group_choice_lists_the_valid_options(make_cfg, override):
    with pytest.raises(MissingConfigException, match="Available options"):
        make_cfg(override)


def test_precision_choices_are_lightning_names(make_cfg):
    for choice in ("32-true", "bf16-mixed", "16-mixed"):
        assert make_cfg(f"precision={choice}").trainer.precision == choice


def test_many_loggers_instantiate_and_wandb_goes_offline_without_account(
    make_cfg, monkeypatch, tmp_path
):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = make_cfg("logger=many")
    loggers = instantiate_loggers(cfg.logger, Path(cfg.paths.output_dir))
    names = sorted(type(lg).__name__ for lg in loggers)
    assert names == ["CSVLogger", "TensorBoardLogger", "WandbLogger"]
    wandb_logger = next(lg for lg in loggers if type(lg).__name__ == "WandbLogger")
    assert wandb_logger._offline is True
