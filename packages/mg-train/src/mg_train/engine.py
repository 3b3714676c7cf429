"""The one training loop of mg-train: every model (TAE, transformer, and the next ones) trains through `train`.

The loop knows no model. A *task* says how the model is built (before `train` is called), where its batches come
from (`loader`), what the loss is and which inputs it takes (`loss`, `inputs`), how it validates and what it
exports; the loop owns everything else, the same for every model and every rank count:

- micro-batch accumulation, data-parallel / ZeRO reduction, non-finite skips, clipping, LR schedule, EMA
  (`optim.OptimizerStep`); forward+backward compiled with `mindspore.jit` when `train.jit` (in runs of at least
  `train.jit_min_steps` steps);
- resume (`train.resume`): weights, optimizer moments, EMA, schedule state and data position; metric lines past
  the resumed step are dropped, so metrics.jsonl reads as one continuous run;
- validation at step 0 (the baseline) and every `train.val_every` steps, feeding the plateau LR reducer;
- checkpoints every `train.save_every` steps, at the end, and when a stop is requested;
- stop requests (SIGTERM, Ctrl-C) agreed across ranks every step, so every rank checkpoints the same step and
  raises `TrainingStopped` (the CLI exits 130: run the same command again to resume);
- progress lines and metrics.jsonl on rank 0; the final export on rank 0 while the others wait for it;
- failures: a rank that raises says so (naming itself) before exiting non-zero, and every step, validation,
  save and export runs under a deadline (`train.step_timeout`) that ends a rank stuck in a collective.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import mindspore as ms
import numpy as np
import yaml
from mindspore import Tensor, nn

import mg_parallel as mp
from mg_data.atomic import remove_dead_temporaries, write_text
from mg_train import paths
from mg_train.checkpoint import CheckpointManager
from mg_train.compiled import compile_fn
from mg_train.config.loader import to_dict
from mg_train.config.schema import OptimConfig, RunConfig
from mg_train.ema import EMA
from mg_train.loader import BatchLoader
from mg_train.optim import OptimizerStep, add_grads, build_optimizer
from mg_train.progress import Progress
from mg_train.run_folder import RunFolder
from mg_train.runtime import StepDeadline, StopRequest
from mg_train.train_state import resolve_resume, restore_training_checkpoint, save_training_checkpoint

__all__ = ["StepInputs", "TrainingStopped", "TrainingTask", "compile_fn", "train"]


class TrainingStopped(KeyboardInterrupt):
    """A stop request (SIGTERM or Ctrl-C on any rank) ended the run after a checkpoint; rerun to resume."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


@dataclass
class StepInputs:
    """What one micro-batch feeds the loss: its positional arguments (tensors, or tuples of tensors), and plain
    numbers to log with the step (e.g. the number of frames)."""

    args: tuple
    info: dict[str, float] = field(default_factory=dict)


class TrainingTask(Protocol):
    """What a model brings to the loop. The model is built, parallelised and cast before `train` is called."""

    name: str  # progress label and log prefix, e.g. "tae-train"
    config: Any  # the whole run config, written to <output_dir>/config.yaml
    run: RunConfig
    optim: OptimConfig
    zero_stage: int
    model: nn.Cell
    loader: BatchLoader  # this rank's batches, endless, with a resumable position
    aux_names: Sequence[str]  # names of the loss's extra outputs, logged as global means
    lr_scales: Mapping[str, float]  # parameter-name prefix -> share of the LR those parameters learn at

    def loss(self, *args: Any) -> Tensor | tuple[Tensor, ...]:
        """The objective for `inputs(...).args`; extra outputs after the first are logged as `aux_names`."""

    def initialize(self) -> None:
        """Write the initial weights into the model, after it is cut for the layout (a fresh run; a resumed
        one reads them from its checkpoint): a model built lazily holds no full tensor before this."""

    def inputs(self, batch: dict[str, np.ndarray], step: int, micro: int) -> StepInputs:
        """The loss's arguments for one micro-batch of optimizer step `step` (random draws from `draws`)."""

    def validate(self) -> dict[str, float] | None:
        """Validation metrics averaged over ranks (with `val_loss`, which the plateau reducer watches), or None
        when the run has no validation data."""

    def describe(self) -> list[str]:
        """Lines printed when the run starts: the model, the data, the layout."""

    def model_info(self) -> dict[str, Any]:
        """{"kind": ..., "config": {...}}: recorded in every checkpoint's manifest, so `mg-train export` can
        write the model from the checkpoint alone."""

    def export(self, checkpoint: Path, out: Path) -> Path:
        """Write the final model from the final checkpoint (EMA weights when EMA is on); rank 0 only, reading
        one tensor at a time (`train_state.full_weights`)."""


