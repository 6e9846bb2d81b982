"""The run folder: setting up a run before any training (parameters, resume checks, data checks) and
packaging a finished one (:func:`package_run`).

Everything a user can get wrong before training is checked here and raised as one
:class:`~emzoo.errors.UsageError` or :class:`~emzoo.errors.InputError` line, before a model is built;
a run folder that cannot be packaged raises :class:`~emzoo.packaging.export.PackagingError`.

Run folder layout (read by :func:`package_run`)::

    RUN_DIR/config.json        use case, params, split (file names), seed, versions, times, device
    RUN_DIR/weights/best.pt    state dict of the best epoch (torch.load(..., weights_only=True))
    RUN_DIR/weights/latest.pt  full checkpoint of the last completed epoch (for --resume)
    RUN_DIR/log.csv            one row per epoch: losses, validation metrics, lr, seconds, best
    RUN_DIR/plots/*.png        loss.png, metrics.png
    RUN_DIR/samples/*.png      validation predictions of the best epoch
    RUN_DIR/metrics.json       validation metrics of the best epoch
"""

from __future__ import annotations

import json
import logging
import platform
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emzoo.errors import InputError, UsageError
from emzoo.packaging.export import PackagingError
from emzoo.packaging.tensors import intensity_stats
from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, parse_value, resolve_params, split_assignment
from emzoo.train.runfiles import read_json
from emzoo.train.usecase import UseCase
from emzoo.version import __version__

if TYPE_CHECKING:
    from emzoo.packaging.build import BuildOptions

log = logging.getLogger(__name__)

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
    minutes = params.get("minutes", 0)  # the time budget, where a use case or the caller sets one
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes >= 0:
        raise UsageError(f"minutes (the time budget) must be a number >= 0 (0: none), not {minutes!r}")


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


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a run to resume; one error line when it is damaged or incomplete."""
    path = run_dir / CONFIG
    try:
        config = read_json(path)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(
            f"{path}: cannot be read ({type(e).__name__}: {e}), so the run cannot be resumed; start a "
            "new run with another {run_dir}"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("params"), dict):
        raise InputError(
            f"{path}: not the config.json of an emzoo run (it lacks the run's params), so the run "
            "cannot be resumed; start a new run with another {run_dir}"
        )
    return config


def prepare_run(
    usecase: str | UseCase,
    data_dir: Path | None,
    run_dir: Path,
    *,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    epochs: int | None = None,
    minutes: float | None = None,
    resume: bool = False,
    device: str = "cpu",
) -> RunSetup:
    """Check everything and return the run's parameters, split and ``config.json`` content;
    ``epochs`` and ``minutes`` (the time budget) replace those parameters, also of a resumed run."""
    uc = get_usecase(usecase) if isinstance(usecase, str) else usecase
    run_dir = Path(run_dir)
    overrides = overrides if isinstance(overrides, Mapping) else list(overrides)
    if epochs is not None and epochs < 1:
        raise UsageError(f"{{epochs}} must be >= 1, not {epochs}")
    if resume:
        if not (run_dir / CONFIG).is_file() or not (run_dir / LATEST).is_file():
            raise UsageError(
                f"{run_dir}: nothing to resume (no completed epoch: needs {CONFIG} and {LATEST}); "
                "start it without {resume=True}"
            )
        config = _run_config(run_dir)
        if config.get("use_case") != uc.name:
            raise UsageError(f"{run_dir} is a run of {config.get('use_case')!r}, not of {uc.name!r}")
        params = dict(config["params"])
        if uc.params_file is not None:  # parameters added to the use case since the run began: defaults
            params = {**resolve_params(load_param_file(uc.params_file), {}), **params}
        changed = _changed_on_resume(params, overrides)
        if changed:
            raise UsageError(
                f"{{resume=True}} continues a run with its own parameters; cannot change "
                f"{', '.join(changed)} "
                "(start a new run with another {run_dir} instead)"
            )
        if epochs is not None:
            params["epochs"] = epochs
        if data_dir is None and not config.get("data_dir"):
            raise UsageError(f"{run_dir / CONFIG} does not say where the data is: give {{data_dir}}")
        data_dir = Path(data_dir) if data_dir is not None else Path(config["data_dir"])
        config.setdefault("resumed", []).append(now())
    else:
        if (run_dir / LATEST).exists():  # a run without any completed epoch is simply started again
            raise UsageError(
                f"{run_dir} already holds a run; add {{resume=True}} to continue it or choose another "
                "{run_dir}"
            )
        if data_dir is None:
            raise UsageError("{data_dir} is required: the folder with the training images and labels")
        if uc.params_file is None:
            raise UsageError(f"use case {uc.name!r} declares no params_file")
        params = resolve_params(load_param_file(uc.params_file), overrides)
        if epochs is not None:
            params["epochs"] = epochs
        config = {}
    if minutes is not None:
        params["minutes"] = minutes
    check_trainer_params(params)
    uc.check_params(params)
    if not Path(data_dir).is_dir():
        what = "is not a folder" if Path(data_dir).exists() else "no such folder"
        raise UsageError(f"{{data_dir}} {data_dir}: {what} (the folder with the training images and labels)")
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


# -- packaging a finished run ------------------------------------------------------------------------

IMAGE_FOLDERS = ("image", "images", "img", "imgs", "raw", "input", "inputs")


def _read_checked_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise PackagingError(f"{path.parent} is not a training run folder: it has no {path.name} ({what})")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise PackagingError(
            f"{path} is not valid JSON ({e}); was the run interrupted while writing it?"
        ) from e
    if not isinstance(value, dict):
        raise PackagingError(f"{path} does not hold a JSON object")
    return value


def _raw_training_images(usecase: UseCase, data_dir: Path, config: Mapping[str, Any]) -> list[np.ndarray]:
    """Raw training images: the use case's ``training_images``, else (when it does not implement it)
    the files named in the run's training split, found in an image folder under ``data_dir``."""
    try:
        return list(usecase.training_images(data_dir, dict(config.get("params", {}))))
    except NotImplementedError:
        return list(_split_images(data_dir, config))


