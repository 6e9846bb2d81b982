"""What a run folder holds on disk, all written atomically (a temporary sibling, then a rename), so
that an interruption leaves the previous file intact and never half a row or half a document:

* the text files: ``log.csv`` (one row per epoch), ``config.json``, ``metrics.json``;
* the checkpoints: ``weights/best.pt`` (a plain state dict) and ``weights/latest.pt`` (all that
  ``--resume`` needs), both loadable with ``torch.load(..., weights_only=True)``;
* the weights a fine-tuning run starts from: a package's state dict (:func:`package_weights`).

Torch is imported only by the checkpoint functions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emzoo.atomic import atomic_path, write_text_atomic
from emzoo.errors import InputError, UsageError

if TYPE_CHECKING:
    import torch

# -- text files ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON without NaN/inf (written as null) and with paths as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(_plain(data), indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """All rows (dicts); the columns are the union of their keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- checkpoints --------------------------------------------------------------------------------------


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict alone (CPU tensors): what the packager loads."""
    _atomic_save(cpu_state_dict(model), path)


def rng_state() -> dict[str, Any]:
    """The global random states of torch (CPU and CUDA), numpy and Python."""
    import torch

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# weights_only loading accepts tensors, lists, dicts and scalars: store the RNG states in those
def _numpy_state_to_plain(s: tuple) -> dict[str, Any]:
    import torch

    return {"kind": s[0], "keys": torch.from_numpy(s[1].astype(np.int64)), "pos": s[2], "gauss": list(s[3:])}


def _numpy_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["kind"], d["keys"].numpy().astype(np.uint32), d["pos"], *d["gauss"])


def _python_state_to_plain(s: tuple) -> dict[str, Any]:
    return {"version": s[0], "state": list(s[1]), "gauss": s[2]}


def _python_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(d["state"]), d["gauss"])


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write the full training state (model, optimizer, epoch, RNG states, log rows...)."""
    _atomic_save(state, path)


def first_sentence(text: str, limit: int = 200) -> str:
    """The first sentence of a library's error message (torch's go on for lines), at most ``limit`` long.

    >>> first_sentence("failed finding central directory. This is an internal error. If you...")
    'failed finding central directory'
    """
    text = " ".join(str(text).split())
    end = text.find(". ", 20)
    text = text[:end] if end > 0 else text.rstrip(".")
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


# what ``--resume`` needs from ``weights/latest.pt`` (written by :func:`save_checkpoint`)
CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "epoch",
    "best",
    "best_epoch",
    "best_metrics",
    "bad_epochs",
    "stopped_early",
    "log",
    "rng",
)
_START_AGAIN = "start a new run (another {run_dir}), or put back a good copy of the file"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The training state on the CPU (``load_state_dict`` moves weights and optimizer state to the
    model's device; the RNG states must stay on the CPU).

    Loaded with ``weights_only=True``: a checkpoint holding other objects than tensors and plain data
    (a pickle payload, which could run code) is refused, like a damaged or truncated one, with one
    :class:`~emzoo.errors.InputError` line; so is one that lacks a key of :data:`CHECKPOINT_KEYS`.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged zip, truncated pickle, objects weights_only refuses...
        detail = " ".join(str(e).split())
        if "weights only load failed" in detail.lower() or "weights_only" in detail:
            why = (
                "it holds more than tensors and plain data (pickled objects, which could run code), "
                "so it is not loaded"
            )
        else:
            why = f"it is damaged or truncated ({type(e).__name__}: {first_sentence(detail)})"
        raise InputError(f"{path}: cannot resume from this checkpoint: {why}; {_START_AGAIN}") from None
    if not isinstance(state, dict):
        raise InputError(
            f"{path}: not an emzoo training checkpoint (it holds a {type(state).__name__}, not the "
            f"training state); {_START_AGAIN}"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise InputError(
            f"{path}: the checkpoint lacks {', '.join(missing)} (not written by this emzoo's trainer, or "
            f"edited); {_START_AGAIN}"
        )
    return state


def package_weights(
    source: str | Path, model: torch.nn.Module, usecase: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``pytorch_state_dict`` weights of the package ``source`` (a zip, folder or rdf.yaml),
    checked against ``model`` (the run's network), and a record of them for ``config.json``.

    They load into the run's own network (``weights_only=True``): no code of the package runs. A
    package without such weights, or whose network is not ``model`` (other layers or sizes), is
    refused with one :class:`~emzoo.errors.UsageError` line; one of another use case is taken with a
    warning (the same network may serve several).
    """
    import logging

    import torch

    from emzoo.package.load import open_model

    package = open_model(source)
    weights = package.spec.weights.get("pytorch_state_dict")
    if weights is None:
        raise UsageError(
            f"{{init}} {source}: the package has no pytorch_state_dict weights (only "
            f"{', '.join(package.spec.weight_formats())}), which fine-tuning starts from"
        )
    path = package.verified_file(weights.source, weights.sha256)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged, or pickled objects that weights_only refuses
        raise InputError(
            f"{path}: cannot load the package's weights ({type(e).__name__}: {first_sentence(str(e))})"
        ) from None
    ours = model.state_dict()
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict (a mapping of names to tensors)")
    mismatch = _mismatch(dict(state), ours)
    if mismatch:
        arch = weights.architecture
        theirs = f"{arch.callable}({', '.join(f'{k}={v}' for k, v in arch.kwargs.items())})" if arch else "?"
        raise UsageError(
            f"{{init}} {source}: the package's network {theirs} is not this run's ({mismatch}); give the "
            "run the package's parameters (e.g. {overrides=depth=...}) or leave out {init}"
        )
    theirs_uc = package.spec.emzoo.get("usecase")
    if theirs_uc and theirs_uc != usecase:
        logging.getLogger(__name__).warning(
            "%s was trained for the use case %r, not %r: starting from its weights anyway",
            source,
            theirs_uc,
            usecase,
        )
    record = {"package": str(source), "name": package.spec.name, "version": package.spec.version}
    return dict(state), {**record, "weights_sha256": weights.sha256}


def _mismatch(state: Mapping[str, Any], ours: Mapping[str, Any]) -> str | None:
    """How the state dict ``state`` does not fit the network whose state dict is ``ours`` (None: it fits)."""
    for name, tensor in ours.items():
        if name not in state:
            return f"the package lacks {name}"
        if tuple(state[name].shape) != tuple(tensor.shape):
            return f"{name} is {tuple(state[name].shape)} there, {tuple(tensor.shape)} here"
    extra = [name for name in state if name not in ours]
    return f"the package has {extra[0]}, which this network lacks" if extra else None
