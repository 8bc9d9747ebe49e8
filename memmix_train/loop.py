"""The optimizer and the training loop: AdamW with warmup + cosine decay (over the steps, or over whichever of the
steps and the time budget runs out first), gradient accumulation and clipping, a stop on NaN/inf loss, a
wall-clock budget, and periodic logging, evaluation and checkpoints.

`train_step` is one optimizer step and works for any model whose forward takes ``input_ids`` and ``labels``;
`run_loop` drives it for `train_accelerate.py` (the findings harness, benchmarks/findings/harness.py, uses
`build_optimizer`, `build_scheduler` and `train_step` with its own batch order).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from .batches import WindowBatches
from .checkpointing import latest_checkpoint
from .config import OPTIMIZER_IMPLS, TrainConfig
from .metrics_log import MetricsLog


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stopped without saving the bad weights."""


@dataclass
class Progress:
    """Where a run is: optimizer steps, micro-batches and windows consumed, and seconds spent in the training loop
    over every invocation (``trainer_state.json``)."""

    step: int = 0
    micro_step: int = 0
    train_windows_seen: int = 0
    train_seconds: float = 0.0


@dataclass
class BudgetClock:
    """The share of ``train.max_minutes`` spent, the same on every process; a ``lr_schedule="time"`` scheduler
    reads it, `run_loop` sets it after every step."""

    fraction: float = 0.0


def optimizer_impl_flags(impl: str) -> dict[str, bool]:
    """``torch.optim.AdamW`` keyword arguments of ``train.optimizer_impl``.

    ``fused`` (the default) runs the whole update as one kernel per parameter group, on CPU as on CUDA: 3-5x less
    optimizer time than torch's CPU default, the per-tensor ``for_loop`` (benchmarks/RESULTS_training.md);
    ``foreach`` batches tensors per op (torch's CUDA default)."""
    if impl not in OPTIMIZER_IMPLS:
        raise ValueError(f"optimizer_impl={impl!r}; choose one of {list(OPTIMIZER_IMPLS)}")
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[impl]


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW (``train.optimizer_impl``) over trainable parameters; no weight decay on biases and norm weights
    (1-D tensors)."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in trainable if p.dim() >= 2]
    no_decay = [p for _, p in trainable if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas), **optimizer_impl_flags(train.optimizer_impl))


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, clock: BudgetClock | None = None):
    """Linear warmup over ``warmup_steps``, then cosine decay to 0 at ``max_steps`` (``lr_schedule="steps"``), or
    when the first of ``max_steps`` and the time budget runs out (``"time"``: the decay's progress is the larger
    of the steps' and ``clock.fraction``, so a slow machine still anneals within its minutes)."""
    if train.lr_schedule == "steps":
        return get_cosine_schedule_with_warmup(optimizer, train.warmup_steps, train.max_steps)
    if clock is None:
        raise ValueError("train.lr_schedule='time' needs the BudgetClock that run_loop advances")
    return LambdaLR(optimizer, partial(budget_cosine_factor, warmup_steps=train.warmup_steps,
                                       max_steps=train.max_steps, clock=clock))


