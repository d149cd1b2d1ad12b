"""A checkpoint from a stranger runs nothing: every loader refuses a crafted config before it acts.

Each crafted checkpoint is a genuine one whose stored config was edited the way an attacker
would; the test checks that the loaders (eval, init_from, resume, play) refuse it with an error
naming the key and the target, and that nothing happened on disk.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from avlab.checkpoints import (
    CONFIG_KEY,
    UntrustedCheckpointError,
    is_allowed_target,
    load_checkpoint,
)
from avlab.run import build_module, evaluate, find_resume_checkpoint, init_from_checkpoint, train
from avlab.tasks.smile.play import load_net
from tests.conftest import compose_config

SHORT = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
]
SMILE_MODULE = "avlab.tasks.smile.module.SmileEmotionModule"


class _WritesOnUnpickle:
    """An object whose unpickling would create a file: what weights_only=True must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def genuine_runs(tmp_path_factory, data_dir) -> dict[str, Path]:
    """A best.ckpt of a short real run of every task, with the test metrics it recorded."""
    runs = {}
    for task, overrides in {
        "smile": ["data=smile_tiny", "model.net.lstm_hidden=16"],
        "face_voice": ["experiment=face_voice", "data=face_voice_tiny"],
        "aivad": ["experiment=aivad_scratch", "data=vad_tiny"],
    }.items():
        out = tmp_path_factory.mktemp(task) / "run"
        extra = SHORT if task != "aivad" else []
        cfg = compose_config("train", [*overrides, *extra], out, data_dir)
        record = train(cfg)
        runs[task] = (Path(record["best_checkpoint"] or out / "checkpoints/last.ckpt"), record)
    return runs


@pytest.fixture
def victim(tmp_path) -> Path:
    """A user's file that a crafted checkpoint tries to truncate."""
    path = tmp_path / "thesis.txt"
    path.write_text("four years of work\n")
    return path


def _crafted(genuine: Path, tmp_path: Path, edit) -> Path:
    """A copy of a genuine checkpoint whose stored config was changed by `edit(config)`."""
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=True)
    config = copy.deepcopy(checkpoint[CONFIG_KEY])
    edit(config)
    checkpoint[CONFIG_KEY] = config
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


def _evil_hub(tmp_path: Path, marker: Path) -> Path:
    """A local torch.hub folder whose hubconf.py writes a marker when imported."""
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "hubconf.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef model():\n    return None\n"
    )
    return hub


def _evil_pickle(tmp_path: Path, marker: Path) -> Path:
    """A full pickle that writes a marker when torch.load(weights_only=False) reads it."""
    path = tmp_path / "evil.pt"
    torch.save({"x": _WritesOnUnpickle(marker)}, path)
    return path


ATTACKS = {
    "open_as_data": lambda c, v, t, m: c.__setitem__(
        "data", {"_target_": "builtins.open", "file": str(v), "mode": "w"}
    ),
    "torch_load_full_pickle": lambda c, v, t, m: c.__setitem__(
        "data",
        {"_target_": "torch.load", "f": str(_evil_pickle(t, m)), "weights_only": False},
    ),
    "torch_hub_local": lambda c, v, t, m: c.__setitem__(
        "data",
        {
            "_target_": "torch.hub.load",
            "repo_or_dir": str(_evil_hub(t, m)),
            "model": "model",
            "source": "local",
        },
    ),
    "nested_in_model_net": lambda c, v, t, m: c["model"]["net"].__setitem__(
        "extra", {"inner": [{"_target_": "builtins.open", "file": str(v), "mode": "w"}]}
    ),
    "positional_args": lambda c, v, t, m: c.__setitem__(
        "data", {"_target_": "builtins.open", "_args_": [str(v), "w"]}
    ),
    "partial": lambda c, v, t, m: c.__setitem__(
        "data", {"_target_": "builtins.open", "_partial_": True, "file": str(v), "mode": "w"}
    ),
    "interpolation_to_a_target": lambda c, v, t, m: (
        c.__setitem__("evil", "builtins.open"),
        c.__setitem__("data", {"_target_": "${evil}", "file": str(v), "mode": "w"}),
    ),
    "avlab_function_not_in_conf": lambda c, v, t, m: c.__setitem__(
        "data",
        {
            "_target_": "avlab.audio.io.write_wav",
            "path": str(v),
            "audio": [0.0],
            "sample_rate": 8000,
        },
    ),
}


