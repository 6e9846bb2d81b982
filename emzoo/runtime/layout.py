"""Map an image's axes (``yx``, ``cyx``, ``zyx``, ``yxc``...) to a model tensor's axes and back.

For numpy arrays the result is a view; for lazy arrays (zarr, dask) a :class:`LayoutView` that reads
only what is indexed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emzoo.errors import InputError
from emzoo.package.spec import TensorSpec

_LETTERS = {"x": "x", "y": "y", "z": "z", "t": "t", "time": "t"}
_NAMES = {"z": "z", "y": "y", "x": "x", "c": "channel", "t": "time"}


@dataclass(frozen=True)
class Layout:
    """Target dim i comes from source dim ``order[i]`` (None: a new length-1 dim); ``take`` fixes
    the index of source dims that disappear."""

    order: tuple[int | None, ...]
    take: dict[int, int]


class LayoutView:
    """A lazy, re-arranged view of an array that supports tuples of slices."""

    def __init__(self, source, layout: Layout):
        self.source, self.layout = source, layout
        shape = tuple(int(s) for s in source.shape)
        self.shape = tuple(1 if d is None else shape[d] for d in layout.order)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        src_key: list = [slice(None)] * len(self.source.shape)
        for dim, index in self.layout.take.items():
            src_key[dim] = index
        for target, src in enumerate(self.layout.order):
            if src is not None:
                src_key[src] = key[target]
        block = np.asarray(self.source[tuple(src_key)])
        kept = [d for d in range(len(self.source.shape)) if d not in self.layout.take]
        wanted = [d for d in self.layout.order if d is not None]
        block = np.transpose(block, [kept.index(d) for d in wanted])
        for target, src in enumerate(self.layout.order):
            if src is None:
                block = np.expand_dims(block, target)
        return block

    def __array__(self, dtype=None, copy=None):
        out = self[(slice(None),) * self.ndim]
        return out if dtype is None else out.astype(dtype)


def apply_layout(data, layout: Layout):
    if isinstance(data, np.ndarray):
        index = tuple(layout.take.get(d, slice(None)) for d in range(data.ndim))
        view = data[index]
        kept = [d for d in range(data.ndim) if d not in layout.take]
        wanted = [d for d in layout.order if d is not None]
        view = np.transpose(view, [kept.index(d) for d in wanted])
        for target, src in enumerate(layout.order):
            if src is None:
                view = np.expand_dims(view, target)
        return view
    return LayoutView(data, layout)


def describe_image_axes(axes: str, shape: tuple[int, ...]) -> str:
    return ", ".join(f"{_NAMES.get(a, a)}={n}" for a, n in zip(axes, shape, strict=True))


def _channels_identical(data, dim: int) -> bool:
    arr = np.asarray(data)
    first = np.take(arr, 0, axis=dim)
    return all(np.array_equal(first, np.take(arr, i, axis=dim)) for i in range(1, arr.shape[dim]))


def input_layout(data, image_axes: str, tensor: TensorSpec) -> Layout:
    """How to arrange an image with ``image_axes`` for ``tensor``; :class:`InputError` if it cannot be."""
    shape = tuple(int(s) for s in data.shape)
    have = describe_image_axes(image_axes, shape)
    want = tensor.describe_axes()
    order: list[int | None] = []
    used: set[int] = set()
    for axis in tensor.axes:
        if axis.type == "batch":
            order.append(None)
        elif axis.type == "channel":
            n = tensor.n_channels or 1
            if "c" in image_axes:
                dim = image_axes.index("c")
                if shape[dim] == n:
                    order.append(dim)
                    used.add(dim)
                    continue
                if n == 1 and _channels_identical(data, dim):
                    order.append(None)  # a gray image saved as RGB: one channel is enough
                    continue
                raise InputError(
                    f"the model expects {n} channel(s) ({want}), but the image has {shape[dim]} "
                    f"({have}); convert it to {'grayscale' if n == 1 else f'{n} channels'} first"
                )
            if n != 1:
                raise InputError(f"the model expects {n} channels ({want}); the image has one ({have})")
            order.append(None)
        elif axis.type in ("space", "time"):
            letter = _LETTERS.get(axis.id)
            if letter is None or letter not in image_axes:
                kind = "a 3D volume" if letter == "z" else f"an image with a {axis.id} axis"
                raise InputError(f"the model expects {kind} ({want}); the input has ({have})")
            dim = image_axes.index(letter)
            order.append(dim)
            used.add(dim)
        else:
            raise InputError(f"the model's input axis {axis.id!r} ({axis.type}) cannot come from an image")
    take: dict[int, int] = {}
    for dim, letter in enumerate(image_axes):
        if dim in used:
            continue
        if shape[dim] == 1 or letter == "c":
            take[dim] = 0
            continue
        hint = " (run it slice by slice with {slices=True})" if letter == "z" else ""
        raise InputError(
            f"the input has {len(shape)} dimensions ({have}) but the model takes "
            f"{sum(a.is_spatial for a in tensor.axes)}D images ({want}){hint}"
        )
    return Layout(tuple(order), take)


def output_axes(tensor: TensorSpec) -> tuple[str, tuple[int | None, ...]]:
    """Image axis letters for a model output, and which model dims they come from (batch dropped)."""
    letters, dims = [], []
    for i, axis in enumerate(tensor.axes):
        if axis.type == "batch":
            continue
        if axis.type == "channel":
            letters.append("c")
        elif axis.is_spatial:
            letters.append(_LETTERS.get(axis.id, axis.id[0]))
        else:
            letters.append("i")
        dims.append(i)
    return "".join(letters), tuple(dims)