def _split_images(data_dir: Path, config: Mapping[str, Any]) -> Iterator[np.ndarray]:
    from emzoo.io import read_image

    names = list((config.get("split") or {}).get("train", []))
    if not names:
        return
    for name in names:
        found = [
            p
            for p in sorted(data_dir.rglob(Path(name).name))
            if p.is_file() and p.parent.name.lower() in IMAGE_FOLDERS
        ]
        if len(found) != 1:
            log.warning(
                "training image %s: %d candidates under %s; statistics skip it", name, len(found), data_dir
            )
            continue
        yield np.asarray(read_image(found[0]).data)


def training_statistics(usecase: UseCase, data_dir: Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Intensity statistics of the run's raw training images (None when they cannot be found)."""
    for key in ("data_stats", "intensity_stats"):
        if isinstance(config.get(key), Mapping):
            return dict(config[key])
    try:
        images = _raw_training_images(usecase, data_dir, config)
    except Exception as e:  # a use case hook or an unreadable file: fall back to the sample
        log.warning("cannot read the training images for intensity statistics (%s)", e)
        return None
    if not images:
        return None
    groups = [usecase.intensity_group(image) for image in images]
    source = f"the {len(images)} raw training images of the run's split"
    return intensity_stats(images, source=source, groups=groups)


def _training_settings(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(config.get("params", {}))
    split = config.get("split") or {}
    if split:
        out["split (images)"] = ", ".join(f"{k} {len(v)}" for k, v in split.items())
    if metrics.get("epoch") is not None:
        out["best epoch"] = metrics["epoch"]
    main = (metrics.get("main_metric") or config.get("main_metric") or {}).get("name")
    if main and main in metrics.get("metrics", {}):
        out[f"validation {main}"] = metrics["metrics"][main]
    for key in ("device", "torch_version", "seed"):
        if config.get(key) is not None and key not in out:
            out[key] = config[key]
    return out


def _shown_path(path: Path) -> str:
    """Paths as a reader of the repository writes them (``../shared/data/...`` for the shared data)."""
    parts = Path(path).resolve().parts
    for i in range(len(parts) - 1):
        if parts[i : i + 2] == ("shared", "data"):
            return str(Path("..", *parts[i:]))
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def reproduce_section(
    usecase: UseCase, data: Path, run: Path, output: Path | str, config: Mapping, version: str | None
) -> str:
    """The card's "Reproduce this model"; ``version``: the package's, when it is not the default."""
    shown_version = f" --model-version {version}" if version else ""
    return (
        "From the repository root (the training data beside it in `../shared/data`), with "
        "`pip install -e '.[cpu,train]'`:\n\n```bash\n"
        f"emzoo train {usecase.name} --data {_shown_path(data)} --out {_shown_path(run)}"
        f"{_run_flags(usecase, config)}\n"
        f"emzoo package {_shown_path(run)} -o {_shown_path(Path(output))}{shown_version}\n```\n\n"
        "The other parameters are the use case's `params.yaml` defaults, listed under Training settings "
        f"(change one with `--set name=value`); the split is fixed and the seed is "
        f"{config.get('params', {}).get('seed', '?')}. This run used the {config.get('device', '?')}."
    )


def _run_flags(usecase: UseCase, config: Mapping[str, Any]) -> str:
    """The flags that repeat the run: `` --init PACKAGE`` of a run that started from a package's
    weights, `` --minutes M`` of a run with a time budget (its value, also 0: the default may differ),
    `` --epochs N`` and `` --set name=value ...`` for the parameters that differ from the use case's
    ``params.yaml``."""
    init = config.get("init") or {}
    flags = f" --init {_shown_path(Path(init['package']))}" if init.get("package") else ""
    params = dict(config.get("params") or {})
    minutes = params.pop("minutes", None)
    if isinstance(minutes, int | float):
        flags += f" --minutes {minutes:g}"
    defaults = resolve_params(load_param_file(usecase.params_file), {}) if usecase.params_file else {}
    changed = {k: v for k, v in params.items() if k in defaults and v != defaults[k]}
    if "epochs" in changed:
        flags += f" --epochs {changed.pop('epochs')}"
    if changed:
        shown = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in changed.items()}  # lossless
        flags += " --set " + " ".join(f"{k}={v}" for k, v in shown.items())
    return flags


_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")


def check_build_options(options: BuildOptions) -> None:
    """The packaging options a user gives (test size, halo, version), before any work."""
    if options.test_size is not None and (not isinstance(options.test_size, int) or options.test_size < 1):
        raise UsageError(f"{{test_size}} {options.test_size}: the test tensors need an edge of at least 1 px")
    if options.halo is not None and options.halo < 0:
        raise UsageError(f"{{halo}} {options.halo}: a halo is a number of pixels, 0 or more")
    if not _SEMVER.match(str(options.version)):
        raise UsageError(
            f"package version {options.version!r}: give a semantic version MAJOR.MINOR.PATCH (e.g. 0.1.0)"
        )


def package_run(
    run_dir: str | Path,
    output: str | Path,
    *,
    data_dir: str | Path | None = None,
    options: BuildOptions | None = None,
    usecase: UseCase | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Package the best weights of a training run (see the module docstring); returns ``output``.

    ``data_dir`` overrides the data folder recorded in ``config.json`` (needed for the evaluation on
    the test split, the sample image and the training statistics); ``usecase`` skips the registry.
    ``warn(message)`` hears what the user should know, such as a model that scores worse than its
    classical baseline on its main metric (:func:`baseline_shortfall`); without it, it is logged.

    Examples
    --------
    >>> package_run("runs/membranes", "zoo_models/em-membrane-unet2d")  # doctest: +SKIP
    """
    import torch

    from emzoo.packaging.build import BuildOptions, package_module

    if options is not None:
        check_build_options(options)
        if options.progress is not None:
            options.progress("reading the run (weights, data, training statistics)", None)
    run = Path(run_dir)
    config = _read_checked_json(run / "config.json", "emzoo train writes it")
    metrics = (
        _read_checked_json(run / "metrics.json", "the best validation metrics")
        if (run / "metrics.json").is_file()
        else {}
    )
    name = config.get("use_case") or config.get("usecase")
    if not name:
        raise PackagingError(f"{run / 'config.json'} names no use case ('use_case')")
    weights = run / "weights" / "best.pt"
    if not weights.is_file():
        raise PackagingError(f"{run} has no weights/best.pt: the run saved no best model yet (train longer)")
    if config.get("status") not in (None, "finished", "early_stopped", "time_limit"):
        log.warning("the run's status is %r: packaging its best weights so far", config.get("status"))
    data = Path(data_dir) if data_dir is not None else Path(config.get("data_dir") or "")
    if not str(data) or not data.is_dir():
        raise PackagingError(
            f"the run's data folder {str(data)!r} does not exist here: pass the data with {{data_dir=DIR}} "
            "(the test split is evaluated through the package)"
        )
    usecase = usecase or get_usecase(name)
    version = options.version if options is not None and options.version != BuildOptions.version else None
    params = dict(config.get("params", {}))
    params.update(usecase.calibrate(params, metrics.get("metrics", {})))
    module = usecase.build_model(params)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as e:
        raise PackagingError(
            f"{weights} does not fit the network built from the run's parameters ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); was config.json edited after training?"
        ) from e
    module = usecase.packaged_model(module, params)
    stats = training_statistics(usecase, data, config)
    info = usecase.packaging_for(data, params)
    sections = {
        **info.extra_card_sections,
        "Reproduce this model": reproduce_section(usecase, data, run, output, config, version),
    }
    evaluations: list[Mapping[str, Any]] = []
    extra_config: dict[str, Any] = {
        "usecase": name,
        "params": params,
        "split": config.get("split") or {},
        "validation": {
            k: metrics[k] for k in ("epoch", "dataset_role", "sample_count", "metrics") if k in metrics
        },
        **usecase.package_config(params),
    }

    def evaluate(predict):
        # parameters calibrated on the packaged model come first; the config written after the
        # evaluation (package_module reads extra_config then) and the test evaluation both use them
        params.update(usecase.calibrate_package(predict, data, params))
        extra_config.update(usecase.package_config(params))  # extra_config['params'] is params
        evaluations.append(usecase.evaluate(predict, data, params))
        return evaluations[-1]

    written = package_module(
        module,
        replace(info, extra_card_sections=sections),
        usecase.sample_input(data),
        output,
        architecture=usecase.architecture(params),
        evaluate=evaluate,
        training_stats=stats,
        training=_training_settings(config, metrics),
        extra_config=extra_config,
        options=options,
    )
    shortfall = baseline_shortfall(usecase, evaluations[-1]) if evaluations else None
    if shortfall:
        (warn or log.warning)(shortfall)
    return written


def judged_metric(usecase: UseCase, evaluation: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(name, "min" | "max")`` of the evaluation metric a package is judged by against its baseline
    (see :attr:`UseCase.evaluation_metric`); None when no metric of both model and baseline says."""
    from emzoo.metrics import direction

    ours = evaluation.get("metrics") or {}
    theirs = (evaluation.get("baseline") or {}).get("metrics") or {}
    both = [k for k in ours if k in theirs]
    for choice in (usecase.evaluation_metric, usecase.main_metric):
        if choice and choice[0] in both:
            return choice[0], choice[1]
    known = [(k, direction(k)) for k in both if direction(k)]
    means = [c for c in known if c[0].endswith("_mean")]
    return (means or known or [None])[0]


def baseline_shortfall(usecase: UseCase, evaluation: Mapping[str, Any]) -> str | None:
    """A warning when the packaged model scores worse than its classical baseline on its judged
    metric (:func:`judged_metric`), else None."""
    judged = judged_metric(usecase, evaluation)
    if judged is None:
        return None
    name, mode = judged
    baseline = evaluation["baseline"]
    ours, theirs = float(evaluation["metrics"][name]), float(baseline["metrics"][name])
    worse = ours < theirs if mode == "max" else ours > theirs
    if not worse:
        return None
    return (
        f"the model ({name} {ours:.4g}) is worse than its classical baseline "
        f"({baseline.get('name', 'baseline')}, {name} {theirs:.4g}) on its main metric "
        f"({'higher' if mode == 'max' else 'lower'} is better); packaged anyway"
    )
