"""The baseline a careful user writes by hand: onnxruntime over 512 px blocks with a 32 px halo.

Reads a 2D uint8 TIFF, normalises it with the whole image's mean and std, runs the ONNX network on
blocks of ``--block`` px (``--halo`` px of context on each side, i.e. the same blocks as
``bioimageio predict --blockwise 52``), pastes the block centres, applies a sigmoid and writes a
float32 TIFF.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import tifffile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("image")
    ap.add_argument("output")
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--halo", type=int, default=32)
    args = ap.parse_args()

    image = tifffile.imread(args.image).astype(np.float32)
    image = (image - image.mean()) / (image.std() + 1e-6)
    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    h, w = image.shape
    block, halo = args.block, args.halo
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
    tifffile.imwrite(args.output, 1 / (1 + np.exp(-out)))


if __name__ == "__main__":
    main()
