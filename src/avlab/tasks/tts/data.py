"""TTS data: the LJSpeech-1.1 reader, the text front end, log-mel features, one DataModule.

A sample is one utterance, as a dict:
    text      (N,)        long    symbol ids of the text front end, ending with EOS
    mel       (T, 80)     float   log-mel (natural log of the floored mel power), NOT normalised:
                                  the module normalises with training-split statistics it keeps
                                  in its checkpoint
    index     ()          long    the utterance's row within its split
A batch pads `text` with PAD (0) and `mel` with zeros, and adds `text_lengths` and `mel_lengths`.
Train / val / test are disjoint sets of distinct normalized sentences.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from avlab.audio import LogMel, read_wav
from avlab.audio.io import resample
from avlab.audio.phones import ARPABET, word_phones
from avlab.data_order import order_for_trainer
from avlab.data_utils import DatasetError, ensure_generated, make_loader, seeded_split

log = logging.getLogger(__name__)

SAMPLE_RATE = 22_050
PAD, EOS = "<pad>", "<eos>"
PUNCTUATION = tuple(",.?!;:-\"'")
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
WORD_BREAK = " "
_TOKENS = re.compile(r"[a-z']+|\s+|[^\sa-z']")


@dataclass(frozen=True)
class Utterance:
    """One row of metadata.csv: its ID, raw and normalized text, and its wav path."""

    uid: str
    raw: str
    text: str
    wav: Path
    row: int


def read_ljspeech(root: str | Path, metadata: str = "metadata.csv") -> list[Utterance]:
    """Rows of LJSpeech's metadata.csv (`ID|raw|normalized`, no header, quoting off).

    A row without exactly three fields, or with an empty ID or normalized text, raises
    DatasetError naming the file and row. Wav files are checked when read.
    """
    root = Path(root)
    path = root / metadata
    if not path.is_file():
        raise DatasetError(f"{path}: LJSpeech metadata file not found")
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="|", quoting=csv.QUOTE_NONE)
        for row_no, fields in enumerate(reader, start=1):
            if not fields:
                continue
            if len(fields) != 3 or not fields[0].strip() or not fields[2].strip():
                raise DatasetError(
                    f"{path}, row {row_no}: expected `ID|raw text|normalized text` "
                    f"(3 fields, ID and normalized text non-empty), got {'|'.join(fields)!r}"
                )
            uid = fields[0].strip()
            rows.append(Utterance(uid, fields[1], fields[2], root / "wavs" / f"{uid}.wav", row_no))
    if not rows:
        raise DatasetError(f"{path}: no utterances listed")
    return rows


class TextFrontEnd:
    """Text -> symbol ids: ARPAbet phonemes (`phonemes`) or letters (`characters`).

    Phonemes come from the CMU dictionary (`avlab.audio.phones`); a word it lacks is spelt
    with letter symbols, which the phoneme table also holds. Words are separated by a word-break
    symbol, punctuation is kept, and every sequence ends with EOS. Id 0 is padding. The symbol
    table (`symbols`) is stored with the checkpoint, so a model reads text as it was trained.
    """

    KINDS = ("phonemes", "characters")

    def __init__(self, kind: str = "phonemes") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"text front end must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        units = (*ARPABET, *LETTERS) if kind == "phonemes" else LETTERS
        self.symbols: tuple[str, ...] = (PAD, EOS, WORD_BREAK, *PUNCTUATION, *units)
        self._ids = {symbol: i for i, symbol in enumerate(self.symbols)}
        self.oov_words = 0

    def units(self, text: str) -> list[str]:
        """The symbols of `text`, without EOS."""
        out: list[str] = []
        for token in _TOKENS.findall(text.strip().lower()):
            if token.isspace():
                if out and out[-1] != WORD_BREAK:
                    out.append(WORD_BREAK)
            elif token[0].isalpha() or token[0] == "'":
                out.extend(self._word(token))
            elif token in self._ids:
                out.append(token)
        return out

    def _word(self, word: str) -> list[str]:
        """One word's units: its phones, or its letters (characters, or a word cmudict lacks)."""
        if self.kind == "phonemes":
            phones = word_phones(word.strip("'"))
            if phones is not None:
                return phones
            self.oov_words += 1
        return [c for c in word if c in self._ids]

    def encode(self, text: str) -> list[int]:
        """Symbol ids of `text`, ending with EOS."""
        return [self._ids[u] for u in self.units(text)] + [self._ids[EOS]]


