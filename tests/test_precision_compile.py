"""The GPU path's two switches, checked on CPU: `precision=auto|bf16-mixed` and `model.compile`.

bf16 autocast and torch.compile must leave every gradient-trained task's numbers where fp32
eager puts them (within stated tolerances), and `auto` must choose bf16 only where the
hardware computes it natively.
"""

from __future__ import annotations

import hydra
import pytest
import torch

from avlab import run
from avlab.run import build_module, resolve_precision

# task preset -> its tiny data twin's batch is used as is
PRESETS = ["smile_pretrain", "face_voice", "tts", "pronunciation"]


def test_precision_auto_chooses_bf16_only_where_it_is_native(monkeypatch):
    monkeypatch.setattr(run, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(run, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"  # explicit choices are kept


def _module(cfg):
    torch.manual_seed(0)
    module = build_module(cfg)
    module.eval()  # dropout off: the two passes see the same network
    return module


def _module_and_batch(make_cfg, preset: str):
    cfg = make_cfg(f"experiment={preset}")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return _module(cfg), next(iter(datamodule.train_dataloader()))


@pytest.mark.parametrize("preset", PRESETS)
def test_bf16_autocast_loss_and_gradients_match_fp32(make_cfg, preset):
    """One training step's loss under CPU bf16 autocast is within 3 % of fp32's, and the
    gradients point the same way (cosine > 0.95): the bf16-mixed path computes the same task."""
    module, batch = _module_and_batch(make_cfg, preset)

    def loss_and_grad(bf16: bool):
        module.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step(batch, 0)
        loss.float().backward()
        grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None]
        return float(loss), torch.cat(grads)

    loss32, grad32 = loss_and_grad(False)
    loss16, grad16 = loss_and_grad(True)
    assert abs(loss16 - loss32) <= 0.03 * abs(loss32), (loss16, loss32)
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine > 0.95, float(cosine)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_compiled_network_matches_eager_and_keeps_checkpoint_keys(make_cfg, preset):
    """model.compile=true compiles in place: same state_dict keys, and one training step gives
    the eager loss and gradients (to float rounding), for every gradient-trained task."""
    eager, batch = _module_and_batch(make_cfg, preset)
    compiled = _module(make_cfg(f"experiment={preset}", "model.compile=true", name="compiled"))
    compiled.load_state_dict(eager.state_dict())
    assert list(compiled.state_dict()) == list(eager.state_dict())

    def loss_and_grad(module):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same draws for any random op in the step, in both
        loss = module.training_step(batch, 0)
        loss.backward()
        return loss.detach(), torch.cat(
            [p.grad.flatten() for p in module.parameters() if p.grad is not None]
        )

    want, want_grad = loss_and_grad(eager)
    got, got_grad = loss_and_grad(compiled)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (float(got), float(want))
    assert torch.allclose(got_grad, want_grad, rtol=1e-3, atol=1e-5), float(
        (got_grad - want_grad).abs().max()
    )
