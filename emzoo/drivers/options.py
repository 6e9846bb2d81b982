"""The drivers' option records, one per concern, passed whole from the CLI (or the Python API) down to
the file, streaming and Dask drivers.

>>> StreamOptions(chunk=256).chunk
(256,)
>>> OutputOptions(format="mrc").format
'mrc'
>>> InputOptions(rescale="auto", pixel_size="8nm").pixel_size
PixelSize(values=(8.0,), unit='nanometer')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emzoo.errors import UsageError
from emzoo.runtime.rescale import PixelSize, RescaleMode, check_rescale, parse_pixel_size


@dataclass(frozen=True)
class OutputOptions:
    """What is written and how."""

    format: str | None = None  # None: follows the input (mrc -> mrc, zarr -> ome-zarr, else tiff)
    overwrite: bool = False  # replace outputs that exist (otherwise their inputs are skipped)
    overlay: bool = False  # output kinds that draw (counting): also write an overlay PNG
    keep_axes: bool = False  # every axis the package declares but batch (default: a 1-channel axis dropped)
    preview: bool = False  # beside each float image output an 8-bit <output stem>.preview.png
    # None: each output as its package declares it (a denoiser's grey levels in float32); "input":
    # float image outputs in the first input's dtype (integers rounded and clipped to its range);
    # predicted in memory (the cast is not streamed)
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in (None, "input"):
            raise UsageError(f"{{dtype}} {self.dtype!r}: give input (the input's dtype) or leave it out")


@dataclass(frozen=True)
class InputOptions:
    """How each input is read and cut into samples."""

    slices: bool = False  # a 2D model on each z slice of a volume
    stack: bool = False  # each input is a folder of 2D slices, read as one volume
    # "auto": inputs whose pixel size differs from the training data's are resampled to it, their
    # outputs back (emzoo.runtime.rescale); "off": predicted as they are
    rescale: RescaleMode = "off"
    # the inputs' pixel size ("2.5nm", "4Å", a bare number: the model's unit): replaces the files' own
    pixel_size: PixelSize | str | float | None = None
    # an input out of distribution (emzoo.tasks.ood): "warn" in the summary, "skip" it (no output),
    # or "fail" (the run stops)
    ood: str = "warn"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rescale", check_rescale(self.rescale))
        object.__setattr__(self, "pixel_size", parse_pixel_size(self.pixel_size))
        if self.ood not in ("warn", "skip", "fail"):
            raise UsageError(f"{{ood}} {self.ood!r}: choose warn, skip or fail")


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

    def __post_init__(self) -> None:
        if self.output.dtype is not None and (self.stream.enabled or self.stream.client is not None):
            option = "{stream=True}" if self.stream.client is None else "{client}"
            raise UsageError(f"{{dtype={self.output.dtype}}} casts outputs in memory: leave out {option}")
        if self.inputs.rescale == "auto" and (self.stream.enabled or self.stream.client is not None):
            option = "{stream=True}" if self.stream.client is None else "{client}"
            raise UsageError(f"{{rescale=auto}} resamples in memory only: leave out {option}")