def train(task: TrainingTask, ctx: mp.ParallelContext) -> None:
    """Run `task` to `task.run.steps` optimizer steps (resuming if asked), then export on rank 0.

    Rank 0 holds the output folder's lock throughout (`run_folder`); only this run's checkpoints are resumed and
    pruned. Raises `TrainingStopped` after checkpointing when a stop was requested, `NonFiniteLossError`
    (without saving the bad steps) after `train.max_nonfinite_steps` consecutive non-finite steps.
    """
    run = task.run
    out = Path(run.output_dir)
    if ctx.world_size > 1:  # maps msrun's "Worker process <pid> exit with exception" to a rank
        print(
            f"{task.name}: rank {ctx.rank_id} of {ctx.world_size} is pid {os.getpid()} on {socket.gethostname()}",
            file=sys.stderr,
            flush=True,
        )
    folder = RunFolder(out)
    try:
        if ctx.rank_id == 0:
            folder.acquire()
            any_checkpoints = bool(CheckpointManager(out / paths.CHECKPOINTS).list())
            folder.start(run.resume, any_checkpoints, run.new_run_in_used_folder)
        barrier(ctx)  # every rank reads the run id rank 0 settled
        _train(task, ctx, folder.run_id())
    finally:
        folder.release()


def _train(task: TrainingTask, ctx: mp.ParallelContext, run_id: str | None) -> None:
    run, optim = task.run, task.optim
    out = Path(run.output_dir)
    leader = ctx.rank_id == 0
    manager = CheckpointManager(out / paths.CHECKPOINTS, keep_last=run.keep_last, run_id=run_id)
    if leader:  # leftovers of writers killed mid-save (this run's folder has one writer: this job)
        removed = manager.remove_leftovers() + remove_dead_temporaries(out)
        if removed:
            print(
                f"{task.name}: removed {len(removed)} leftover(s) of an interrupted save: "
                + ", ".join(p.name for p in removed[:5]),
                file=sys.stderr,
                flush=True,
            )
    resume_from = resolve_resume(run.resume, manager, ctx)

    if leader and run.jit and not run.compiles_step:
        print(
            f"{task.name}: running eagerly: {run.steps} steps < train.jit_min_steps={run.jit_min_steps} "
            "(compiling would cost more than it saves)",
            flush=True,
        )
    zero, optimizer = build_optimizer(
        task.model,
        optim,
        ctx,
        zero_stage=task.zero_stage,
        lr_scales=task.lr_scales,
        jit=run.compiles_optimizer,
    )
    if resume_from is None:  # after every cut (TP, ZeRO-3): each rank writes only its own pieces
        task.initialize()
        zero.sync_shards_from_model()
    ema = EMA(zero.params, optim.ema_decay, jit=run.compiles_step) if optim.ema_decay else None
    stepper = OptimizerStep(zero, optimizer, optim, run.steps, ctx, ema, jit=run.compiles_optimizer)
    grad_step = compile_fn(
        ms.value_and_grad(task.loss, None, zero.params, has_aux=bool(task.aux_names)), run.compiles_step
    )

    start = 0
    if resume_from is not None:
        state = restore_training_checkpoint(resume_from, task.model, stepper, ctx)
        task.loader.load_state_dict(state["sampler"])
        start = int(state["step"])
    write_run_config(out, task.config, ctx)
    metrics_path = out / paths.METRICS
    if leader:
        trim_metrics(metrics_path, start)
    progress = Progress(
        run.steps,
        task.name,
        metrics_path if leader else None,
        start=start,
        every=run.log_every,
        stream=None if leader else open(os.devnull, "w"),  # noqa: SIM115 (closed by progress.close)
    )
    where = f"resumed from {resume_from}" if resume_from else "from scratch"
    for line in [*task.describe(), f"{task.name}: {where} at step {start}/{run.steps}"]:
        progress.log(line)

    def save(step: int, sampler: dict | None = None) -> Path | None:
        state = {"sampler": sampler or task.loader.state_dict(), "seed": run.seed}
        return save_training_checkpoint(manager, step, task.model, stepper, ctx, state, task.model_info())

    def validate(step: int) -> None:
        metrics = task.validate()
        if metrics is None:
            return
        if not np.isfinite(metrics["val_loss"]):
            progress.log(
                f"{task.name}: validation loss at step {step} is not finite; the plateau schedule ignores it"
            )
        reduced = stepper.plateau.observe(metrics["val_loss"]) if stepper.plateau else False
        progress.update(step, **metrics, lr=stepper.lr_at(step), lr_reduced=int(reduced))
        if reduced:
            progress.log(f"{task.name}: validation loss plateaued, LR scale now {stepper.plateau.scale:g}")

    validating = run.val_every > 0
    batches: Iterator[dict[str, np.ndarray]] = iter(task.loader)
    step, saved_at, checkpoint = start, (start if resume_from is not None else -1), resume_from
    stopped_by = None
    bad = SubstitutedSamples(task, ctx.rank_id)
    deadline = StepDeadline(run.step_timeout, f"{task.name} rank {ctx.rank_id}")
    try:
        with StopRequest() as stop:
            if validating and start == 0:  # the untrained model: the baseline of the validation curve
                deadline.arm("validation")
                validate(0)
            while step < run.steps:
                deadline.arm(f"step {step + 1}")
                grad_sum, loss_sum, aux_sums, info = None, None, [], {}
                step_start = task.loader.state_dict() if optim.grad_accum > 1 else None
                interrupted = False
                for micro in range(optim.grad_accum):
                    # between micro-batches too, so a short grace period is enough with long accumulation:
                    # the partial step is dropped and the checkpoint is the last whole step
                    if micro > 0 and stop_everywhere(bool(stop), ctx):
                        interrupted = True
                        break
                    batch = next(batches)
                    bad.count(batch)
                    inputs = task.inputs(batch, step, micro)
                    value, grads = grad_step(*inputs.args)
                    loss, aux = (value[0], value[1:]) if task.aux_names else (value, ())
                    grad_sum = add_grads(grad_sum, grads)
                    loss_sum = loss if loss_sum is None else loss_sum + loss
                    aux_sums = (
                        list(aux) if not aux_sums else [a + b for a, b in zip(aux_sums, aux, strict=True)]
                    )
                    info = inputs.info
                if interrupted:
                    if saved_at != step:
                        deadline.arm(f"checkpoint of step {step}")
                        checkpoint, saved_at = save(step, step_start), step
                    stopped_by = stop.signal_name or "a stop request on another rank"
                    break
                result = stepper(grad_sum, loss_sum, optim.grad_accum, step)
                step += 1
                scale = 1.0 / optim.grad_accum
                aux_means = {
                    name: stepper.global_mean(total) * scale
                    for name, total in zip(task.aux_names, aux_sums, strict=True)
                }
                progress.update(
                    step,
                    loss=result.loss,
                    **aux_means,
                    lr=result.lr,
                    grad_norm=result.grad_norm,
                    skipped=int(not result.applied),
                    substituted=bad.take_step(),
                    **info,
                )
                bad.check()
                stepper.check_nonfinite(run.max_nonfinite_steps)  # raises before anything is saved
                if validating and step % run.val_every == 0:
                    deadline.arm(f"validation at step {step}")
                    validate(step)
                requested = stop_everywhere(bool(stop), ctx)
                if step % run.save_every == 0 or step == run.steps or requested:
                    deadline.arm(f"checkpoint of step {step}")
                    checkpoint, saved_at = save(step), step
                if requested:
                    stopped_by = stop.signal_name or "a stop request on another rank"
                    break
            if saved_at != step:  # nothing left to train (e.g. resumed at the end): the final state
                deadline.arm(f"checkpoint of step {step}")
                checkpoint = save(step)
    except Exception as exc:
        deadline.disarm()
        report_failure(task.name, ctx, step, exc)
        raise
    finally:
        progress.close()
        if bad.total:
            print(bad.summary(), file=sys.stderr, flush=True)
    if stopped_by is not None:
        message = (
            f"{task.name}: stopped by {stopped_by} at step {step}; checkpoint {checkpoint or 'saved on rank 0'}. "
            "Run the same command again to resume."
        )
        if leader:
            progress.log(message)
        raise TrainingStopped(message, step, checkpoint)

    try:
        deadline.arm("export")
        if leader:  # from the final checkpoint's pieces, one tensor at a time: no rank gathers the model
            written = task.export(checkpoint, out)
            progress.log(
                f"{task.name}: final {'EMA ' if ema is not None else ''}weights written to {written}"
            )
        barrier(ctx)  # the other ranks return once the export is complete
    except Exception as exc:
        report_failure(task.name, ctx, step, exc)
        raise
    finally:
        deadline.disarm()


