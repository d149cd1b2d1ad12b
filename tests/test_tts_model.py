"""TTS model and losses: finite KL at extreme log-variances, stop targets over the whole
utterance, safe attention masking, and two batches overfitted into a diagonal alignment."""

from __future__ import annotations

import torch

from avlab.tasks.tts.data import TTSDataModule, collate
from avlab.tasks.tts.model import TTSNet, bounded_logvar, masked_energies
from avlab.tasks.tts.module import (
    TTSLoss,
    TTSModule,
    guided_attention_weights,
    kl_divergence,
    stop_targets,
)


def test_kl_stays_finite_for_extreme_log_variances():
    mu = torch.zeros(2, 8, requires_grad=True)
    logvar = torch.tensor([[1e4] * 8, [-1e4] * 8], requires_grad=True)
    kl = kl_divergence(mu, logvar, logvar_limit=10.0)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and kl.min() > 0
    assert torch.isfinite(logvar.grad).all()
    squashed = bounded_logvar(torch.tensor([1e4, -1e4, 0.5]), 10.0)
    assert squashed.abs().max() <= 10.0 and torch.isfinite(squashed.exp()).all()


def test_stop_target_covers_the_whole_utterance():
    # 8 frames at r=2 end in step 3; 5 frames end in step 2 (its last frame is real).
    target, mask = stop_targets(torch.tensor([8, 5]), reduction=2, n_steps=4)
    assert target.tolist() == [[0, 0, 0, 1], [0, 0, 1, 1]]
    assert mask.tolist() == [[True] * 4, [True, True, True, False]]


def test_masked_attention_energies_stay_finite_in_half_precision():
    energies = torch.randn(1, 2, 4, dtype=torch.float16)
    keep = torch.tensor([[[True, True, False, False]]])
    probs = torch.softmax(masked_energies(energies, keep).float(), -1)
    assert torch.isfinite(probs).all() and probs[..., 2:].max() == 0


def test_guided_attention_weights_are_zero_on_the_diagonal_and_padding():
    w = guided_attention_weights(torch.tensor([4]), torch.tensor([4]), 6, 5)
    assert w[0, 2, 2] == 0 and w[0, 0, 3] > 0.9
    assert w[0, 4:, :].abs().sum() == 0 and w[0, :, 4:].abs().sum() == 0


def _diagonality(attention, text_lengths, step_lengths) -> float:
    """Share of decoder steps whose attention peak lies within 2 symbols of the diagonal."""
    hits, total = 0, 0
    for a, n, s in zip(attention, text_lengths.tolist(), step_lengths.tolist(), strict=True):
        peaks = a[:s, :n].argmax(-1).float()
        diagonal = torch.arange(s) * (n - 1) / max(s - 1, 1)
        hits += int(((peaks - diagonal).abs() <= 2).sum())
        total += s
    return hits / total


def _teacher_forced(module, batch):
    """Attention (B, S, N), decoder steps per utterance and focus rate of one eval-mode pass."""
    module.net.eval()
    prep = module._prepare(batch)
    with torch.no_grad():
        out = module.net(batch["text"], batch["text_lengths"], prep["mel"], batch["mel_lengths"])
    module.net.train()
    steps = (batch["mel_lengths"] + module.net.reduction - 1) // module.net.reduction
    focus = float(out.attention.max(-1).values[prep["stop_mask"]].mean())
    return out.attention, steps, focus


def test_overfitting_two_batches_lowers_mel_loss_and_aligns_attention(data_dir):
    torch.manual_seed(0)
    dm = TTSDataModule(
        str(data_dir / "tts_tiny" / "LJSpeech-1.1"), synth={"n_utterances": 160, "seed": 0}
    )
    dm.prepare_data()
    dm.setup()
    train = dm.splits["train"]
    batches = [collate([train[i] for i in range(k, k + 4)]) for k in (0, 4)]
    net = TTSNet(
        dim=64, text_dilations=[1, 3, 9], audio_dilations=[1, 3, 9], decoder_dilations=[1, 3]
    )
    module = TTSModule(net, TTSLoss(), optimizer=None)
    mean, std = dm.mel_stats()
    module.mel_mean.copy_(mean)
    module.mel_std.copy_(std)
    net.position_rate.fill_(dm.symbols_per_frame() * net.reduction)
    _, _, focus_before = _teacher_forced(module, batches[0])
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    mel_losses = []
    for step in range(100):
        batch = batches[step % 2]
        prep = module._prepare(batch)
        out = net(batch["text"], batch["text_lengths"], prep["mel"], batch["mel_lengths"])
        losses = module.criterion(
            out,
            prep["mel"],
            prep["frame_mask"],
            prep["stop_target"],
            prep["stop_mask"],
            prep["guide"],
            step,
        )
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        mel_losses.append(float(losses["mel"].detach()))
    assert mel_losses[-1] < 0.6 * mel_losses[0]
    attention, steps, focus = _teacher_forced(module, batches[0])
    # Before training the attention is spread (focus ~0.1); after, each step attends one
    # symbol, and that symbol lies on the text/time diagonal.
    assert focus_before < 0.3 and focus > 0.7
    assert _diagonality(attention, batches[0]["text_lengths"], steps) > 0.9
