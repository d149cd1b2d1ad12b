"""`python -m avlab.experiments`: list, compare, cleanup, archive and restore on a fake outputs/ tree.

The tree mimics what avlab.run writes (config.yaml, run_info.json, metrics.json, .hydra/,
checkpoints/) for several tasks, a multirun with a diverged job, a failed run, a corrupt and a
missing metrics.json, old modification times and a symlink to a run outside outputs/.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from avlab.experiments.archive import MANIFEST, sha256
from avlab.experiments.cli import main
from avlab.experiments.runs import find_runs, metric_direction

NOW = datetime.now().replace(microsecond=0)
OLD = NOW - timedelta(days=30)
RECENT = NOW - timedelta(hours=2)
MODULES = {
    "smile": "avlab.tasks.smile.module.SmileEmotionModule",
    "face_voice": "avlab.tasks.face_voice.module.FaceVoiceModule",
    "vad": "avlab.tasks.vad.module.AiVadModule",
}


def _stamp(when: datetime, offset_min: int = 0) -> str:
    return (when + timedelta(minutes=offset_min)).strftime("%Y-%m-%d_%H-%M-%S")


def fake_run(
    folder: Path,
    *,
    name: str,
    task: str,
    when: datetime,
    metric: str = "val/loss",
    mode: str = "min",
    value: float | None = 0.5,
    status: str = "completed",
    test: dict[str, float] | None = None,
    metrics_text: str | None = None,
    overrides: tuple[str, ...] = (),
) -> Path:
    """A run folder as avlab.run.train leaves it, every file dated `when`."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    config = {
        "name": name,
        "optimized_metric": metric,
        "optimized_metric_mode": mode,
        "model": {"module": {"_target_": MODULES[task]}, "net": {"_target_": f"{task}.Net"}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    choices = {"experiment": name, "model": task, "loss": f"{task}_loss", "data": f"{task}_tiny"}
    (folder / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
    )
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    info = {"command": ["python", "train.py", f"experiment={name}"], "git_commit": "abc123"}
    (folder / "run_info.json").write_text(json.dumps(info))
    (folder / "checkpoints" / "best.ckpt").write_bytes(os.urandom(2048))
    (folder / "checkpoints" / "last.ckpt").write_bytes(os.urandom(2048))
    record = {
        "status": status,
        "reason": None if status == "completed" else f"{status}: something",
        "optimized_metric": metric,
        "value": value,
        "best_checkpoint": "/elsewhere/checkpoints/best.ckpt",
        "metrics": {metric: value, **(test or {})},
    }
    if metrics_text is not None:
        (folder / "metrics.json").write_text(metrics_text)
    elif status != "missing":
        (folder / "metrics.json").write_text(json.dumps(record))
    seconds = when.timestamp()
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (seconds, seconds), follow_symlinks=False)
    if (folder / "metrics.json").exists():  # written at the end: a 95 s run
        os.utime(folder / "metrics.json", (seconds + 95, seconds + 95))
    return folder


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """The fake tree in tmp_path."""
    return build_tree(tmp_path)


