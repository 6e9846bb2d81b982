"""Setting up a run before any training: parameters, resume checks, data checks, the run folder.

Everything a user can get wrong is checked here and raised as one :class:`~emzoo.errors.UsageError`
or :class:`~emzoo.errors.InputError` line, before a model is built.

Run folder layout (read by the packager)::

    RUN_DIR/config.json        use case, params, split (file names), seed, versions, times, device
    RUN_DIR/weights/best.pt    state dict of the best epoch (torch.load(..., weights_only=True))
    RUN_DIR/weights/latest.pt  full checkpoint of the last completed epoch (for --resume)
    RUN_DIR/log.csv            one row per epoch: losses, validation metrics, lr, seconds, best
    RUN_DIR/plots/*.png        loss.png, metrics.png
    RUN_DIR/samples/*.png      validation predictions of the best epoch
    RUN_DIR/metrics.json       validation metrics of the best epoch
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emzoo import __version__
from emzoo.errors import InputError, UsageError
from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, parse_value, resolve_params, split_assignment
from emzoo.train.runlog import read_json
from emzoo.train.usecase import UseCase

CONFIG = "config.json"
LATEST = Path("weights") / "latest.pt"
BEST = Path("weights") / "best.pt"
LOG = "log.csv"
METRICS = "metrics.json"


def now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


@dataclass
class RunSetup:
    """A checked run, ready to train."""

    usecase: UseCase
    run_dir: Path
    data_dir: Path
    params: dict[str, Any]
    split: dict[str, list[str]]
    config: dict[str, Any]
    resume: bool


def check_trainer_params(params: Mapping[str, Any]) -> None:
    positive = ("epochs", "iterations_per_epoch", "batch_size")
    for key in positive:
        if not isinstance(params[key], int) or params[key] < 1:
            raise UsageError(f"{key} must be a whole number >= 1, not {params[key]!r}")
    for key in ("patience", "num_workers", "seed"):
        if not isinstance(params[key], int) or params[key] < 0:
            raise UsageError(f"{key} must be a whole number >= 0, not {params[key]!r}")
    if not params["lr"] > 0:
        raise UsageError(f"lr (learning rate) must be > 0, not {params['lr']!r}")
    if params["weight_decay"] < 0:
        raise UsageError(f"weight_decay must be >= 0, not {params['weight_decay']!r}")


def _changed_on_resume(stored: Mapping[str, Any], overrides: Mapping[str, Any] | Iterable[str]) -> list[str]:
    items = overrides.items() if isinstance(overrides, Mapping) else map(split_assignment, overrides)
    changed = []
    for name, value in items:
        if name not in stored:
            raise UsageError(f"unknown parameter {name!r} (known: {', '.join(sorted(stored))})")
        new = parse_value(name, value, stored[name]) if isinstance(value, str) else value
        if new != stored[name]:
            changed.append(f"{name} {stored[name]!r} -> {new!r}")
    return changed


def prepare_run(
    usecase: str | UseCase,
    data_dir: Path | None,
    run_dir: Path,
    *,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    epochs: int | None = None,
    resume: bool = False,
    device: str = "cpu",
) -> RunSetup:
    """Check everything and return the run's parameters, split and ``config.json`` content."""
    uc = get_usecase(usecase) if isinstance(usecase, str) else usecase
    run_dir = Path(run_dir)
    overrides = overrides if isinstance(overrides, Mapping) else list(overrides)
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs must be >= 1, not {epochs}")
    if resume:
        if not (run_dir / CONFIG).is_file() or not (run_dir / LATEST).is_file():
            raise UsageError(
                f"{run_dir}: nothing to resume (no completed epoch: needs {CONFIG} and {LATEST}); "
                f"start it without --resume"
            )
        config = read_json(run_dir / CONFIG)
        if config.get("use_case") != uc.name:
            raise UsageError(f"{run_dir} is a run of {config.get('use_case')!r}, not of {uc.name!r}")
        params = dict(config["params"])
        changed = _changed_on_resume(params, overrides)
        if changed:
            raise UsageError(
                f"--resume continues a run with its own parameters; cannot change {', '.join(changed)} "
                f"(start a new run with another --out instead)"
            )
        if epochs is not None:
            params["epochs"] = epochs
        data_dir = Path(data_dir) if data_dir is not None else Path(config["data_dir"])
        config.setdefault("resumed", []).append(now())
    else:
        if (run_dir / LATEST).exists():  # a run without any completed epoch is simply started again
            raise UsageError(
                f"{run_dir} already holds a run; add --resume to continue it or choose another --out"
            )
        if data_dir is None:
            raise UsageError("--data is required: the folder with the training images and labels")
        if uc.params_file is None:
            raise UsageError(f"use case {uc.name!r} declares no params_file")
        params = resolve_params(load_param_file(uc.params_file), overrides)
        if epochs is not None:
            params["epochs"] = epochs
        config = {}
    check_trainer_params(params)
    uc.check_params(params)
    data_dir = Path(data_dir).resolve()
    uc.check_data(data_dir)
    split = uc.split(data_dir, params)
    if resume and config.get("split") and split != config["split"]:
        raise InputError(f"{data_dir}: the data no longer gives the split this run was trained with")
    if not resume:
        import torch

        config = {
            "use_case": uc.name,
            "params": params,
            "seed": params["seed"],
            "split": split,
            "data_dir": str(data_dir),
            "emzoo_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "started": now(),
            "resumed": [],
        }
    config.update(
        params=params,
        device=device,
        finished=None,
        status="running",
        main_metric={"name": uc.main_metric[0], "mode": uc.main_metric[1]},
    )
    return RunSetup(uc, run_dir, data_dir, params, split, config, resume)