class MelFeatures:
    """Waveform -> (frames, n_mels) log-mel, with leading and trailing silence trimmed.

    `trim_db`: frames whose energy lies more than this below the utterance's loudest frame are
    trimmed from both ends (keeping `trim_margin` frames), as LJSpeech recipes trim the pauses
    around each utterance; null keeps every frame.
    """

    def __init__(
        self,
        n_mels: int = 80,
        n_fft: int = 1024,
        hop_length: int = 256,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        floor: float = 1e-5,
        trim_db: float | None = 40.0,
        trim_margin: int = 2,
    ) -> None:
        self.logmel = LogMel(SAMPLE_RATE, n_mels, n_fft, hop_length, f_min, f_max, floor)
        self.trim_db, self.trim_margin = trim_db, trim_margin

    @torch.no_grad()
    def __call__(self, audio: np.ndarray) -> torch.Tensor:
        mel = self.logmel(torch.from_numpy(audio)).T.contiguous()
        if self.trim_db is None:
            return mel
        energy = torch.logsumexp(mel, dim=1)
        loud = torch.nonzero(energy > energy.max() - self.trim_db / 10 * np.log(10)).flatten()
        if len(loud) == 0:
            return mel
        start = max(0, int(loud[0]) - self.trim_margin)
        end = min(len(mel), int(loud[-1]) + 1 + self.trim_margin)
        return mel[start:end]


class TTSDataset(Dataset):
    """Precomputed (text ids, log-mel) pairs of one split."""

    def __init__(self, texts: list[torch.Tensor], mels: list[torch.Tensor], sentences: list[str]):
        self.texts, self.mels, self.sentences = texts, mels, sentences

    def __len__(self) -> int:
        return len(self.mels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"text": self.texts[index], "mel": self.mels[index], "index": torch.tensor(index)}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad a list of samples into a batch (text with PAD, mel with zeros) with their lengths."""
    text = torch.nn.utils.rnn.pad_sequence([i["text"] for i in items], batch_first=True)
    mel = torch.nn.utils.rnn.pad_sequence([i["mel"] for i in items], batch_first=True)
    return {
        "text": text,
        "text_lengths": torch.tensor([len(i["text"]) for i in items]),
        "mel": mel,
        "mel_lengths": torch.tensor([len(i["mel"]) for i in items]),
        "index": torch.stack([i["index"] for i in items]),
    }


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of utterances of similar length (less padding), in a new random order each epoch."""

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool = True) -> None:
        self.lengths, self.batch_size = list(lengths), batch_size
        order = np.argsort(lengths, kind="stable")
        self.batches = [
            order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)
        ]
        self.shuffle = shuffle

    def __len__(self) -> int:
        return len(self.batches)

    def with_batch_size(self, batch_size: int) -> LengthBucketSampler:
        """The same sampler at another batch size (DDP draws the global batch and splits it)."""
        return LengthBucketSampler(self.lengths, batch_size, self.shuffle)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.batches)).tolist() if self.shuffle else range(len(self))
        for i in order:
            yield self.batches[i]


def _synthesizer() -> Any:
    """The default dataset's generator (imported lazily: only needed when generating)."""
    from avlab.tasks.tts.synth import write_ljspeech

    return write_ljspeech


