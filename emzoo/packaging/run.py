"""Package a training run folder (``emzoo train`` output) with its use case's metadata and evaluation.

A run folder holds ``config.json`` (``use_case`` name, ``params``, ``data_dir``, ``split``),
``weights/best.pt`` (a state dict) and ``metrics.json`` (the best validation metrics). The use case is
found by name in the training framework's registry; its ``packaging``, ``architecture``,
``sample_input`` and ``evaluate`` supply everything else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.packaging.build import BuildOptions, package_module
from emzoo.packaging.export import PackagingError
from emzoo.packaging.tensors import intensity_stats
from emzoo.train.usecase import UseCase

log = logging.getLogger(__name__)

IMAGE_FOLDERS = ("image", "images", "img", "imgs", "raw", "input", "inputs")


def _read_json(path: Path, what: str) -> dict[str, Any]:
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


def find_usecase(name: str) -> UseCase:
    """The registered use case ``name`` (searching the ``training/`` folders first)."""
    try:
        from emzoo.train.discovery import get_usecase
    except ImportError:  # the training framework without discovery: use what is registered
        from emzoo.train.usecase import registered_usecases

        known = registered_usecases()
        if name not in known:
            raise PackagingError(
                f"unknown use case {name!r} (registered: {', '.join(sorted(known)) or 'none'})"
            ) from None
        return known[name]()
    return get_usecase(name)


def _raw_training_images(usecase: UseCase, data_dir: Path, config: Mapping[str, Any]) -> Iterator[np.ndarray]:
    """Raw training images: the use case's ``training_images`` hook if it has one, else the files
    named in the run's training split, found in an image folder under ``data_dir``."""
    hook = getattr(usecase, "training_images", None)
    if callable(hook):
        yield from hook(data_dir, dict(config.get("params", {})))
        return
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
        images = list(_raw_training_images(usecase, data_dir, config))
    except Exception as e:  # a use case hook or an unreadable file: fall back to the sample
        log.warning("cannot read the training images for intensity statistics (%s)", e)
        return None
    if not images:
        return None
    return intensity_stats(images, source=f"the {len(images)} raw training images of the run's split")


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


def _reproduce(name: str, data: Path, run: Path, output: str | Path, config: Mapping[str, Any]) -> str:
    return (
        "From the repository root (the training data beside it in `../shared/data`), with "
        "`pip install -e '.[cpu,train]'`:\n\n```bash\n"
        f"emzoo train {name} --data {_shown_path(data)} --out {_shown_path(run)}\n"
        f"emzoo package {_shown_path(run)} -o {_shown_path(Path(output))}\n```\n\n"
        "The parameters are the use case's `params.yaml` defaults, listed under Training settings "
        f"(change one with `--set name=value`); the split is fixed and the seed is "
        f"{config.get('params', {}).get('seed', '?')}. This run used the {config.get('device', '?')}."
    )


def package_run(
    run_dir: str | Path,
    output: str | Path,
    *,
    data_dir: str | Path | None = None,
    options: BuildOptions | None = None,
    usecase: UseCase | None = None,
) -> Path:
    """Package the best weights of a training run (see the module docstring); returns ``output``.

    ``data_dir`` overrides the data folder recorded in ``config.json`` (needed for the evaluation on
    the test split, the sample image and the training statistics); ``usecase`` skips the registry.

    Examples
    --------
    >>> package_run("runs/membranes", "zoo_models/em-membrane-unet2d")  # doctest: +SKIP
    """
    import torch

    run = Path(run_dir)
    config = _read_json(run / "config.json", "emzoo train writes it")
    metrics = (
        _read_json(run / "metrics.json", "the best validation metrics")
        if (run / "metrics.json").is_file()
        else {}
    )
    name = config.get("use_case") or config.get("usecase")
    if not name:
        raise PackagingError(f"{run / 'config.json'} names no use case ('use_case')")
    weights = run / "weights" / "best.pt"
    if not weights.is_file():
        raise PackagingError(f"{run} has no weights/best.pt: the run saved no best model yet (train longer)")
    if config.get("status") not in (None, "finished", "early_stopped"):
        log.warning("the run's status is %r: packaging its best weights so far", config.get("status"))
    data = Path(data_dir) if data_dir is not None else Path(config.get("data_dir") or "")
    if not str(data) or not data.is_dir():
        raise PackagingError(
            f"the run's data folder {str(data)!r} does not exist here: pass the data with --data DIR "
            "(the test split is evaluated through the package)"
        )
    usecase = usecase or find_usecase(name)
    params = dict(config.get("params", {}))
    module = usecase.build_model(params)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as e:
        raise PackagingError(
            f"{weights} does not fit the network built from the run's parameters ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); was config.json edited after training?"
        ) from e
    stats = training_statistics(usecase, data, config)
    info = usecase.packaging(params)
    sections = {
        **info.extra_card_sections,
        "Reproduce this model": _reproduce(name, data, run, output, config),
    }
    return package_module(
        module,
        replace(info, extra_card_sections=sections),
        usecase.sample_input(data),
        output,
        architecture=usecase.architecture(params),
        evaluate=lambda predict: usecase.evaluate(predict, data, params),
        training_stats=stats,
        training=_training_settings(config, metrics),
        extra_config={
            "usecase": name,
            "params": params,
            "split": config.get("split") or {},
            "validation": {
                k: metrics[k] for k in ("epoch", "dataset_role", "sample_count", "metrics") if k in metrics
            },
            **usecase.package_config(params),
        },
        options=options,
    )
