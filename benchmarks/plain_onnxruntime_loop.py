"""The baseline a careful user writes by hand: onnxruntime over square blocks with a halo.

Usage: python plain_onnxruntime_loop.py MODEL.onnx INPUT OUTPUT [--block 512] [--halo 32]

INPUT is a 2D TIFF (OUTPUT: a TIFF file) or a folder of them (OUTPUT: a folder, one ``<name>.tif``
per input). Each image is normalised with its own mean and std (the membrane model's
``zero_mean_unit_variance``), the ONNX network runs on blocks of ``--block`` px with ``--halo`` px of
context on each side (one session for all images), the block centres are pasted, a sigmoid applied
and a float32 TIFF written. What emzoo adds (statistics records, checks, progress, atomic writes,
metadata) is left out on purpose: this is the floor emzoo is measured against.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tifffile


def predict(session: ort.InferenceSession, image: np.ndarray, block: int, halo: int) -> np.ndarray:
    """Sigmoid of the network's output over ``block`` px blocks with ``halo`` px of context."""
    image = image.astype(np.float32)
    image = (image - image.mean()) / (image.std() + 1e-6)
    name = session.get_inputs()[0].name
    h, w = image.shape
    block = min(block, h, w)
    halo = min(halo, (block - 1) // 2)
    inner = block - 2 * halo
    out = np.zeros((h, w), np.float32)
    for y in range(0, h, inner):
        for x in range(0, w, inner):
            y0 = min(max(y - halo, 0), h - block)
            x0 = min(max(x - halo, 0), w - block)
            tile = image[y0 : y0 + block, x0 : x0 + block][None, None]
            pred = session.run(None, {name: tile})[0][0, 0]
            ys, xs = y - y0, x - x0
            out[y : y + inner, x : x + inner] = pred[ys : ys + min(inner, h - y), xs : xs + min(inner, w - x)]
    return 1 / (1 + np.exp(-out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--halo", type=int, default=32)
    args = ap.parse_args()

    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    source, target = Path(args.input), Path(args.output)
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        pairs = [(f, target / f"{f.stem}.tif") for f in sorted(source.glob("*.tif"))]
    else:
        pairs = [(source, target)]
    for image, output in pairs:
        tifffile.imwrite(output, predict(session, tifffile.imread(image), args.block, args.halo))


if __name__ == "__main__":
    main()
