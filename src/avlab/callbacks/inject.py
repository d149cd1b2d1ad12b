"""NanInjector: put NaN into the loss, the inputs, a gradient or a module output at chosen steps."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
from torch import Tensor, nn

from avlab.callbacks.nan_guard import DetachingCallback, TrainingStepPatch, named_tensors

log = logging.getLogger(__name__)

TARGETS = ("loss", "input", "grad", "module")
NAN = float("nan")


def poisoned(obj: Any) -> Any:
    """Returns obj with every floating tensor multiplied by NaN (graphs kept), nested containers rebuilt."""
    if isinstance(obj, Tensor):
        return obj * NAN if obj.is_floating_point() else obj
    if isinstance(obj, Mapping):
        return {key: poisoned(value) for key, value in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(poisoned(value) for value in obj))
    if isinstance(obj, list | tuple):
        return type(obj)(poisoned(value) for value in obj)
    return obj


def poisoned_loss(output: Any) -> Any:
    """Returns training_step's output with its loss (tensor or dict["loss"]) multiplied by NaN."""
    if isinstance(output, Mapping):
        return {**output, "loss": output["loss"] * NAN}
    return output * NAN


class NanInjector(DetachingCallback):
    """Injects NaN at the given global steps, to see NanGuard (and its locator) at work.

    target: "loss" multiplies training_step's loss by NaN (so gradients are NaN too);
    "input" makes the batch's floating tensors NaN; "grad" makes the first parameter's gradient
    NaN after backward; "module" multiplies the output of submodule `module` by NaN.
    It acts before NanGuard sees the step whatever the callback order: for "loss",
    training_step is wrapped in `setup`, which Lightning runs for all callbacks before NanGuard
    wraps it in `on_fit_start`, so this wrapper is the inner one; "input" fills the batch in
    place in `on_train_batch_start`, before any training_step wrapper runs (so do not use it
    with a dataset that hands out views of its own storage); "grad" acts in on_after_backward,
    before on_before_optimizer_step. `ranks` limits injection to those global ranks (None: all).
    """

    def __init__(
        self,
        steps: Sequence[int] = (),
        target: str = "loss",
        module: str | None = None,
        ranks: Sequence[int] | None = None,
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"NanInjector: target must be one of {TARGETS}, got {target!r}")
        if target == "module" and not module:
            raise ValueError("NanInjector: target='module' needs module=<qualified submodule name>")
        if target != "module" and module is not None:
            raise ValueError(f"NanInjector: module={module!r} is only used with target='module'")
        self.steps = {int(step) for step in steps}
        self.target = target
        self.module = module
        self.ranks = None if ranks is None else {int(rank) for rank in ranks}
        self.injected_at: list[int] = []
        self._trainer: L.Trainer | None = None
        self._patch: TrainingStepPatch | None = None
        self._hook: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Wraps training_step or hooks the target submodule."""
        if stage != "fit":
            return
        self._trainer = trainer
        if self.target == "loss":
            self._patch = TrainingStepPatch(pl_module, self._inject_into_step)
        elif self.target == "module":
            self._hook = self._find_module(pl_module).register_forward_hook(self._poison_output)

    def _find_module(self, pl_module: L.LightningModule) -> nn.Module:
        """Looks up the target submodule, with a clear error naming close matches."""
        modules = dict(pl_module.named_modules())
        modules.pop("", None)
        if self.module in modules:
            return modules[self.module]
        close = difflib.get_close_matches(self.module, modules, n=5) or list(modules)[:10]
        raise ValueError(
            f"NanInjector: {type(pl_module).__name__} has no submodule {self.module!r}; "
            f"close names: {', '.join(close)}"
        )

    def _should_inject(self) -> bool:
        """Whether this training step, on this rank, is one to poison."""
        trainer = self._trainer
        return (
            trainer is not None
            and trainer.training
            and trainer.global_step in self.steps
            and (self.ranks is None or trainer.global_rank in self.ranks)
        )

    def _record(self) -> None:
        """Notes and logs an injection."""
        step = self._trainer.global_step
        if not self.injected_at or self.injected_at[-1] != step:
            self.injected_at.append(step)
        log.warning(
            "NanInjector: injected NaN into the %s at global step %d (rank %d).",
            f"output of {self.module!r}" if self.target == "module" else self.target,
            step,
            self._trainer.global_rank,
        )

    def _inject_into_step(self, inner: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Poisons the loss returned by training_step."""
        if not self._should_inject():
            return inner(*args, **kwargs)
        self._record()
        return poisoned_loss(inner(*args, **kwargs))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Fills the batch's floating tensors with NaN, in place, at the chosen steps."""
        if self.target != "input" or not self._should_inject():
            return
        self._record()
        for _, tensor in named_tensors(batch):
            if tensor.is_floating_point():
                tensor.fill_(NAN)

    def _poison_output(self, module: nn.Module, args: Any, output: Any) -> Any:
        """Forward hook: replaces the output with a NaN one at the chosen steps."""
        if not self._should_inject():
            return None
        self._record()
        return poisoned(output)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Fills the first parameter's gradient with NaN at the chosen steps."""
        if self.target != "grad" or not self._should_inject():
            return
        first = next((p for p in pl_module.parameters() if p.grad is not None), None)
        if first is not None:
            self._record()
            first.grad.fill_(NAN)

    def _detach(self) -> None:
        """Undoes what setup attached."""
        if self._patch is not None:
            self._patch.undo()
            self._patch = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
