"""``emzoo calibrate MODEL IMAGES... -o NEW_MODEL``: record the out-of-distribution statistics of a
package from in-distribution images (:mod:`emzoo.tasks.ood.calibrate`)."""

from __future__ import annotations

import shlex
import sys

import click

from emzoo.cli.options import device_option, overwrite_option, quiet_option, trust_option, weights_option


def _command_line(model, images, held_out, others, output, overwrite: bool) -> str:
    """The command as a reader can run it again (for the card)."""
    words = ["emzoo", "calibrate", model, *images]
    for h in held_out:
        words += ["--held-out", h]
    for o in others:
        words += ["--other", o]
    return shlex.join([*words, "-o", output, *(["--overwrite"] if overwrite else [])])


@click.command("calibrate")
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="NEW_MODEL",
    help="The calibrated package to write: a .zip, or a folder for other names (the original is left "
    "as it is unless this is it and --overwrite is given).",
)
@click.option(
    "--held-out",
    multiple=True,
    metavar="IMAGES",
    help="In-distribution images not among IMAGES (files, folders, globs; repeatable), e.g. the "
    "validation and test images: the false-warning rate is measured on them. From 8 of them on they "
    "also loosen a threshold that near-duplicate IMAGES (adjacent slices) set too tight, never tighten "
    "it, and the rate is measured cross-fitted (each half against the other half's thresholds).",
)
@click.option(
    "--other",
    "others",
    multiple=True,
    metavar="TYPE=IMAGES",
    help="Images of another type that the check should flag (repeatable, e.g. SEM=sem/): the AUROC "
    "per type goes into the card and config.bioimageio.evaluations.",
)
@weights_option()
@trust_option
@device_option
@overwrite_option("Replace NEW_MODEL when it exists (also MODEL itself, to calibrate it in place).")
@quiet_option
def command(
    model, images, output, held_out, others, weight_format, trust_package_code, device, overwrite, quiet
):
    """Record how the in-distribution IMAGES (files, folders, globs; usually the training images)
    look to the package MODEL, so that `emzoo predict` can tell inputs unlike them.

    Every image is predicted with MODEL; the features of the images and of the outputs, and a
    threshold calibrated on them (4 x their median leave-one-out score, or where larger 1.1 x the
    99th percentile of the --held-out images' scores), go to config.emzoo.ood of
    NEW_MODEL, with the false-warning rate on --held-out images, the separation from --other image
    types (also in config.bioimageio.evaluations) and a section in its card. A volume given to a 2D
    model counts as 11 of its slices.
    """
    from emzoo.runtime.predictor import Predictor
    from emzoo.tasks.ood.calibrate import calibrate, parse_other, read_images, separation_rows
    from emzoo.tasks.ood.embedding import FROM_PREDICTION
    from emzoo.tasks.ood.package import write_calibrated

    typed: dict[str, list[str]] = {}
    for text in others:
        kind, where = parse_other(text)
        typed.setdefault(kind, []).append(where)
    predictor = Predictor(
        model, weight_format=weight_format, trust_package_code=trust_package_code, device=device
    )
    spatial = sum(a.is_spatial for a in predictor.spec.inputs[0].axes)
    reference = read_images(images, spatial=spatial)
    held = read_images(held_out, spatial=spatial) if held_out else []
    other_images = {kind: read_images(where, spatial=spatial) for kind, where in typed.items()}

    def tell(stage: str) -> None:
        if not quiet:
            click.echo(f"  {stage}", err=True)

    result = calibrate(predictor, reference, held, other_images, progress=tell)
    write_calibrated(
        model,
        output,
        result,
        command=_command_line(model, images, held_out, others, output, overwrite),
        overwrite=overwrite,
    )
    s = result.stats
    click.echo(
        f"reference images: {len(result.reference)}, held-out: {len(result.held_out)}; threshold "
        f"{s.threshold:.3g} (image features alone {s.threshold_image:.3g})"
    )
    if result.embedding is not None:
        e = result.embedding
        read = e.read == FROM_PREDICTION
        how_read = "read during the predictions" if read else "crops through the cut network"
        click.echo(
            f"network features: {len(e.fit.vectors)} training cells from {e.node}, {how_read}; "
            f"threshold {e.fit.threshold:.3g}"
        )
    else:
        click.echo("network features: none (they need ONNX weights with a pooling step and onnx installed)")
    rate = result.false_warning_rate()
    if rate is not None:
        fitted = result.cross_fitted is not None
        how = " (cross-fitted: they loosened the thresholds where needed)" if fitted else ""
        click.echo(f"false warnings on the held-out images: {rate:.1%}{how}")
    for row in separation_rows(result):
        auroc, flagged = row["auroc"], row["flagged"]
        click.echo(f"  {row['type']:<16} {row['images']:>4} images  AUROC {auroc:.3f}  flagged {flagged:.0%}")
    click.echo(f"wrote {output}", err=True)
    sys.stdout.flush()
