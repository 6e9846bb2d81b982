"""``emzoo explain MODEL INPUT... [-o OUT]``: Grad-CAM maps of an image-to-value package (needs torch)."""

from __future__ import annotations

from pathlib import Path

import click

from emzoo.cli.options import (
    device_option,
    output_dir_option,
    overwrite_option,
    trust_option,
    weights_option,
)
from emzoo.errors import UsageError


@click.command("explain")
@click.argument("model")
@click.argument("inputs", nargs=-1)
@output_dir_option(
    "explanations", "Folder for <stem>_gradcam.tif and <stem>_gradcam.png (keeps the inputs' sub-folders)."
)
@click.option(
    "--target", "output_id", default=None, help="Output to explain (default: the first value output)."
)
@click.option(
    "--channel",
    default=None,
    help="Channel name or index of that output to explain (default: the largest value, e.g. the "
    "predicted class).",
)
@click.option(
    "--layer", default=None, help="Feature map to compute Grad-CAM on (default: the last spatial one)."
)
@weights_option(
    help="pytorch_state_dict or torchscript (default: the first of these the package has; ONNX "
    "weights carry no gradients).",
)
@trust_option
@device_option
@overwrite_option("Replace existing outputs.")
def command(
    model, inputs, out_dir, output_id, channel, layer, weight_format, trust_package_code, device, overwrite
):
    """Explain what the image-to-value model MODEL (class scores, a count) looked at in each of INPUTS
    (files, folders, globs): a Grad-CAM map per image.

    The map (0..1, the image's size) shows which regions raised the explained value; it is written as
    a float32 TIFF and as a PNG over the image. Needs the package's PyTorch weights.

    \b
    emzoo explain classifier.zip image.tif -o explanations/
    emzoo explain counter.zip images/ --channel count --weights torchscript
    """
    if not inputs:
        raise UsageError("give at least one INPUT image (files, folders or globs) after the model")
    from emzoo.runtime.settings import DeviceSpec

    device = str(DeviceSpec.parse(device))  # checked before the package is opened
    from PIL import Image as PILImage

    from emzoo.atomic import atomic_path
    from emzoo.io import ImageMeta, expand_inputs, read_image, write_image
    from emzoo.package.load import open_model
    from emzoo.tasks.explain import Explainer, overlay_rgb

    package = open_model(model, trust_package_code=trust_package_code)
    explainer = Explainer(package, output=output_id, weight_format=weight_format, layer=layer, device=device)
    out = Path(out_dir)
    for item in expand_inputs(list(inputs)):
        base = out / item.relative.parent / Path(item.relative.name).stem
        tif, png = Path(f"{base}_gradcam.tif"), Path(f"{base}_gradcam.png")
        if not overwrite and tif.exists() and png.exists():
            click.echo(f"{item.path}: skipped ({tif.name} exists; --overwrite replaces it)", err=True)
            continue
        image = read_image(item.path)
        explanation = explainer.explain(image, channel=channel)
        meta = ImageMeta(
            axes="yx" if explanation.cam.ndim == 2 else "zyx", pixel_size=dict(image.meta.pixel_size)
        )
        write_image(tif, explanation.cam, meta, format="tiff")
        if explanation.cam.ndim == 2:
            grey = _grey(image)
            with atomic_path(png) as tmp:
                PILImage.fromarray(overlay_rgb(grey, explanation.cam)).save(tmp, format="PNG")
        click.echo(
            f"{item.path}: {explanation.output}[{explanation.target}] = {explanation.value:.4g}; Grad-CAM on "
            f"{explanation.layer} ({explanation.weight_format}) -> {tif}"
        )


def _grey(image) -> object:
    """The image as a 2D array for the overlay (channels averaged)."""
    import numpy as np

    a = np.asarray(image.data)
    axes = image.meta.axes
    if "c" in axes:
        a = a.astype(np.float32).mean(axis=axes.index("c"))
        axes = axes.replace("c", "")
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a