def build_tree(tmp_path: Path) -> dict[str, Path]:
    """outputs/ with smile, face_voice (a multirun) and vad runs, plus a run outside it."""
    out = tmp_path / "outputs"
    runs = {
        "smile_old_worse": fake_run(
            out / "smile_pretrain/runs" / _stamp(OLD),
            name="smile_pretrain",
            task="smile",
            when=OLD,
            value=0.50,
            test={"test/emotion_acc": 0.40, "test/smile_mae": 0.30, "test/n_frames": 7.0},
        ),
        "smile_old_best": fake_run(
            out / "smile_pretrain/runs" / _stamp(OLD, 10),
            name="smile_pretrain",
            task="smile",
            when=OLD + timedelta(minutes=10),
            value=0.30,
            test={"test/emotion_acc": 0.55, "test/smile_mae": 0.20, "test/n_frames": 7.0},
        ),
        "smile_recent": fake_run(
            out / "smile_pretrain/runs" / _stamp(RECENT),
            name="smile_pretrain",
            task="smile",
            when=RECENT,
            value=0.40,
            test={"test/emotion_acc": 0.60, "test/smile_mae": 0.25, "test/n_frames": 7.0},
        ),
        "smile_missing": fake_run(
            out / "smile_korean/runs" / _stamp(OLD),
            name="smile_korean",
            task="smile",
            when=OLD,
            status="missing",
        ),
        "vad_failed": fake_run(
            out / "aivad_scratch/runs" / _stamp(OLD),
            name="aivad_scratch",
            task="vad",
            when=OLD,
            metric="val/frame_auroc",
            mode="max",
            value=None,
            status="failed",
        ),
        "debug_corrupt": fake_run(
            out / "test_debug/runs" / _stamp(RECENT),
            name="test_debug",
            task="smile",
            when=RECENT,
            metrics_text='{"status": "compl',
        ),
    }
    sweep = out / "face_voice/multiruns" / _stamp(OLD, 20)
    for job, (lr, value, status) in enumerate(
        [("1e-3", 0.80, "completed"), ("2e-3", 0.90, "completed"), ("1e-1", None, "diverged")]
    ):
        runs[f"fv_job{job}"] = fake_run(
            sweep / str(job),
            name="face_voice",
            task="face_voice",
            when=OLD + timedelta(minutes=20 + job),
            metric="val/match_acc",
            mode="max",
            value=value,
            status=status,
            test={"test/match_acc": (value or 0.5) - 0.05, "test/eer": 0.3},
            overrides=(f"optim.lr={lr}",),
        )
    (sweep / "jobs.csv").write_text("job,optim.lr,status,val/match_acc,reason\n")
    outside = fake_run(
        tmp_path / "elsewhere" / "precious_run",
        name="precious",
        task="smile",
        when=OLD,
        value=None,
        status="failed",
    )
    # a link inside a run that cleanup deletes: the link goes, what it points to stays
    (runs["smile_missing"] / "shared_checkpoints").symlink_to(outside / "checkpoints")
    for path in (runs["smile_missing"] / "shared_checkpoints", runs["smile_missing"]):
        os.utime(path, (OLD.timestamp(),) * 2, follow_symlinks=False)
    (out / "linked").mkdir()
    (out / "linked" / "precious").symlink_to(outside, target_is_directory=True)
    os.utime(out / "linked" / "precious", (OLD.timestamp(),) * 2, follow_symlinks=False)
    runs["outside"] = outside
    runs["link"] = out / "linked" / "precious"
    runs["outputs"] = out
    runs["sweep"] = sweep
    return runs


def _cli(capsys, outputs: Path, *args: str) -> tuple[int, str]:
    code = main(["--outputs", str(outputs), *args])
    return code, capsys.readouterr().out


def test_metric_directions_come_from_one_table():
    assert metric_direction("test/emotion_acc") == "max"
    assert metric_direction("val/smile_auroc") == "max"
    assert metric_direction("test/recall_at_1") == "max"
    assert metric_direction("test/smile_mae") == "min"
    assert metric_direction("val/loss") == "min"
    assert metric_direction("test/per") == "min"
    assert metric_direction("test/eer") == "min"
    assert metric_direction("test/n_frames") is None
    assert metric_direction("val/loss_chance") is None


def test_list_shows_every_run_newest_first_and_broken_ones_as_such(tree, capsys):
    code, text = _cli(capsys, tree["outputs"], "list")
    assert code == 0
    lines = text.splitlines()
    # newest first: the recent smile run above the old ones
    smile = [line for line in lines if line.strip().startswith("smile_pretrain")]
    assert [_stamp(RECENT) in line for line in smile] == [True, False, False]
    assert "unreadable" in text  # the corrupt metrics.json
    assert "missing" in text  # the run without metrics.json
    assert "diverged" in text and "failed" in text
    assert "precious" in text and "symlink" in text
    assert "emotion_acc=0.6" in text and "smile / smile_loss / smile_tiny" in text
    runs = find_runs(tree["outputs"])
    assert len(runs) == 10  # 6 single runs, 3 jobs, 1 symlinked run

    _, failed = _cli(capsys, tree["outputs"], "list", "--status", "failed")
    assert "aivad_scratch" in failed and "smile_pretrain" not in failed
    _, only = _cli(capsys, tree["outputs"], "list", "--experiment", "face_voice")
    rows = [line for line in only.splitlines() if line.startswith("  face_voice ")]
    assert len(rows) == 3 and "smile" not in only


