"""The L2-ARCTIC reader on a hand-made fixture in the real layout, with every label quirk of the
published annotations and one annotation file that does not parse."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import textgrid

from avlab.audio import read_wav, write_wav
from avlab.data_utils import DatasetError
from avlab.tasks.pronunciation.data import (
    CORRECT,
    DELETED,
    IGNORE,
    PHONE_ID,
    SUBSTITUTED,
    LabelError,
    PhoneLabel,
    PronunciationDataModule,
    collate,
    parse_label,
    read_l2arctic,
)

# (label, canonical, perceived): every quirk of the real files.
QUIRKS = [
    ("sil", None, None),
    ("DH", "DH", "DH"),
    ("ah0", "AH", "AH"),  # lower case, stress digit
    (" b ", "B", "B"),  # stray spaces
    ("ER1*", "ER", "ER"),  # the `*` some annotators left
    ("ax", "AH", "AH"),  # ax -> ah
    ("", None, None),  # an empty interval is silence
    ("DH,D,s", "DH", "D"),
    ("z , s ,S", "Z", "S"),  # spaces and case around the parts
    ("T,sil,d", "T", None),
    ("sp", None, None),
    ("sil,AH0,a", None, "AH"),
    ("R,err,s", "R", "ERR"),  # `err`: a sound that is no English phone
    ("spn", None, None),
    ("IH2,IY1,s", "IH", "IY"),
]


def _write_grid(path: Path, labels: list[str], seconds: float = 1.6) -> None:
    grid = textgrid.TextGrid(minTime=0.0, maxTime=seconds)
    step = seconds / len(labels)
    phones = textgrid.IntervalTier(name="phones", minTime=0.0, maxTime=seconds)
    words = textgrid.IntervalTier(name="words", minTime=0.0, maxTime=seconds)
    for i, label in enumerate(labels):
        phones.addInterval(textgrid.Interval(i * step, (i + 1) * step, label))
    words.addInterval(textgrid.Interval(0.0, seconds, "the"))
    grid.append(words)
    grid.append(phones)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.write(str(path))


def _write_utterance(root: Path, spk: str, name: str, labels: list[str]) -> None:
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(1.6 * 44100)) / 44100)
    write_wav(root / spk / "wav" / f"{name}.wav", tone.astype(np.float32), 44100)
    (root / spk / "transcript").mkdir(parents=True, exist_ok=True)
    (root / spk / "transcript" / f"{name}.txt").write_text("The")
    _write_grid(root / spk / "textgrid" / f"{name}.TextGrid", ["DH", "AH0"])
    _write_grid(root / spk / "annotation" / f"{name}.TextGrid", labels)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "l2arctic"
    labels = [q[0] for q in QUIRKS]
    for spk in ("AAA", "BBB", "CCC"):
        _write_utterance(root, spk, "arctic_a0001", labels)
        _write_utterance(root, spk, "arctic_a0002", ["sil", "DH", "AH0", "sil"])
    # A recording nobody annotated (most of L2-ARCTIC's): counted, not used.
    write_wav(root / "AAA" / "wav" / "arctic_b0001.wav", np.zeros(4410, np.float32), 44100)
    # As YDCK's arctic_a0209 in the real corpus: an annotation file that does not parse.
    (root / "BBB" / "annotation" / "arctic_a0209.TextGrid").write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\nxmin = 0\nxmax = oops\n'
    )
    write_wav(root / "BBB" / "wav" / "arctic_a0209.wav", np.zeros(4410, np.float32), 44100)
    return root


@pytest.mark.parametrize(("label", "canonical", "perceived"), QUIRKS)
def test_every_label_quirk_parses_to_the_phones_meant(label, canonical, perceived):
    parsed = parse_label(label)
    if canonical is None and perceived is None:
        assert parsed is None
    else:
        assert parsed == PhoneLabel(canonical, perceived)


@pytest.mark.parametrize("label", ["QQ", "DH,D", "DH,D,x", "sil,sil,a", "sil,D,s", "sil,T,d"])
def test_a_label_that_means_nothing_is_refused_by_name(label):
    with pytest.raises(LabelError, match="label"):
        parse_label(label)


def test_reader_gives_canonical_perceived_and_decisions(corpus, caplog):
    with caplog.at_level(logging.WARNING):
        utterances = read_l2arctic(corpus)
    assert len(utterances) == 6
    utt = next(u for u in utterances if u.utt == "AAA/arctic_a0001")
    assert utt.canonical() == ["DH", "AH", "B", "ER", "AH", "DH", "Z", "T", "R", "IH"]
    # Silences and `err` removed; the addition is in.
    assert utt.perceived() == ["DH", "AH", "B", "ER", "AH", "D", "S", "AH", "IY"]
    decisions = [lab.decision for lab in utt.labels if lab.canonical]
    assert decisions == [CORRECT] * 5 + [
        SUBSTITUTED,
        SUBSTITUTED,
        DELETED,
        SUBSTITUTED,
        SUBSTITUTED,
    ]


def test_an_unparsable_annotation_is_a_counted_skip_naming_the_file(corpus, caplog):
    from avlab.tasks.pronunciation.data import ReadReport

    report = ReadReport()
    with caplog.at_level(logging.WARNING):
        utterances = read_l2arctic(corpus, report=report)
    assert len(report.skipped) == 1
    assert "BBB/annotation/arctic_a0209.TextGrid" in report.skipped[0]
    assert "arctic_a0209.TextGrid" in caplog.text and "skipped 1" in caplog.text
    assert not any(u.name == "arctic_a0209" for u in utterances)
    assert report.unannotated == 1


def test_a_bad_label_skips_its_file_with_the_label_and_time_named(corpus):
    from avlab.tasks.pronunciation.data import ReadReport

    _write_grid(corpus / "CCC" / "annotation" / "arctic_a0002.TextGrid", ["sil", "DH", "XYZ"])
    report = ReadReport()
    read_l2arctic(corpus, report=report)
    bad = [s for s in report.skipped if "CCC/annotation/arctic_a0002" in s]
    assert len(bad) == 1 and "'XYZ'" in bad[0] and "interval at" in bad[0]


def test_a_missing_recording_is_an_error_naming_it(corpus):
    (corpus / "CCC" / "wav" / "arctic_a0002.wav").unlink()
    with pytest.raises(DatasetError, match="CCC/wav/arctic_a0002.wav"):
        read_l2arctic(corpus)


def test_datamodule_splits_by_speaker_and_encodes_targets(corpus):
    dm = PronunciationDataModule(
        str(corpus), synth=None, test_speakers=["CCC"], val_speakers=["BBB"], batch_size=2
    )
    dm.prepare_data()
    dm.setup()
    assert [len(dm.sets[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    speakers = {s: {it["utt"].split("/")[0] for it in dm.sets[s].items} for s in dm.sets}
    assert speakers == {"train": {"AAA"}, "val": {"BBB"}, "test": {"CCC"}}
    item = next(it for it in dm.sets["test"].items if it["utt"] == "CCC/arctic_a0001")
    audio, _ = read_wav(corpus / "CCC" / "wav" / "arctic_a0001.wav", 16000)
    assert item["features"].shape == (len(audio) // 160 + 1, 80)  # 16 kHz, 10 ms frames
    assert item["decision"].tolist() == [0] * 5 + [1, 1, 2, 1, 1]
    d_id, s_id, iy_id = PHONE_ID["D"] - 1, PHONE_ID["S"] - 1, PHONE_ID["IY"] - 1
    assert item["diagnosis"].tolist() == [IGNORE] * 5 + [d_id, s_id, IGNORE, IGNORE, iy_id]
    assert item["frame_phones"].max() > 0
    batch = collate(dm.sets["train"].items)
    assert batch["features"].shape[0] == 2 and batch["decision"].shape == (2, 10)
    assert batch["decision"][1, 2:].eq(IGNORE).all()  # the 2-phone utterance, padded


def test_generated_corpus_is_read_by_the_same_reader(tmp_path):
    from avlab.tasks.pronunciation.synth import L1_SPEAKERS, write_l2arctic

    write_l2arctic(tmp_path / "gen", utterances_per_speaker=2, n_sentences=10, seed=3)
    utterances = read_l2arctic(tmp_path / "gen")
    assert len(utterances) == 48
    assert {u.speaker for u in utterances} == {s for g in L1_SPEAKERS.values() for s in g}
    labels = [lab for u in utterances for lab in u.labels]
    errors = sum(lab.decision != CORRECT for lab in labels if lab.canonical)
    canonical = sum(1 for lab in labels if lab.canonical)
    assert 0.05 < errors / canonical < 0.25
    _, rate = read_wav(utterances[0].wav)
    assert rate == 44100


def test_espeak_speaks_arpabet_phones_with_their_times_in_order():
    from avlab.audio.espeak import synthesize_arpabet

    words = [["DH", "AH"], ["B", "ER", "CH"], ["K", "AH", "N", "UW"]]
    audio, timed = synthesize_arpabet(words)
    assert [p for p, _, _ in timed] == [p for w in words for p in w]
    starts = [s for _, s, _ in timed]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(end > start for _, start, end in timed) and timed[-1][2] <= len(audio)
    # The speech lies between the first phone's start and the last one's end.
    inside = audio[timed[0][1] : timed[-1][2]].astype(float)
    assert np.abs(inside).mean() > 10 * (np.abs(audio[: timed[0][1]].astype(float)).mean() + 1)
