"""TTS LightningModule: mel, KL, stop-token and guided-attention losses; teacher-forced and
free-running metrics; spectrogram, attention and Griffin-Lim samples each validation epoch."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import BinaryF1Score

from avlab.audio import write_wav
from avlab.tasks.base import TaskModule
from avlab.tasks.tts.data import SAMPLE_RATE
from avlab.tasks.tts.metrics import duration_summary, mcd_dtw
from avlab.tasks.tts.model import TTSNet, TTSOutput
from avlab.tasks.tts.vocoder import griffin_lim, save_figure

log = logging.getLogger(__name__)

SYMBOLS_KEY = "tts_symbols"


def kl_divergence(mu: Tensor, logvar: Tensor, logvar_limit: float = 10.0) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per utterance, summed over latent dims.

    logvar is clamped to +-logvar_limit first, so exp() stays finite for any input.
    """
    logvar = logvar.clamp(-logvar_limit, logvar_limit)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def stop_targets(mel_lengths: Tensor, reduction: int, n_steps: int) -> tuple[Tensor, Tensor]:
    """Stop-token target and mask per decoder step (B, n_steps).

    The target is 1 from the step holding the utterance's last real frame onwards and 0
    before; the mask keeps every step up to and including that one, so the whole utterance
    (and its end) is scored and only padding beyond it is ignored.
    """
    last_step = (mel_lengths + reduction - 1) // reduction - 1
    steps = torch.arange(n_steps, device=mel_lengths.device)[None]
    return (steps >= last_step[:, None]).float(), steps <= last_step[:, None]


def guided_attention_weights(
    text_lengths: Tensor, step_lengths: Tensor, n_text: int, n_steps: int, g: float = 0.2
) -> Tensor:
    """Tachibana et al. (2017) penalty W[s, n] = 1 - exp(-(n/N - s/S)^2 / (2 g^2)), zero on padding."""
    n = torch.arange(n_text, device=text_lengths.device)[None, None] / text_lengths[:, None, None]
    s = (
        torch.arange(n_steps, device=text_lengths.device)[None, :, None]
        / step_lengths[:, None, None]
    )
    weights = 1.0 - torch.exp(-((n - s) ** 2) / (2 * g * g))
    keep = (n < 1) & (s < 1)
    return weights * keep


class TTSLoss(nn.Module):
    """mel + KL (annealed) + stop-token BCE + guided attention, each switch usable alone.

    mel_loss: "l1" or "huber" (SmoothL1 with `huber_delta`), on the decoder output and, with a
    postnet, on the postnet output too. kl_weight ramps linearly from 0 over
    `kl_anneal_steps`. stop_label_smoothing eps maps targets to eps/2 and 1 - eps/2.
    `adaptive`: mel and stop terms weighted by learnt uncertainty (Kendall et al. 2018),
    weight * (exp(-s) * L + s) with s kept within +-`adaptive_limit`.
    """

    def __init__(
        self,
        mel_weight: float = 1.0,
        kl_weight: float = 0.5,
        stop_weight: float = 1.0,
        guided_weight: float = 1.0,
        mel_loss: str = "l1",
        huber_delta: float = 1.0,
        stop_label_smoothing: float = 0.0,
        stop_pos_weight: float = 5.0,
        kl_anneal_steps: int = 1000,
        guided_sigma: float = 0.2,
        adaptive: bool = False,
        adaptive_limit: float = 3.0,
        logvar_limit: float = 10.0,
    ) -> None:
        super().__init__()
        if mel_loss not in ("l1", "huber"):
            raise ValueError(f"loss.mel_loss must be 'l1' or 'huber', got {mel_loss!r}")
        self.weights = {
            "mel": mel_weight,
            "kl": kl_weight,
            "stop": stop_weight,
            "guided": guided_weight,
        }
        self.mel_loss, self.huber_delta = mel_loss, huber_delta
        self.stop_label_smoothing, self.stop_pos_weight = stop_label_smoothing, stop_pos_weight
        self.kl_anneal_steps, self.guided_sigma = kl_anneal_steps, guided_sigma
        self.adaptive_limit, self.logvar_limit = adaptive_limit, logvar_limit
        self.log_vars = nn.ParameterDict(
            {k: nn.Parameter(torch.zeros(())) for k in ("mel", "stop")} if adaptive else {}
        )

    def kl_scale(self, step: int) -> float:
        """The KL annealing factor at a global step, 0 -> 1."""
        return min(1.0, step / self.kl_anneal_steps) if self.kl_anneal_steps > 0 else 1.0

    def mel_term(self, pred: Tensor, target: Tensor, frame_mask: Tensor) -> Tensor:
        """Masked mean L1 or Huber over real frames and bands."""
        if self.mel_loss == "l1":
            err = (pred - target).abs()
        else:
            err = F.smooth_l1_loss(pred, target, reduction="none", beta=self.huber_delta)
        mask = frame_mask[..., None].to(err.dtype)
        return (err * mask).sum() / (mask.sum() * err.shape[-1]).clamp_min(1.0)

    def forward(
        self,
        out: TTSOutput,
        mel: Tensor,
        frame_mask: Tensor,
        stop_target: Tensor,
        stop_mask: Tensor,
        guide: Tensor,
        step: int,
    ) -> dict[str, Tensor]:
        """Every term (unweighted) and the weighted total under "loss"."""
        mel_term = self.mel_term(out.mel, mel, frame_mask)
        if out.mel_post is not out.mel:
            mel_term = mel_term + self.mel_term(out.mel_post, mel, frame_mask)
        kl = kl_divergence(out.mu, out.logvar, self.logvar_limit).mean()
        eps = self.stop_label_smoothing
        smoothed = stop_target * (1 - eps) + 0.5 * eps
        bce = F.binary_cross_entropy_with_logits(
            out.stop_logits,
            smoothed,
            pos_weight=torch.tensor(self.stop_pos_weight, device=mel.device),
            reduction="none",
        )
        stop = (bce * stop_mask).sum() / stop_mask.sum().clamp_min(1)
        # Summed over symbols, averaged over real decoder steps: the attention mass each step
        # puts off the diagonal band (the plain mean over symbols is ~N times weaker).
        guided = (out.attention * guide).sum() / stop_mask.sum().clamp_min(1)
        terms = {"mel": mel_term, "kl": kl, "stop": stop, "guided": guided}
        total = self.weights["kl"] * self.kl_scale(step) * kl
        total = total + self.weights["guided"] * guided
        for name in ("mel", "stop"):
            total = total + self._weighted(name, terms[name])
        return {**terms, "loss": total}

    def _weighted(self, name: str, term: Tensor) -> Tensor:
        """Fixed weight, or the uncertainty weighting when adaptive."""
        if name not in self.log_vars:
            return self.weights[name] * term
        s = self.log_vars[name].clamp(-self.adaptive_limit, self.adaptive_limit)
        return self.weights[name] * (torch.exp(-s) * term + s)


