"""The one training loop. A task turns a batch into a dict with ``loss``; the loop never asks
which method it is running (supervised, distillation, Noisy Student all plug in here).

Each epoch ends with an atomic, checksummed checkpoint; ``fit`` on a resumed stage continues
after the last valid one. A NaN or infinite loss stops training before it touches the weights.
Randomness is re-seeded from (seed, epoch), so a resumed run repeats what the lost run did.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from tqdm.auto import tqdm

from noisystudent.core import distributed, runs, timings
from noisystudent.core.config import LoopSettings
from noisystudent.core.device import autocast
from noisystudent.core.errors import CorruptFile, UserError

from .optim import build_optimizer, skips_on_device
from .pace import Pace
from .tasks import Task


class FitContext(Protocol):
    """What ``fit`` reads of the run it trains in (``stages.stage.Stage``): where it writes,
    on which device and in which dtype, its seed, whether it resumes, shows progress and
    writes TensorBoard scalars."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype | None: ...

    @property
    def seed(self) -> int: ...

    @property
    def resume(self) -> bool: ...

    @property
    def progress(self) -> bool: ...

    @property
    def scalars(self): ...

    @property
    def started(self) -> float:
        """When the step began (time.monotonic): a step's minutes count from here."""

    def seconds_after_training(self, task: Task) -> float:
        """What the step will spend once its training ends (evaluating, saving)."""

    def seconds_to_validate(self, task: Task) -> float:
        """What validating once takes."""


class NonFiniteLoss(UserError):
    """A NaN or infinite loss: training stops instead of writing broken weights."""


# An epoch's checkpoint, forecast before the first is timed (a Lite0's, with its optimizer).
CHECKPOINT_SECONDS = 0.3
# A progress bar shows the loss every this many steps (reading it waits for the GPU).
PROGRESS_EVERY = 25


def train_one_epoch(task: Task, loader: Iterable[dict], optimizer, scheduler, *,
                    device: torch.device, dtype: torch.dtype | None,
                    scaler: torch.amp.GradScaler | None = None, progress: bool = True,
                    description: str = "", pace: Pace | None = None) -> dict[str, float]:
    """One pass over the loader, or up to the step where ``pace`` says the training ends;
    returns the mean of every scalar the task reported.

    The host never waits for the device inside the loop: loss parts are summed on the device
    and read once, at the end. A non-finite loss cancels its own update on the device (fused
    optimizers; others are checked on the host at each step), and the epoch ends with
    NonFiniteLoss naming the first such step, before any checkpoint is written."""
    task.train()
    on_device = skips_on_device(optimizer) and scaler is None
    sums: dict[str, torch.Tensor] = {}
    bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # first non-finite step
    bad_loss = torch.zeros((), device=device)
    steps, images_seen, start = 0, 0, time.perf_counter()
    step_start = start
    bar = tqdm(loader, desc=description, leave=False, disable=not progress, dynamic_ncols=True)
    for batch in bar:
        with autocast(device, dtype):
            out = task(batch)
        loss = out["loss"]
        nonfinite = ~torch.isfinite(loss.detach())
        step = scheduler.last_epoch + 1
        if not on_device and nonfinite:  # checked before the update: the weights stay good
            raise NonFiniteLoss(f"loss became {loss.item()} at step {step}")
        first = nonfinite & (bad_step < 0)
        bad_step = torch.where(first, step, bad_step)
        bad_loss = torch.where(first, loss.detach().float(), bad_loss)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if on_device:
                optimizer.found_inf = nonfinite.float()  # the fused kernel skips the update
            optimizer.step()
        scheduler.step()
        task.update_ema(step=scheduler.last_epoch)  # per step; a no-op without an EMA
        for key, value in out.items():
            if key != "logits" and value.dim() == 0:
                part = value.detach().float()
                sums[key] = sums[key] + part if key in sums else part
        steps += 1
        images_seen += batch.get("num_images", len(batch.get("images", ())))
        if progress and steps % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{sums['loss'].item() / steps:.3f}")
        now = time.perf_counter()
        if pace is not None and not pace.step_done(scheduler.last_epoch, now - step_start):
            break
        step_start = now
    if on_device:
        optimizer.found_inf = None
    if int(bad_step) >= 0:  # one read per epoch
        raise NonFiniteLoss(f"loss became {bad_loss.item()} at step {int(bad_step)}")
    means = (torch.stack(list(sums.values())) / max(1, steps)).tolist() if sums else []
    elapsed = time.perf_counter() - start
    metrics = dict(zip(sums, means))
    metrics.update(lr=optimizer.param_groups[-1]["lr"], seconds=elapsed,
                   images_per_s=images_seen / max(elapsed, 1e-9))
    return metrics


