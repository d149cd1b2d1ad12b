"""The sections of `python -m benchmarks` (see benchmarks/__main__.py for what each measures)."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from avlab.run import build_module, instantiate_callbacks

REPO = Path(__file__).resolve().parents[1]

# Each gradient-trained task: its default preset, its tiny data twin, the default batch size
# (None: the tiny twin's batches are concatenated up to it), the overrides that make the tiny
# twin 10x larger, and the figures its default run reports.
TASKS: dict[str, dict[str, Any]] = {
    "smile": {
        "experiment": "smile_pretrain",
        "tiny": "smile_tiny",
        "batch": 64,
        "batch_key": "batch_size",
        "tenx": [
            "data.sources.genki.synth.n=1200",
            "data.sources.fer.synth.n_train=1400",
            "data.sources.fer.synth.n_public=280",
            "data.sources.fer.synth.n_private=280",
        ],
        "report": ["test/emotion_acc", "test/smile_auroc"],
    },
    "face_voice": {
        "experiment": "face_voice",
        "tiny": "face_voice_tiny",
        "batch": 64,
        "batch_key": None,
        "tenx": ["data.synth.n_identities=160", "data.synth.n_test=40"],
        "report": ["test/match_acc", "test/recall_at_1", "test/eer"],
    },
    "tts": {
        "experiment": "tts",
        "tiny": "tts_tiny",
        "batch": 32,
        "batch_key": "batch_size",
        "tenx": ["data.synth.n_utterances=1600"],
        "report": ["test/stop_f1", "test/focus_rate", "test/mcd", "test/mcd_baseline"],
    },
    "pronunciation": {
        "experiment": "pronunciation",
        "tiny": "pronunciation_tiny",
        "batch": 16,
        "batch_key": "batch_size",
        "tenx": ["data.synth.utterances_per_speaker=60"],
        "report": ["test/per", "test/mdd_f1"],
    },
}
# AI-VAD has no training steps (features + density fit): only its default run's time is measured.
FIRST_RESULT = {
    **{task: spec["experiment"] for task, spec in TASKS.items()},
    "aivad": "aivad_scratch",
}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def compose_task(task: str, out: Path, *overrides: str) -> DictConfig:
    spec = TASKS[task]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={spec['experiment']}", f"data={spec['tiny']}", *overrides],
        )
    with open_dict(cfg):
        cfg.paths.data_dir = str(out / "data")
        cfg.paths.output_dir = str(out / "run")
    return cfg


def _size(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(next(v for v in batch.values() if torch.is_tensor(v)))
    return len(batch)


class FixedBatches(L.LightningDataModule):
    """Serves pre-built batches to trainer.fit; anything else (a TTS module's mel statistics,
    symbol table) is asked of the task's real datamodule."""

    def __init__(self, real: L.LightningDataModule, batches: list, steps: int) -> None:
        super().__init__()
        self.real, self.batches, self.steps = real, batches, steps

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches * (self.steps // len(self.batches) + 1), batch_size=None)

    def __getattr__(self, name: str) -> Any:
        if name in ("real", "batches", "steps") or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.real, name)


def training_batches(task: str, out: Path, n: int) -> tuple[L.LightningDataModule, list[Any]]:
    """The tiny twin's datamodule and n training batches of the task's default batch size."""
    spec = TASKS[task]
    key = spec["batch_key"]
    cfg = compose_task(task, out, *([f"data.{key}={spec['batch']}"] if key else []))
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    pool: list[Any] = []
    while len(pool) < n * (1 if key else spec["batch"]):
        pool.extend(datamodule.train_dataloader())
        if key and len(pool) >= n:
            break
    if key:
        return datamodule, pool[:n]
    # Fixed-shape batches smaller than the default: concatenate them up to it.
    flat = {k: torch.cat([b[k] for b in pool]) for k in pool[0]}
    size = spec["batch"]
    return datamodule, [
        {k: v[i * size : (i + 1) * size] for k, v in flat.items()} for i in range(n)
    ]


