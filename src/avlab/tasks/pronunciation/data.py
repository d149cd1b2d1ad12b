"""L2-ARCTIC data: the v5 layout reader, its annotation labels, and one DataModule.

Layout (as published, and as synth.py writes it):
    <root>/<SPK>/wav/arctic_a0001.wav            44.1 kHz mono, resampled here to `sample_rate`
    <root>/<SPK>/transcript/arctic_a0001.txt     the prompt
    <root>/<SPK>/textgrid/arctic_a0001.TextGrid  forced alignment (every utterance)
    <root>/<SPK>/annotation/arctic_a0001.TextGrid manual annotation (~150 per speaker)
Only annotated utterances are used: they alone say what was perceived. An annotation file that
cannot be parsed (two of YDCK's, in the real corpus) is skipped, counted and logged by name.

Every sample is a dict:
    features   (T, n_mels) float   per-utterance normalised log-mel, 10 ms frames
    canonical  (N,) long           canonical phone ids 1..39 (0 = padding)
    decision   (N,) long           per canonical phone: 0 correct, 1 substituted, 2 deleted
    diagnosis  (N,) long           the phone said instead (0..38) where substituted by a known
                                   phone, else -100 (ignored)
    perceived  (M,) long           perceived phone ids 1..39, silences removed (CTC target)
    frame_phones (F,) long         the perceived phone id (0 = silence) of every 10 ms frame,
                                   from the annotation's times (an optional frame-level loss)
    utt        str                 <SPK>/<utterance id>
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torchaudio
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from avlab.audio import LogMel, read_wav
from avlab.audio.phones import ARPABET, SILENCE, normalize_phone
from avlab.data_order import order_for_trainer
from avlab.data_utils import DatasetError, ensure_generated, make_loader

log = logging.getLogger(__name__)

CORRECT, SUBSTITUTED, DELETED = 0, 1, 2
DECISIONS = ("correct", "substituted", "deleted")
PHONE_ID = {p: i + 1 for i, p in enumerate(ARPABET)}  # 0 is CTC blank / padding
UNKNOWN = "ERR"  # the annotators' `err`: a sound that is no English phone
IGNORE = -100
TEST_SPEAKERS = ("TLV", "NJS", "TNI", "TXHC", "ZHAA", "YKWK")
DEV_SPEAKERS = ("MBMPS", "THV", "SVBI", "NCC", "YDCK", "YBAA")


class LabelError(ValueError):
    """An annotation label that is no phone, substitution, deletion, addition or silence."""


@dataclass(frozen=True)
class PhoneLabel:
    """One annotated interval: canonical None = an addition, perceived None = a deletion."""

    canonical: str | None
    perceived: str | None

    @property
    def decision(self) -> int | None:
        """CORRECT / SUBSTITUTED / DELETED for a canonical phone, None for an addition."""
        if self.canonical is None:
            return None
        if self.perceived is None:
            return DELETED
        return CORRECT if self.perceived == self.canonical else SUBSTITUTED


def _phone(label: str, raw: str, allow_unknown: bool = False) -> str:
    """One phone of a label, normalised; SIL passes; anything else not in ARPAbet is an error."""
    phone = normalize_phone(label)
    if phone == SILENCE or phone in PHONE_ID or (allow_unknown and phone == UNKNOWN):
        return phone
    raise LabelError(f"label {raw!r}: {label.strip()!r} is not an ARPAbet phone")


def parse_label(raw: str) -> PhoneLabel | None:
    """An L2-ARCTIC phone label -> PhoneLabel, or None for silence (sil, sp, spn, empty).

    `AH0` correct; `DH,D,s` substitution; `T,sil,d` deletion; `sil,AH,a` addition. Case, stress
    digits, `*`, stray spaces are tolerated; `err` is an unclassifiable perceived phone; ax -> ah.
    """
    parts = raw.split(",")
    if len(parts) == 1:
        phone = _phone(parts[0], raw)
        return None if phone == SILENCE else PhoneLabel(phone, phone)
    if len(parts) != 3:
        raise LabelError(f"label {raw!r}: expected PHONE or CPL,PPL,type (s/d/a)")
    kind = parts[2].strip().lower()
    canonical = _phone(parts[0], raw)
    perceived = _phone(parts[1], raw, allow_unknown=True)
    if kind == "s":
        if SILENCE in (canonical, perceived):
            raise LabelError(f"label {raw!r}: a substitution needs two phones")
        return PhoneLabel(canonical, perceived)
    if kind == "d":
        if canonical == SILENCE:
            raise LabelError(f"label {raw!r}: a deletion needs its canonical phone")
        return PhoneLabel(canonical, None)
    if kind == "a":
        if perceived == SILENCE:
            raise LabelError(f"label {raw!r}: an addition needs its perceived phone")
        return PhoneLabel(None, perceived)
    raise LabelError(f"label {raw!r}: error type must be s, d or a, got {parts[2]!r}")


@dataclass
class Utterance:
    """One annotated utterance: its phones, with times for the perceived ones."""

    speaker: str
    name: str
    wav: Path
    labels: list[PhoneLabel]
    times: list[tuple[float, float]] = field(default_factory=list)

    @property
    def utt(self) -> str:
        return f"{self.speaker}/{self.name}"

    def canonical(self) -> list[str]:
        return [lab.canonical for lab in self.labels if lab.canonical is not None]

    def perceived(self) -> list[str]:
        """Perceived phones, silences and unclassifiable sounds removed."""
        return [
            lab.perceived
            for lab in self.labels
            if lab.perceived is not None and lab.perceived != UNKNOWN
        ]


def read_annotation(path: Path) -> list[tuple[PhoneLabel, float, float]]:
    """The labelled phones of an annotation TextGrid's `phones` tier, in time order."""
    import textgrid

    try:
        grid = textgrid.TextGrid.fromFile(str(path))
    except Exception as err:  # the textgrid package raises bare ValueError/IndexError/...
        raise DatasetError(f"{path}: cannot parse TextGrid ({type(err).__name__}: {err})") from err
    tiers = [t for t in grid.tiers if (t.name or "").strip().lower() == "phones"]
    if not tiers:
        raise DatasetError(f"{path}: no `phones` tier (tiers: {[t.name for t in grid.tiers]})")
    out = []
    for interval in tiers[0]:
        try:
            label = parse_label(interval.mark or "")
        except LabelError as err:
            raise DatasetError(f"{path}, interval at {interval.minTime:.3f} s: {err}") from err
        if label is not None:
            out.append((label, float(interval.minTime), float(interval.maxTime)))
    if not any(lab.canonical for lab, _, _ in out):
        raise DatasetError(f"{path}: no canonical phones annotated")
    return out


