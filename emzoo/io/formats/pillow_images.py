"""PNG and JPEG through Pillow (8- and 16-bit grayscale, RGB/RGBA). Float images are written to PNG
as 8-bit pictures (:mod:`emzoo.io.preview`); integers as they are.

These formats carry no trustworthy physical calibration (their dpi is a printing hint), so the
pixel size stays unknown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from emzoo.io.meta import Image, ImageMeta
from emzoo.io.registry import WRITTEN_BY, is_mark, register_reader, register_writer


@register_reader("png/jpeg", (".png", ".jpg", ".jpeg"))
def read_pillow(path: Path) -> Image:
    with PILImage.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        arr = np.asarray(im)
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() < 2**16:
        arr = arr.astype(np.uint16)  # Pillow widens 16-bit PNGs to int32
    axes = "yxc" if arr.ndim == 3 else "yx"
    fmt = "png" if path.suffix.lower() == ".png" else "jpeg"
    return Image(arr, ImageMeta(axes=axes, source=path, format=fmt))


def _marked(path: Path) -> bool:
    with PILImage.open(path) as im:
        return is_mark(im.info.get("Software"))


@register_writer("png", ".png", dtypes=("uint8", "uint16"), marked=_marked, pictures=True)
def write_png(path: Path, data, meta: ImageMeta) -> None:
    """8- or 16-bit PNG; a ``Software`` text chunk holds emzoo's mark (:mod:`emzoo.io.write`). Float
    images arrive here as 8-bit pictures (:func:`emzoo.io.write.write_image`)."""
    from PIL.PngImagePlugin import PngInfo

    arr = np.asarray(data)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG holds uint8 or uint16 only, not {arr.dtype}; write TIFF instead")
    info = PngInfo()
    info.add_text("Software", WRITTEN_BY)
    PILImage.fromarray(arr).save(path, format="PNG", pnginfo=info)
