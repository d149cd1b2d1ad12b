"""Pronunciation LightningModule: CTC phone recognition + mispronunciation detection/diagnosis.

Loss = ctc_weight x CTC(perceived phones) + decision_weight x CE(correct/substituted/deleted per
canonical phone) + diagnosis_weight x CE(the phone said, on substituted phones) + frame_weight x
CE(the CTC head's frames against the annotation's phone times, silence = blank). The frame
term uses times every L2-ARCTIC annotation carries; it gets CTC past its long all-blank start
in a few hundred CPU steps (frame_weight=0 turns it off).

Logged per val/test epoch (held-out speakers): `per` (greedy CTC phones against the perceived
phones, silences removed); MDD by the standard definitions (`mdd_precision`, `mdd_recall`,
`mdd_f1`, `diagnosis_acc`; see metrics.py) from `mdd_source`: `ctc` (the recognised phones
aligned to the canonical ones, as the literature scores it) or `heads` (the per-phone
detection and diagnosis heads), with the other source's F1 as `mdd_f1_heads` / `mdd_f1_ctc`;
and the detection head's per-phone 3-way decision (correct / substituted / deleted):
`error_acc`, `error_f1_weighted`, `error_f1_macro`. Each validation epoch also logs a sample
table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.text import WordErrorRate

from avlab.audio.phones import ARPABET
from avlab.tasks.base import TaskModule
from avlab.tasks.pronunciation.data import CORRECT, DELETED, IGNORE, SUBSTITUTED
from avlab.tasks.pronunciation.metrics import MDDCounts
from avlab.tasks.pronunciation.model import N_DECISIONS, PronunciationNet, PronunciationOutput

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("file", "canonical", "perceived", "predicted", "errors_true", "errors_predicted")


def ctc_loss(
    out: PronunciationOutput, perceived: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Mean CTC loss over the batch (float32; an impossible alignment counts as 0, not inf)."""
    log_probs = out.ctc_logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, C)
    return F.ctc_loss(log_probs, perceived, out.frame_lengths, lengths, blank=0, zero_infinity=True)


