"""The Gradio app: one tab per checkpoint given, each a thin layer over its backend module
(smile.py, vad.py, tts.py, pron.py), which the tests also call without a browser.

Offline by construction: Gradio's analytics are off before it is imported, the theme uses
system fonts only (no Google Fonts), server-side rendering (a Node process) is off, and a share
link is made only when asked for.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from avlab.demo import pron, smile, tts, vad  # noqa: E402
from avlab.demo.uploads import read_upload  # noqa: E402
from avlab.tasks.smile.game import THRESHOLD_RANGE  # noqa: E402

log = logging.getLogger(__name__)

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "Consolas", "DejaVu Sans Mono", "monospace"]
TASKS = ("smile", "vad", "tts", "pronunciation")
VIDEO_TYPES = [".mp4", ".avi", ".mov", ".mkv", ".webm", ".zip"]


def theme() -> gr.themes.Base:
    """Gradio's default look with system fonts, so the page fetches no web fonts."""
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def load_backends(checkpoints: dict[str, str]) -> dict[str, Any]:
    """Each given checkpoint loaded by its tab's backend; errors name the key and the file."""
    builders = {
        "smile": smile.SmileGame,
        "vad": vad.AnomalyMonitor,
        "tts": tts.Synthesiser,
        "pronunciation": pron.PronunciationCoach,
    }
    return {key: builders[key](path, purpose=key) for key, path in checkpoints.items()}


def shown_in_page(fn: Callable) -> Callable:
    """Turn any failure of a callback into a message in the page (gr.Error), never a traceback;
    unexpected ones are logged with their traceback on the server."""

    def message(err: Exception) -> gr.Error:
        if not isinstance(err, ValueError | OSError | KeyError):
            log.exception("demo callback %s failed", fn.__name__)
        return gr.Error(
            str(err) or type(err).__name__,
            duration=None,
            print_exception=False,
        )

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as err:
                raise message(err) from None

        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:
            raise message(err) from None

    return plain


def _scratch() -> Path:
    """A fresh folder for one request's files (Gradio serves them from its own cache copy)."""
    return Path(tempfile.mkdtemp(prefix="avlab-demo-"))


def smile_tab(game: smile.SmileGame) -> None:
    """The "don't laugh" game: an upload is scored window by window and judged by the game."""
    low, high = THRESHOLD_RANGE
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(
                label="video or frame-folder archive (.zip)",
                file_types=VIDEO_TYPES,
                elem_id="smile-upload",
            )
            threshold = gr.Slider(
                low,
                high,
                value=0.8,
                step=0.01,
                label="threshold (difficulty)",
                elem_id="smile-threshold",
            )
            two_stage = gr.Checkbox(
                label="two-stage (a smile counts only with happiness)", elem_id="smile-two-stage"
            )
            fps = gr.Number(value=10.0, label="frames per second", minimum=0.1)
            run = gr.Button("Play", variant="primary", elem_id="smile-run")
        with gr.Column(scale=2):
            gauge = gr.HTML(elem_id="smile-gauge")
            analysis = gr.Textbox(label="analysis", interactive=False, elem_id="smile-analysis")
            bars = gr.Label(num_top_classes=7, label="emotions", elem_id="smile-emotions")
            window = gr.Slider(0, 1, value=0, step=1, label="window", elem_id="smile-window")
    plot = gr.Image(label="smile over time", type="filepath", elem_id="smile-plot")
    timeline = gr.File(label="timeline (CSV)", elem_id="smile-timeline")
    scores = gr.State()

    def window_view(s: smile.SmileScores, verdict, rules, i: int):
        so_far = smile.verdict_so_far(verdict, i)
        return (
            smile.gauge_html(float(s.smiles[i]), rules.threshold, so_far),
            smile.analysis_text(s, verdict, i),
            smile.emotion_bars(s, i),
        )

    def final(s, verdict, rules, rate):
        csv_path, png = smile.write_results(s, verdict, rules, float(rate), _scratch())
        i = verdict.first_out_frame if verdict.out else len(s.ends) - 1
        return (
            *window_view(s, verdict, rules, i),
            str(png),
            str(csv_path),
            s,
            gr.Slider(0, max(1, len(s.ends) - 1), value=i, step=1),
        )

    @shown_in_page
    def play(path, thr, stage, rate):
        rules = smile.rules(thr, stage)
        s = game.score(read_upload(path))
        verdict = smile.verdict_of(s, rules)
        for i in range(len(s.ends)):
            yield (*window_view(s, verdict, rules, i), *(gr.skip(),) * 4)
        yield final(s, verdict, rules, rate)

    @shown_in_page
    def rejudge(s, thr, stage, rate, i):
        if s is None:
            return (gr.skip(),) * 7
        rules = smile.rules(thr, stage)
        verdict = smile.verdict_of(s, rules)
        out = final(s, verdict, rules, rate)
        return (*window_view(s, verdict, rules, min(int(i), len(s.ends) - 1)), *out[3:6], gr.skip())

    @shown_in_page
    def show_window(s, thr, stage, i):
        if s is None:
            return (gr.skip(),) * 3
        rules = smile.rules(thr, stage)
        return window_view(s, smile.verdict_of(s, rules), rules, min(int(i), len(s.ends) - 1))

    outputs = [gauge, analysis, bars, plot, timeline, scores, window]
    run.click(play, [upload, threshold, two_stage, fps], outputs)
    for control in (threshold, two_stage):
        control.change(rejudge, [scores, threshold, two_stage, fps, window], outputs)
    window.release(show_window, [scores, threshold, two_stage, window], [gauge, analysis, bars])


