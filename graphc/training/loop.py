"""The `graphc train` loop: a compiled training step, evaluation, progress, checkpoints, Ctrl-C.

The step (zero_grad, forward, loss, backward, optimizer step) goes through graphc.compile,
as does evaluation (forward, summed loss, correct count, in eval mode under no_grad).

The last, smaller batch of an epoch: graphc.compile caches one trace per input signature,
so a data set whose size is not a multiple of the batch size costs exactly two traces of
the step in the whole run (the full batch and the remainder), both reused every epoch. The
remainder's loss is CrossEntropyLoss's mean over its real samples, as in PyTorch, and the
epoch's train loss is the mean over all samples (each batch weighted by its size).

Ctrl-C (or SIGTERM) asks the loop to stop after the current step: the parameters are never
half-updated when the checkpoint is written. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import TextIO

import graphc
import graphc.nn as nn
from graphc import status
from graphc.data import DataLoader
from graphc.distributed.training import TrainGroup
from graphc.training.build import (
    build_data,
    build_model,
    build_optimizer,
    count_parameters,
    default_data,
    default_model,
)
from graphc.training.checkpoint import RunState, read_checkpoint, restore, save_checkpoint
from graphc.training.config import (
    DEFAULT_CHECKPOINT,
    TrainConfig,
    TrainError,
    default_workers,
    merge_for_resume,
    trajectory_of,
)
from graphc.training.objective import RECONSTRUCTION, criterion, objective_of
from graphc.training.progress import Progress, format_duration
from graphc.training.report import require_matplotlib, write_log_json, write_plot

EXIT_OK = 0


class Interrupt:
    """While active, SIGINT/SIGTERM set `signum` instead of raising; the loop polls it."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        for sig, handler in self._previous.items():  # a second signal acts as usual
            signal.signal(sig, handler)
        print(
            "\ninterrupted: finishing the current step, then saving a checkpoint "
            "(press Ctrl-C again to abort without saving)",
            file=self.err,
            flush=True,
        )

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        explicit: frozenset[str] | set[str] = frozenset(),
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.requested = config
        self.explicit = set(explicit)
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._warned_epoch: int | None = None  # --continue-on-nan warns once per epoch

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ---- setting up --------------------------------------------------------------------------

    def setup(self) -> None:
        config = self.requested
        ckpt = read_checkpoint(config.checkpoint) if config.resume else None
        if ckpt is not None:
            config = merge_for_resume(config, ckpt["config"], self.explicit, config.checkpoint)
        if ckpt is None:  # a text model trains on text, with Adam, unless told otherwise
            if "data" not in self.explicit:
                config.data = default_data(config.model)
            if "optimizer" not in self.explicit and config.data.startswith(
                ("builtin-text", "text:")
            ):
                config.optimizer = "adam"
        config = config.resolved()
        _check_outputs(config)
        if config.plot:
            require_matplotlib()
        if config.threads is not None:
            os.environ["GRAPHC_NUM_THREADS"] = str(config.threads)  # for child processes
            set_threads = getattr(graphc, "set_num_threads", None)
            if set_threads is not None:
                set_threads(config.threads)

        graphc.manual_seed(config.seed)
        self.dist = TrainGroup()  # under mpiexec: one rank of several (graphc.distributed)
        if config.workers is None:
            config.workers = default_workers(self.dist.local_ranks)
        if not self.dist.is_main:  # rank 0 reports for all
            self.out = self.err = open(os.devnull, "w")
        self.data = build_data(config)
        if config.model is None:
            config.model = default_model(self.data.sample_shape, self.data.is_text)
        self.config = config
        self.net = build_model(config.model, self.data)
        self.optimizer = build_optimizer(config, self.net)
        self.train_loader = DataLoader(
            self.data.train,
            batch_size=self.dist.local_batch(config.batch_size),
            **self.dist.train_sampling(self.data.train, config.seed),
            num_workers=config.workers,
            seed=config.seed,
            transform=self.data.train_transform,
        )
        self.test_loader = DataLoader(
            self.data.test,
            batch_size=self.dist.local_batch(config.batch_size),
            **self.dist.test_sampling(self.data.test),
            num_workers=config.workers,
            seed=config.seed,  # unused (no shuffling, no random transform); draws no RNG
            transform=self.data.test_transform,
        )
        self.state = RunState()
        self.good_checkpoint: str | None = None  # the last checkpoint with finite values
        if ckpt is not None:
            self.state = restore(ckpt, self.net, self.optimizer, self.train_loader)
            self.good_checkpoint = f"{config.checkpoint} ({self._position()}, resumed from)"
        normalize = self.data.normalizer()
        self.objective = objective_of(self.net)
        step = _train_step(
            self.dist.wrap_model(self.net), self.optimizer, normalize, self.objective
        )
        self.train_step = self.dist.compile_step(step, graphc.compile)
        self.eval_step = graphc.compile(_eval_step(self.net, normalize, self.objective))

    def describe(self) -> None:
        c, d = self.config, self.data
        opt = f"{c.optimizer} lr={c.lr:g}" + (f" momentum={c.momentum:g}" if c.momentum else "")
        workers = (
            f"{c.workers} loader thread{'s' * (c.workers != 1)}"
            if c.workers
            else "no loader threads"
        )
        self.say(
            f"graphc train: {type(self.net).__name__} ({count_parameters(self.net):,} parameters) "
            f"on {d.name} data: {len(d.train):,} train / {len(d.test):,} test {d.samples()}, "
            + (
                "trained to reconstruct them (mean squared error)"
                if self.objective == RECONSTRUCTION
                else f"{d.num_classes} classes"
            )
        )
        self.say(
            f"  {opt}, batch {c.batch_size} ({len(self.train_loader)} steps/epoch), "
            f"{_plural(c.epochs, 'epoch')}, {workers}, seed {c.seed}; checkpoint {c.checkpoint}"
        )
        if self.dist.active:
            self.say(self.dist.describe(c.batch_size))
        if c.resume:
            s = self.state
            where = f"epoch {s.epoch + 1}, step {s.batch}/{len(self.train_loader)}"
            if s.phase == "eval":
                where = f"epoch {s.epoch + 1}, evaluation"
            self.say(f"  resuming from {c.checkpoint} at {where}")

    # ---- running -------------------------------------------------------------------------

    def run(self) -> int:
        self.setup()
        self.describe()
        c, s = self.config, self.state
        if s.epoch >= c.epochs:
            self.say(
                f"nothing to do: {c.checkpoint} has completed {_plural(s.epoch, 'epoch')}; pass "
                f"--epochs N with N > {s.epoch} to train further"
            )
            return EXIT_OK
        quiet = c.progress == "none"
        with (
            Interrupt(self.err) as local_interrupt,
            contextlib.nullcontext() if quiet else status.reporting_to(self.err),
        ):
            interrupt = self.interrupt = self.dist.agreed(local_interrupt)
            while s.epoch < c.epochs:
                if s.phase == "train":
                    self._train_epoch()
                    if interrupt.signum is not None:
                        return self._stop()
                    s.phase = "eval"
                evaluated = self._evaluate()
                if evaluated is None:
                    return self._stop()
                if not math.isfinite(evaluated[0]):
                    self._non_finite(
                        "test loss", evaluated[0], f"the evaluation after epoch {s.epoch + 1}"
                    )
                self._end_epoch(*evaluated)
        return self._finish()

    def _train_epoch(self) -> None:
        c, s = self.config, self.state
        total = len(self.train_loader)
        unit = "sentences/s" if self.data.is_text else "img/s"
        progress = Progress(
            f"epoch {s.epoch + 1}/{c.epochs}", total, self.err, c.progress, unit=unit
        )
        images_seen = 0
        wait = busy = 0.0
        self.dist.set_epoch(self.train_loader, s.epoch)
        batches = iter(self.train_loader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            t1 = time.perf_counter()
            images, labels = batch
            loss = self.train_step(images, labels).item()
            t2 = time.perf_counter()
            if not math.isfinite(loss):
                self._non_finite("loss", loss, f"epoch {s.epoch + 1}, step {s.batch + 1}/{total}")
            n = len(labels) * self.dist.size  # images of the global step (equal shares)
            s.loss_sum += loss * n
            s.samples += n
            s.step += 1
            s.batch += 1
            s.history.step_loss.append(loss)
            images_seen += n
            wait += t1 - t0
            busy += t2 - t1
            progress.update(s.batch, s.loss_sum / s.samples, images_seen / (wait + busy))
            if self.interrupt.signum is not None:
                break
        progress.close()
        self.epoch_timing = (images_seen, wait, busy)

    def _non_finite(self, what: str, value: float, where: str) -> None:
        """A NaN or infinite loss: an error that stops the run before anything is saved
        over the last good checkpoint, or (--continue-on-nan) a warning once per epoch."""
        c = self.config
        if c.continue_on_nan:
            if self._warned_epoch != self.state.epoch:
                self._warned_epoch = self.state.epoch
                print(
                    f"graphc train: warning: the {what} is {value} at {where}; training on "
                    "(--continue-on-nan)",
                    file=self.err,
                    flush=True,
                )
            return
        good = (
            f"the last good checkpoint, {self.good_checkpoint}, is left as it was"
            if self.good_checkpoint
            else f"no checkpoint of this run was written before ({c.checkpoint} is untouched)"
        )
        raise TrainError(
            f"training diverged: the {what} is {value} at {where}. Stopped without saving: "
            f"{good}. Try a smaller --lr (it is {c.lr:g}), or look for values that overflow "
            "in the model or data; --continue-on-nan trains on regardless"
        )

    def _position(self) -> str:
        s = self.state
        if s.phase == "eval":
            return f"epoch {s.epoch + 1}, before its evaluation"
        if s.batch == 0:
            return f"end of epoch {s.epoch}" if s.epoch else "before training"
        return f"epoch {s.epoch + 1}, step {s.batch}/{len(self.train_loader)}"

    def _evaluate(self) -> tuple[float, float] | None:
        """(mean test loss, accuracy (NaN for a reconstruction)), or None when
        interrupted."""
        self.net.eval()
        loss_sum, correct, count = 0.0, 0, 0
        try:
            with graphc.no_grad():
                for images, labels in self.test_loader:
                    if self.objective == RECONSTRUCTION:
                        loss, hits = self.eval_step(images, labels), None
                    else:
                        loss, hits = self.eval_step(images, labels)
                    loss_sum += loss.item()
                    correct += int(hits.item()) if hits is not None else 0
                    count += len(labels)
                    if self.interrupt.signum is not None:
                        return None
        finally:
            self.net.train()
        loss_sum, correct, count = self.dist.sum(loss_sum, correct, count)
        if self.objective == RECONSTRUCTION:  # nothing to count: the loss says it all
            return loss_sum / max(count, 1), math.nan
        return loss_sum / max(count, 1), correct / max(count, 1)

    def _end_epoch(self, test_loss: float, accuracy: float) -> None:
        c, s = self.config, self.state
        images, wait, busy = getattr(self, "epoch_timing", (0, 0.0, 0.0))
        self.epoch_timing = (0, 0.0, 0.0)
        h = s.history
        h.epoch.append(s.epoch + 1)
        h.step.append(s.step)
        h.train_loss.append(s.loss_sum / max(s.samples, 1))
        h.test_loss.append(test_loss)
        h.test_accuracy.append(accuracy)
        h.images_per_second.append(images / (wait + busy) if images else 0.0)
        h.step_images_per_second.append(images / busy if images else 0.0)
        h.seconds.append(wait + busy)
        unit = "sentences/s" if self.data.is_text else "img/s"
        rate = f"{h.images_per_second[-1]:,.0f} {unit}" if images else "(resumed after training)"
        scored = f"test accuracy {100 * accuracy:.2f}%  " if math.isfinite(accuracy) else ""
        self.say(
            f"epoch {s.epoch + 1}/{c.epochs}: train loss {h.train_loss[-1]:.4f}  test loss "
            f"{test_loss:.4f}  {scored}{rate}  "
            f"({format_duration(wait + busy)}, data wait {_percent(wait, wait + busy)})"
        )
        s.epoch += 1
        s.phase = "train"
        s.batch = 0
        s.loss_sum, s.samples = 0.0, 0
        self._save()
        self._write_log("running")

    # ---- ending ------------------------------------------------------------------------------

    def _stop(self) -> int:
        self._save()
        self._write_log("interrupted")
        self._write_plot()
        s = self.state
        where = f"epoch {s.epoch + 1}, step {s.batch}/{len(self.train_loader)}"
        self.say(
            f"interrupted at {where}: saved {self.config.checkpoint}; continue with "
            f"`graphc train --resume{self._checkpoint_flag()}`"
        )
        return 128 + int(self.interrupt.signum)

    def _finish(self) -> int:
        self._write_log("finished")
        self._write_plot()
        h = self.state.history
        total = sum(h.seconds)
        accuracy = ""
        if h.epoch:
            last = h.test_accuracy[-1]
            accuracy = (
                f"test accuracy {100 * last:.2f}%"
                if math.isfinite(last)
                else f"test loss {h.test_loss[-1]:.4f}"
            )
        epochs = _plural(self.state.epoch, "epoch")
        self.say(
            f"done: {accuracy} after {epochs} ({format_duration(total)} training); "
            f"checkpoint {self.config.checkpoint}"
            + (f", plot {self.config.plot}" if self.config.plot else "")
        )
        return EXIT_OK

    def _checkpoint_flag(self) -> str:
        c = self.config.checkpoint
        return "" if c == DEFAULT_CHECKPOINT else f" --checkpoint {c}"

    def _save(self) -> None:
        self.good_checkpoint = f"{self.config.checkpoint} ({self._position()})"
        if not self.dist.is_main:
            return
        save_checkpoint(
            self.config.checkpoint,
            trajectory_of(self.config),
            self.state,
            self.net,
            self.optimizer,
            self.train_loader,
        )

    def _write_log(self, status: str) -> None:
        if not self.config.log_json or not self.dist.is_main:
            return
        extra = {
            "model": type(self.net).__name__,
            "parameters": count_parameters(self.net),
            "train_images": len(self.data.train),
            "test_images": len(self.data.test),
            "compiled_train_shapes": _trace_count(self.train_step),
            "compiled_eval_shapes": _trace_count(self.eval_step),
        }
        write_log_json(self.config.log_json, asdict(self.config), self.state.history, status, extra)

    def _write_plot(self) -> None:
        if self.config.plot and self.state.history.step_loss and self.dist.is_main:
            title = f"graphc train: {type(self.net).__name__} on {self.data.name}"
            write_plot(self.config.plot, self.state.history, title)


def _check_outputs(config: TrainConfig) -> None:
    """Output files must be writable where they are asked for: found now, not after the
    first epoch has been trained."""
    for flag, path in (
        ("--checkpoint", config.checkpoint),
        ("--log-json", config.log_json),
        ("--plot", config.plot),
    ):
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise TrainError(f"{flag} {path} is a directory; give a file name inside it")
        if not os.path.isdir(folder):
            raise TrainError(
                f"{flag} {path}: the directory {folder} does not exist; create it first"
            )


def _train_step(net: nn.Module, optimizer, normalize, objective: str):
    loss_fn = criterion(nn, objective)
    reconstruct = objective == RECONSTRUCTION

    def train_step(inputs, labels):
        optimizer.zero_grad()
        x = normalize(inputs)
        loss = loss_fn(net(x), x if reconstruct else labels)
        loss.backward()
        optimizer.step()
        return loss

    return train_step


def _eval_step(net: nn.Module, normalize, objective: str):
    # summed: the mean is over the whole set
    loss_fn = criterion(nn, objective, reduction="sum")

    def eval_step(inputs, labels):
        x = normalize(inputs)
        out = net(x)
        if objective == RECONSTRUCTION:  # the mean squared error of each image, summed
            return loss_fn(out, x) / (x.numel() // x.shape[0])
        return loss_fn(out, labels), (out.argmax(1) == labels).sum()

    return eval_step


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole > 0 else "0%"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _trace_count(compiled) -> int:
    return sum(len(entries) for entries in compiled.cache.values())
