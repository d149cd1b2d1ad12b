"""Phones from a trained pronunciation checkpoint: `transcribe(ckpt, wav)` (e.g. to check what a
TTS model said). The network is rebuilt from the config stored in the checkpoint, without Hydra
instantiation: only PronunciationNet is accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from avlab.audio import read_wav
from avlab.checkpoints import load_checkpoint as load_validated_checkpoint
from avlab.tasks.pronunciation.data import PHONE_ID, input_features, make_frontend
from avlab.tasks.pronunciation.model import PronunciationNet, PronunciationOutput
from avlab.tasks.pronunciation.module import greedy_ctc

NET_TARGET = f"{PronunciationNet.__module__}.{PronunciationNet.__name__}"


def load_checkpoint(path: str | Path) -> tuple[PronunciationNet, dict[str, Any]]:
    """The trained network (eval mode) and the run's data config from an avlab checkpoint
    (read through avlab's one validated checkpoint loader)."""
    checkpoint, stored = load_validated_checkpoint(path, "ckpt")
    config = OmegaConf.to_container(stored)
    net_cfg = dict(config["model"]["net"])
    if net_cfg.pop("_target_", None) != NET_TARGET:
        raise ValueError(f"{path}: not a pronunciation checkpoint (model.net is not {NET_TARGET})")
    net_cfg["pretrained"] = None  # the weights come from the checkpoint
    net = PronunciationNet(**net_cfg)
    prefix = "net."
    state = {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
    net.load_state_dict(state)
    return net.eval(), dict(config["data"])


def transcribe(
    checkpoint: str | Path | tuple[PronunciationNet, dict[str, Any]],
    wav: str | Path,
    canonical: list[str] | None = None,
) -> list[str]:
    """The ARPAbet phones a pronunciation model hears in a wav file (any rate; greedy CTC).

    `canonical`: the phones the text asks for. Only the `cross` variant's recognition reads
    them (its audio features attend to the text); the others ignore them.
    """
    loaded = load_checkpoint(checkpoint) if isinstance(checkpoint, str | Path) else checkpoint
    return greedy_ctc(listen(loaded, wav, canonical or ["AH"]))[0]


def listen(
    loaded: tuple[PronunciationNet, dict[str, Any]], wav: str | Path, canonical: list[str]
) -> PronunciationOutput:
    """The network's output for one wav file (any rate) read against the canonical phones."""
    net, data = loaded
    rate, kind = int(data.get("sample_rate", 16_000)), data.get("features", "logmel")
    audio, _ = read_wav(wav, rate)
    feats = input_features(
        torch.from_numpy(audio), kind, make_frontend(rate, data.get("n_mels", 80))
    )
    text = torch.tensor([[PHONE_ID[p] for p in canonical]])
    with torch.no_grad():
        return net(feats[None], torch.tensor([len(feats)]), text, torch.tensor([text.shape[1]]))