def vad_tab(monitor: vad.AnomalyMonitor) -> None:
    """The anomaly monitor: per-frame scores of an upload against a threshold."""
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(
                label="video or frame-folder archive (.zip)",
                file_types=VIDEO_TYPES,
                elem_id="vad-upload",
            )
            threshold = gr.Slider(
                0.0,
                2.0 * len(monitor.streams),
                value=vad.DEFAULT_THRESHOLD,
                step=0.05,
                label="threshold (1 = the most unusual training region in one stream)",
                elem_id="vad-threshold",
            )
            top_k = gr.Slider(1, 12, value=4, step=1, label="most anomalous frames shown")
            run = gr.Button("Score", variant="primary", elem_id="vad-run")
        with gr.Column(scale=2):
            summary = gr.HTML(elem_id="vad-summary")
            plot = gr.Image(label="anomaly score over time", type="filepath", elem_id="vad-plot")
    gallery = gr.Gallery(
        label="most anomalous frames (regions boxed with their scores)",
        columns=4,
        elem_id="vad-frames",
    )
    table = gr.Dataframe(
        label="per-stream scores",
        headers=["frame", "score", "smoothed", *monitor.streams],
        elem_id="vad-table",
    )
    state = gr.State()

    def views(frames, s: vad.VadScores, thr: float, k: int):
        folder = _scratch()
        fig = vad.score_figure(s, thr)
        fig.savefig(folder / "scores.png", dpi=90)
        import matplotlib.pyplot as plt

        plt.close(fig)
        top = vad.top_frames(s, int(k))
        images = [
            (
                vad.draw_regions(frames[s.frames[i]], s.boxes[i], s.region_scores[i], thr),
                f"frame {s.frames[i]}: {s.scores[i]:.2f}",
            )
            for i in top
        ]
        over = int((s.scores > thr).sum())
        peak = top[0]
        html = (
            f'<div id="vad-result" data-frames="{len(s.frames)}" data-over="{over}" '
            f'data-peak-frame="{s.frames[peak]}" data-peak-score="{s.scores[peak]:.4f}">'
            f"<b>{over}</b> of {len(s.frames)} frames over the threshold {thr:.2f}; the most "
            f"anomalous is frame {s.frames[peak]} (score {s.scores[peak]:.2f}: "
            + ", ".join(f"{k_} {v[peak]:.2f}" for k_, v in s.streams.items())
            + ")</div>"
        )
        return html, str(folder / "scores.png"), images, vad.stream_table(s)

    @shown_in_page
    def score(path, thr, k):
        frames = read_upload(path)
        s = monitor.score(frames)
        return (*views(frames, s, float(thr), k), (frames, s))

    @shown_in_page
    def rethreshold(st, thr, k):
        if st is None:
            return (gr.skip(),) * 5
        return (*views(*st, float(thr), k), gr.skip())

    outputs = [summary, plot, gallery, table, state]
    run.click(score, [upload, threshold, top_k], outputs)
    threshold.release(rethreshold, [state, threshold, top_k], outputs)
    top_k.release(rethreshold, [state, threshold, top_k], outputs)


