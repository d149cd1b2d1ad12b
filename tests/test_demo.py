"""The demo's backends without a browser: uploads are read or refused with a sentence, each
tab's result is what the task's own code computes, and a bad checkpoint stops the start-up
with its key and file named."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.classification import binary_auroc

from avlab.demo.__main__ import main, parse_args
from avlab.demo.smile import SmileScores, analysis_text, rules, verdict_of, verdict_so_far
from avlab.demo.uploads import UploadError, read_upload
from avlab.tasks.smile.model import EMOTIONS
from tests.demo_inputs import bad_uploads, smile_clip, write_video, zip_folder


def test_a_zipped_frame_folder_and_a_video_are_read_in_order(tmp_path):
    clip = smile_clip(tmp_path / "clips", n_frames=6)
    frames = read_upload(zip_folder(clip, tmp_path / "clip.zip"))
    on_disk = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(clip.iterdir())]
    assert len(frames) == 6
    assert all(np.array_equal(a, b) for a, b in zip(frames, on_disk, strict=True))
    video = read_upload(write_video(on_disk, tmp_path / "clip.avi"))
    assert len(video) == 6 and video[0].shape == on_disk[0].shape


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text_as_mp4", "not a video OpenCV can read"),
        ("empty_zip", "holds no image files"),
        ("zip_without_images", "holds no image files"),
    ],
)
def test_a_wrong_upload_is_refused_with_a_sentence_naming_it(tmp_path, kind, message):
    path = bad_uploads(tmp_path)[kind]
    with pytest.raises(UploadError, match=message) as err:
        read_upload(path)
    assert path.name in str(err.value)


def test_the_game_tab_reads_the_games_own_rules():
    happy = np.full(len(EMOTIONS), 0.1 / 6)
    happy[EMOTIONS.index("happy")] = 0.9
    neutral = np.full(len(EMOTIONS), 0.1 / 6)
    neutral[EMOTIONS.index("neutral")] = 0.9
    scores = SmileScores(
        [9, 10, 11], np.array([0.2, 0.85, 0.95]), np.stack([neutral, neutral, happy])
    )
    plain = verdict_of(scores, rules(0.8, False))
    assert [verdict_so_far(plain, i) for i in range(3)] == ["SAFE", "OUT!", "OUT!"]
    assert analysis_text(scores, plain, 1) == "forced smile: happiness 2 % + smile 85 %"
    assert analysis_text(scores, plain, 2) == "genuine smile: happiness 90 % + smile 95 %"
    two_stage = verdict_of(scores, rules(0.8, True))  # the forced smile no longer counts
    assert [verdict_so_far(two_stage, i) for i in range(3)] == ["SAFE", "SAFE", "OUT!"]
    with pytest.raises(ValueError, match="threshold must be in"):
        rules(0.95, False)


def test_start_up_names_the_key_and_file_of_a_bad_checkpoint(tmp_path):
    foreign = tmp_path / "face_voice.ckpt"
    torch.save(
        {
            "state_dict": {},
            "avlab_config": {
                "model": {"module": {"_target_": "avlab.tasks.face_voice.module.FaceVoiceModule"}}
            },
        },
        foreign,
    )
    with pytest.raises(SystemExit, match=rf"smile={foreign}: a checkpoint of .*FaceVoiceModule"):
        main([f"smile={foreign}"])
    missing = tmp_path / "gone.ckpt"
    with pytest.raises(SystemExit, match=rf"vad={missing}: no such checkpoint file"):
        main([f"vad={missing}"])
    with pytest.raises(SystemExit, match="unknown argument 'smiles'"):
        parse_args(["smiles=x.ckpt"])
    with pytest.raises(SystemExit, match="at least one checkpoint"):
        parse_args(["port=8000"])
    assert parse_args(["tts=a.ckpt", "port=8001"]) == (
        {"tts": "a.ckpt"},
        {"host": "127.0.0.1", "port": 8001, "share": False},
    )


@pytest.mark.slow
def test_smile_tab_scores_as_the_play_command_and_writes_its_timeline(demo_checkpoints, tmp_path):
    from avlab.demo.smile import SmileGame, write_results
    from avlab.tasks.smile.play import read_frames, score_windows

    game = SmileGame(demo_checkpoints["smile"])
    clip = smile_clip(tmp_path / "clips", n_frames=14)
    scores = game.score(read_upload(zip_folder(clip, tmp_path / "clip.zip")))
    _, smiles, emotions = score_windows(game.net, read_frames(clip), game.transform, stride=1)
    assert scores.ends == list(range(9, 14))
    assert scores.smiles == pytest.approx(smiles, abs=2e-3)
    assert scores.emotions == pytest.approx(emotions, abs=2e-3)
    verdict = verdict_of(scores, rules(0.5, False))
    csv_path, png = write_results(scores, verdict, rules(0.5, False), 10.0, tmp_path / "out")
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == scores.ends
    assert [int(r["counts"]) for r in rows] == [int(f.counts) for f in verdict.frames]
    with Image.open(png) as image:
        assert image.size[0] > 300


@pytest.mark.slow
def test_anomaly_monitor_scores_a_video_as_the_test_step_and_peaks_on_the_anomaly(
    demo_checkpoints, tmp_path
):
    from avlab.demo.vad import AnomalyMonitor, draw_regions, stream_table, top_frames
    from avlab.tasks.vad.data import UCSDpedFrames

    monitor = AnomalyMonitor(demo_checkpoints["vad"])
    video = demo_checkpoints["vad_data"] / "scene1" / "Test" / "Test001"
    frames = read_upload(zip_folder(video, tmp_path / "test001.zip"))
    scores = monitor.score(frames)
    dataset = UCSDpedFrames(demo_checkpoints["vad_data"], "scene1", "test")
    items = [
        item for item in (dataset[i] for i in range(len(dataset))) if item.video_path == str(video)
    ]
    with torch.no_grad():
        expected = monitor.module.net(torch.stack([item.image for item in items]))
    assert len(scores.frames) == len(items) == len(frames) - 1
    assert scores.scores == pytest.approx(expected.frame_scores.numpy(), rel=1e-4, abs=1e-5)
    labels = np.array([int(item.gt_label) for item in items])
    peak = top_frames(scores, 1)[0]
    assert labels[peak] == 1, "the most anomalous frame should be one the ground truth marks"
    # The event's frames rank above the normal ones (a scale-free check: the frame score is a
    # sum of log(1 + s) per stream, so ratios of mean scores depend on that scale).
    auroc = binary_auroc(torch.from_numpy(np.asarray(scores.scores)), torch.from_numpy(labels))
    assert float(auroc) >= 0.9, f"this video's frame AUROC is {float(auroc):.3f}"
    assert set(scores.streams) == {"velocity", "appearance"}
    total = sum(scores.streams.values())
    assert scores.scores == pytest.approx(total, abs=1e-5)
    assert [len(row) for row in stream_table(scores)] == [5] * len(items)
    frame = frames[scores.frames[peak]]
    boxed = draw_regions(frame, scores.boxes[peak], scores.region_scores[peak], 1.0)
    x1, y1, _, _ = (int(round(v)) for v in scores.boxes[peak][0])
    assert not np.array_equal(boxed[y1, x1], frame[y1, x1]), "a region box should be drawn"


@pytest.mark.slow
def test_speech_tab_speaks_and_draws_mel_and_attention(demo_checkpoints, tmp_path):
    from avlab.demo.tts import Synthesiser, speech_figure, speech_summary

    synthesiser = Synthesiser(demo_checkpoints["tts"], max_seconds=1.0)
    speech = synthesiser.speak("The dog saw the cat.")
    hop = synthesiser.module.features["hop_length"]
    assert abs(len(speech.audio) - len(speech.log_mel) * hop) <= hop
    assert len(speech.attention) == -(-len(speech.log_mel) // synthesiser.module.net.reduction)
    assert speech.attention.shape[1] == len(speech.symbols)
    assert "decoder steps" in speech_summary(speech)
    with Image.open(speech_figure(speech, tmp_path / "speech.png")) as image:
        assert image.size[1] > image.size[0] / 2  # two stacked panels
    with pytest.raises(ValueError, match="type a sentence"):
        synthesiser.speak("   ")


@pytest.mark.slow
def test_pronunciation_tab_reads_the_sentence_as_the_corpus_and_colours_every_phone(
    demo_checkpoints,
):
    from avlab.demo.pron import PronunciationCoach, feedback_html, sentence_phones
    from avlab.tasks.pronunciation.data import read_l2arctic

    coach = PronunciationCoach(demo_checkpoints["pronunciation"])
    utterance = read_l2arctic(demo_checkpoints["pronunciation_data"], ["TLV"])[0]
    sentence = (utterance.wav.parents[1] / "transcript" / f"{utterance.name}.txt").read_text()
    canonical = utterance.canonical()
    assert [p for _, _, p in sentence_phones(sentence)] == canonical
    assessment = coach.assess(utterance.wav, sentence)
    assert [p.phone for p in assessment.phones] == canonical
    page = feedback_html(assessment)
    assert page.count('class="avlab-phone"') == len(canonical)
    for verdict, n in assessment.counts().items():
        assert page.count(f'data-verdict="{verdict}"') == n
    with pytest.raises(ValueError, match="not in the CMU pronouncing dictionary: Zorblax"):
        coach.assess(utterance.wav, "Zorblax the cat")