def report_failure(name: str, ctx: mp.ParallelContext, step: int, exc: BaseException) -> None:
    """One line that names this rank, for the job's log: under msrun the other ranks are stopped by msrun
    (same node) or by MindSpore's node heartbeat timeout (MS_NODE_TIMEOUT, other nodes)."""
    where = f"rank {ctx.rank_id} of {ctx.world_size}" if ctx.world_size > 1 else "the process"
    print(
        f"{name}: {where} failed after step {step}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True
    )


class SubstitutedSamples:
    """Samples the dataset replaced because their file could not be read (counted from the batches, so loader
    workers' replacements count too): per step for metrics.jsonl, in total for the end of the run, and a stop
    above `data.max_substituted_fraction` of this rank's samples."""

    MIN_SAMPLES = 20

    def __init__(self, task: TrainingTask, rank: int):
        self.task, self.rank = task, rank
        data = getattr(getattr(task, "config", None), "data", None)
        self.limit = getattr(data, "max_substituted_fraction", 1.0)
        self.total = self.seen = self.step = 0

    def count(self, batch: dict) -> None:
        flags = batch.get("substituted")
        if flags is None:
            return
        flags = np.asarray(flags)
        self.step += int(flags.sum())
        self.seen += int(flags.size)

    def take_step(self) -> int:
        n, self.step = self.step, 0
        self.total += n
        return n

    def _where(self) -> str:
        dataset = getattr(self.task, "dataset", None) or getattr(self.task.loader, "dataset", None)
        if dataset is None or not getattr(dataset, "errors", None):
            return ""
        first = sorted(dataset.errors.items())[:3]
        return "; unreadable: " + "; ".join(f"{dataset.manifest.rows[i].video}: {why}" for i, why in first)

    def summary(self) -> str:
        return (
            f"data: rank {self.rank}: {self.total} of {self.seen} training samples were replaced because their file "
            f"could not be read{self._where()}"
        )

    def check(self) -> None:
        if self.seen >= self.MIN_SAMPLES and self.total > self.limit * self.seen:
            raise RuntimeError(
                f"{self.summary()} - more than data.max_substituted_fraction={self.limit:g}; fix or remove those "
                "files (or raise the limit)"
            )