def _loaders(ckpt: Path, tmp_path: Path, data_dir: Path):
    """Every way a checkpoint path enters avlab, as zero-argument calls."""

    def eval_():
        evaluate(compose_config("eval", [f"ckpt={ckpt}"], tmp_path / "eval", data_dir))

    def init_from():
        cfg = compose_config("train", ["data=smile_tiny"], tmp_path / "init", data_dir)
        init_from_checkpoint(build_module(cfg), str(ckpt), SMILE_MODULE)

    return {
        "eval": eval_,
        "init_from": init_from,
        "resume": lambda: find_resume_checkpoint(str(ckpt), SMILE_MODULE),
        "play": lambda: load_net(ckpt),
    }


@pytest.mark.slow
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_crafted_checkpoint_is_refused_by_every_loader_and_touches_nothing(
    attack, genuine_runs, tmp_path, victim, data_dir
):
    marker = tmp_path / "code_ran"
    ckpt = _crafted(
        genuine_runs["smile"][0], tmp_path, lambda c: ATTACKS[attack](c, victim, tmp_path, marker)
    )
    for name, load in _loaders(ckpt, tmp_path, data_dir).items():
        with pytest.raises(UntrustedCheckpointError, match=r"crafted\.ckpt: \S+ (names|holds)"):
            load()
        assert victim.read_text() == "four years of work\n", name
        assert not marker.exists(), name


def test_a_full_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "code_ran"
    path = _evil_pickle(tmp_path, marker)
    with pytest.raises(UntrustedCheckpointError, match="other than tensors"):
        load_checkpoint(path, "ckpt")
    assert not marker.exists()


@pytest.mark.parametrize(
    "target",
    [
        "builtins.open",
        "torch.load",
        "torch.hub.load",
        "os.system",
        "avlab.audio.io.write_wav",  # an avlab function: functions can do anything
        "avlab.data_utils.staged_folder",
        "transformers.AutoModel.from_pretrained",
        "timm.create_model",
        "torch.optim.lr_scheduler.LambdaLR.__init__",
        "avlab.checkpoints.CONF_DIR",
        "",
        "open",
        None,
        ["builtins.open"],
    ],
)
def test_targets_outside_the_allowlist_are_refused(target):
    assert not is_allowed_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "avlab.tasks.smile.model.SmileEmotionNet",
        "avlab.optim.warmup_cosine",  # a function, but conf/ uses it
        "torch.optim.SGD",  # a class of a known family, though conf/ does not name it
        "torch.optim.lr_scheduler.OneCycleLR",
        "lightning.pytorch.callbacks.EarlyStopping",
        "lightning.pytorch.Trainer",
    ],
)
def test_targets_avlab_uses_or_safe_classes_are_allowed(target):
    assert is_allowed_target(target)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["smile", "face_voice", "aivad"])
def test_a_genuine_checkpoint_of_every_task_still_evaluates(task, genuine_runs, tmp_path, data_dir):
    ckpt, record = genuine_runs[task]
    result = evaluate(compose_config("eval", [f"ckpt={ckpt}"], tmp_path / "eval", data_dir))
    expected = {k: v for k, v in record["metrics"].items() if k.startswith("test/")}
    assert expected
    for name, value in expected.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-5), name


@pytest.mark.slow
def test_a_checkpoint_of_another_task_is_refused_for_init_from_and_resume(genuine_runs):
    ckpt = genuine_runs["face_voice"][0]
    with pytest.raises(ValueError, match="a checkpoint of avlab.tasks.face_voice"):
        find_resume_checkpoint(str(ckpt), SMILE_MODULE)
    with pytest.raises(ValueError, match="a checkpoint of avlab.tasks.face_voice"):
        load_net(ckpt)


def test_an_environment_resolver_cannot_smuggle_a_target(tmp_path, monkeypatch):
    monkeypatch.setenv("AVLAB_EVIL", "builtins.open")
    path = tmp_path / "env.ckpt"
    torch.save({"state_dict": {}, CONFIG_KEY: {"data": {"_target_": "${oc.env:AVLAB_EVIL}"}}}, path)
    with pytest.raises(UntrustedCheckpointError, match="interpolation"):
        load_checkpoint(path, "ckpt")