class StepTimer(L.Callback):
    """Wall time of every training step (batch start to batch end, optimizer step included)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def hand_loop(module: L.LightningModule, batches: list, steps: int) -> list[float]:
    """Seconds per step of a plain loop: training_step, backward, clip, optimizer step."""
    optimizer = module.optimizer_factory(params=module.parameters())
    times = []
    module.train()
    for i, batch in zip(range(steps), itertools.cycle(batches), strict=False):
        start = time.perf_counter()
        loss = module.training_step(batch, i)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def lightning_fit(
    module: L.LightningModule,
    data: tuple[L.LightningDataModule, list],
    steps: int,
    callbacks: list,
    out: Path,
) -> list[float]:
    """Seconds per step under trainer.fit with these callbacks (checkpointing if one is given)."""
    timer = StepTimer()
    datamodule = FixedBatches(data[0], data[1], steps)
    has_checkpoint = any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=CSVLogger(out),
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=has_checkpoint,
        gradient_clip_val=1.0,
        default_root_dir=out,
        callbacks=[*callbacks, timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.times


# The NanGuard methods that run every step (the input check inside its training_step wrapper,
# and its hooks); timed in place, so the guard's share of a step is measured directly instead
# of as the difference of two runs, which this machine's noise swamps on short steps.
GUARD_STEP_METHODS = (
    "_non_finite_inputs",
    "on_before_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
)


def time_methods(obj: Any, names: tuple[str, ...]) -> list[float]:
    """Wrap `obj`'s methods `names` (as instance attributes) so the seconds spent in them add
    up in the returned list's single element."""
    spent = [0.0]
    for name in names:
        method = getattr(obj, name)

        def timed(*args: Any, _method: Callable = method, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(obj, name, timed)
    return spent


VARIANTS = ("loop", "fit", "fit+callbacks", "fit+callbacks-guard")


def _spread(values: list[float], fmt: str) -> str:
    """The median, with the range over rounds when there were several."""
    text = format(median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)} to {format(max(values), fmt)})"
    return text


