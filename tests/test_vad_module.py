"""AI-VAD module: merging a fitted checkpoint (fine-tuning), and real runs of both presets on tiny
generated scenes: checkpoints, plots, eval, and a merge whose bank sizes add up."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import pytest
import torch
from anomalib.models.video.ai_vad.features import FeatureType

from avlab.run import evaluate, train
from avlab.tasks.vad.density import GroupedKNN
from avlab.tasks.vad.model import AiVadNet
from avlab.tasks.vad.module import FEATURES_KEY, AiVadModule
from tests.conftest import compose_config


def _feed(module: AiVadModule, videos: list[str], n: int, shift: float, seed: int) -> None:
    """Give the density estimators n region features per video, as a training pass would."""
    g = torch.Generator().manual_seed(seed)
    width = module.net.feature_extractor.deep_extractor.output_dim
    for video in videos:
        module.net.density.update(
            {
                FeatureType.VELOCITY: torch.rand(n, 8, generator=g) + shift,
                FeatureType.DEEP: torch.randn(n, width, generator=g) + shift,
            },
            group=video,
        )


def _checkpoint(module: AiVadModule) -> dict:
    """What Lightning would write, round-tripped through torch.load(weights_only=True)."""
    checkpoint = {"state_dict": module.state_dict(), "avlab_config": {"model": {}}}
    module.on_save_checkpoint(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.fixture
def fitted() -> AiVadModule:
    torch.manual_seed(0)
    module = AiVadModule(AiVadNet(n_components_velocity=2))
    _feed(module, ["old_a", "old_b", "old_c"], n=40, shift=0.0, seed=1)
    module.net.density.fit()
    return module


def test_merge_keeps_the_old_banks_as_their_own_videos_adds_ours_and_warm_starts_the_gmm(fitted):
    torch.manual_seed(1)  # another random appearance encoder: the checkpoint's must replace it
    merged = AiVadModule(AiVadNet(n_components_velocity=2, gmm_warm_start_steps=3))
    merged.init_from_checkpoint(_checkpoint(fitted))
    old_encoder = fitted.net.feature_extractor.deep_extractor.state_dict()
    for name, value in merged.net.feature_extractor.deep_extractor.state_dict().items():
        assert torch.equal(value, old_encoder[name]), name
    gmm = merged.net.density.velocity_estimator.gmm
    means_before = gmm.means.clone()
    _feed(merged, ["new_a", "new_b"], n=25, shift=2.0, seed=2)
    merged.net.density.fit()
    knn = merged.net.density.appearance_estimator
    assert merged.net.density.bank_sizes() == {"velocity": 120 + 50, "appearance": 120 + 50}
    assert knn.group_index.tolist() == [0] * 40 + [1] * 40 + [2] * 40 + [3] * 25 + [4] * 25
    assert torch.equal(knn.memory_bank[:120], fitted.net.density.appearance_estimator.memory_bank)
    assert torch.isfinite(gmm.means).all() and torch.isfinite(gmm.covariances).all()
    assert not torch.allclose(gmm.means, means_before), "the warm start should move the means"
    everything = GroupedKNN()  # the normalisation a single fit on all five videos gives
    for group in range(5):
        everything.update(knn.memory_bank[knn.group_index == group], group=f"video {group}")
    everything.fit()
    assert float(knn.min) == pytest.approx(float(everything.min))
    assert float(knn.max) == pytest.approx(float(everything.max))


def test_merge_with_a_bank_cap_keeps_the_cap(fitted):
    merged = AiVadModule(AiVadNet(n_components_velocity=2, max_bank_size=100))
    merged.init_from_checkpoint(_checkpoint(fitted))
    _feed(merged, ["new"], n=30, shift=1.0, seed=3)
    merged.net.density.fit()
    assert len(merged.net.density.appearance_estimator.memory_bank) == 100
    assert len(merged.net.density.velocity_estimator.memory_bank) == 150, (
        "the GMM keeps every raw feature"
    )


def test_merge_refuses_a_checkpoint_whose_features_mean_something_else(fitted):
    other = AiVadModule(AiVadNet(n_velocity_bins=4, n_components_velocity=2))
    with pytest.raises(ValueError, match=r"model\.n_velocity_bins: checkpoint 8, here 4"):
        other.init_from_checkpoint(_checkpoint(fitted))
    unfitted = _checkpoint(AiVadModule(AiVadNet()))
    with pytest.raises(ValueError, match="not fitted"):
        AiVadModule(AiVadNet()).init_from_checkpoint(unfitted)
    assert FEATURES_KEY in unfitted


def test_where_the_dwell_score_is_reported_is_not_part_of_the_feature_description():
    # A fit from before `centred` (its dwell settings lack the key) must still merge into a
    # model that reports the dwell score at its window's middle: the feature is the same.
    def described(**extra):
        dwell = {"window": 12, "min_area": 100} | extra
        return AiVadNet(n_components_velocity=2, dwell=dwell).feature_config["dwell"]

    assert described(centred=True) == described() == {"window": 12, "min_area": 100}
    assert described(window=8) != described()
    # `heading: null` is the same as a fit from before the key; a heading is a new feature.
    assert described(heading=None) == described()
    assert described(heading={"reg_covar": 0.01}) != described()
    # Likewise `merges: continue` (the behaviour before the key); restarting tracks is new.
    assert described(merges="continue") == described()
    assert described(merges="restart") != described()
    # And `displacement: centre`; measuring the box's sides is new.
    assert described(displacement="centre") == described()
    assert described(displacement="sides") != described()
    assert described(displacement="grown") not in (described(), described(displacement="sides"))
    # And `size: null`; a size density is a new feature.
    assert described(size=None) == described()
    assert described(size={"reg_covar": 0.01}) != described()


def test_a_frame_without_moving_regions_scores_zero(fitted):
    fitted.net.eval()
    still = torch.rand(1, 1, 3, 48, 64).expand(
        3, 2, 3, 48, 64
    )  # both frames of each clip identical
    out = fitted.net(still)
    assert all(len(boxes) == 0 for boxes in out.boxes)
    assert out.frame_scores.tolist() == [0.0, 0.0, 0.0]
    assert set(out.stream_scores) == {"velocity", "appearance"}


def test_the_module_refuses_an_optimizer_or_a_loss():
    with pytest.raises(ValueError, match="optim=none"):
        AiVadModule(AiVadNet(), optimizer=partial(torch.optim.SGD, lr=0.1))


TINY_RUN = ["+trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory, data_dir):
    """A real aivad_scratch run on the tiny generated scene (2 + 2 videos of 12 frames)."""
    out = tmp_path_factory.mktemp("vad") / "scratch"
    cfg = compose_config(
        "train", ["experiment=aivad_scratch", "data=vad_tiny", *TINY_RUN], out, data_dir
    )
    return cfg, train(cfg)


@pytest.mark.slow
def test_scratch_run_writes_a_fitted_checkpoint_metrics_and_plots(scratch_run):
    cfg, record = scratch_run
    out = Path(cfg.paths.output_dir)
    assert record["status"] == "completed" and record["best_checkpoint"].endswith("best.ckpt")
    metrics = record["metrics"]
    assert record["optimized_metric"] == "val/frame_auroc"
    assert record["value"] == metrics["val/frame_auroc"]
    # One of the three test videos is held out for validation, by whole video: 11 clips each.
    assert (metrics["val/n_frames"], metrics["test/n_frames"]) == (11.0, 22.0)
    # Validation scored the fitted model: the bank sizes logged with it are the fitted ones.
    assert metrics["train/bank_velocity"] > 0 and "val/frame_auroc_velocity" in metrics
    checkpoint = torch.load(
        out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True
    )
    state = checkpoint["state_dict"]
    assert state["net.density.appearance_estimator.group_index"].unique().tolist() == [0, 1]
    assert (
        len(state["net.density.velocity_estimator.memory_bank"])
        == record["metrics"]["train/bank_velocity"]
    )
    assert checkpoint[FEATURES_KEY]["flow"] == "farneback"
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == ["Test001.png", "Test002.png"]


@pytest.mark.slow
def test_eval_reproduces_the_scratch_run_from_its_checkpoint(scratch_run, tmp_path, data_dir):
    cfg, record = scratch_run
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    result = evaluate(compose_config("eval", [f"ckpt={ckpt}"], tmp_path / "eval", data_dir))
    for name in ("test/frame_auroc", "test/frame_aupr", "test/n_frames"):
        assert result["metrics"][name] == pytest.approx(record["metrics"][name], abs=1e-6), name


@pytest.mark.slow
def test_finetune_merges_the_scratch_checkpoint_into_the_second_scene(
    scratch_run, tmp_path, data_dir
):
    cfg, record = scratch_run
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    alone = train(
        compose_config(
            "train",
            ["experiment=aivad_scratch", "data=vad_scene2_tiny", *TINY_RUN],
            tmp_path / "alone",
            data_dir,
        )
    )
    merged = train(
        compose_config(
            "train",
            [
                "experiment=aivad_finetune",
                "data=vad_scene2_tiny",
                f"model.init_from={ckpt}",
                *TINY_RUN,
            ],
            tmp_path / "merged",
            data_dir,
        )
    )
    assert merged["status"] == "completed"
    for stream in ("velocity", "appearance"):
        key = f"train/bank_{stream}"
        assert merged["metrics"][key] == record["metrics"][key] + alone["metrics"][key], stream
    state = torch.load(merged["best_checkpoint"], map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    assert state["net.density.appearance_estimator.group_index"].unique().tolist() == [0, 1, 2, 3]