@dataclass
class StepClock:
    """A step's wall time outside its training steps: spent so far (since ``started``, and
    ``before`` in earlier sessions), and to come were it to train a given total of steps (the
    ends of the epochs left, at the mean measured, and what the stage forecasts after its
    training): what a pace given the step's minutes leaves out of its training (pace.py)."""

    started: float
    steps_per_epoch: int
    after_training: Callable[[], float]
    epoch_end: Callable[[], float]  # an epoch end's forecast, before one is measured
    before: float = 0.0
    epochs: int = 0  # epochs ended
    epoch_ends: list[float] = field(default_factory=list)  # each one's validation, checkpoint
    _end_started: float = 0.0

    @classmethod
    def of(cls, stage: FitContext, task: Task, steps_per_epoch: int, *,
           validates: bool) -> StepClock:
        """The clock of ``stage`` training ``task``, validating at each epoch's end or not."""
        return cls(stage.started, steps_per_epoch, lambda: stage.seconds_after_training(task),
                   lambda: CHECKPOINT_SECONDS + (stage.seconds_to_validate(task)
                                                 if validates else 0.0))

    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.started

    def outside(self, total: int, trained: float) -> float:
        ends = max(0, math.ceil(total / self.steps_per_epoch) - self.epochs)
        per_end = statistics.fmean(self.epoch_ends) if self.epoch_ends else self.epoch_end()
        return self.elapsed() - trained + ends * per_end + self.after_training()

    def epoch_ends_now(self) -> None:
        self._end_started = time.monotonic()

    def epoch_ended(self) -> None:
        self.epoch_ends.append(time.monotonic() - self._end_started)
        self.epochs += 1


class Fitted(NamedTuple):
    """What ``fit`` trained: its steps in all and, where its length was fitted, the pieces of
    its decay (what a replay sets to repeat its learning rates)."""

    steps: int
    decay_segments: list