def overhead(args: Any) -> list[str]:
    """Per task: the four variants, `args.rounds` times in rotating order; every ratio is taken
    within a round (so slow drift of the machine cancels) and reported as the median over the
    rounds, with their range."""
    lines = [
        "| task | loop s/step | fit | fit+callbacks | fit+callbacks-guard | loop / fit (goal >= 0.97) | callbacks cost (goal <= 3 %) | NaN guard cost (goal <= 3 %) | NaN guard, timed in place (goal <= 3 %) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print(*lines, sep="\n", flush=True)
    for task in args.tasks:
        rounds: list[dict[str, float]] = []
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            cfg = compose_task(task, out)
            data = training_batches(task, out, 6)
            batches = data[1]
            torch.manual_seed(0)
            start = build_module(cfg)
            for r in range(args.rounds):
                every = instantiate_callbacks(cfg.callbacks)
                [guard] = [c for c in every if type(c).__name__ == "NanGuard"]
                guard_seconds = time_methods(guard, GUARD_STEP_METHODS)
                no_guard = [
                    c
                    for c in instantiate_callbacks(cfg.callbacks)
                    if type(c).__name__ != "NanGuard"
                ]
                callbacks = {"fit": [], "fit+callbacks": every, "fit+callbacks-guard": no_guard}
                order = VARIANTS[r % 4 :] + VARIANTS[: r % 4]
                times = {}
                for name in order:
                    module = copy.deepcopy(start)
                    if name == "loop":
                        times[name] = hand_loop(module, batches, args.steps)
                    else:
                        where = out / f"{name}-{r}"
                        times[name] = lightning_fit(
                            module, data, args.steps, callbacks[name], where
                        )
                t = {name: median(values[args.skip :]) for name, values in times.items()}
                guarded_run = sum(times["fit+callbacks"])
                t["guard"] = guard_seconds[0] / (guarded_run - guard_seconds[0])
                rounds.append(t)
        col = {name: [t[name] for t in rounds] for name in rounds[0]}
        ratio = {
            "loop/fit": [t["loop"] / t["fit"] for t in rounds],
            "callbacks": [t["fit+callbacks"] / t["fit"] - 1 for t in rounds],
            "guard two runs": [t["fit+callbacks"] / t["fit+callbacks-guard"] - 1 for t in rounds],
        }
        line = (
            f"| {task} | {median(col['loop']):.3f} | {median(col['fit']):.3f} | "
            f"{median(col['fit+callbacks']):.3f} | {median(col['fit+callbacks-guard']):.3f} | "
            f"{_spread(ratio['loop/fit'], '.3f')} | {_spread(ratio['callbacks'], '+.1%')} | "
            f"{_spread(ratio['guard two runs'], '+.1%')} | {_spread(col['guard'], '+.1%')} |"
        )
        print(line, flush=True)
        lines.append(line)
    return lines


def pipeline(args: Any) -> list[str]:
    lines = [
        "| task | loader samples/s (default num_workers) | model samples/s (loop) | ratio (goal >= 3x) |",
        "|---|---|---|---|",
    ]
    print(*lines, sep="\n", flush=True)
    for task in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            cfg = compose_task(task, out)
            datamodule = hydra.utils.instantiate(cfg.data)
            datamodule.prepare_data()
            datamodule.setup("fit")  # decoding that happens once (e.g. FER rows) is not timed
            seen, start = 0, time.perf_counter()
            while seen < 256 or time.perf_counter() - start < 2.0:
                for batch in datamodule.train_dataloader():
                    seen += _size(batch)
            loader_rate = seen / (time.perf_counter() - start)
            _, batches = training_batches(task, out, 4)
            torch.manual_seed(0)
            times = hand_loop(build_module(cfg), batches, max(8, args.steps // 2))
            model_rate = TASKS[task]["batch"] / median(times[3:])
        line = (
            f"| {task} | {loader_rate:.0f} | {model_rate:.0f} | {loader_rate / model_rate:.1f}x |"
        )
        print(line, flush=True)
        lines.append(line)
    return lines


_RSS = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def _train(out: Path, overrides: list[str]) -> tuple[float, int, dict]:
    """Run train.py in a fresh process: wall seconds, peak RSS in KiB, metrics.json."""
    command = [
        sys.executable,
        "-c",
        _RSS,
        sys.executable,
        str(REPO / "train.py"),
        f"paths.data_dir={out / 'data'}",
        f"paths.output_dir={out / 'run'}",
        f"hydra.run.dir={out / 'run'}",
        *overrides,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    peak = int(done.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    return wall, peak, metrics


def memory(args: Any) -> list[str]:
    lines = [
        "| task | peak RSS, tiny data (MiB) | peak RSS, 10x data (MiB) | ratio (goal <= 1.2x) |",
        "|---|---|---|---|",
    ]
    print(*lines, sep="\n", flush=True)
    for task in args.tasks:
        spec = TASKS[task]
        base = [f"experiment={spec['experiment']}", f"data={spec['tiny']}", "debug=limit"]
        with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as ten:
            _, small, _ = _train(Path(one), base)
            _, large, _ = _train(Path(ten), [*base, *spec["tenx"]])
        line = f"| {task} | {small / 1024:.0f} | {large / 1024:.0f} | {large / small:.2f}x |"
        print(line, flush=True)
        lines.append(line)
    return lines


def first_result(args: Any) -> list[str]:
    lines = [
        "| task | default run, empty data/ (wall) | peak RSS (MiB) | held-out figures |",
        "|---|---|---|---|",
    ]
    print(*lines, sep="\n", flush=True)
    for task in [t for t in FIRST_RESULT if t in args.tasks or t == "aivad"]:
        with tempfile.TemporaryDirectory() as tmp:
            wall, peak, record = _train(Path(tmp), [f"experiment={FIRST_RESULT[task]}"])
        names = TASKS.get(task, {}).get("report", ["test/frame_auroc"])
        figures = ", ".join(
            f"{n.split('/')[-1]} {record['metrics'][n]:.3f}"
            for n in names
            if n in record["metrics"]
        )
        line = f"| {task} | {wall:.0f} s ({wall / 60:.1f} min) | {peak / 1024:.0f} | {figures} |"
        print(line, flush=True)
        lines.append(line)
    return lines


SECTIONS: dict[str, Callable[[Any], list[str]]] = {
    "overhead": overhead,
    "pipeline": pipeline,
    "memory": memory,
    "first_result": first_result,
}
