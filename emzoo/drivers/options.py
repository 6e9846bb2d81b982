"""The drivers' option records, one per concern, passed whole from the CLI (or the Python API) down to
the file, streaming and Dask drivers.

>>> StreamOptions(chunk=256).chunk
(256,)
>>> OutputOptions(format="mrc").format
'mrc'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emzoo.errors import UsageError


@dataclass(frozen=True)
class OutputOptions:
    """What is written and how."""

    format: str | None = None  # None: follows the input (mrc -> mrc, zarr -> ome-zarr, else tiff)
    overwrite: bool = False  # replace outputs that exist (otherwise their inputs are skipped)
    overlay: bool = False  # output kinds that draw (counting): also write an overlay PNG
    keep_axes: bool = False  # every axis the package declares but batch (default: a 1-channel axis dropped)
    preview: bool = False  # beside each float image output an 8-bit <output stem>.preview.png


@dataclass(frozen=True)
class InputOptions:
    """How each input is read and cut into samples."""

    slices: bool = False  # a 2D model on each z slice of a volume
    stack: bool = False  # each input is a folder of 2D slices, read as one volume


@dataclass(frozen=True)
class StreamOptions:
    """Out-of-core prediction: whether, in which chunks, and where the chunks run."""

    enabled: bool | None = None  # None: for large lazy inputs and OME-Zarr outputs
    chunk: tuple[int, ...] | None = None  # input px per tiled axis (one value: all axes)
    client: object = None  # a dask.distributed Client or a scheduler address: the chunks run there

    def __post_init__(self) -> None:
        if self.chunk is not None:
            chunk = (self.chunk,) if isinstance(self.chunk, int) else tuple(int(n) for n in self.chunk)
            if not chunk or min(chunk) < 1:
                raise UsageError(f"{{chunk}} {self.chunk}: sizes must be positive")
            object.__setattr__(self, "chunk", chunk)
        if self.enabled is False and (self.chunk is not None or self.client is not None):
            option = "{chunk}" if self.chunk is not None else "{client}"
            raise UsageError(f"{option} is for out-of-core prediction: leave out {{stream=False}}")


@dataclass(frozen=True)
class RunOptions:
    """Everything the file driver needs besides the model and the inputs."""

    output: OutputOptions = field(default_factory=OutputOptions)
    inputs: InputOptions = field(default_factory=InputOptions)
    stream: StreamOptions = field(default_factory=StreamOptions)
    # read the next input and write the last outputs while the model runs (one ahead, one behind)
    overlap: bool = True
