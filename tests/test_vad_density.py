"""AI-VAD density estimators: each anomalib 2.7.0 bug we work around is shown, then fixed."""

from __future__ import annotations

import logging

import pytest
import torch
from anomalib.models.components.cluster.gmm import GaussianMixture
from anomalib.models.video.ai_vad.density import GMMEstimator, GroupedKNNEstimator
from anomalib.models.video.ai_vad.features import FeatureType

from avlab.tasks.vad.density import (
    AiVadDensity,
    GroupedKNN,
    MixtureModel,
    NotFittedError,
    VelocityGMM,
)


def _videos(seed: int = 0) -> dict[str, torch.Tensor]:
    """Three videos of 2-D features; the last one is tight, the first one spread out."""
    g = torch.Generator().manual_seed(seed)
    return {
        "video_a": torch.randn(40, 2, generator=g) * 3.0,
        "video_b": torch.randn(40, 2, generator=g) * 1.0,
        "video_c": torch.randn(40, 2, generator=g) * 0.1,
    }


def _fitted(estimator, videos: dict[str, torch.Tensor]):
    for name, features in videos.items():
        estimator.update(features, group=name)
    estimator.fit()
    return estimator


def _held_out_distances(videos: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every training feature's distance to the nearest feature of another video (by hand)."""
    out = []
    for name, features in videos.items():
        others = torch.cat([f for n, f in videos.items() if n != name])
        out.append(torch.cdist(features, others).min(dim=1).values)
    return torch.cat(out)


def test_knn_normalisation_spans_all_videos_where_anomalib_keeps_the_last_one():
    videos = _videos()
    expected = _held_out_distances(videos)
    theirs = _fitted(GroupedKNNEstimator(n_neighbors=1), videos)
    ours = _fitted(GroupedKNN(n_neighbors=1), videos)
    last = (
        torch.cdist(videos["video_c"], torch.cat([videos["video_a"], videos["video_b"]]))
        .min(1)
        .values
    )
    assert float(theirs.max) == pytest.approx(
        float(last.max())
    )  # the bug: only the last video's max
    assert float(theirs.max) < float(expected.max()) - 1.0
    assert float(ours.min) == pytest.approx(float(expected.min()))
    assert float(ours.max) == pytest.approx(float(expected.max()))
    scores = ours.predict(torch.cat(list(videos.values())), normalize=True)
    assert scores.max() <= 1.0 + 1e-6, "training features stay within the normalised range"


def test_n_neighbors_is_honoured_at_inference():
    videos = _videos()
    bank = torch.cat(list(videos.values()))
    query = torch.tensor([[5.0, 5.0], [0.0, 0.0], [-4.0, 2.0]])
    ours = _fitted(GroupedKNN(n_neighbors=5), videos)
    expected = torch.cdist(query, bank).topk(5, largest=False).values.mean(1)
    assert torch.allclose(ours.predict(query, normalize=False), expected)
    theirs = _fitted(GroupedKNNEstimator(n_neighbors=5), videos)
    one_nn = torch.cdist(query, bank).min(1).values
    assert torch.allclose(theirs.predict(query, normalize=False), one_nn)  # the bug: k=1 regardless


def test_one_training_video_fits_leave_one_out():
    videos = {"only": _videos()["video_a"]}
    with pytest.raises(IndexError):
        _fitted(GroupedKNNEstimator(n_neighbors=1), videos)  # the bug
    ours = _fitted(GroupedKNN(n_neighbors=2), videos)
    features = videos["only"]
    distances = (
        torch.cdist(features, features)
        .fill_diagonal_(torch.inf)
        .topk(2, largest=False)
        .values.mean(1)
    )
    assert float(ours.min) == pytest.approx(float(distances.min()))
    assert float(ours.max) == pytest.approx(float(distances.max()))
    assert torch.isfinite(ours.predict(torch.zeros(1, 2))).all()


def test_one_video_with_one_region_is_a_clear_error():
    with pytest.raises(NotFittedError, match="single region"):
        _fitted(GroupedKNN(), {"only": torch.zeros(1, 2)})


def test_update_after_fit_merges_new_videos_as_new_groups():
    videos = _videos()
    theirs = _fitted(GroupedKNNEstimator(n_neighbors=1), videos)
    with pytest.raises(AttributeError):
        theirs.update(torch.zeros(3, 2), group="new")  # the bug
    ours = _fitted(GroupedKNN(), videos)
    ours.update(torch.full((7, 2), 9.0), group="new_1")
    ours.update(torch.full((5, 2), -9.0), group="new_2")
    ours.fit()
    assert len(ours.memory_bank) == 120 + 12
    assert ours.group_index.unique().tolist() == [0, 1, 2, 3, 4]
    assert (ours.group_index == 3).sum() == 7 and (ours.group_index == 4).sum() == 5


def test_bank_cap_keeps_a_seeded_subsample():
    videos = _videos()
    first = _fitted(GroupedKNN(max_bank_size=50, seed=3), videos)
    second = _fitted(GroupedKNN(max_bank_size=50, seed=3), videos)
    assert len(first.memory_bank) == 50 == len(first.group_index)
    assert torch.equal(first.memory_bank, second.memory_bank)
    assert set(first.group_index.tolist()) == {0, 1, 2}


def test_scoring_before_fitting_is_a_clear_error():
    with pytest.raises(NotFittedError, match="fit the model"):
        GroupedKNN().predict(torch.zeros(2, 2))
    with pytest.raises(NotFittedError, match="not fitted"):
        VelocityGMM(2).predict(torch.zeros(2, 2))


def _velocities(n: int, centre: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g) * 0.3 + centre


def test_gmm_keeps_raw_features_and_its_warm_start_moves_parameters_finitely():
    torch.manual_seed(0)
    theirs = GMMEstimator(n_components=2)
    assert "memory_bank" not in theirs.state_dict()  # anomalib never saves the raw features
    gmm = VelocityGMM(n_components=2, warm_start_steps=3)
    old = torch.cat([_velocities(100, 0.0, 1), _velocities(100, 3.0, 2)])
    gmm.update(old)
    gmm.fit()
    assert torch.equal(gmm.state_dict()["memory_bank"], old)
    before = {k: v.clone() for k, v in gmm.gmm.state_dict().items()}
    gmm.update(_velocities(150, 1.5, 3))
    gmm.fit()
    after = gmm.gmm.state_dict()
    assert len(gmm.memory_bank) == 350
    for name in ("means", "covariances", "weights"):
        assert after[name].shape == before[name].shape
        assert torch.isfinite(after[name]).all(), name
        assert not torch.allclose(after[name], before[name]), f"{name} did not move"
    assert float(after["weights"].sum()) == pytest.approx(1.0)
    scores = gmm.predict(gmm.memory_bank)
    assert scores.min() == pytest.approx(0.0, abs=1e-5) and scores.max() == pytest.approx(
        1.0, abs=1e-5
    )


def test_gmm_start_cannot_leave_a_component_empty():
    data = torch.cat([torch.zeros(60, 3), torch.ones(4, 3)])  # k-means picks duplicates here
    torch.manual_seed(0)
    # The bug: an empty cluster gives a NaN mean. torch reports it from the distribution's
    # argument check (ValueError on loc) or, when another test of the session has switched
    # distribution validation off, from the Cholesky factorisation of its NaN covariance.
    with pytest.raises((ValueError, torch.linalg.LinAlgError)):
        GaussianMixture(n_components=5).fit(data)
    torch.manual_seed(0)
    for _ in range(3):
        mixture = MixtureModel(n_components=5)
        mixture.fit(data)
        assert (
            torch.isfinite(mixture.means).all()
            and torch.isfinite(mixture.score_samples(data)).all()
        )


def test_gmm_with_too_few_regions_says_so():
    gmm = VelocityGMM(n_components=5)
    gmm.update(torch.rand(6, 8))
    with pytest.raises(NotFittedError, match="too few"):
        gmm.fit()


def test_gmm_on_training_features_that_are_all_alike_scores_finitely(caplog):
    # (every training track of a toy scene at one speed: their scores' range is 0, and the
    # min-max normalisation was 0/0, NaN for the training speed and inf for any other)
    gmm = VelocityGMM(n_components=2, reg_covar=0.01)
    gmm.update(torch.zeros(20, 1))
    with caplog.at_level(logging.WARNING):
        gmm.fit()
    assert "all score alike" in caplog.text
    scores = gmm.predict(torch.tensor([[0.0], [1.0]]))
    assert scores[0] == pytest.approx(0.0, abs=1e-5) and 10 < scores[1] < 1e6


def test_combined_density_scores_each_stream_and_empty_frames():
    torch.manual_seed(0)
    density = AiVadDensity(n_components_velocity=2, n_neighbors_deep=2)
    for video in ("v1", "v2"):
        density.update(
            {FeatureType.VELOCITY: torch.rand(30, 8), FeatureType.DEEP: torch.rand(30, 16)},
            group=video,
        )
    density.fit()
    assert density.is_fitted and density.bank_sizes() == {"velocity": 60, "appearance": 60}
    scores = density.score_streams(
        {FeatureType.VELOCITY: torch.rand(3, 8), FeatureType.DEEP: torch.rand(3, 16)}
    )
    assert set(scores) == {"velocity", "appearance"} and all(
        s.shape == (3,) for s in scores.values()
    )
    empty = density.score_streams(
        {FeatureType.VELOCITY: torch.zeros(0, 8), FeatureType.DEEP: torch.zeros(0, 16)}
    )
    assert all(s.numel() == 0 for s in empty.values())


def test_gmm_merge_with_another_component_count_refits_on_all_features(caplog):
    torch.manual_seed(0)
    two = VelocityGMM(n_components=2)
    two.update(_velocities(80, 0.0, 1))
    two.fit()
    three = VelocityGMM(n_components=3)
    three.load_state_dict(two.state_dict())
    three.update(_velocities(80, 2.0, 2))
    three.fit()
    assert three.gmm.means.shape == (3, 4) and len(three.memory_bank) == 160
    assert "fitting afresh" in caplog.text


def test_a_training_video_scored_held_out_is_compared_with_the_other_videos_only():
    torch.manual_seed(0)
    knn = GroupedKNN(n_neighbors=1)
    videos = {"v1": torch.rand(20, 4), "v2": torch.rand(20, 4) + 3.0, "v3": torch.rand(20, 4)}
    for name, rows in videos.items():
        knn.update(rows, group=name)
    knn.fit()
    # In the bank every training row is its own nearest neighbour: distance 0, the minimum.
    in_sample = knn.predict(videos["v2"], normalize=False)
    assert float(in_sample.max()) < 0.01  # cdist's own rounding
    # Held out, v2 (shifted by 3 in every dimension) is far from v1 and v3.
    held_out = knn.predict(videos["v2"], group="v2", normalize=False)
    expected = torch.cdist(videos["v2"], torch.cat([videos["v1"], videos["v3"]])).min(dim=1).values
    assert torch.allclose(held_out, expected) and float(held_out.min()) > 3.0
    # The same as by group id; a name never fitted leaves nothing out.
    assert torch.equal(held_out, knn.predict(videos["v2"], group=1, normalize=False))
    assert torch.equal(in_sample, knn.predict(videos["v2"], group="v9", normalize=False))


def test_combined_density_scores_a_training_video_held_out_in_the_knn_streams_only():
    torch.manual_seed(0)
    density = AiVadDensity(n_components_velocity=2)
    features = {
        v: {FeatureType.VELOCITY: torch.rand(30, 8), FeatureType.DEEP: torch.rand(30, 16) + i}
        for i, v in enumerate(("v1", "v2", "v3"))
    }
    for video, rows in features.items():
        density.update(rows, group=video)
    density.fit()
    in_sample = density.score_streams(features["v3"])
    held_out = density.score_streams(features["v3"], held_out="v3")
    assert torch.equal(held_out["velocity"], in_sample["velocity"])
    assert float(in_sample["appearance"].max()) <= 0.0 < float(held_out["appearance"].min())


def _velocity_like(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 11) rows shaped like region velocities: 4 direction bins nobody moves in (near 0),
    the rest spread around 0.5."""
    rows = 0.5 + 0.2 * torch.randn(n, 11, generator=generator)
    rows[:, :4] = 0.02 * torch.rand(n, 4, generator=generator)
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_covariance_floor_keeps_new_normal_rows_under_the_training_maximum(seed):
    """A 5-component full-covariance GMM on 120 rows in 11 dimensions overfits: new rows from
    the same distribution pass the training rows' maximum score (1 after normalisation) often.
    `gmm_reg_covar` 0.1 (in feature units squared) fixes that, and a row 5.5 standard deviations
    out in one dimension still scores above the maximum."""
    far = torch.full((1, 11), 0.5)
    far[0, :4], far[0, 8] = 0.01, 1.6
    share, far_score = {}, {}
    for reg in (1e-4, 1e-1):
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        density = AiVadDensity(
            n_components_velocity=5, use_deep_features=False, reg_covar_velocity=reg
        )
        density.update({FeatureType.VELOCITY: _velocity_like(120, generator)}, group="v1")
        density.fit()
        new = density.score_streams({FeatureType.VELOCITY: _velocity_like(400, generator)})
        share[reg] = float((new["velocity"] > 1).float().mean())
        far_score[reg] = float(density.score_streams({FeatureType.VELOCITY: far})["velocity"])
    assert share[1e-4] > 0.15, share  # the default floor: the overfit this option is for
    assert share[1e-1] < 0.02, share
    assert far_score[1e-1] > 1.0, far_score


@pytest.mark.parametrize("floor", [-0.1, float("nan"), float("inf")])
def test_a_covariance_floor_that_is_not_a_finite_non_negative_number_is_refused(floor):
    with pytest.raises(ValueError, match="gmm_reg_covar"):
        AiVadDensity(reg_covar_velocity=floor)
