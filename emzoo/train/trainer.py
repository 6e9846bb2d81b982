"""The training loop: epochs of a fixed number of iterations, validation, early stopping, a time
budget, checkpoints.

:func:`train` is what ``emzoo train`` calls. Per epoch it trains on augmented random crops,
validates on the whole validation images (the use case's loss and metrics, on the postprocessed
output), appends a row to ``log.csv``, redraws the plots, keeps ``weights/best.pt`` (and the sample
PNGs and ``metrics.json``) for the best value of ``usecase.main_metric`` and writes
``weights/latest.pt``, the commit point of the epoch, last. ``--resume`` restarts after the last
completed epoch with the model, optimizer, RNG states, early-stopping counter and log of that
checkpoint, so that the resumed run trains like an uninterrupted one.

A time budget (``minutes``) counts from the start of :func:`train` and is checked before every step:
the epoch under way ends early, is validated and checkpointed, and the run stops as ``time_limit``
(``resume=True`` goes on with a new budget); the learning rate falls from ``lr`` to 0 over it.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from emzoo.errors import EmzooError, InputError, UsageError
from emzoo.train import plots, runfiles
from emzoo.train.run import BEST, CONFIG, LATEST, LOG, METRICS, RunSetup, now, prepare_run
from emzoo.train.runfiles import write_csv, write_json
from emzoo.train.usecase import UseCase

log = logging.getLogger(__name__)
MAX_SAMPLES = 6  # validation images drawn to samples/
EpochCallback = Callable[[int, dict[str, Any]], None]


class TrainingError(EmzooError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    epochs_completed: int
    best_epoch: int | None
    best_metrics: dict[str, float]
    status: str  # "finished", "early_stopped", "time_limit"


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` is CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"{{device}} {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was asked for but torch sees no CUDA GPU; use {device=cpu}")
    return dev


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _better(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


class _Trainer:
    """The state of one run between epochs (kept small: everything else lives in the run folder)."""

    def __init__(
        self,
        setup: RunSetup,
        device: torch.device,
        progress: bool,
        *,
        started: float | None = None,  # time.perf_counter() when train() began (the budget's start)
        initial: Mapping[str, Any] | None = None,  # a state dict to start from
    ):
        self.uc: UseCase = setup.usecase
        self.p = setup.params
        self.device = device
        self.progress = progress
        self.dir = setup.run_dir
        data = self.uc.datasets(setup.data_dir, self.p)
        self.train_ds, self.val_ds = data["train"], data["val"]
        if len(self.val_ds) == 0:
            raise UsageError(f"use case {self.uc.name!r} gave an empty validation set")
        _seed_everything(self.p["seed"])
        self.model = self.uc.build_model(self.p)
        if initial is not None:  # checked against this network before the data were read
            self.model.load_state_dict(initial)
        self.model = self.model.to(device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.p["lr"], weight_decay=self.p["weight_decay"]
        )
        self.loss_fn = self.uc.loss(self.p)
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn = self.loss_fn.to(device)
        self.metric_name, self.metric_mode = self.uc.main_metric
        self.epoch = 0
        self.completed = 0  # the last epoch whose checkpoint is written
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.bad_epochs = 0
        self.stopped_early = False
        self.rows: list[dict[str, Any]] = []
        self.started = time.perf_counter() if started is None else started
        minutes = float(self.p.get("minutes") or 0)
        self.deadline = self.started + 60 * minutes if minutes > 0 else None
        self.val_seconds = self.step_seconds = 0.0  # how long the last validation and step took
        self.steps, self.out_of_time = 0, False  # training steps of the epoch under way; budget spent

    def time_left(self) -> bool:
        """Is there time for a step and a validation (as long as the last ones, and a margin)?"""
        reserve = 1.5 * (self.val_seconds + self.step_seconds)
        return self.deadline is None or time.perf_counter() + reserve < self.deadline

    # -- resume --------------------------------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state``, the checkpoint :func:`runfiles.load_checkpoint` read."""
        path = self.dir / LATEST
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            runfiles.set_rng_state(state["rng"])
            self.epoch = self.completed = int(state["epoch"])
            self.best, self.best_epoch = state["best"], state["best_epoch"]
            self.best_metrics = dict(state["best_metrics"])
            self.bad_epochs = int(state["bad_epochs"])
            self.stopped_early = bool(state["stopped_early"])
            self.rows = [dict(r) for r in state["log"]]
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            detail = runfiles.first_sentence(str(e), 240)
            raise InputError(
                f"{path}: this checkpoint does not fit the run's model and parameters "
                f"({type(e).__name__}: {detail}); start a new run (another {{run_dir}}), or put back "
                "a good copy of the file"
            ) from None
        write_csv(self.dir / LOG, self.rows)  # drop rows of an epoch that did not complete
        log.info("resuming %s after epoch %d", self.dir, self.epoch)

    # -- one epoch -----------------------------------------------------------------------------------

    def _loader(self) -> DataLoader:
        if hasattr(self.train_ds, "set_epoch"):
            self.train_ds.set_epoch(self.epoch)
        generator = torch.Generator().manual_seed(self.p["seed"] * 1_000_003 + self.epoch)
        return DataLoader(
            self.train_ds,
            batch_size=self.p["batch_size"],
            shuffle=True,
            generator=generator,
            num_workers=self.p["num_workers"],
            pin_memory=self.device.type == "cuda",
        )

    def train_epoch(self) -> float:
        from tqdm import tqdm

        self.model.train()
        total, count = 0.0, 0
        loader = self._loader()
        bar = tqdm(
            loader, desc=f"epoch {self.epoch}", leave=False, disable=not self.progress, file=sys.stderr
        )
        self.steps = 0
        for x, y in bar:
            if self.steps and not self.time_left():
                self.out_of_time = True  # the epoch ends here; its validation still fits the budget
                break
            start = time.perf_counter()
            loss = self._step(x, y)
            self.step_seconds = time.perf_counter() - start
            self.steps += 1
            total += loss * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{total / count:.4f}")
        if count == 0:
            raise UsageError(f"no training batch in epoch {self.epoch}: fewer samples than batch_size")
        return total / count

    def _anneal(self) -> None:
        """With a budget, lr falls (cosine) to 0 at its end or at the last epoch, whichever is first."""
        per = self.p["iterations_per_epoch"]
        done = max(
            (time.perf_counter() - self.started) / (self.deadline - self.started),
            ((self.epoch - 1) * per + self.steps) / (self.p["epochs"] * per),
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.p["lr"] * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimiser step on a batch; returns its loss."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss.item()} in epoch {self.epoch}; "
                "try a smaller learning rate ({overrides=lr=...})"
            )
        loss.backward()
        if self.deadline is not None:
            self._anneal()
        clip = float(self.p.get("grad_clip") or 0)  # optional per use case (params.yaml: grad_clip)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        return loss.item()  # waits for the device: the step is done when this returns

    def time_epoch(self, steps: int) -> tuple[float, int]:
        """Seconds of one epoch (training + validation, as ``log.csv`` records them), measured: one
        warm-up step, then the median of ``steps`` timed steps times the epoch's steps, plus one whole
        validation. Returns the seconds and the steps per epoch."""
        per_epoch = len(self._loader())
        if per_epoch == 0:
            raise UsageError("no training batch in an epoch: fewer samples than batch_size")

        def batches():
            while True:
                yield from self._loader()

        source = batches()
        self.model.train()
        self._step(*next(source))  # warm-up: first allocations, worker start, lazy initialisation
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self._step(*next(source))
            times.append(time.perf_counter() - start)
        per_step = float(np.median(times))  # a step slowed by another process counts less
        start = time.perf_counter()
        self.validate()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return per_step * per_epoch + time.perf_counter() - start, per_epoch

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]:
        self.model.eval()
        sums: dict[str, float] = {}
        samples = []
        names = getattr(self.val_ds, "names", None)
        for i in range(len(self.val_ds)):
            x, y = self.val_ds[i]
            out = self.model(x[None].to(self.device))
            values = {"loss": float(self.loss_fn(out, y[None].to(self.device)).item())}
            # a network with several outputs gives the use case one array per output
            prediction = self.uc.postprocess(
                [o[0].cpu().numpy() for o in out] if isinstance(out, tuple | list) else out[0].cpu().numpy()
            )
            target = y.numpy()
            values.update({k: float(v) for k, v in self.uc.metrics(prediction, target).items()})
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if i < MAX_SAMPLES:
                samples.append((names[i] if names else str(i), x.numpy(), target, prediction))
        metrics = {k: v / len(self.val_ds) for k, v in sums.items()}
        if self.metric_name not in metrics:
            raise UsageError(
                f"main_metric {self.metric_name!r} of use case {self.uc.name!r} is not among its "
                f"validation metrics ({', '.join(metrics)})"
            )
        return metrics, samples

    def end_epoch(self, train_loss: float, metrics: dict[str, float], samples, seconds: float) -> dict:
        value = metrics[self.metric_name]
        improved = _better(value, self.best, self.metric_mode)
        row = {"epoch": self.epoch, "train_loss": train_loss, "steps": self.steps}
        row.update({f"val_{k}": v for k, v in metrics.items()})
        row.update(lr=self.optimizer.param_groups[0]["lr"], seconds=round(seconds, 2), best=int(improved))
        self.rows.append(row)
        if improved:
            self.best, self.best_epoch, self.best_metrics, self.bad_epochs = value, self.epoch, metrics, 0
            runfiles.save_weights(self.model, self.dir / BEST)
            for name, image, target, prediction in samples:
                plots.plot_sample(image, target, prediction, self.dir / "samples" / f"{Path(name).stem}.png")
            write_json(
                self.dir / METRICS,
                {
                    "dataset_role": "validation",
                    "epoch": self.epoch,
                    "sample_count": len(self.val_ds),
                    "main_metric": {"name": self.metric_name, "mode": self.metric_mode},
                    "metrics": metrics,
                },
            )
        else:
            self.bad_epochs += 1
        patience = self.p["patience"]
        self.stopped_early = patience > 0 and self.bad_epochs >= patience
        write_csv(self.dir / LOG, self.rows)
        plots.plot_loss(self.rows, self.dir / "plots" / "loss.png")
        names = [k for k in metrics if k != "loss"]
        plots.plot_metrics(self.rows, names, self.dir / "plots" / "metrics.png", best_epoch=self.best_epoch)
        runfiles.save_checkpoint(  # last: the epoch counts as completed once this file is written
            self.dir / LATEST,
            model=runfiles.cpu_state_dict(self.model),
            optimizer=self.optimizer.state_dict(),
            epoch=self.epoch,
            best=self.best,
            best_epoch=self.best_epoch,
            best_metrics=self.best_metrics,
            bad_epochs=self.bad_epochs,
            stopped_early=self.stopped_early,
            log=self.rows,
            rng=runfiles.rng_state(),
            params=self.p,
        )
        self.completed = self.epoch
        return row

    def _bar(self):
        """The run's progress bar: epochs, or with a time budget the seconds of the budget."""
        from tqdm import tqdm

        common = {"desc": self.uc.name, "disable": not self.progress, "file": sys.stderr}
        if self.deadline is None:
            return tqdm(total=self.p["epochs"], initial=self.epoch, unit="epoch", **common)
        total = round(self.deadline - self.started)
        common["desc"] += f" ({total / 60:g} min budget)"
        shape = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}{postfix}]"
        initial = min(total, round(time.perf_counter() - self.started))  # data loading counts
        return tqdm(total=total, initial=initial, unit="s", bar_format=shape, **common)

    def run(self, on_epoch_end: EpochCallback | None) -> None:
        epochs = self.p["epochs"]
        bar = self._bar()
        try:
            while self.epoch < epochs and not self.stopped_early and not self.out_of_time:
                if not self.time_left():
                    self.out_of_time = True
                    break
                self.epoch += 1
                start = time.perf_counter()
                train_loss = self.train_epoch()
                validation_start = time.perf_counter()
                metrics, samples = self.validate()
                self.val_seconds = time.perf_counter() - validation_start
                row = self.end_epoch(train_loss, metrics, samples, time.perf_counter() - start)
                elapsed = round(time.perf_counter() - self.started)
                bar.n = self.epoch if self.deadline is None else min(bar.total, elapsed)
                shown = {"epoch": str(self.epoch)} if self.deadline is not None else {}
                shown["train loss"] = f"{train_loss:.4f}"  # a metric may be named "loss" too
                shown[f"val {self.metric_name}"] = f"{metrics[self.metric_name]:.4f}"
                bar.set_postfix(shown)
                log.info("epoch %d: %s", self.epoch, row)
                if on_epoch_end is not None:
                    on_epoch_end(self.epoch, row)
        finally:
            bar.close()