def budget_cosine_factor(step: int, warmup_steps: int, max_steps: int, clock: BudgetClock) -> float:
    """The learning-rate factor of ``lr_schedule="time"`` at ``step``: the warmup of
    ``get_cosine_schedule_with_warmup``, then its cosine at the larger of the steps' progress and the budget's."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = max((step - warmup_steps) / max(1, max_steps - warmup_steps), clock.fraction)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train_step(model, optimizer, scheduler, micro_batches: Sequence[dict[str, torch.Tensor]],
               accelerator: Accelerator, grad_clip: float | None, poison: bool = False,
               chunked_loss: bool = True) -> tuple[float, float | None]:
    """One optimizer step over ``micro_batches`` (gradient accumulation: gradients synchronize on the last one);
    returns (mean loss over micro-batches and processes, grad norm or None). A non-finite loss takes no step.
    ``poison`` makes the loss NaN (the test hook ``train.debug_nan_at_step``). ``chunked_loss`` asks the model
    for the loss only (``return_logits=False``: no full-vocabulary logits, see ``modeling_common.head_and_loss``);
    models whose forward lacks that flag need ``chunked_loss=False``."""
    extra = {"return_logits": False} if chunked_loss else {}
    accum = len(micro_batches)
    losses = []
    for index, batch in enumerate(micro_batches):
        sync = nullcontext() if index == accum - 1 else accelerator.no_sync(model)
        with sync:
            output = model(input_ids=batch["input_ids"].to(accelerator.device),
                           labels=batch["labels"].to(accelerator.device), **extra)
            loss = output.loss
            if poison:
                loss = loss * float("nan")
            accelerator.backward(loss / accum)
        losses.append(loss.detach().float())
    mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
    if not math.isfinite(mean_loss):
        optimizer.zero_grad(set_to_none=True)
        return mean_loss, None
    grad_norm = None
    if grad_clip:
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), grad_clip))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss, grad_norm


def check_finite(loss: float, step: int, output_dir: Path, lr: float) -> None:
    if math.isfinite(loss):
        return
    last = latest_checkpoint(output_dir)
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
    raise NonFiniteLossError(
        f"Training loss became {loss} at step {step}; stopping without saving these weights ({kept}). "
        f"Lower train.lr (now {lr}) or raise train.warmup_steps, then resume."
    )


def seconds_everywhere(started: float, accelerator: Accelerator) -> float:
    """Seconds since ``started`` on the slowest process, so that every process takes the same stop and schedule."""
    mine = torch.tensor([time.time() - started], dtype=torch.float32, device=accelerator.device)
    return float(accelerator.gather(mine).max())


def budget_spent(started: float, train: TrainConfig, accelerator: Accelerator, progress: Progress,
                 earlier_seconds: float, clock: BudgetClock) -> bool:
    """Records the loop's seconds in ``progress`` (``earlier_seconds`` from earlier invocations plus this one's)
    and the budget's share in ``clock``; True on every process when ``train.max_minutes`` is used up: by this
    invocation with ``lr_schedule="steps"``, by the whole run with ``"time"``."""
    if train.max_minutes is None:
        progress.train_seconds = earlier_seconds + time.time() - started
        return False
    this_run = seconds_everywhere(started, accelerator)
    progress.train_seconds = earlier_seconds + this_run
    counted = progress.train_seconds if train.lr_schedule == "time" else this_run
    clock.fraction = counted / (60 * train.max_minutes)
    return clock.fraction >= 1


def run_loop(model, optimizer, scheduler, batches: WindowBatches, accelerator: Accelerator, train: TrainConfig,
             progress: Progress, log: MetricsLog, evaluate_at: Callable[[int], dict[str, Any]],
             save_at: Callable[[int], None], started: float, desc: str,
             clock: BudgetClock | None = None) -> dict[str, Any]:
    """Optimizer steps until ``max_steps`` (or ``stop_after_steps`` more, or the time budget), logging the mean
    train loss every ``log_every`` steps, evaluating every ``eval_every`` and saving every ``save_every``.
    Updates ``progress`` (and ``clock``, the budget's share a ``lr_schedule="time"`` scheduler reads) in place;
    returns the last evaluation (empty if none ran)."""
    output_dir = Path(train.output_dir)
    clock = clock if clock is not None else BudgetClock()
    earlier_seconds = progress.train_seconds
    if train.max_minutes is not None and train.lr_schedule == "time":
        clock.fraction = earlier_seconds / (60 * train.max_minutes)
    windows_per_step = batches.global_batch * train.grad_accum
    stop_at = train.max_steps
    if train.stop_after_steps is not None:
        stop_at = min(stop_at, progress.step + train.stop_after_steps)
    recent: list[float] = []
    last_eval: dict[str, Any] = {}
    if clock.fraction >= 1:
        accelerator.print(f"The run's time budget of {train.max_minutes} min was spent before this invocation "
                          f"(train_seconds={earlier_seconds:.0f} at step {progress.step}); finishing")
        return last_eval
    bar = tqdm(total=train.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process,
               desc=desc)
    while progress.step < stop_at:
        step = progress.step + 1
        micro_batches = [batches.batch(progress.micro_step + index) for index in range(train.grad_accum)]
        loss, grad_norm = train_step(model, optimizer, scheduler, micro_batches, accelerator, train.grad_clip,
                                     poison=train.debug_nan_at_step == step, chunked_loss=train.chunked_loss)
        check_finite(loss, step, output_dir, train.lr)
        progress.step, progress.micro_step = step, progress.micro_step + train.grad_accum
        progress.train_windows_seen += windows_per_step
        spent = budget_spent(started, train, accelerator, progress, earlier_seconds, clock)
        recent.append(loss)
        bar.update(1)
        if step % train.log_every == 0:
            log.write({"step": step, "train_loss": sum(recent) / len(recent), "lr": scheduler.get_last_lr()[0],
                       "grad_norm": grad_norm, "train_windows_seen": progress.train_windows_seen,
                       "elapsed_s": round(time.time() - started, 3)})
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", **(
                {"val_bpb": f"{last_eval['val_bits_per_byte']:.3f}"} if last_eval else {}))
            recent = []
        if step % train.eval_every == 0:
            last_eval = evaluate_at(step)
        if step % train.save_every == 0:
            save_at(step)
        if spent:
            accelerator.print(f"Time budget of {train.max_minutes} min spent at step {step}; finishing")
            break
    bar.close()
    return last_eval