def stop_everywhere(local: bool, ctx: mp.ParallelContext) -> bool:
    """True on every rank when any rank got SIGTERM / Ctrl-C (so all of them checkpoint the same step)."""
    if ctx.world_group.size == 1:
        return local
    flag = mp.all_reduce(Tensor(np.array([1.0 if local else 0.0], np.float32)), ctx.world_group)
    return float(flag.asnumpy()[0]) > 0


def barrier(ctx: mp.ParallelContext) -> None:
    if ctx.world_group.size > 1:
        mp.all_reduce(Tensor(np.zeros(1, np.float32)), ctx.world_group).asnumpy()


def global_mean(value: float, ctx: mp.ParallelContext) -> float:
    """Mean of a host number over all ranks."""
    if ctx.world_group.size == 1:
        return float(value)
    total = mp.all_reduce(Tensor(np.array([value], np.float32)), ctx.world_group)
    return float(total.asnumpy()[0]) / ctx.world_group.size


def write_run_config(output_dir: Path, config: Any, ctx: mp.ParallelContext) -> None:
    """The resolved config of a run, as YAML next to its checkpoints (rank 0)."""
    if ctx.rank_id == 0:
        write_text(output_dir / paths.CONFIG, yaml.safe_dump(to_dict(config), sort_keys=False))


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines past the resumed step (written by the interrupted run after its last checkpoint)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line and json.loads(line).get("step", 0) <= last_step
    ]
    write_text(path, "".join(line + "\n" for line in kept))