def frame_loss(
    out: PronunciationOutput, frame_phones: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """CE of the frame head against the phone heard at each frame's centre (0 = silence)."""
    steps = out.frame_logits.shape[1]
    k = torch.arange(steps, device=lengths.device)[None, :] + 0.5
    scale = lengths[:, None].float() / out.frame_lengths[:, None].clamp(min=1).float()
    index = (k * scale).long().clamp(max=frame_phones.shape[1] - 1)
    targets = frame_phones.gather(1, index)
    targets = targets.masked_fill(k >= out.frame_lengths[:, None], IGNORE)
    return F.cross_entropy(
        out.frame_logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE
    )


def augment(
    features: torch.Tensor,
    lengths: torch.Tensor,
    warp: float = 0.1,
    freq_masks: int = 2,
    freq_width: int = 8,
    time_masks: int = 2,
    time_width: int = 10,
) -> torch.Tensor:
    """Training-time log-mel augmentation: each utterance's mel axis stretched by a factor in
    [1 - warp, 1 + warp] (a cheap vocal-tract-length perturbation: new speakers), then SpecAugment
    frequency and time masks (set to 0, the normalised mean). Waveforms pass unchanged."""
    if features.shape[-1] == 1:
        return features
    out = features.clone()
    n_mels = features.shape[-1]
    for b in range(features.shape[0]):
        t = int(lengths[b])
        if warp > 0:
            size = max(1, round(n_mels * (1 + (2 * torch.rand(()) - 1) * warp).item()))
            # (1, frames, mels): frames act as channels, so the mel axis is what stretches
            warped = F.interpolate(out[b : b + 1, :t], size=size, mode="linear")[0, :, :n_mels]
            out[b, :t] = 0.0
            out[b, :t, : warped.shape[1]] = warped
        for _ in range(freq_masks):
            width = int(torch.randint(0, freq_width + 1, ()))
            start = int(torch.randint(0, max(1, n_mels - width), ()))
            out[b, :t, start : start + width] = 0.0
        for _ in range(time_masks):
            width = min(int(torch.randint(0, time_width + 1, ())), t // 10)
            start = int(torch.randint(0, max(1, t - width), ()))
            out[b, start : start + width] = 0.0
    return out


def greedy_ctc(out: PronunciationOutput) -> list[list[str]]:
    """Best-path CTC decoding: argmax per frame, repeats merged, blanks dropped."""
    best = out.ctc_logits.argmax(-1).cpu()
    phones = []
    for seq, length in zip(best, out.frame_lengths.cpu(), strict=True):
        seq = torch.unique_consecutive(seq[: int(length)])
        phones.append([ARPABET[int(i) - 1] for i in seq if i > 0])
    return phones


def predicted_said(out: PronunciationOutput, canonical: torch.Tensor) -> torch.Tensor:
    """Per canonical phone what the heads say was said: a phone id 1..39, or 0 = deleted.
    A substitution's phone is the best diagnosis other than the canonical phone."""
    decision = out.decision_logits.argmax(-1)
    diag = out.diagnosis_logits.detach().float().clone()
    canon = (canonical - 1).clamp(min=0)
    diag.scatter_(-1, canon[..., None], float("-inf"))
    substitute = diag.argmax(-1) + 1
    said = torch.where(decision == SUBSTITUTED, substitute, canonical)
    return torch.where(decision == DELETED, torch.zeros_like(said), said)


def _names(ids: torch.Tensor) -> list[str | None]:
    """Phone ids (1..39; 0 = deleted) as phone names (None = deleted)."""
    return [ARPABET[int(i) - 1] if i > 0 else None for i in ids]


class PronunciationModule(TaskModule):
    """Trains PronunciationNet on both tasks; the encoder may have its own learning rate."""

    def __init__(
        self,
        net: PronunciationNet,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
        loss: Any = None,
        ctc_weight: float = 1.0,
        decision_weight: float = 1.0,
        diagnosis_weight: float = 0.5,
        frame_weight: float = 0.5,
        encoder_lr: float | None = None,
        sample_rows: int = 3,
        mdd_source: str = "ctc",
        augmentation: dict[str, Any] | None = None,
    ) -> None:
        if mdd_source not in ("ctc", "heads"):
            raise ValueError(f"mdd_source must be ctc or heads, got {mdd_source!r}")
        super().__init__(net, None, optimizer, scheduler, scheduler_interval)
        self.mdd_source = mdd_source
        self.augmentation = augmentation
        self.weights = {
            "ctc": ctc_weight,
            "decision": decision_weight,
            "diagnosis": diagnosis_weight,
            "frame": frame_weight,
        }
        self.encoder_lr = encoder_lr
        self.sample_rows = sample_rows
        self.decision_metrics = torch.nn.ModuleDict(
            {stage: self._decision_metrics() for stage in ("val", "test")}
        )
        self.per = torch.nn.ModuleDict({stage: WordErrorRate() for stage in ("val", "test")})
        self._mdd: dict[str, tuple[MDDCounts, MDDCounts]] = {}
        self._samples: list[tuple[str, ...]] = []
        self._warned_short = False

    @staticmethod
    def _decision_metrics() -> MetricCollection:
        args = {"num_classes": N_DECISIONS, "ignore_index": IGNORE}
        return MetricCollection(
            {
                "error_acc": MulticlassAccuracy(average="micro", **args),
                "error_f1_weighted": MulticlassF1Score(average="weighted", **args),
                "error_f1_macro": MulticlassF1Score(average="macro", **args),
            }
        )

    def forward(self, batch: dict[str, Any]) -> PronunciationOutput:
        return self.net(
            batch["features"],
            batch["features_lengths"],
            batch["canonical"],
            batch["canonical_lengths"],
        )

    def _losses(self, batch: dict[str, Any], out: PronunciationOutput) -> dict[str, torch.Tensor]:
        """The three task losses and their weighted sum."""
        too_short = out.frame_lengths < batch["perceived_lengths"]
        if too_short.any() and not self._warned_short:
            self._warned_short = True
            log.warning(
                "%d utterance(s) have fewer encoder frames than perceived phones (e.g. %s); "
                "their CTC loss is set to 0",
                int(too_short.sum()),
                [u for u, s in zip(batch["utt"], too_short.tolist(), strict=True) if s][:3],
            )
        losses = {
            "ctc": ctc_loss(out, batch["perceived"], batch["perceived_lengths"]),
            "decision": F.cross_entropy(
                out.decision_logits.float().flatten(0, 1),
                batch["decision"].flatten(),
                ignore_index=IGNORE,
            ),
        }
        diagnosis = batch["diagnosis"].flatten()
        if (diagnosis != IGNORE).any():
            losses["diagnosis"] = F.cross_entropy(
                out.diagnosis_logits.float().flatten(0, 1), diagnosis, ignore_index=IGNORE
            )
        else:
            losses["diagnosis"] = out.diagnosis_logits.sum() * 0.0
        losses["frame"] = frame_loss(out, batch["frame_phones"], batch["frame_phones_lengths"])
        losses["loss"] = sum(self.weights[k] * v for k, v in losses.items())
        return losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.augmentation is not None:
            batch = {
                **batch,
                "features": augment(
                    batch["features"], batch["features_lengths"], **self.augmentation
                ),
            }
        losses = self._losses(batch, self(batch))
        self.log_step_values(
            {"train/loss": losses["loss"]} | {f"train/loss_{k}": losses[k] for k in self.weights},
            batch_size=len(batch["utt"]),
            prog_bar=("train/loss",),
        )
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)

    def _evaluate(self, batch: dict[str, Any], stage: str, batch_idx: int) -> None:
        """Losses, then every metric's running state for the epoch."""
        out = self(batch)
        losses = self._losses(batch, out)
        self.log(f"{stage}/loss", losses["loss"], prog_bar=True, batch_size=len(batch["utt"]))
        decision = out.decision_logits.argmax(-1)
        self.decision_metrics[stage].update(decision.flatten(), batch["decision"].flatten())
        recognised = greedy_ctc(out)
        perceived = [
            _names(p[: int(n)])
            for p, n in zip(batch["perceived"], batch["perceived_lengths"], strict=True)
        ]
        self.per[stage].update([" ".join(r) for r in recognised], [" ".join(p) for p in perceived])
        heads, ctc = self._mdd.setdefault(stage, (MDDCounts(), MDDCounts()))
        said = predicted_said(out, batch["canonical"])
        for i, n in enumerate(batch["canonical_lengths"].tolist()):
            canonical = _names(batch["canonical"][i, :n])
            truth = self._true_said(batch, i, n)
            heads.add(canonical, truth, _names(said[i, :n]))
            ctc.add_sequences(canonical, perceived[i], recognised[i])
            if stage == "val" and batch_idx == 0 and i < self.sample_rows:
                self._samples.append(
                    (
                        batch["utt"][i],
                        " ".join(canonical),
                        " ".join(perceived[i]),
                        " ".join(recognised[i]),
                        _error_string(batch["decision"][i, :n]),
                        _error_string(decision[i, :n]),
                    )
                )

    @staticmethod
    def _true_said(batch: dict[str, Any], i: int, n: int) -> list[str | None]:
        """What the annotators heard per canonical phone (ERR: a sound that is no phone)."""
        out: list[str | None] = []
        for canon, dec, diag in zip(
            batch["canonical"][i, :n],
            batch["decision"][i, :n],
            batch["diagnosis"][i, :n],
            strict=True,
        ):
            if dec == CORRECT:
                out.append(ARPABET[int(canon) - 1])
            elif dec == DELETED:
                out.append(None)
            else:
                out.append(ARPABET[int(diag)] if diag != IGNORE else "ERR")
        return out

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        self._log_samples()

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        """Compute, log and reset the epoch's metrics."""
        metrics = {f"{stage}/{k}": v for k, v in self.decision_metrics[stage].compute().items()}
        metrics[f"{stage}/per"] = self.per[stage].compute()
        counts = dict(
            zip(("heads", "ctc"), self._mdd.pop(stage, (MDDCounts(), MDDCounts())), strict=True)
        )
        other = "heads" if self.mdd_source == "ctc" else "ctc"
        metrics.update({f"{stage}/{k}": v for k, v in counts[self.mdd_source].scores().items()})
        metrics[f"{stage}/mdd_f1_{other}"] = counts[other].scores()["mdd_f1"]
        self.decision_metrics[stage].reset()
        self.per[stage].reset()
        self.log_dict({k: float(v) for k, v in metrics.items()}, prog_bar=stage == "val")

    def _log_samples(self) -> None:
        """The epoch's sample table: to the run log and to loggers that take tables."""
        rows, self._samples = self._samples, []
        if not rows or self.trainer.sanity_checking:
            return
        lines = [f"validation samples, epoch {self.current_epoch}:"]
        for row in rows:
            lines += [
                f"  {name:>16}: {value}" for name, value in zip(SAMPLE_COLUMNS, row, strict=True)
            ]
        log.info("\n".join(lines))
        for logger in self.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(
                    key="val/samples", columns=list(SAMPLE_COLUMNS), data=[list(r) for r in rows]
                )
            elif hasattr(logger, "experiment") and hasattr(logger.experiment, "add_text"):
                table = "\n".join(" | ".join(r) for r in rows)
                logger.experiment.add_text("val/samples", table, self.current_epoch)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Encoder and the rest (the encoder at `encoder_lr` when set), each split into decayed
        weight matrices and undecayed biases / norm scales / embeddings of padding."""
        encoder_ids = {id(p) for p in self.net.encoder_parameters()}
        groups = []
        for is_encoder in (True, False):
            params = [
                p
                for p in self.parameters()
                if p.requires_grad and (id(p) in encoder_ids) == is_encoder
            ]
            extra = {"lr": self.encoder_lr} if is_encoder and self.encoder_lr is not None else {}
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            groups += [
                {"params": decay, "name": f"{'encoder' if is_encoder else 'heads'}", **extra},
                {
                    "params": no_decay,
                    "weight_decay": 0.0,
                    "name": f"{'encoder' if is_encoder else 'heads'}_no_decay",
                    **extra,
                },
            ]
        return [g for g in groups if g["params"]]


def _error_string(decisions: torch.Tensor) -> str:
    """Per-phone decisions as a compact string: . correct, S substituted, D deleted."""
    return "".join(".SD"[int(d)] if d != IGNORE else "?" for d in decisions)