@dataclass
class ReadReport:
    """What reading a corpus found: every skipped annotation file (with why) and how many
    recordings have no annotation (those are not used)."""

    skipped: list[str] = field(default_factory=list)
    unannotated: int = 0


def read_l2arctic(
    root: Path, speakers: Sequence[str] | None = None, report: ReadReport | None = None
) -> list[Utterance]:
    """Annotated utterances of an L2-ARCTIC v5 folder (speakers: all folders with annotation/)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: L2-ARCTIC folder not found")
    report = report if report is not None else ReadReport()
    found = sorted(p.name for p in root.iterdir() if (p / "annotation").is_dir())
    if speakers is None:
        speakers = found
    missing = [s for s in speakers if s not in found]
    if missing:
        raise DatasetError(f"{root}: speakers {missing} have no <SPK>/annotation folder")
    utterances = []
    for spk in speakers:
        annotated = sorted((root / spk / "annotation").glob("*.TextGrid"))
        wavs = list((root / spk / "wav").glob("*.wav"))
        report.unannotated += max(0, len(wavs) - len(annotated))
        for path in annotated:
            wav = root / spk / "wav" / f"{path.stem}.wav"
            if not wav.is_file():
                raise DatasetError(f"{path}: its recording {wav} is missing")
            try:
                phones = read_annotation(path)
            except DatasetError as err:
                report.skipped.append(str(err))
                log.warning("skipping an annotation file: %s", err)
                continue
            labels = [lab for lab, _, _ in phones]
            times = [(a, b) for _, a, b in phones]
            utterances.append(Utterance(spk, path.stem, wav, labels, times))
    if report.skipped:
        log.warning("%s: skipped %d unparsable annotation file(s)", root, len(report.skipped))
    return utterances


FRAME_SECONDS = 0.01


def frame_phones(utt: Utterance, n_frames: int) -> torch.Tensor:
    """The perceived phone id of each 10 ms frame (0 where silence or nothing was said)."""
    out = torch.zeros(n_frames, dtype=torch.long)
    for lab, (start, end) in zip(utt.labels, utt.times, strict=True):
        if lab.perceived in PHONE_ID:
            a = int(round(start / FRAME_SECONDS))
            b = max(a + 1, int(round(end / FRAME_SECONDS)))
            out[a:b] = PHONE_ID[lab.perceived]
    return out


def encode(utt: Utterance) -> dict[str, torch.Tensor]:
    """An utterance's phone targets as tensors (see the module docstring)."""
    canonical, decision, diagnosis = [], [], []
    for lab in utt.labels:
        if lab.canonical is None:
            continue
        canonical.append(PHONE_ID[lab.canonical])
        decision.append(lab.decision)
        known = lab.decision == SUBSTITUTED and lab.perceived in PHONE_ID
        diagnosis.append(PHONE_ID[lab.perceived] - 1 if known else IGNORE)
    return {
        "canonical": torch.tensor(canonical, dtype=torch.long),
        "decision": torch.tensor(decision, dtype=torch.long),
        "diagnosis": torch.tensor(diagnosis, dtype=torch.long),
        "perceived": torch.tensor([PHONE_ID[p] for p in utt.perceived()], dtype=torch.long),
    }