def test_compare_picks_the_best_run_per_metric_and_writes_files(tree, capsys, tmp_path):
    out_dir = tmp_path / "cmp"
    code, text = _cli(capsys, tree["outputs"], "compare", "--out", str(out_dir))
    assert code == 0
    assert "test/emotion_acc (higher is better): 0.6" in text
    assert "test/smile_mae (lower is better): 0.2" in text
    assert "val/match_acc (higher is better): 0.9" in text
    assert "test/n_frames: direction unknown" in text
    with (out_dir / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["task"] for r in rows} == {"smile", "face_voice", "vad"}
    smile_best = min(
        (r for r in rows if r["task"] == "smile" and r["val/loss"]),
        key=lambda r: float(r["val/loss"]),
    )
    assert smile_best["run"].endswith(_stamp(OLD, 10))
    assert "## face_voice" in (out_dir / "comparison.md").read_text()
    assert (out_dir / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_reads_a_multirun_folder_and_its_jobs_csv_alone(tree, capsys, tmp_path):
    sweep = tree["sweep"]
    code, text = _cli(
        capsys,
        tree["outputs"],
        "compare",
        str(sweep),
        "--metrics",
        "val/match_acc,test/eer",
        "--out",
        str(tmp_path / "a"),
    )
    assert code == 0 and "smile" not in text
    assert "val/match_acc (higher is better): 0.9" in text and "/1" in text
    # the job folders gone, jobs.csv is what is left
    with (sweep / "jobs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", "optim.lr", "status", "val/match_acc", "reason"])
        writer.writerows(
            [["0", "1e-3", "completed", "0.8", ""], ["1", "2e-3", "completed", "0.7", ""]]
        )
    for job in ("0", "1", "2"):
        for path in sorted((sweep / job).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (sweep / job).rmdir()
    code, text = _cli(capsys, tree["outputs"], "compare", str(sweep), "--out", str(tmp_path / "b"))
    assert code == 0
    assert "val/match_acc (higher is better): 0.8" in text


def _exists(tree: dict[str, Path]) -> dict[str, bool]:
    return {k: os.path.lexists(v) for k, v in tree.items()}


def test_dry_run_deletes_nothing(tree, capsys):
    before = _exists(tree)
    code, text = _cli(capsys, tree["outputs"], "cleanup", "--days-old", "7", "--dry-run")
    assert code == 0 and "would delete" in text
    assert _exists(tree) == before


def test_cleanup_without_yes_and_without_a_terminal_aborts(tree, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    before = _exists(tree)
    code, text = _cli(capsys, tree["outputs"], "cleanup", "--days-old", "7")
    assert code == 1 and "aborted" in text
    assert _exists(tree) == before


def test_cleanup_keep_best_keeps_each_experiments_best_and_touches_nothing_outside(tree, capsys):
    outside_files = sorted(p.relative_to(tree["outside"]) for p in tree["outside"].rglob("*"))
    (tree["smile_old_worse"] / ".avlab_archived").write_text("archived\n")
    os.utime(tree["smile_old_worse"], (OLD.timestamp(),) * 2)
    os.utime(tree["smile_old_worse"] / ".avlab_archived", (OLD.timestamp(),) * 2)
    code, text = _cli(capsys, tree["outputs"], "cleanup", "--days-old", "7", "--keep-best", "--yes")
    assert code == 0
    gone = {k for k, there in _exists(tree).items() if not there}
    assert gone == {"smile_missing", "vad_failed", "fv_job0", "fv_job2", "link"}
    # survivors: each experiment's best (smile 0.30 min, face_voice 0.90 max), recent, archived
    assert tree["smile_old_best"].is_dir() and tree["fv_job1"].is_dir()
    assert tree["smile_recent"].is_dir() and tree["debug_corrupt"].is_dir()
    assert tree["smile_old_worse"].is_dir()
    assert sorted(p.relative_to(tree["outside"]) for p in tree["outside"].rglob("*")) == (
        outside_files
    )
    assert "freed" in text and "KiB" in text
    freed = int(text.split("freed")[1].split("(")[1].split(" bytes")[0])
    assert freed > 5 * 4096  # five runs' checkpoints at least


def test_cleanup_by_pattern_deletes_only_matching_runs(tree, capsys):
    code, text = _cli(capsys, tree["outputs"], "cleanup", "--pattern", "test_*", "--yes")
    assert code == 0
    gone = {k for k, there in _exists(tree).items() if not there}
    assert gone == {"debug_corrupt"}
    assert not (tree["outputs"] / "test_debug").exists()  # empty parents pruned


def test_archive_holds_a_manifest_with_checksums_and_restore_unpacks_it(tree, capsys):
    outputs = tree["outputs"]
    code, text = _cli(capsys, outputs, "archive", str(tree["smile_old_best"]), "--best-only")
    assert code == 0
    [archive] = list((outputs / "archive").glob("*.tar.gz"))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(f"{archive.name[:-7]}/{MANIFEST}"))
    assert not any(n.endswith("last.ckpt") for n in names)  # best only
    assert manifest["checkpoints_sha256"] == {
        "checkpoints/best.ckpt": sha256(tree["smile_old_best"] / "checkpoints/best.ckpt")
    }
    assert manifest["git_commit"] == "abc123" and manifest["value"] == 0.30
    assert manifest["command"][1] == "train.py" and manifest["config"]["name"] == "smile_pretrain"
    # an archived run survives a cleanup that would otherwise take it
    _cli(capsys, outputs, "cleanup", "--pattern", "smile_pretrain", "--yes")
    assert tree["smile_old_best"].is_dir() and not tree["smile_recent"].exists()

    code, text = _cli(capsys, outputs, "restore", str(archive))
    assert code == 0 and "eval.py ckpt=" in text
    restored = outputs / "archive" / archive.name[:-7]
    assert (restored / "checkpoints/best.ckpt").read_bytes() == (
        tree["smile_old_best"] / "checkpoints/best.ckpt"
    ).read_bytes()
    code, text = _cli(capsys, outputs, "restore", str(archive))
    assert code == 2 and "exists already" in text


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "run/../../evil.txt"])
def test_restore_refuses_an_archive_that_escapes(tmp_path, capsys, member):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("run/MANIFEST.json", member):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    code, text = _cli(capsys, tmp_path / "outputs", "restore", str(archive))
    assert code == 2 and "unsafe member" in text
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_archive_restore_eval_reproduces_the_archived_metrics(tmp_path, data_dir, capsys):
    from avlab.run import evaluate, train
    from tests.conftest import compose_config

    outputs = tmp_path / "outputs"
    run_dir = outputs / "smile_pretrain" / "runs" / _stamp(NOW)
    cfg = compose_config(
        "train",
        [
            "data=smile_tiny",
            "model.net.lstm_hidden=16",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=2",
            "trainer.num_sanity_val_steps=0",
        ],
        run_dir,
        data_dir,
    )
    record = train(cfg)
    assert _cli(capsys, outputs, "archive", "smile_pretrain")[0] == 0
    [archive] = list((outputs / "archive").glob("*.tar.gz"))
    code, text = _cli(capsys, outputs, "restore", str(archive))
    assert code == 0
    ckpt = Path(text.split("eval.py ckpt=")[1].split()[0])
    assert ckpt.is_file() and ckpt.is_relative_to(outputs / "archive")

    eval_cfg = compose_config("eval", [f"ckpt={ckpt}"], tmp_path / "eval", data_dir)
    result = evaluate(eval_cfg)
    manifest = json.loads((ckpt.parents[1] / MANIFEST).read_text())
    tested = {k: v for k, v in record["metrics"].items() if k.startswith("test/")}
    assert tested and manifest["metrics"] == pytest.approx(record["metrics"])
    for name, value in tested.items():
        assert result["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_whole_metric_names_settle_what_their_words_cannot():
    from avlab.experiments.runs import metric_direction

    assert metric_direction("test/error_acc") == "max"
    assert metric_direction("test/error_f1_macro") == "max"
    assert metric_direction("test/stop_failures") == "min"
    assert metric_direction("test/per") == "min"
    assert metric_direction("test/n_frames") is None