class TTSModule(TaskModule):
    """Trains TTSNet on normalised log-mels.

    Normalisation statistics (per-band mean and std of the training split) and the text
    front end's symbol table are taken from the datamodule when fitting starts and saved in
    every checkpoint (buffers `mel_mean`, `mel_std`; `checkpoint["tts_symbols"]`).

    Logged per stage (val teacher-forced): `loss`, `mel_l1` (L1 of the postnet output in
    normalised units), `kl`, `stop_f1` (threshold 0.5, over every real decoder step),
    `focus_rate` (mean over real decoder steps of the largest attention weight). Free-running
    on held-out sentences (val: the first `free_running_val` of the first batch; test: all):
    `duration_ratio` (median generated / reference frames), `duration_ok` (share in
    [0.8, 1.25]), `stop_failures` (share with no stop within 2x the reference length), `mcd`
    (see metrics.py) and `mcd_baseline` (the training mean frame repeated for the reference
    length).
    """

    def __init__(
        self,
        net: TTSNet,
        loss: TTSLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
        features: Mapping[str, Any] | None = None,
        text_frontend: str = "phonemes",
        free_running_val: int = 8,
        media_examples: int = 2,
        griffin_lim_iters: int = 32,
    ) -> None:
        super().__init__(net, loss, optimizer, scheduler, scheduler_interval)
        self.features = dict(features or {})
        self.text_frontend = text_frontend
        self.free_running_val = free_running_val
        self.media_examples = media_examples
        self.griffin_lim_iters = griffin_lim_iters
        self.symbols: list[str] | None = None
        self.register_buffer("mel_mean", torch.zeros(net.n_mels))
        self.register_buffer("mel_std", torch.ones(net.n_mels))
        self.register_buffer("stats_ready", torch.tensor(False))
        self.stop_f1 = nn.ModuleDict({s: BinaryF1Score() for s in ("val", "test")})
        self._free: dict[str, dict[str, list]] = {}
        self._focus: dict[str, list[float]] = {}
        self._media: list[dict[str, Tensor]] = []

    def on_fit_start(self) -> None:
        """Take normalisation statistics and the symbol table from the datamodule."""
        datamodule = self.trainer.datamodule
        if not bool(self.stats_ready):
            mean, std = datamodule.mel_stats()
            self.mel_mean.copy_(mean)
            self.mel_std.copy_(std)
            self.net.position_rate.fill_(datamodule.symbols_per_frame() * self.net.reduction)
            self.stats_ready.fill_(True)
            log.info("tts: %.3f symbols per decoder step", float(self.net.position_rate))
        self._check_symbols(list(datamodule.symbols))

    def on_test_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self._check_symbols(list(datamodule.symbols))

    def _check_symbols(self, symbols: list[str]) -> None:
        """Adopt the data's symbol table, refusing one that differs from the checkpoint's."""
        if self.symbols is not None and self.symbols != symbols:
            raise ValueError(
                "the data's text front end gives another symbol table than this checkpoint "
                f"was trained with ({len(symbols)} vs {len(self.symbols)} symbols)"
            )
        if len(symbols) > self.net.n_symbols:
            raise ValueError(
                f"the text front end has {len(symbols)} symbols; model.net.n_symbols is "
                f"{self.net.n_symbols}"
            )
        self.symbols = symbols

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SYMBOLS_KEY] = list(self.symbols or [])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.symbols = list(checkpoint.get(SYMBOLS_KEY) or []) or None

    def normalise(self, mel: Tensor) -> Tensor:
        return (mel - self.mel_mean) / self.mel_std

    def denormalise(self, mel: Tensor) -> Tensor:
        return mel * self.mel_std + self.mel_mean

    def _prepare(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Normalised mel padded to a multiple of r, frame mask, stop targets, guide weights."""
        r = self.net.reduction
        mel = self.normalise(batch["mel"])
        n_frames = mel.shape[1]
        mel = F.pad(mel, (0, 0, 0, (-n_frames) % r))
        lengths = batch["mel_lengths"]
        frame_mask = torch.arange(mel.shape[1], device=mel.device)[None] < lengths[:, None]
        mel = mel * frame_mask[..., None]
        n_steps = mel.shape[1] // r
        stop_target, stop_mask = stop_targets(lengths, r, n_steps)
        step_lengths = (lengths + r - 1) // r
        guide = guided_attention_weights(
            batch["text_lengths"],
            step_lengths,
            batch["text"].shape[1],
            n_steps,
            self.criterion.guided_sigma,
        )
        return {
            "mel": mel,
            "frame_mask": frame_mask,
            "stop_target": stop_target,
            "stop_mask": stop_mask,
            "guide": guide,
        }

    def _step(self, batch: dict[str, Tensor], stage: str) -> tuple[TTSOutput, dict, dict]:
        prep = self._prepare(batch)
        out = self.net(batch["text"], batch["text_lengths"], prep["mel"], batch["mel_lengths"])
        losses = self.criterion(
            out,
            prep["mel"],
            prep["frame_mask"],
            prep["stop_target"],
            prep["stop_mask"],
            prep["guide"],
            self.global_step,
        )
        size = batch["text"].shape[0]
        if stage == "train":
            values = {"train/loss": losses["loss"]}
            values.update({f"train/{k}": v for k, v in losses.items() if k != "loss"})
            values["train/kl_scale"] = self.criterion.kl_scale(self.global_step)
            self.log_step_values(values, batch_size=size, prog_bar=("train/loss",))
        else:
            self.log(f"{stage}/loss", losses["loss"], prog_bar=True, batch_size=size)
        return out, losses, prep

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[1]["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> None:
        """Teacher-forced metrics on the batch; free-running metrics on held-out sentences."""
        out, losses, prep = self._step(batch, stage)
        size = batch["text"].shape[0]
        err = (out.mel_post - prep["mel"]).abs().mean(-1)
        mask = prep["frame_mask"].float()
        self.log(f"{stage}/mel_l1", (err * mask).sum() / mask.sum(), batch_size=size)
        self.log(f"{stage}/kl", losses["kl"], batch_size=size)
        steps = prep["stop_mask"]
        self.stop_f1[stage].update(
            torch.sigmoid(out.stop_logits)[steps], prep["stop_target"][steps]
        )
        self.log(f"{stage}/stop_f1", self.stop_f1[stage], batch_size=size, prog_bar=True)
        focus = out.attention.max(-1).values[steps]
        self._focus.setdefault(stage, []).extend(focus.tolist())
        if stage == "test" or batch_idx == 0:
            count = size if stage == "test" else min(size, self.free_running_val)
            self._free_running(batch, stage, count)
        if stage == "val" and batch_idx == 0 and not self.trainer.sanity_checking:
            self._media = self._media_items(batch, out, prep)

    def _free_running(self, batch: dict[str, Tensor], stage: str, count: int) -> None:
        """Synthesise `count` sentences of the batch from text alone; keep per-sentence figures."""
        if count <= 0:
            return
        r = self.net.reduction
        ref_lengths = batch["mel_lengths"][:count]
        max_steps = int(math.ceil(2 * int(ref_lengths.max()) / r)) + 1
        mel, frames, _ = self.net.generate(
            batch["text"][:count], batch["text_lengths"][:count], max_steps
        )
        mel = self.denormalise(mel).float().cpu()
        baseline = self.mel_mean.float().cpu().numpy()
        store = self._free.setdefault(stage, {"ratio": [], "fail": [], "mcd": [], "base": []})
        for i in range(count):
            ref_len, gen_len = int(ref_lengths[i]), int(frames[i])
            reference = batch["mel"][i, :ref_len].float().cpu().numpy()
            store["ratio"].append(gen_len / ref_len)
            store["fail"].append(gen_len > 2 * ref_len)
            store["mcd"].append(mcd_dtw(reference, mel[i, :gen_len].numpy()))
            store["base"].append(mcd_dtw(reference, np.tile(baseline, (ref_len, 1))))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self._media:
            self._write_media(self._media)
            self._media = []

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        """Focus rate and the free-running figures over the epoch, then forget them."""
        focus = self._focus.pop(stage, [])
        if focus:
            self.log(f"{stage}/focus_rate", float(np.mean(focus)), prog_bar=stage == "val")
        free = self._free.pop(stage, None)
        if not free or not free["ratio"]:
            return
        metrics = duration_summary(free["ratio"], free["fail"])
        metrics["mcd"] = float(np.mean(free["mcd"]))
        metrics["mcd_baseline"] = float(np.mean(free["base"]))
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()})

    def _media_items(self, batch: dict[str, Tensor], out: TTSOutput, prep: dict) -> list[dict]:
        """Target, teacher-forced and free-running mels and attention of a few examples."""
        count = min(self.media_examples, batch["text"].shape[0])
        if count == 0:
            return []
        max_steps = int(math.ceil(2 * int(batch["mel_lengths"][:count].max()) / self.net.reduction))
        free_mel, frames, free_attn = self.net.generate(
            batch["text"][:count], batch["text_lengths"][:count], max_steps + 1
        )
        items = []
        for i in range(count):
            n_ref, n_text = int(batch["mel_lengths"][i]), int(batch["text_lengths"][i])
            n_steps = int(prep["stop_mask"][i].sum())
            n_free = int(frames[i])
            items.append(
                {
                    "target": prep["mel"][i, :n_ref].detach().cpu(),
                    "teacher": out.mel_post[i, :n_ref].detach().cpu(),
                    "attention": out.attention[i, :n_steps, :n_text].detach().cpu(),
                    "free": free_mel[i, :n_free].detach().cpu(),
                    "free_attention": free_attn[i, : n_free // self.net.reduction, :n_text].cpu(),
                }
            )
        return items

    def _write_media(self, items: list[dict]) -> None:
        """PNGs and Griffin-Lim wavs in the run folder; images and audio to TensorBoard / W&B."""
        folder = Path(self.trainer.default_root_dir) / "media" / f"epoch_{self.current_epoch:03d}"
        for k, item in enumerate(items):
            png = folder / f"val_{k}.png"
            save_figure(
                png,
                [
                    ("target (normalised log-mel)", item["target"].T.numpy()),
                    ("predicted, teacher-forced", item["teacher"].T.numpy()),
                    ("predicted, free-running", item["free"].T.numpy()),
                    ("attention, teacher-forced (symbol x step)", item["attention"].T.numpy()),
                    ("attention, free-running", item["free_attention"].T.numpy()),
                ],
            )
            audio = griffin_lim(
                self.denormalise(item["free"].to(self.mel_mean.device)).cpu(),
                self.features,
                self.griffin_lim_iters,
            )
            write_wav(folder / f"val_{k}_free_running.wav", audio, SAMPLE_RATE)
            self._log_media(k, png, audio)

    def _log_media(self, k: int, png: Path, audio: np.ndarray) -> None:
        """Hand the picture and sound to TensorBoard and W&B, if either is logging."""
        for logger in self.loggers:
            name = type(logger).__name__
            try:
                if name == "TensorBoardLogger":
                    import matplotlib.image as mpimg

                    image = mpimg.imread(png)[..., :3]
                    logger.experiment.add_image(
                        f"val/example_{k}", image, self.global_step, dataformats="HWC"
                    )
                    logger.experiment.add_audio(
                        f"val/example_{k}_audio", audio[None], self.global_step, SAMPLE_RATE
                    )
                elif name == "WandbLogger":
                    import wandb

                    logger.experiment.log(
                        {
                            f"val/example_{k}": wandb.Image(str(png)),
                            f"val/example_{k}_audio": wandb.Audio(audio, sample_rate=SAMPLE_RATE),
                            "trainer/global_step": self.global_step,
                        }
                    )
            except Exception as err:  # a logger's media API must not end a training run
                log.warning("could not log media to %s: %s", name, err)