class PronunciationSet(Dataset):
    """Decoded utterances: features computed once, targets encoded once."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of samples: features with 0, phone ids with 0, decisions/diagnoses with -100."""
    batch: dict[str, Any] = {"utt": [it["utt"] for it in items]}
    for key in ("features", "canonical", "perceived", "frame_phones"):
        batch[key] = pad_sequence([it[key] for it in items], batch_first=True)
        batch[f"{key}_lengths"] = torch.tensor([len(it[key]) for it in items])
    for key in ("decision", "diagnosis"):
        batch[key] = pad_sequence([it[key] for it in items], batch_first=True, padding_value=IGNORE)
    return batch


def make_frontend(sample_rate: int = 16_000, n_mels: int = 80) -> LogMel:
    """The log-mel front end: 25 ms windows, 10 ms hop."""
    return LogMel(sample_rate, n_mels=n_mels, n_fft=400, hop_length=160)


def input_features(wave: torch.Tensor, features: str, frontend: LogMel) -> torch.Tensor:
    """A 16 kHz waveform as model input: (frames, n_mels) log-mel normalised per utterance
    and mel bin, or (samples, 1) normalised waveform."""
    if features == "waveform":
        return ((wave - wave.mean()) / (wave.std() + 1e-5)).unsqueeze(-1).contiguous()
    with torch.no_grad():
        mel = frontend(wave).T
    return ((mel - mel.mean(0)) / (mel.std(0) + 1e-5)).contiguous()


def _synthesizer():
    """The default dataset generator (imported lazily: only needed when generating)."""
    from avlab.tasks.pronunciation.synth import write_l2arctic

    return write_l2arctic


