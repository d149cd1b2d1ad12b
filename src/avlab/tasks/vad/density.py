"""anomalib's AI-VAD density estimators, with its bugs worked around and a merge for fine-tuning.

What differs from anomalib 2.7.0 (each covered by tests/test_vad_density.py):
- kNN normalisation: anomalib sets `max = max(min, max of the last video)`; here min and max
  run over the leave-one-video-out distances of every training video.
- `n_neighbors` is honoured at inference (anomalib's `predict` always uses 1).
- One training video: anomalib's leave-one-video-out leaves an empty bank (IndexError); here
  each feature is scored against the others of the same video instead (leave-one-out).
- `update()` after `fit()` works (anomalib deletes the collection) and `fit()` again merges the
  new features into the fitted bank: the fine-tuning path.
- Everything a later merge needs is a buffer, so it is in the checkpoint: the kNN banks with
  their per-video group ids, and the raw velocity features behind the GMM.
- The GMM can warm-start from its current means/covariances/weights with a few EM steps on old
  + new features; its k-means start cannot leave a component empty (which gave NaN means).
"""

from __future__ import annotations

import logging
import math

import torch
from anomalib.models.components.base import DynamicBufferMixin
from anomalib.models.components.cluster.gmm import GaussianMixture
from anomalib.models.components.cluster.kmeans import KMeans
from anomalib.models.video.ai_vad.density import (
    CombinedDensityEstimator,
    GMMEstimator,
    GroupedKNNEstimator,
)
from anomalib.models.video.ai_vad.features import FeatureType
from torch.nn.functional import one_hot

log = logging.getLogger(__name__)

STREAMS = {
    FeatureType.VELOCITY: "velocity",
    FeatureType.POSE: "pose",
    FeatureType.DEEP: "appearance",
}


class NotFittedError(RuntimeError):
    """A density estimator was asked to score before it saw any training features."""