def train(
    usecase: str | UseCase,
    data_dir: Path | None,
    run_dir: Path,
    *,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    epochs: int | None = None,
    minutes: float | None = None,
    init: str | Path | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> RunResult:
    """Train a use case into ``run_dir`` (or continue the run there with ``resume=True``).

    ``overrides`` changes parameters of the use case's ``params.yaml`` (``{"lr": 3e-4}`` or
    ``["lr=3e-4"]``); ``epochs`` overrides the ``epochs`` parameter (and may extend a resumed run);
    ``minutes`` the time budget of this call (0: none). ``init`` (a package) starts from its
    state-dict weights (:func:`~emzoo.train.runfiles.package_weights`). All checks run before the
    data are read. ``on_epoch_end(epoch, row)`` is called after each completed epoch.
    """
    started = time.perf_counter()
    if init is not None and resume:
        raise UsageError(
            "{init} starts a new run from a package's weights, a resumed run goes on from its own "
            "checkpoint: leave out {init} or {resume=True}"
        )
    dev = resolve_device(device)
    checked = {"overrides": overrides, "epochs": epochs, "minutes": minutes, "resume": resume}
    setup = prepare_run(usecase, data_dir, run_dir, **checked, device=str(dev))
    initial = None
    if init is not None:
        fresh = setup.usecase.build_model(setup.params)
        initial, setup.config["init"] = runfiles.package_weights(init, fresh, setup.usecase.name)
    # a damaged checkpoint is refused before the data are read and the model is built
    state = runfiles.load_checkpoint(setup.run_dir / LATEST) if setup.resume else None  # on the CPU
    trainer = _Trainer(setup, dev, progress, started=started, initial=initial)
    if state is not None:
        trainer.restore(state)
        if trainer.stopped_early or trainer.epoch >= setup.params["epochs"]:
            why = (
                "it stopped early (no improvement for `patience` epochs)"
                if trainer.stopped_early
                else f"all {trainer.epoch} epochs are done (give a larger {epochs} to go on)"
            )
            log.warning("%s: nothing to resume, %s", run_dir, why)
            status = "early_stopped" if trainer.stopped_early else "finished"
            return RunResult(setup.run_dir, trainer.epoch, trainer.best_epoch, trainer.best_metrics, status)
    config = setup.config
    setup.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(setup.run_dir / CONFIG, config)
    try:
        trainer.run(on_epoch_end)
    except BaseException:
        config.update(status="interrupted", epochs_completed=trainer.completed)
        write_json(setup.run_dir / CONFIG, config)
        raise
    status = "early_stopped" if trainer.stopped_early else "time_limit" if trainer.out_of_time else "finished"
    config.update(
        status=status,
        finished=now(),
        epochs_completed=trainer.epoch,
        best_epoch=trainer.best_epoch,
    )
    write_json(setup.run_dir / CONFIG, config)
    return RunResult(setup.run_dir, trainer.epoch, trainer.best_epoch, trainer.best_metrics, status)


@dataclass(frozen=True)
class EpochTime:
    """How long one epoch takes (training + validation, the ``seconds`` of ``log.csv``) and how that
    was found."""

    seconds: float
    how: str  # "measured on 3 training steps (of 50 per epoch) and one validation, on cpu"

    def __str__(self) -> str:
        value = f"{self.seconds:.2g} s" if self.seconds < 10 else f"{self.seconds:.0f} s"
        if self.seconds >= 120:
            value += f" ({self.seconds / 60:.1f} min)"
        return f"time per epoch: about {value}, {self.how}"


def recorded_epoch_time(run_dir: Path) -> EpochTime | None:
    """The median epoch time that the run in ``run_dir`` recorded in its ``log.csv`` (None without)."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return None
    try:
        seconds = [float(row["seconds"]) for row in runfiles.read_csv(path) if row.get("seconds")]
    except (OSError, ValueError, KeyError):
        return None
    if not seconds:
        return None
    return EpochTime(
        float(np.median(seconds)), f"recorded by the run in {run_dir} (median of {len(seconds)} epochs)"
    )


def measure_epoch_time(
    usecase: str | UseCase,
    data_dir: Path,
    *,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    device: str = "auto",
    steps: int = 3,
) -> EpochTime:
    """Measure one epoch on the real data and model: the run's checks, then one warm-up step,
    ``steps`` timed training steps (extrapolated to the steps of an epoch) and one validation.
    Nothing is written except a temporary folder, removed afterwards."""
    import shutil
    import tempfile

    dev = resolve_device(device)
    scratch = Path(tempfile.mkdtemp(prefix="emzoo-epoch-time-"))
    try:
        setup = prepare_run(usecase, data_dir, scratch / "run", overrides=overrides, device=str(dev))
        trainer = _Trainer(setup, dev, progress=False)
        seconds, per_epoch = trainer.time_epoch(steps)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return EpochTime(
        seconds,
        f"measured on {steps} training steps (of {per_epoch} per epoch, after one warm-up step) and "
        f"one validation pass ({len(trainer.val_ds)} samples) on {dev}",
    )
