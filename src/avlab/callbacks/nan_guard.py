"""NanGuard: skip non-finite training steps, roll back after repeated ones, name where a fault began.

It replaces the habit of zeroing non-finite values and carrying on, which hides faults and still
lets Adam's momentum and AdamW's weight decay move the weights.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from avlab.step_logging import step_values_read

log = logging.getLogger(__name__)

LR_GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
LR_SCHEDULER_ATTRS = ("base_lrs", "max_lrs")
MAX_NAMES_IN_LOG = 10
SKIP_REASONS = {
    "input": "non-finite input batch",
    "loss": "non-finite loss",
    "grad": "non-finite gradients",
    "other_rank": "a non-finite value on another rank",
}


class TrainingDivergedError(RuntimeError):
    """Raised when training stays non-finite after the allowed number of rollbacks."""


def named_tensors(obj: Any, path: str = "batch") -> Iterator[tuple[str, Tensor]]:
    """Yields (path, tensor) for every tensor nested in dicts, lists and tuples."""
    if isinstance(obj, Tensor):
        yield path, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from named_tensors(value, f"{path}[{key!r}]")
    elif isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            yield from named_tensors(value, f"{path}[{index}]")


def finite_flag(tensors: Iterable[Tensor], exact: bool = False) -> Tensor | None:
    """Returns a 0-dim bool tensor that is True when all floating tensors are finite, without a host sync.

    Fast (default): each tensor's sum in float32. A finite sum proves every element finite (NaN
    propagates, an infinity stays one or meets its opposite and makes NaN), so True is certain;
    False may also be an overflow of huge finite values, which `exact=True` tells apart: float64
    sums, which finite float32/16 values cannot overflow. The fast check is 3-4x cheaper on a
    CPU (smile's 1.6 M gradients), so callers check fast and confirm a False exactly
    (`all_finite`, the guard's gradient check).
    """
    dtype = torch.float64 if exact else torch.float32
    sums: dict[torch.device, list[Tensor]] = {}
    for tensor in tensors:
        if tensor.is_floating_point() and tensor.numel() > 0:
            sums.setdefault(tensor.device, []).append(tensor.detach().sum(dtype=dtype))
    if not sums:
        return None
    flags = [torch.isfinite(torch.stack(group)).all() for group in sums.values()]
    device = flags[0].device
    return torch.stack([flag.to(device) for flag in flags]).all()


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """Says whether every element of every floating tensor is finite (one host sync per device,
    two when the fast check must be confirmed)."""
    tensors = list(tensors)
    flag = finite_flag(tensors)
    return flag is None or bool(flag) or bool(finite_flag(tensors, exact=True))


def non_finite_names(named: Iterable[tuple[str, Tensor]]) -> list[str]:
    """Lists the names of the floating tensors that hold a non-finite element (one sync each)."""
    return [
        name
        for name, tensor in named
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all())
    ]


def cpu_copy(obj: Any) -> Any:
    """Deep-copies a nested state (state_dict, optimizer state) with every tensor copied to CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {key: cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(value) for value in obj)
    return copy.deepcopy(obj)


def summarize_names(names: list[str]) -> str:
    """Joins up to MAX_NAMES_IN_LOG names, saying how many more there were."""
    shown = ", ".join(names[:MAX_NAMES_IN_LOG])
    hidden = len(names) - MAX_NAMES_IN_LOG
    return f"{shown} (+{hidden} more)" if hidden > 0 else shown


class TrainingStepPatch:
    """Wraps a LightningModule's training_step on the instance; undo() is safe in any order."""

    def __init__(self, module: nn.Module, wrapper: Callable[..., Any]) -> None:
        self._module = module
        self._saved = module.__dict__.get("training_step")
        self._active = True
        inner = module.training_step

        @functools.wraps(inner)
        def training_step(*args: Any, **kwargs: Any) -> Any:
            if self._active:
                return wrapper(inner, *args, **kwargs)
            return inner(*args, **kwargs)

        # Lightning reads the signature through one `__wrapped__` level to decide whether to pass
        # batch_idx, so point it at the user's method even when wrappers are stacked.
        training_step.__wrapped__ = getattr(inner, "__wrapped__", inner)
        self._patched = training_step
        module.training_step = training_step

    def undo(self) -> None:
        """Restores the previous training_step, or turns into a pass-through if another wrapper sits on top."""
        self._active = False
        if self._module.__dict__.get("training_step") is not self._patched:
            return
        if self._saved is None:
            del self._module.__dict__["training_step"]
        else:
            self._module.__dict__["training_step"] = self._saved


class DetachingCallback(L.Callback):
    """A callback that attaches a TrainingStepPatch or hooks to the module and undoes them in
    `_detach`, at teardown and on an exception (after which Lightning calls no teardown)."""

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._detach()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._detach()

    def _detach(self) -> None:
        raise NotImplementedError


class FaultLocator:
    """Forward hooks, armed only after a fault, that remember the first submodule with a non-finite output."""

    def __init__(self) -> None:
        self.first_bad_module: str | None = None
        self.steps_left = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def armed(self) -> bool:
        """Whether the hooks are in place."""
        return bool(self._handles)

    def arm(self, module: nn.Module, n_steps: int) -> None:
        """Keeps hooks on every submodule for the next n_steps good steps."""
        if n_steps <= 0:
            return
        self.steps_left = n_steps
        if self.armed:
            return
        # The root is left out: under DDP its forward returns training_step's output, the loss.
        for name, submodule in module.named_modules():
            if name:
                self._handles.append(submodule.register_forward_hook(self._make_hook(name)))

    def count_good_step(self) -> None:
        """Disarms once the armed window has passed without a fault."""
        self.steps_left -= 1
        if self.steps_left <= 0:
            self.disarm()

    def disarm(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.steps_left = 0

    def _make_hook(self, name: str) -> Callable[..., None]:
        """Builds a hook that records `name` if its module is the first to output a non-finite value."""

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.first_bad_module is None and not all_finite(
                t for _, t in named_tensors(output)
            ):
                self.first_bad_module = f"{name!r} ({type(module).__name__})"

        return hook


@dataclass
class Snapshot:
    """Finite weights, buffers and optimizer states, on CPU, with the global step they were taken at."""

    step: int
    model_state: dict[str, Tensor]
    optimizer_states: list[dict[str, Any]]
    scaler_state: dict[str, Any] | None = None


class NanGuard(DetachingCallback):
    """Skips non-finite training steps, rolls back after repeated ones, and names where the fault began.

    Per step: a batch with non-finite floating inputs is skipped before the forward pass (so
    BatchNorm statistics stay clean); a step whose loss or gradients are not finite gets its
    gradients set to None before `optimizer.step`, so Adam momentum and AdamW decay leave the
    weights alone. After `max_consecutive_skips` skipped steps in a row, weights, buffers and
    optimizer state go back to the last finite snapshot and the learning rate is multiplied by
    `lr_backoff`; after `max_rollbacks` rollbacks, `TrainingDivergedError` stops the run. Under
    DDP every decision is agreed across ranks first, so all ranks skip together.

    Logged each training step: `nan_guard/skipped_steps` (all skips), `nan_guard/skipped_batches`
    (the input skips among them) and `nan_guard/rollbacks`.
    """

    def __init__(
        self,
        check_inputs: bool = True,
        max_consecutive_skips: int = 5,
        max_rollbacks: int = 3,
        lr_backoff: float = 0.5,
        snapshot_every_n_steps: int = 20,
        locate_for_n_steps: int = 3,
        min_loss_scale: float = 1.0,
    ) -> None:
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        if max_rollbacks < 0:
            raise ValueError(f"max_rollbacks must be >= 0, got {max_rollbacks}")
        if not 0.0 < lr_backoff <= 1.0:
            raise ValueError(f"lr_backoff must be in (0, 1], got {lr_backoff}")
        self.check_inputs = check_inputs
        self.max_consecutive_skips = max_consecutive_skips
        self.max_rollbacks = max_rollbacks
        self.lr_backoff = lr_backoff
        self.snapshot_every_n_steps = snapshot_every_n_steps
        self.locate_for_n_steps = locate_for_n_steps
        self.min_loss_scale = min_loss_scale

        self.skipped_steps = 0
        self.skip_reasons = dict.fromkeys(SKIP_REASONS, 0)
        self.consecutive_skips = 0
        self.rollbacks = 0
        self.lr_scale = 1.0

        self.snapshot: Snapshot | None = None
        self.locator = FaultLocator()
        self._good_steps_since_snapshot = 0
        self._logged_counters: dict[str, float] | None = None
        self._patch: TrainingStepPatch | None = None
        self._trainer: L.Trainer | None = None
        self._parameter_names: dict[int, str] = {}
        self._reset_step_state()

    @property
    def skipped_batches(self) -> int:
        """Batches skipped before the forward pass because of non-finite inputs (on any rank)."""
        return self.skip_reasons["input"]

    def _reset_step_state(self) -> None:
        """Forgets what was seen during the current optimizer step."""
        self._input_fault: str | None = None
        self._loss_finite: Tensor | None = None
        self._outcome: str | None = None
        self.locator.first_bad_module = None

    def state_dict(self) -> dict[str, Any]:
        """Counters that must survive a resume (the snapshot is retaken at train start)."""
        return {
            "skipped_steps": self.skipped_steps,
            "skip_reasons": dict(self.skip_reasons),
            "consecutive_skips": self.consecutive_skips,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the counters saved by state_dict."""
        self.skipped_steps = state_dict["skipped_steps"]
        self.skip_reasons.update(state_dict["skip_reasons"])
        self.consecutive_skips = state_dict["consecutive_skips"]
        self.rollbacks = state_dict["rollbacks"]
        self.lr_scale = state_dict["lr_scale"]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Wraps training_step so inputs are checked before the forward and the loss after it."""
        self._trainer = trainer
        self._parameter_names = {id(p): name for name, p in pl_module.named_parameters()}
        self._patch = TrainingStepPatch(pl_module, self._guarded_training_step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Takes the first snapshot, after a resume has restored the optimizer state."""
        self._take_snapshot(trainer, pl_module)
        self._info(
            trainer,
            "NanGuard: a skipped step still advances global_step and per-step LR schedulers (the "
            "schedule is not paused); a rollback restores weights and optimizer state but keeps the "
            f"schedule position, multiplying the learning rate by {self.lr_backoff:g} in the "
            "optimizer and in every scheduler's base learning rates.",
        )

    def _guarded_training_step(self, inner: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Skips a batch with non-finite inputs, else runs training_step and records the loss's finiteness."""
        trainer = self._trainer
        if self._input_fault is None and self._loss_finite is None:
            self.locator.first_bad_module = None
        batch = args[0] if args else kwargs.get("batch")
        if self.check_inputs:
            bad_inputs = self._non_finite_inputs(batch)
            # Agreed before the forward pass: a rank that skips it alone would hang collectives.
            if not trainer.strategy.reduce_boolean_decision(not bad_inputs, all=True):
                self._input_fault = summarize_names(bad_inputs) if bad_inputs else "on another rank"
                return self._skipped_step_output(trainer)
        return inner(*args, **kwargs)

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        """Records whether the loss about to be backpropagated is finite.

        Lightning calls this for automatic optimisation and for `manual_backward`, in both cases
        before the optimizer step that the loss feeds, so a manual step is judged on its own loss.
        Under accumulation the flags of the micro-batches are combined.
        """
        flag = torch.isfinite(loss.detach()).all()
        self._loss_finite = flag if self._loss_finite is None else self._loss_finite & flag

    @staticmethod
    def _non_finite_inputs(batch: Any) -> list[str]:
        """Names the batch tensors holding non-finite values; one sync when all are finite."""
        named = list(named_tensors(batch))
        if all_finite(tensor for _, tensor in named):
            return []
        return non_finite_names(named)

    @staticmethod
    def _skipped_step_output(trainer: L.Trainer) -> Tensor | None:
        """What training_step returns for a skipped batch."""
        if trainer.world_size == 1:
            return None  # Lightning then skips backward; its optimizer step sees no gradients
        # Under DDP, Lightning rejects None and the reducer waits for every parameter's
        # gradient, so give each one an exact zero; the step is dropped in on_before_optimizer_step.
        trainable = [p for p in trainer.lightning_module.parameters() if p.requires_grad]
        return sum(p.sum().float() * 0.0 for p in trainable)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Drops the step's gradients when its inputs, loss or gradients are not finite on any rank."""
        params = [
            p for group in optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        reason, grads_finite = self._local_fault(trainer, params)
        if trainer.strategy.reduce_boolean_decision(reason is None, all=True):
            self._finish_good_step()
            return
        bad_grads = [] if grads_finite else self._non_finite_grad_names(params)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is None or grads_finite:
            if scaler is not None:
                # fp16 with finite gradients: the scaler would step, so the gradients must go.
                # Unscale first (a fused optimizer leaves that to scaler.step), so the scaler has
                # its inf checks recorded and scaler.step/update accept the empty step.
                _unscale_once(scaler, optimizer)
            for p in params:
                p.grad = None
        # else: fp16 with non-finite gradients: the GradScaler skips this step and lowers its
        # scale itself; clearing the gradients could break a fused optimizer's scaler.step.
        self._record_skip(trainer, pl_module, reason or "other_rank", bad_grads, scaler)

    def _local_fault(self, trainer: L.Trainer, params: list[Tensor]) -> tuple[str | None, bool]:
        """Returns this rank's reason to skip (or None) and whether its gradients were finite."""
        if self._input_fault is not None:
            return "input", True
        flags = [finite_flag(p.grad for p in params), self._loss_finite]
        present = [flag for flag in flags if flag is not None]
        if not present:
            return None, True
        values = torch.stack([flag.to(present[0].device) for flag in present]).tolist()
        grads_finite = values[0] if flags[0] is not None else True
        if not grads_finite:  # the fast check's False may be an overflow of finite gradients
            grads_finite = bool(finite_flag((p.grad for p in params), exact=True))
        loss_finite = values[-1] if flags[1] is not None else True
        if not loss_finite:
            return "loss", grads_finite
        if not grads_finite:
            return "grad", False
        return None, grads_finite

    def _non_finite_grad_names(self, params: list[Tensor]) -> list[str]:
        """Names the parameters whose gradients hold non-finite values."""
        named = ((self._parameter_names.get(id(p), "<unnamed>"), p.grad) for p in params)
        return non_finite_names(named)

    def _finish_good_step(self) -> None:
        """Counts a finite step and winds down the fault locator."""
        self.consecutive_skips = 0
        self._good_steps_since_snapshot += 1
        if self.locator.armed:
            self.locator.count_good_step()
        self._reset_step_state()
        self._outcome = "good"

    def _record_skip(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        reason: str,
        bad_grads: list[str],
        scaler: Any = None,
    ) -> None:
        """Counts a skipped step, logs what is known about it, and arms the locator for the next steps.

        Under fp16 a gradient overflow while the loss scale is above `min_loss_scale` is how the
        GradScaler finds its scale: it is counted but does not count towards a rollback. Once
        the scale is down at `min_loss_scale`, non-finite gradients are a fault like any other.
        """
        self.skipped_steps += 1
        self.skip_reasons[reason] += 1
        scale = float(scaler.get_scale()) if scaler is not None else None
        calibrating = reason == "grad" and scale is not None and scale > self.min_loss_scale
        if not calibrating:
            self.consecutive_skips += 1
        fp16_note = ""
        if scale is not None:
            fp16_note = f" fp16 loss scale {scale:g}" + (
                f" (above min_loss_scale {self.min_loss_scale:g}: the GradScaler lowers it; "
                "not counted towards a rollback)."
                if calibrating
                else "."
            )
        message = (
            f"NanGuard: skipped the optimizer step at global step {trainer.global_step} "
            f"({SKIP_REASONS[reason]}{self._input_detail()}); {self.skipped_steps} skipped so far, "
            f"{self.consecutive_skips} in a row (rollback at {self.max_consecutive_skips}).{fp16_note}"
        )
        if reason in ("loss", "grad"):
            message += " " + self._locate(reason, pl_module)
        if bad_grads:
            message += f" Non-finite gradients in {len(bad_grads)} parameter(s): {summarize_names(bad_grads)}."
        self._warn(trainer, message)
        self._reset_step_state()
        self._outcome = "skipped"

    def _input_detail(self) -> str:
        """Says which inputs were non-finite, when the skip came from the batch."""
        return f": {self._input_fault}" if self._input_fault is not None else ""

    def _locate(self, reason: str, pl_module: L.LightningModule) -> str:
        """Names the first non-finite module if the hooks were armed, and (re)arms them."""
        if self.locator.armed:
            first_bad = self.locator.first_bad_module
            if first_bad is not None:
                note = f"First submodule with a non-finite output: {first_bad}."
            elif reason == "loss":
                note = (
                    "No submodule output was non-finite: the loss computation itself (training_step "
                    "code outside submodules) produced the non-finite value."
                )
            else:
                note = "All submodule outputs were finite: the non-finite values arose in the backward pass."
        elif self.locate_for_n_steps > 0:
            note = (
                f"Forward hooks armed for the next {self.locate_for_n_steps} steps to name the first "
                "submodule with a non-finite output if the fault recurs."
            )
        else:
            note = ""
        self.locator.arm(pl_module, self.locate_for_n_steps)
        return note

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """After the optimizer step: repair buffers, roll back or stop, snapshot, and log the counters."""
        if self._input_fault is not None and not pl_module.automatic_optimization:
            # Manual optimization: the skipped training_step called no optimizer, so no hook saw it.
            self._record_skip(trainer, pl_module, "input", [])
        outcome, self._outcome = self._outcome, None
        if outcome == "skipped":
            self._restore_buffers_if_poisoned(trainer, pl_module)
            if self.consecutive_skips >= self.max_consecutive_skips:
                self._roll_back_or_stop(trainer, pl_module)
        elif (
            outcome == "good" and 0 < self.snapshot_every_n_steps <= self._good_steps_since_snapshot
        ):
            self._take_snapshot(trainer, pl_module)
        self._log_counters(trainer, pl_module)

    def _log_counters(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Logs the cumulative counters at the steps whose values are read (`step_values_read`:
        the loggers' steps, an epoch's last batch), and at a step where they changed (so
        callback_metrics and metrics.json are always current).

        Not at every step: three `self.log` calls cost about 1.2 ms, a fifth of the guard's
        time on a 60 ms step, and Lightning sends only every log_every_n_steps-th to a logger.
        """
        counters = {
            "nan_guard/skipped_steps": float(self.skipped_steps),
            "nan_guard/skipped_batches": float(self.skipped_batches),
            "nan_guard/rollbacks": float(self.rollbacks),
        }
        if counters == self._logged_counters and not step_values_read(trainer):
            return
        self._logged_counters = counters
        for name, value in counters.items():
            pl_module.log(name, value, on_step=True, on_epoch=False)

    def _take_snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keeps a CPU copy of weights, buffers and optimizer states, if they are all finite."""
        model_state = pl_module.state_dict()
        if not all_finite(model_state.values()):
            self._warn(
                trainer,
                "NanGuard: weights or buffers are not finite; keeping the previous snapshot.",
            )
            return
        self.snapshot = Snapshot(
            step=trainer.global_step,
            model_state=cpu_copy(model_state),
            optimizer_states=[cpu_copy(optimizer.state_dict()) for optimizer in trainer.optimizers],
            scaler_state=_scaler_state(trainer),
        )
        self._good_steps_since_snapshot = 0

    def _restore_buffers_if_poisoned(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        """Puts back the snapshot's buffers (e.g. BatchNorm statistics) if a skipped step made any non-finite."""
        buffers = dict(pl_module.named_buffers())
        if self.snapshot is None or all_finite(buffers.values()):
            return
        poisoned = non_finite_names(buffers.items())
        with torch.no_grad():
            for name, buffer in buffers.items():
                saved = self.snapshot.model_state.get(name)
                if saved is not None:
                    buffer.copy_(saved)
        self._warn(
            trainer,
            f"NanGuard: restored buffers from the step-{self.snapshot.step} snapshot; non-finite were: "
            f"{summarize_names(poisoned)}.",
        )

    def _roll_back_or_stop(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restores the last snapshot with a lower learning rate, or stops once rollbacks are used up."""
        if self.rollbacks >= self.max_rollbacks or self.snapshot is None:
            raise TrainingDivergedError(
                f"NanGuard: training diverged at global step {trainer.global_step}: "
                f"{self.consecutive_skips} consecutive non-finite steps after {self.rollbacks} "
                f"rollback(s) (max {self.max_rollbacks}), {self.skipped_steps} skipped steps in total "
                f"({self._reason_summary()}); the learning rate was at {self.lr_scale:g}x its schedule. "
                "The warnings above name the first non-finite module or parameters."
            )
        self._restore_snapshot(trainer, pl_module)
        self.rollbacks += 1
        self.lr_scale *= self.lr_backoff
        self.consecutive_skips = 0
        # The next snapshot must be earned by steps taken after the rollback.
        self._good_steps_since_snapshot = 0
        self._warn(
            trainer,
            f"NanGuard: {self.max_consecutive_skips} non-finite steps in a row at global step "
            f"{trainer.global_step}; rollback {self.rollbacks}/{self.max_rollbacks} to the step-"
            f"{self.snapshot.step} snapshot (weights, buffers, optimizer state). The learning rate is now "
            f"{self.lr_scale:g}x its schedule (optimizer and scheduler base learning rates); the "
            "schedule keeps its position, it is not rewound.",
        )

    def _reason_summary(self) -> str:
        """Counts skips per reason, for the final error."""
        return ", ".join(
            f"{count} {SKIP_REASONS[r]}" for r, count in self.skip_reasons.items() if count
        )

    def _restore_snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Loads the snapshot's model and optimizer states and scales the learning rate by lr_backoff."""
        snapshot = self.snapshot
        current_lrs = [
            [
                {key: group[key] for key in LR_GROUP_KEYS if key in group}
                for group in optimizer.param_groups
            ]
            for optimizer in trainer.optimizers
        ]
        pl_module.load_state_dict(snapshot.model_state)
        for optimizer, state in zip(trainer.optimizers, snapshot.optimizer_states, strict=True):
            optimizer.load_state_dict(state)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and snapshot.scaler_state:
            scaler.load_state_dict(snapshot.scaler_state)
        # load_state_dict brought back the snapshot's learning rates; scale today's instead.
        for optimizer, group_lrs in zip(trainer.optimizers, current_lrs, strict=True):
            for group, lrs in zip(optimizer.param_groups, group_lrs, strict=True):
                for key, value in lrs.items():
                    group[key] = value * self.lr_backoff
        for config in trainer.lr_scheduler_configs:
            scale_scheduler_lrs(config.scheduler, self.lr_backoff)

    def _detach(self) -> None:
        """Undoes what on_fit_start and the locator attached to the module."""
        if self._patch is not None:
            self._patch.undo()
            self._patch = None
        self.locator.disarm()
        self.snapshot = None

    @staticmethod
    def _warn(trainer: L.Trainer, message: str) -> None:
        """Logs a warning on global rank zero."""
        if trainer.is_global_zero:
            log.warning(message)

    @staticmethod
    def _info(trainer: L.Trainer, message: str) -> None:
        """Logs an info line on global rank zero."""
        if trainer.is_global_zero:
            log.info(message)


def scale_scheduler_lrs(scheduler: Any, factor: float) -> None:
    """Multiplies a scheduler's base learning rates, so its next step does not undo a backoff."""
    for attr in LR_SCHEDULER_ATTRS:
        values = getattr(scheduler, attr, None)
        if isinstance(values, list):
            setattr(scheduler, attr, [value * factor for value in values])
    for child in getattr(scheduler, "_schedulers", []):
        scale_scheduler_lrs(child, factor)


def _scaler_state(trainer: L.Trainer) -> dict[str, Any] | None:
    """The fp16 GradScaler's state (scale, growth tracker), or None without one."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return copy.deepcopy(scaler.state_dict()) if scaler is not None else None


def _unscale_once(scaler: Any, optimizer: torch.optim.Optimizer) -> None:
    """Unscale an optimizer's gradients unless that already happened since the last update."""
    try:
        scaler.unscale_(optimizer)
    except RuntimeError as err:
        if "already been called" not in str(err):
            raise