def tts_tab(synthesiser: tts.Synthesiser) -> None:
    """Speech synthesis: text in, audio out, with the mel spectrogram and the attention."""
    text = gr.Textbox(label="text", value="The dog saw the cat.", elem_id="tts-text")
    run = gr.Button("Speak", variant="primary", elem_id="tts-run")
    summary = gr.HTML(elem_id="tts-summary")
    audio = gr.Audio(label="speech", type="numpy", elem_id="tts-audio")
    picture = gr.Image(
        label="mel spectrogram and attention", type="filepath", elem_id="tts-picture"
    )

    @shown_in_page
    def speak(sentence):
        speech = synthesiser.speak(sentence)
        png = tts.speech_figure(speech, _scratch() / "speech.png")
        seconds = len(speech.audio) / synthesiser.sample_rate
        html = (
            f'<div id="tts-result" data-seconds="{seconds:.3f}" '
            f'data-steps="{len(speech.attention)}">{tts.speech_summary(speech)}</div>'
        )
        wave = np.clip(speech.audio * 32767, -32768, 32767).astype(np.int16)
        return html, (synthesiser.sample_rate, wave), str(png)

    run.click(speak, [text], [summary, audio, picture])


def pron_tab(coach: pron.PronunciationCoach) -> None:
    """Pronunciation feedback: each canonical phone of the sentence coloured by verdict."""
    with gr.Row():
        recording = gr.Audio(
            sources=["upload", "microphone"],
            type="filepath",
            label="recording (upload or microphone)",
            elem_id="pron-audio",
        )
        sentence = gr.Textbox(label="the sentence that was read", elem_id="pron-sentence")
    run = gr.Button("Assess", variant="primary", elem_id="pron-run")
    feedback = gr.HTML(elem_id="pron-feedback")

    @shown_in_page
    def assess(wav, text):
        return pron.feedback_html(coach.assess(wav, text))

    run.click(assess, [recording, sentence], [feedback])


TABS = {
    "smile": ("Smile game", smile_tab),
    "vad": ("Anomaly monitor", vad_tab),
    "tts": ("Speech synthesis", tts_tab),
    "pronunciation": ("Pronunciation feedback", pron_tab),
}


def build_app(backends: dict[str, Any]) -> gr.Blocks:
    """The page: one tab per loaded backend, in a fixed order."""
    with gr.Blocks(title="avlab demo", analytics_enabled=False) as app:
        gr.Markdown("# avlab demo")
        with gr.Tabs():
            for key in TASKS:
                if key in backends:
                    title, build = TABS[key]
                    with gr.Tab(title, id=key, elem_id=f"tab-{key}"):
                        build(backends[key])
    return app


def launch(
    app: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
) -> None:
    """Serve the app on host:port (share=True asks Gradio for a public link)."""
    app.queue().launch(
        server_name=host,
        server_port=port,
        share=share,
        theme=theme(),
        ssr_mode=False,
        footer_links=[],
        prevent_thread_lock=not block,
        quiet=not block,
    )
