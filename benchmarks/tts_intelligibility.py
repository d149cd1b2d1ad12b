"""Does the TTS model speak? Transcribe its free-running speech with the pronunciation task's
phone recogniser and compare the phone error rate (PER) with that of espeak-ng's own audio of
the same held-out sentences (what the TTS model was trained to imitate).

    uv run python benchmarks/tts_intelligibility.py --tts CKPT --pron CKPT [--n 60]

The reference phones are the CMU dictionary's (stress removed), the phone set both tasks share.
PER = phone edit distance / reference length over all sentences (torchmetrics' word error
rate over space-separated phones). Both recordings go through the same recogniser, so the
gap between the two PERs is what the TTS model loses against its teacher; the recogniser's
own errors (it was trained on other espeak voices and sentences) are in both.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import hydra
import numpy as np
from torchmetrics.functional.text import word_error_rate

from avlab.audio import ESPEAK_SAMPLE_RATE, synthesize, write_wav
from avlab.audio.phones import word_phones
from avlab.checkpoints import load_checkpoint
from avlab.tasks.pronunciation.transcribe import load_checkpoint as load_recogniser
from avlab.tasks.pronunciation.transcribe import transcribe
from avlab.tasks.tts.synth import VOICE
from avlab.tasks.tts.synthesize import load_tts_checkpoint, speak


def reference_phones(text: str) -> list[str]:
    """The sentence's phones, word by word from the CMU dictionary (words it lacks are left out)."""
    phones = []
    for word in re.findall(r"[a-z']+", text.lower()):
        phones.extend(word_phones(word) or [])
    return phones


def held_out_sentences(tts_ckpt: str, n: int) -> list[str]:
    """The test split's sentences of the TTS run (rebuilt from the config in its checkpoint)."""
    _, cfg = load_checkpoint(tts_ckpt, "tts")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    return sorted(set(datamodule.splits["test"].sentences))[:n]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tts", required=True)
    parser.add_argument("--pron", required=True)
    parser.add_argument("--n", type=int, default=60)
    args = parser.parse_args()
    tts = load_tts_checkpoint(args.tts)
    recogniser = load_recogniser(args.pron)
    refs, heard_tts, heard_espeak = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(held_out_sentences(args.tts, args.n)):
            ref = reference_phones(text)
            tts_wav, espeak_wav = Path(tmp) / f"tts{i}.wav", Path(tmp) / f"espeak{i}.wav"
            write_wav(tts_wav, np.asarray(speak(tts, text)), ESPEAK_SAMPLE_RATE)
            write_wav(espeak_wav, synthesize(text, VOICE), ESPEAK_SAMPLE_RATE)
            refs.append(" ".join(ref))
            heard_tts.append(" ".join(transcribe(recogniser, tts_wav, ref)))
            heard_espeak.append(" ".join(transcribe(recogniser, espeak_wav, ref)))
            if i < 3:
                print(
                    f"{text!r}\n  reference {refs[-1]}\n  tts       {heard_tts[-1]}\n  espeak    {heard_espeak[-1]}"
                )
    per_tts = float(word_error_rate(heard_tts, refs))
    per_espeak = float(word_error_rate(heard_espeak, refs))
    print("| sentences | PER of TTS speech | PER of espeak-ng's speech |\n|---|---|---|")
    print(f"| {len(refs)} | {per_tts:.3f} | {per_espeak:.3f} |")


if __name__ == "__main__":
    main()