class PronunciationDataModule(L.LightningDataModule):
    """L2-ARCTIC annotated utterances split by speaker (test / dev speakers, the rest train).

    `features`: `logmel` (per-utterance normalised log-mel, for the log-mel encoders) or
    `waveform` (for wav2vec2). `synth` holds the generator's parameters (null: real data only).
    `max_utterances_per_speaker` caps each speaker (null: all).
    """

    def __init__(
        self,
        root: str,
        synth: dict[str, Any] | None = None,
        test_speakers: Sequence[str] = TEST_SPEAKERS,
        val_speakers: Sequence[str] = DEV_SPEAKERS,
        train_speakers: Sequence[str] | None = None,
        features: str = "logmel",
        sample_rate: int = 16_000,
        n_mels: int = 80,
        max_utterances_per_speaker: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if features not in ("logmel", "waveform"):
            raise ValueError(f"data.features must be logmel or waveform, got {features!r}")
        self.root, self.synth = Path(root), dict(synth) if synth else None
        self.speakers = {
            "test": list(test_speakers),
            "val": list(val_speakers),
            "train": list(train_speakers) if train_speakers is not None else None,
        }
        overlap = set(self.speakers["test"]) & set(self.speakers["val"])
        if overlap:
            raise ValueError(f"speakers {sorted(overlap)} are in both val and test")
        self.features, self.sample_rate, self.n_mels = features, sample_rate, n_mels
        self.max_per_speaker = max_utterances_per_speaker
        self.batch_size, self.num_workers = batch_size, num_workers
        self.sets: dict[str, PronunciationSet] = {}
        self.report = ReadReport()
        self._resamplers: dict[int, torchaudio.transforms.Resample] = {}

    def prepare_data(self) -> None:
        """Generate the default dataset if it is missing; a real dataset is only read."""
        ensure_generated(self.root, "L2-ARCTIC (generated)", _synthesizer(), self.synth)

    def setup(self, stage: str | None = None) -> None:
        """Read the annotations, decode every utterance once, split by speaker."""
        if self.sets:
            return
        utterances = read_l2arctic(self.root, report=self.report)
        held_out = set(self.speakers["test"]) | set(self.speakers["val"])
        train = self.speakers["train"]
        by_split: dict[str, list[Utterance]] = {"train": [], "val": [], "test": []}
        counts: dict[str, int] = {}
        for utt in utterances:
            counts[utt.speaker] = counts.get(utt.speaker, 0) + 1
            if self.max_per_speaker and counts[utt.speaker] > self.max_per_speaker:
                continue
            if utt.speaker in self.speakers["test"]:
                by_split["test"].append(utt)
            elif utt.speaker in self.speakers["val"]:
                by_split["val"].append(utt)
            elif (train is None and utt.speaker not in held_out) or (
                train and utt.speaker in train
            ):
                by_split["train"].append(utt)
        for split, utts in by_split.items():
            if not utts:
                raise DatasetError(
                    f"{self.root}: no annotated utterances for the {split} speakers "
                    f"{self.speakers[split] or 'all others'}"
                )
        frontend = make_frontend(self.sample_rate, self.n_mels)
        self.sets = {
            s: PronunciationSet([self._item(u, frontend) for u in us]) for s, us in by_split.items()
        }
        log.info(
            "L2-ARCTIC %s: utterances per split %s; %d unannotated; %d annotation file(s) skipped",
            self.root,
            {s: len(v) for s, v in self.sets.items()},
            self.report.unannotated,
            len(self.report.skipped),
        )

    def _item(self, utt: Utterance, frontend: LogMel) -> dict[str, Any]:
        """Decode one utterance and compute its input features."""
        audio, rate = read_wav(utt.wav)
        n_frames = int(
            np.ceil(len(audio) * self.sample_rate / rate / (FRAME_SECONDS * self.sample_rate))
        )
        wave = self._resample(torch.from_numpy(np.ascontiguousarray(audio)), rate)
        return {
            "features": input_features(wave, self.features, frontend),
            "utt": utt.utt,
            "frame_phones": frame_phones(utt, n_frames),
            **encode(utt),
        }

    def _resample(self, wave: torch.Tensor, rate: int) -> torch.Tensor:
        """To `sample_rate` with torchaudio's band-limited resampler, its kernel built once per
        rate: the same samples as read_wav(path, sample_rate), ~10x faster over a corpus."""
        if rate == self.sample_rate:
            return wave
        if rate not in self._resamplers:
            self._resamplers[rate] = torchaudio.transforms.Resample(rate, self.sample_rate)
        with torch.no_grad():
            return self._resamplers[rate](wave)

    def train_dataloader(self) -> DataLoader:
        return order_for_trainer(self._loader("train", shuffle=True), self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return make_loader(
            self.sets[split],
            self.num_workers,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=collate,
        )
