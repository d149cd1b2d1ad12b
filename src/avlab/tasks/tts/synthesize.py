"""Speak a sentence with a trained TTS checkpoint (Griffin-Lim vocoder).

    uv run python -m avlab.tasks.tts.synthesize ckpt=PATH text="The dog saw the cat." out=hello.wav

Optional: `max_seconds=10` (the longest utterance produced if the model never stops),
`griffin_lim_iters=64`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avlab.audio import write_wav
from avlab.checkpoints import load_checkpoint
from avlab.run import build_module
from avlab.tasks.tts.data import SAMPLE_RATE, TextFrontEnd
from avlab.tasks.tts.module import SYMBOLS_KEY, TTSModule
from avlab.tasks.tts.vocoder import griffin_lim


def load_tts_checkpoint(path: str | Path) -> TTSModule:
    """A TTSModule rebuilt from the config stored in its checkpoint, with its weights and symbols.

    Goes through avlab's one checkpoint loader: weights only, every stored `_target_` checked
    before anything is built, and a checkpoint of another task refused.
    """
    checkpoint, cfg = load_checkpoint(
        path, "ckpt", expect_module=f"{TTSModule.__module__}.{TTSModule.__name__}"
    )
    cfg.model.init_from = None
    module = build_module(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    if not module.symbols:
        raise ValueError(f"{path}: the checkpoint holds no symbol table ({SYMBOLS_KEY})")
    return module.eval()


@dataclass
class Speech:
    """A synthesised utterance: the waveform and what produced it."""

    audio: np.ndarray  # float32 waveform at SAMPLE_RATE
    log_mel: torch.Tensor  # (frames, n_mels) log-mel the vocoder inverted
    attention: torch.Tensor  # (decoder steps, symbols)
    symbols: list[str]  # the text front end's symbols of the input
    stopped: bool  # whether the stop head ended it (else max_seconds did)


@torch.no_grad()
def synthesise(
    module: TTSModule, text: str, max_seconds: float = 10.0, griffin_lim_iters: int = 64
) -> Speech:
    """Text -> Speech, through the checkpoint's own text front end."""
    frontend = TextFrontEnd(module.text_frontend)
    if list(frontend.symbols) != list(module.symbols):
        raise ValueError("this avlab's text front end differs from the checkpoint's symbol table")
    ids = torch.tensor([frontend.encode(text)])
    hop = module.features.get("hop_length", 256)
    max_steps = int(max_seconds * SAMPLE_RATE / hop / module.net.reduction) + 1
    mel, frames, attention = module.net.generate(ids, torch.tensor([ids.shape[1]]), max_steps)
    n = int(frames[0])
    log_mel = module.denormalise(mel[0, :n])
    steps = -(-n // module.net.reduction)
    return Speech(
        audio=griffin_lim(log_mel, module.features, griffin_lim_iters),
        log_mel=log_mel,
        attention=attention[0, :steps],
        symbols=[frontend.symbols[i] for i in ids[0].tolist()],
        stopped=n < max_steps * module.net.reduction,
    )


def speak(module: TTSModule, text: str, max_seconds: float = 10.0, griffin_lim_iters: int = 64):
    """Text -> float32 waveform at 22,050 Hz, through the checkpoint's own text front end."""
    return synthesise(module, text, max_seconds, griffin_lim_iters).audio


def parse_args(argv: list[str]) -> dict[str, Any]:
    """key=value arguments, as Hydra's command line takes them."""
    args: dict[str, Any] = {"out": "tts.wav", "max_seconds": 10.0, "griffin_lim_iters": 64}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in ("ckpt", "text", "out", "max_seconds", "griffin_lim_iters"):
            raise SystemExit(f"unknown argument {item!r}; usage: {__doc__.strip().splitlines()[2]}")
        args[key] = value
    for needed in ("ckpt", "text"):
        if needed not in args:
            raise SystemExit(f"missing {needed}=...; usage: {__doc__.strip().splitlines()[2]}")
    return args


def main(argv: list[str] | None = None) -> Path:
    """Synthesise `text` with `ckpt` into the wav file `out`; returns its path."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    module = load_tts_checkpoint(args["ckpt"])
    audio = speak(module, args["text"], float(args["max_seconds"]), int(args["griffin_lim_iters"]))
    out = Path(args["out"])
    write_wav(out, audio, SAMPLE_RATE)
    print(f"wrote {out} ({len(audio) / SAMPLE_RATE:.2f} s)")
    return out


if __name__ == "__main__":
    main()
