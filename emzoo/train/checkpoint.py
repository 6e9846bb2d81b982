"""Checkpoints of a run: ``weights/best.pt`` (a plain state dict) and ``weights/latest.pt`` (all that
``--resume`` needs). Both are written atomically (temporary file, then rename), so an interruption
leaves the previous file intact, and both load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emzoo.atomic import atomic_path


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict alone (CPU tensors): what the packager loads."""
    _atomic_save(cpu_state_dict(model), path)


def rng_state() -> dict[str, Any]:
    """The global random states of torch (CPU and CUDA), numpy and Python."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# weights_only loading accepts tensors, lists, dicts and scalars: store the RNG states in those
def _numpy_state_to_plain(s: tuple) -> dict[str, Any]:
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The training state on the CPU (``load_state_dict`` moves weights and optimizer state to the
    model's device; the RNG states must stay on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)
