"""AI-VAD LightningModule: one pass over the training clips fits the density model; val and test score frames.

Nothing is trained by gradient descent (anomalib's `configure_optimizers()` returns None too):
the training epoch extracts per-region features of every clip into the density estimators,
and they are fitted before anything is scored: at the start of validation (Lightning validates
inside the training epoch, before `on_train_epoch_end`), or at the epoch's end when there is no
validation split. So `val/` metrics come from the fitted model, the same one the end-of-epoch
checkpoint holds and test scores. The presets run it as anomalib requires: one epoch, no
gradient clipping, no sanity validation, no NaN/gradient callbacks, `optim=none`.

Metrics (frame level, over all frames of the split; `val/` on the validation videos held out of
Test/, `test/` on the rest): `frame_auroc`, `frame_aupr` on scores smoothed over time with a
Gaussian of `sigma` frames, the same unsmoothed as `frame_auroc_raw` / `frame_aupr_raw`, and
per stream `frame_auroc_<stream>` (velocity, pose, appearance, dwell). Sweeps select on
`val/frame_auroc`.
Per-video score plots go to `<run folder>/plots/` and to the loggers (`test/scores/<video>`).

Checkpoints hold the extractors' weights (except those read from a cache file: RAFT, Mask R-CNN,
Keypoint R-CNN, CLIP) and everything a later merge needs: kNN banks with their per-video group
ids, the GMM and its raw velocity features. `model.init_from=CKPT` merges such a checkpoint:
its banks stay as their own groups, this run's features are added, the GMM warm-starts from its
parameters, and the normalisation is recomputed over everything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from anomalib.data import VideoBatch
from anomalib.models.video.ai_vad.features import FeatureType

from avlab.media import log_figure
from avlab.tasks.vad.metrics import (
    FrameScoreCollector,
    VideoScores,
    frame_metrics,
    video_scores_figure,
)
from avlab.tasks.vad.model import AiVadNet

log = logging.getLogger(__name__)

FEATURES_KEY = "aivad_feature_config"


class AiVadModule(L.LightningModule):
    """Fits AiVadNet's density estimators in one training epoch and scores test frames."""

    # The density model is fitted from every training clip's features in one process; under DDP
    # each rank would fit on its own shard (avlab.distributed refuses it, with this reason).
    distributed_training = False

    def __init__(
        self,
        net: AiVadNet,
        loss: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scheduler_interval: str = "step",
        sigma: float = 3.0,
        plots: bool = True,
        max_plots: int = 50,
        expect_init_from: bool = False,
    ) -> None:
        super().__init__()
        if loss is not None or optimizer is not None or scheduler is not None:
            raise ValueError(
                "AI-VAD is not trained by gradient descent: run it with `optim=none` and no loss "
                "(the aivad_scratch / aivad_finetune presets do)"
            )
        del scheduler_interval
        self.net = net
        self.sigma = sigma
        self.plots = plots
        self.max_plots = max_plots
        self.expect_init_from = expect_init_from
        self.scores = FrameScoreCollector(net.stream_lags())
        self.train_regions = 0
        self.train_frames = 0
        self.fit_pending = False

    def forward(self, clips: torch.Tensor):
        """AiVadNet's forward: features in training mode, scores in eval mode."""
        return self.net(clips)

    def configure_optimizers(self) -> None:
        """No optimizer: the density estimators are fitted, not trained."""
        return None

    def on_fit_start(self) -> None:
        """Refuse settings that would fit twice, and say when a fine-tune has nothing to merge."""
        if self.trainer.max_epochs != 1:
            raise ValueError(
                f"AI-VAD fits in one pass: trainer.max_epochs must be 1, not {self.trainer.max_epochs}"
            )
        if self.expect_init_from and not self.net.density.is_fitted:
            log.warning(
                "no model.init_from checkpoint given: fitting on this run's training clips only"
            )
        self.train_regions = self.train_frames = 0
        self.fit_pending = False

    def training_step(self, batch: VideoBatch, batch_idx: int) -> torch.Tensor:
        """Extract the batch's region features into the density estimators, grouped by video.

        Returns a constant zero "loss", as anomalib's AiVad does: Lightning then steps its mock
        optimizer, so the global step advances and the end-of-epoch checkpoint is written.
        """
        # camera-dependent settings (first batch); the dwell stream keeps the frames
        self.net.observe_training_clips(batch.image, batch.video_path)
        features = self.net(batch.image)
        for frame_features, video in zip(features, batch.video_path, strict=True):
            self.net.density.update(frame_features, group=video)
        regions = sum(len(f[FeatureType.VELOCITY]) for f in features)
        self.fit_pending = True
        self.train_regions += regions
        self.train_frames += len(features)
        self.log(
            "train/regions_per_frame", regions / max(1, len(features)), batch_size=len(features)
        )
        return torch.zeros((), requires_grad=True, device=self.device)

    def on_validation_start(self) -> None:
        """Fit before validating, so val/ metrics score the fitted model."""
        if self.fit_pending:
            self.fit_density()

    def on_train_epoch_end(self) -> None:
        """Fit now if no validation did (no validation split)."""
        if self.fit_pending:
            self.fit_density()

    def fit_density(self) -> None:
        """Fit (or merge into) the density estimators from everything collected."""
        self.fit_pending = False
        if self.train_regions == 0:
            raise ValueError(
                f"no regions were found in {self.train_frames} training frames: nothing moved, "
                "or the region settings (model.motion.binary_threshold, model.min_bbox_area) reject everything"
            )
        self.net.fit()
        sizes = self.net.density.bank_sizes()
        log.info(
            "AI-VAD fitted on %d regions of %d frames; bank sizes %s",
            self.train_regions,
            self.train_frames,
            sizes,
        )
        self.bank_sizes = {f"train/bank_{stream}": float(n) for stream, n in sizes.items()}
        if self.trainer.training:  # on_validation_start cannot log; the epoch end logs these
            self.log_dict(self.bank_sizes)

    def validation_step(self, batch: VideoBatch, batch_idx: int) -> None:
        """Score each validation clip's target frame and record it with its label."""
        self._score_batch(batch)

    def test_step(self, batch: VideoBatch, batch_idx: int) -> None:
        """Score each test clip's target frame and record it with its label."""
        self._score_batch(batch)

    def _score_batch(self, batch: VideoBatch) -> None:
        """Record the frame and stream scores of a batch of clips, with their labels."""
        out = self.net(batch.image, videos=batch.video_path)
        self.scores.add(
            batch.video_path, batch.frames, out.frame_scores, batch.gt_label, out.stream_scores
        )

    def on_validation_epoch_start(self) -> None:
        """Start collecting this validation's frame scores afresh (and the dwell stream's tracks)."""
        self.scores.reset()
        self.net.reset_tracks()

    def on_validation_epoch_end(self) -> None:
        """Log frame-level metrics over all validation frames (and the fitted bank sizes)."""
        videos = self.scores.videos()
        self.log_dict({f"val/{k}": v for k, v in self._frame_level_metrics(videos).items()})
        self.log_dict(getattr(self, "bank_sizes", {}))
        self.scores.reset()

    def on_test_epoch_start(self) -> None:
        """Start collecting this test run's frame scores afresh (and the dwell stream's tracks)."""
        self.scores.reset()
        self.net.reset_tracks()

    def on_test_epoch_end(self) -> None:
        """Log frame-level metrics over all test frames, write per-video plots."""
        videos = self.scores.videos()
        self.log_dict({f"test/{k}": v for k, v in self._frame_level_metrics(videos).items()})
        if self.plots:
            self._write_plots(videos)

    def _frame_level_metrics(self, videos: Mapping[str, VideoScores]) -> dict[str, float]:
        """Smoothed and raw frame AUROC/AUPR, the smoothed AUROC of each stream alone, frame count."""
        metrics = {"n_frames": float(sum(len(v.frames) for v in videos.values()))}
        raw = frame_metrics(videos)
        if not raw:
            log.warning("frames are all of one class: frame AUROC/AUPR are undefined, not logged")
            return metrics
        metrics |= frame_metrics(videos, self.sigma) | {f"{k}_raw": v for k, v in raw.items()}
        for stream in next(iter(videos.values())).streams:
            metrics[f"frame_auroc_{stream}"] = frame_metrics(videos, self.sigma, stream)[
                "frame_auroc"
            ]
        return metrics

    def _write_plots(self, videos: Mapping) -> None:
        """One PNG per test video (up to `max_plots`) under <run folder>/plots/, also sent to
        the loggers as `test/scores/<video>`."""
        folder = Path(self.trainer.default_root_dir) / "plots"
        for video, scores in list(videos.items())[: self.max_plots]:
            name = Path(video).name
            fig = video_scores_figure(name, scores, self.sigma)
            log_figure(self, f"test/scores/{name}", fig, path=folder / f"{name}.png")
        log.info("score plots of %d test videos in %s", min(len(videos), self.max_plots), folder)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record what the features mean; leave out weights that are read from cache files."""
        checkpoint[FEATURES_KEY] = self.net.feature_config
        prefixes = tuple(f"net.{p}" for p in self.net.cached_prefixes())
        if prefixes:
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(prefixes)
            }

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        """Load a checkpoint, taking the cache-file weights it leaves out from this module."""
        prefixes = tuple(f"net.{p}" for p in self.net.cached_prefixes())
        own = (
            {k: v for k, v in super().state_dict().items() if k.startswith(prefixes)}
            if prefixes
            else {}
        )
        return super().load_state_dict({**own, **state_dict}, strict=strict, assign=assign)

    def init_from_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Start from a fitted AI-VAD checkpoint: its extractor weights and density state, to merge into."""
        theirs, ours = checkpoint.get(FEATURES_KEY), self.net.feature_config
        if theirs is None:
            raise ValueError(
                f"model.init_from: the checkpoint has no {FEATURES_KEY} (not an AI-VAD fit)"
            )
        differ = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
        if differ:
            raise ValueError(
                "model.init_from: the checkpoint's features are not comparable with this run's; "
                + ", ".join(
                    f"model.{k}: checkpoint {a!r}, here {b!r}" for k, (a, b) in differ.items()
                )
            )
        self.load_state_dict(checkpoint["state_dict"], strict=True)
        if not self.net.density.is_fitted:
            raise ValueError(
                "model.init_from: the checkpoint's density model is not fitted (an unfinished run?)"
            )
        banks = self.net.density.bank_sizes()
        log.info(
            "model.init_from: starting from a fitted AI-VAD with bank sizes %s; this run's features are merged in",
            banks,
        )