class TTSDataModule(L.LightningDataModule):
    """An LJSpeech-layout corpus, split by distinct normalized sentence into train / val / test.

    `synth`: parameters of the generated default (null: real data only). Wavs must be 22,050 Hz
    unless `resample` is true. Features are computed once in `setup` and kept in memory.
    """

    def __init__(
        self,
        root: str,
        synth: Mapping[str, Any] | None = None,
        metadata: str = "metadata.csv",
        text_frontend: str = "phonemes",
        features: Mapping[str, Any] | None = None,
        resample: bool = False,
        max_utterances: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        self.root, self.synth = Path(root), dict(synth) if synth else None
        self.metadata = metadata
        self.frontend = TextFrontEnd(text_frontend)
        self.features = MelFeatures(**(features or {}))
        self.resample = resample
        self.max_utterances = max_utterances
        self.batch_size, self.num_workers = batch_size, num_workers
        self.fractions, self.split_seed = (val_fraction, test_fraction), split_seed
        self.splits: dict[str, TTSDataset] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        """The text front end's symbol table."""
        return self.frontend.symbols

    def prepare_data(self) -> None:
        """Generate the default dataset if it is missing; a real dataset is only read."""
        ensure_generated(self.root, "TTS (LJSpeech layout)", _synthesizer(), self.synth)

    def setup(self, stage: str | None = None) -> None:
        """Read metadata, split by sentence, compute every utterance's features once."""
        if self.splits:
            return
        rows = read_ljspeech(self.root, self.metadata)[: self.max_utterances]
        sentences = sorted({r.text.strip().lower() for r in rows})
        split = seeded_split(len(sentences), self.fractions, self.split_seed)
        for name, indices in split.items():
            chosen = {sentences[i] for i in indices}
            part = [r for r in rows if r.text.strip().lower() in chosen]
            if not part:
                raise DatasetError(f"{self.root}: the {name} split holds no utterances")
            self.splits[name] = TTSDataset(
                [torch.tensor(self.frontend.encode(r.text)) for r in part],
                [self._mel(r) for r in part],
                [r.text for r in part],
            )
        if self.frontend.oov_words:
            log.info("tts: %d words not in the CMU dictionary were spelt", self.frontend.oov_words)
        log.info(
            "tts data %s: utterances per split %s",
            self.root,
            {k: len(v) for k, v in self.splits.items()},
        )

    def _mel(self, row: Utterance) -> torch.Tensor:
        """Log-mel of one row's wav; a wrong sample rate is an error unless `resample`."""
        try:
            audio, rate = read_wav(row.wav)
        except DatasetError as err:
            raise DatasetError(f"{self.root / self.metadata}, row {row.row}: {err}") from err
        if rate != SAMPLE_RATE:
            if not self.resample:
                raise DatasetError(
                    f"{row.wav} (metadata row {row.row}): sample rate {rate} Hz, expected "
                    f"{SAMPLE_RATE}; set data.resample=true to resample"
                )
            audio = resample(audio, rate, SAMPLE_RATE)
        return self.features(audio)

    def mel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band mean and standard deviation of the training split's log-mel frames."""
        frames = torch.cat(self.splits["train"].mels)
        return frames.mean(0), frames.std(0).clamp_min(1e-3)

    def symbols_per_frame(self) -> float:
        """Text symbols per mel frame over the training split (the speaking rate)."""
        data = self.splits["train"]
        return sum(len(t) for t in data.texts) / sum(len(m) for m in data.mels)

    def train_dataloader(self) -> DataLoader:
        data = self.splits["train"]
        sampler = LengthBucketSampler([len(m) for m in data.mels], self.batch_size)
        return order_for_trainer(self._loader(data, batch_sampler=sampler), self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, name: str) -> DataLoader:
        data = self.splits[name]
        sampler = LengthBucketSampler([len(m) for m in data.mels], self.batch_size, shuffle=False)
        return self._loader(data, batch_sampler=sampler)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return make_loader(dataset, self.num_workers, collate_fn=collate, **kwargs)