def fit(task: Task, loader, *, settings: LoopSettings, stage: FitContext,
        on_epoch_end: Callable[[int], dict] | None = None) -> Fitted:
    """Train ``task`` over ``loader`` for ``settings.epochs``, or ``settings.steps``, or as
    many steps as the step's ``settings.minutes`` buy at the measured pace, its evaluations
    and checkpoints measured and forecast and left out of them (``pace.py``), checkpointing
    after each epoch into ``stage.run_dir`` (resuming from the last checkpoint when
    ``stage.resume``); returns what it trained. ``on_epoch_end(epoch)`` adds metrics (e.g.
    validation)."""
    device, dtype, run_dir = stage.device, stage.dtype, stage.run_dir
    if settings.ema_decay > 0:
        # Warmup (decay 1 - (1 + step)^(-2/3), capped at ema_decay): without it, a short run's
        # average keeps a large share of the initial weights (0.998^600 = 30% after 600 steps).
        task.setup_ema(decay=settings.ema_decay, use_warmup=True)
    module, ema = task.trained_module(), task.get_trainable_module(ema=True)
    optimizer, scheduler = build_optimizer(module, settings, len(loader))
    clock = StepClock.of(stage, task, len(loader), validates=on_epoch_end is not None)
    pace = Pace(scheduler.lr_lambdas[0], seconds=60 * settings.minutes, outside=clock.outside)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    progress = stage.progress and distributed.is_main()
    checkpoint_path = run_dir / runs.CHECKPOINT
    start_epoch = 0
    state = _valid_checkpoint(checkpoint_path) if stage.resume else None
    if state is not None:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])  # a fitted total included
        pace.load_state_dict(state.get("pace", {}))
        clock.before = float(state.get("step_seconds", 0.0))
        if ema is not None and "ema" in state:
            ema.module.load_state_dict(state["ema"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start_epoch = clock.epochs = int(state["epoch"])
    if stage.resume:
        _truncate_log(run_dir / runs.METRICS_LOG, start_epoch)
    if settings.compile:
        task.compile()
    if distributed.active():
        loader.set_shard(distributed.rank(), distributed.world_size())
        task.prepare_distributed()
    steps_per_epoch, epoch = len(loader), start_epoch
    epoch_bar = tqdm(desc="epochs", initial=start_epoch, total=settings.epochs,
                     disable=not progress, dynamic_ncols=True)
    while scheduler.last_epoch < pace.schedule.total_steps:
        epochs = math.ceil(pace.schedule.total_steps / steps_per_epoch)  # a fitted total moves it
        epoch_bar.total = epochs
        # Each rank its own noise (augmentation, dropout); rank 0 draws what one process would.
        torch.manual_seed(stage.seed * 1_000_003 + epoch + 7_919 * distributed.rank())
        loader.set_epoch(epoch)
        try:
            metrics = train_one_epoch(task, loader, optimizer, scheduler, device=device,
                                      dtype=dtype, scaler=scaler, progress=progress,
                                      description=f"epoch {epoch + 1}/{epochs}"
                                      + timings.time_left(), pace=pace)
        except NonFiniteLoss as err:
            kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "no checkpoint yet"
            raise NonFiniteLoss(f"{err} (epoch {epoch + 1}); training stopped and {kept}; "
                                "lower --lr or check the data, then --resume") from None
        metrics = distributed.mean_metrics(metrics)
        clock.epoch_ends_now()
        if on_epoch_end is not None:
            metrics.update(on_epoch_end(epoch))
        state = {"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "pace": pace.state_dict(),
                 "step_seconds": clock.elapsed(), "epoch": epoch + 1}
        if ema is not None:
            state["ema"] = ema.module.state_dict()
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        runs.save_checkpoint(checkpoint_path, state)
        # Logged after the checkpoint; a resume drops lines past the checkpoint's epoch.
        runs.append_jsonl(run_dir / runs.METRICS_LOG, {"epoch": epoch + 1, **metrics})
        stage.scalars.add("epoch", metrics, epoch + 1)
        epoch_bar.update()
        epoch_bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        clock.epoch_ended()
        epoch += 1
    epoch_bar.close()
    return Fitted(scheduler.last_epoch, pace.schedule.segments)


def _valid_checkpoint(path: Path) -> dict | None:
    """The checkpoint to resume from; a corrupt one is set aside and the step starts over
    (runs are seeded, so starting over reaches the same result)."""
    if not path.is_file():
        return None
    try:
        return runs.load_checkpoint(path)
    except CorruptFile as err:
        aside = path.with_name(path.name + ".corrupt")
        if distributed.is_main():
            os.replace(path, aside)
        warnings.warn(f"{err}; moved to {aside.name}, this step starts over", stacklevel=2)
        return None


def _truncate_log(path: Path, last_epoch: int) -> None:
    """Drop metric lines of epochs the checkpoint does not hold (they will be rerun)."""
    if not path.is_file():
        return
    kept = [r for r in runs.read_jsonl(path) if r.get("epoch", 0) <= last_epoch]
    runs.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