class GroupedKNN(GroupedKNNEstimator):
    """anomalib's grouped kNN estimator (a memory bank per video), fixed and mergeable.

    Buffers: `memory_bank` (N, D), `group_index` (N,) video id per row, `min`/`max` (the
    normalisation). A score is the mean distance to the `n_neighbors` nearest bank rows,
    min-max normalised by the leave-one-video-out distances of the training features.
    """

    def __init__(
        self, n_neighbors: int = 1, max_bank_size: int | None = None, seed: int = 0
    ) -> None:
        super().__init__(n_neighbors)
        del (
            self.group_index
        )  # a plain dict in anomalib; a buffer here, so it reaches the checkpoint
        self.register_buffer("group_index", torch.empty(0, dtype=torch.long))
        self.group_index: torch.Tensor
        self.max_bank_size = max_bank_size
        self.seed = seed
        # Video name -> group id of the videos fitted in this process (not in the checkpoint):
        # lets a training video be scored with its own rows left out (`predict(group=name)`).
        self.group_ids: dict[str, int] = {}

    @property
    def is_fitted(self) -> bool:
        """Whether the bank holds features (from fit() or a loaded checkpoint)."""
        return self.memory_bank.numel() > 0

    def update(self, features: torch.Tensor, group: str | None = None) -> None:
        """Collect one frame's features under its video; works before and after fit()."""
        if features.numel():
            self.feature_collection.setdefault(group or "default", []).append(features.detach())

    def fit(self) -> None:
        """Merge the collected features into the bank as new groups, cap it, renormalise."""
        if not self.feature_collection and not self.is_fitted:
            raise NotFittedError(
                "no features were collected: the training clips produced no regions"
            )
        new = [torch.vstack(chunks) for chunks in self.feature_collection.values()]
        first_id = int(self.group_index.max()) + 1 if self.is_fitted else 0
        banks = ([self.memory_bank] if self.is_fitted else []) + new
        groups = ([self.group_index] if self.is_fitted else []) + [
            torch.full((len(f),), first_id + i, dtype=torch.long) for i, f in enumerate(new)
        ]
        self.memory_bank, self.group_index = self._capped(torch.vstack(banks), torch.cat(groups))
        self.group_ids |= {name: first_id + i for i, name in enumerate(self.feature_collection)}
        self.feature_collection = {}
        self._compute_normalization_statistics()

    def _capped(
        self, bank: torch.Tensor, groups: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded uniform subsample of at most `max_bank_size` rows (all rows when no cap)."""
        if not self.max_bank_size or len(bank) <= self.max_bank_size:
            return bank, groups
        generator = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(len(bank), generator=generator)[: self.max_bank_size].sort().values
        log.info("kNN bank capped at %d of %d rows", self.max_bank_size, len(bank))
        return bank[keep], groups[keep]

    def predict(
        self,
        features: torch.Tensor,
        group: int | str | None = None,
        n_neighbors: int | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """(N,) mean distance to the nearest bank rows, leaving out video `group` if given
        (its group id, or its name as passed to `update`; a name never fitted leaves out nothing)."""
        if not self.is_fitted:
            raise NotFittedError("the kNN bank is empty: fit the model (train) before testing")
        if isinstance(group, str):
            group = self.group_ids.get(group)
        if group is not None and not (self.group_index != group).any():
            group = None  # the only video in the bank: nothing else to compare with
        bank = self.memory_bank if group is None else self.memory_bank[self.group_index != group]
        k = min(n_neighbors or self.n_neighbors, len(bank))
        distances = self._nearest_neighbors(bank, features, n_neighbors=k)
        if normalize:
            distances = self._normalize(distances)
        return distances.mean(dim=1)

    def _compute_normalization_statistics(self) -> None:
        """min/max over every training feature's distance to the other videos' features."""
        distances = torch.cat([self._held_out_distances(g) for g in self.group_index.unique()])
        self.min = distances.min()
        self.max = distances.max()

    def _held_out_distances(self, group: torch.Tensor) -> torch.Tensor:
        """Distances of one video's rows to the rest of the bank (to its own other rows if alone)."""
        rows = self.memory_bank[self.group_index == group]
        if (self.group_index != group).any():
            return self.predict(rows, group=int(group), normalize=False)
        k = min(self.n_neighbors, len(rows) - 1)
        if k < 1:
            raise NotFittedError(
                "one training video with a single region: nothing to compare it with"
            )
        distances = torch.cdist(rows, rows)
        distances.fill_diagonal_(torch.inf)
        return distances.topk(k, largest=False, dim=1).values.mean(dim=1)


class MixtureModel(GaussianMixture):
    """anomalib's GaussianMixture with a k-means start that keeps every component populated,
    a covariance floor and an EM warm start from the current parameters."""

    def __init__(
        self,
        n_components: int,
        n_iter: int = 100,
        tol: float = 1e-3,
        reg_covar: float = 1e-4,
        setting: str = "model.net.gmm_reg_covar",
    ) -> None:
        """`setting`: the config key `reg_covar` came from, for the error a bad one raises."""
        super().__init__(n_components=n_components, n_iter=n_iter, tol=tol)
        if not math.isfinite(reg_covar) or reg_covar < 0:
            raise ValueError(
                f"{setting}={reg_covar}: the covariance floor must be a finite number >= 0"
            )
        self.reg_covar = reg_covar

    @property
    def is_fitted(self) -> bool:
        """Whether means, covariances and weights are set."""
        return self.means.numel() > 0

    def _initialize_parameters_kmeans(self, data: torch.Tensor) -> None:
        """k-means responsibilities, softened so an empty cluster cannot give a 0/0 mean."""
        labels, _ = KMeans(n_clusters=self.n_components).fit(data)
        hard = one_hot(labels, num_classes=self.n_components).float()
        self._m_step(data, 0.99 * hard + 0.01 / self.n_components)

    def _m_step(self, data: torch.Tensor, resp: torch.Tensor) -> None:
        """anomalib's M-step plus a covariance floor, so flat velocity bins stay invertible."""
        super()._m_step(data, resp)
        self.covariances = self.covariances + self.reg_covar * torch.eye(
            data.shape[1], device=data.device
        )

    def warm_start(self, data: torch.Tensor, n_steps: int) -> None:
        """Run `n_steps` EM iterations from the current parameters (no k-means restart)."""
        for _ in range(n_steps):
            _, resp = self._e_step(data)
            self._m_step(data, resp)


class VelocityGMM(DynamicBufferMixin, GMMEstimator):
    """anomalib's GMM velocity estimator, keeping its raw features (`memory_bank`) as a buffer.

    fit() with a GMM already fitted (e.g. from a checkpoint) and `warm_start_steps > 0`
    continues EM from the current parameters on old + new features; otherwise it fits afresh.
    """

    def __init__(
        self,
        n_components: int = 2,
        warm_start_steps: int = 5,
        reg_covar: float = 1e-4,
        setting: str = "model.net.gmm_reg_covar",
    ) -> None:
        super().__init__(n_components=n_components)
        self.gmm = MixtureModel(n_components=n_components, reg_covar=reg_covar, setting=setting)
        del self.memory_bank  # a list in anomalib, never saved; a buffer here
        self.register_buffer("memory_bank", torch.empty(0))
        self.memory_bank: torch.Tensor
        self.pending: list[torch.Tensor] = []
        self.warm_start_steps = warm_start_steps

    @property
    def is_fitted(self) -> bool:
        """Whether the GMM parameters are set."""
        return self.gmm.is_fitted

    def update(self, features: torch.Tensor, group: str | None = None) -> None:
        """Collect one frame's velocity features (works before and after fit())."""
        del group
        if features.numel():
            self.pending.append(features.detach())

    def fit(self) -> None:
        """Fit (or warm-start) the GMM on old + new features and renormalise over them all."""
        chunks = ([self.memory_bank] if self.memory_bank.numel() else []) + self.pending
        if not chunks:
            raise NotFittedError(
                "no velocity features were collected: the training clips produced no regions"
            )
        data = torch.vstack(chunks)
        if len(data) < 2 * self.gmm.n_components:
            raise NotFittedError(
                f"{len(data)} training regions are too few for a {self.gmm.n_components}-component "
                "velocity GMM; use more training frames or fewer model.n_components_velocity"
            )
        if self.gmm.is_fitted and len(self.gmm.means) != self.gmm.n_components:
            log.warning(
                "the fitted GMM has %d components, %d are asked for: fitting afresh on old + new features",
                len(self.gmm.means),
                self.gmm.n_components,
            )
            self.gmm.fit(data)
        elif self.gmm.is_fitted and self.warm_start_steps > 0:
            self.gmm.warm_start(data, self.warm_start_steps)
        else:
            self.gmm.fit(data)
        self.memory_bank = data
        self.pending = []
        scores = self.predict(data, normalize=False)
        self.min, self.max = scores.min(), scores.max()
        if not self.max - self.min > 1e-6:  # every training feature alike: 0/0 when normalised
            log.warning("the GMM's training features all score alike: scores are not rescaled")
            self.max = self.min + 1.0

    def predict(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(N,) negative log-likelihood, min-max normalised by the training features' range."""
        if not self.is_fitted:
            raise NotFittedError(
                "the velocity GMM is not fitted: fit the model (train) before testing"
            )
        return super().predict(features, normalize=normalize)


class AiVadDensity(CombinedDensityEstimator):
    """anomalib's combined estimator (GMM on velocity, kNN on pose and appearance) over the fixed parts."""

    def __init__(
        self,
        use_velocity_features: bool = True,
        use_pose_features: bool = False,
        use_deep_features: bool = True,
        n_components_velocity: int = 2,
        n_neighbors_pose: int = 1,
        n_neighbors_deep: int = 1,
        max_bank_size: int | None = None,
        warm_start_steps: int = 5,
        reg_covar_velocity: float = 1e-4,
    ) -> None:
        super().__init__(
            use_pose_features=use_pose_features,
            use_deep_features=use_deep_features,
            use_velocity_features=use_velocity_features,
        )
        if use_velocity_features:
            self.velocity_estimator = VelocityGMM(
                n_components_velocity, warm_start_steps, reg_covar_velocity
            )
        if use_deep_features:
            self.appearance_estimator = GroupedKNN(n_neighbors_deep, max_bank_size)
        if use_pose_features:
            self.pose_estimator = GroupedKNN(n_neighbors_pose, max_bank_size)

    def estimators(self) -> dict[str, VelocityGMM | GroupedKNN]:
        """The enabled estimators by stream name (velocity, pose, appearance)."""
        named = {
            "velocity": "velocity_estimator",
            "pose": "pose_estimator",
            "appearance": "appearance_estimator",
        }
        return {
            stream: getattr(self, attr) for stream, attr in named.items() if hasattr(self, attr)
        }

    @property
    def is_fitted(self) -> bool:
        """Whether every enabled estimator is fitted."""
        return all(e.is_fitted for e in self.estimators().values())

    def score_streams(
        self, features: dict[FeatureType, torch.Tensor], held_out: str | None = None
    ) -> dict[str, torch.Tensor]:
        """Per stream, the (M,) normalised scores of M regions. `held_out`: the name of the
        training video they come from, left out of the kNN banks, so a training region is scored
        as a new video's would be (in the bank it is its own nearest neighbour, at distance 0)."""
        scores = {}
        for feature_type, stream in STREAMS.items():
            if stream in self.estimators():
                estimator = self.estimators()[stream]
                values = features[feature_type]
                if not values.numel():
                    scores[stream] = values.new_zeros(0)
                elif isinstance(estimator, GroupedKNN) and held_out is not None:
                    scores[stream] = estimator.predict(values, group=held_out)
                else:
                    scores[stream] = estimator.predict(values)
        return scores

    def bank_sizes(self) -> dict[str, int]:
        """Rows held by each estimator (kNN banks, GMM raw features)."""
        return {stream: len(e.memory_bank) for stream, e in self.estimators().items()}
