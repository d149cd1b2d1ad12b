"""One thread policy for every task: `threads` in the config, applied once when a run starts."""

from __future__ import annotations

import pytest
import torch

from avlab.run import apply_thread_policy, available_cores


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_null_threads_uses_every_core_this_process_may_use():
    assert apply_thread_policy(None) == available_cores()
    assert torch.get_num_threads() == available_cores()


def test_a_number_of_threads_is_applied_to_torch():
    assert apply_thread_policy(1) == 1
    assert torch.get_num_threads() == 1


def test_zero_threads_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="threads=0"):
        apply_thread_policy(0)


@pytest.mark.parametrize(
    "experiment", ["smile_pretrain", "smile_finetune", "face_voice", "aivad_scratch"]
)
def test_no_preset_sets_threads_its_own_way(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}")
    assert cfg.threads is None
    assert "OMP_NUM_THREADS" not in str(cfg.get("hydra", {}))
    assert "torch_threads" not in str(cfg.model)


def test_a_run_applies_the_configured_threads(make_cfg):
    from avlab.run import train

    cfg = make_cfg("threads=1", "debug=fdr")
    train(cfg)
    assert torch.get_num_threads() == 1
