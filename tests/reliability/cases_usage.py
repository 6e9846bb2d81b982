"""CLI usage mistakes: every option's impossible values for predict, test, validate, info, train,
package, evaluate and explain. Each is exit 2 (or, where marked, exit 1), one line, before any work."""

from __future__ import annotations

from tests.reliability import builders as b
from tests.reliability.cases_inputs import files, good
from tests.reliability.cases_outputs import no_outputs
from tests.reliability.harness import Case, Ctx, Result

IMAGE = files({"in/a.tif": good()})


def usage(
    id: str, what: str, args: tuple[str, ...], message: str, *, exit=2, area="A", setup=IMAGE, **kw
) -> Case:
    return Case(
        f"use-{id}",
        "usage",
        what,
        args,
        exit,
        message,
        setup=setup,
        check=kw.pop("check", no_outputs),
        area=area,
        **kw,
    )


def predict(*options: str, image: str = "in/a.tif", model: str = "{model2d}") -> tuple[str, ...]:
    return ("predict", model, image, *options, "-o", "out", "-q")


def no_test_ran(ctx: Ctx, result: Result) -> None:
    ctx.expect("reproduce" not in result.output, "tests ran before the refusal")


def train(*args: str) -> tuple[str, ...]:
    return ("train", *args)


def package_dir(ctx: Ctx) -> None:
    (ctx.dir / "run").mkdir()


_PREDICT = [
    (
        "predict-no-inputs",
        "predict without images",
        ("predict", "{model2d}", "-o", "out"),
        r"give the images",
    ),
    ("predict-no-model", "predict without arguments", ("predict",), r"Missing argument"),
    ("predict-unknown-option", "an unknown option", predict("--frobnicate"), r"No such option"),
    ("predict-tile-0", "--tile 0", predict("--tile", "0"), r"--tile"),
    ("predict-tile-negative", "--tile -5", predict("--tile", "-5"), r"--tile"),
    ("predict-tile-words", "--tile abc", predict("--tile", "abc"), r"--tile 'abc'"),
    ("predict-tile-off-grid", "--tile 101 (the model takes 52+4n)", predict("--tile", "101"), r"--tile"),
    ("predict-tile-below-min", "--tile 48 (below the model's 52)", predict("--tile", "48"), r"--tile"),
    ("predict-tile-three-sizes", "--tile 64,64,64 for a 2D model", predict("--tile", "64,64,64"), r"--tile"),
    ("predict-halo-negative", "--halo -5", predict("--halo", "-5"), r"--halo"),
    ("predict-blend-negative", "--blend -40", predict("--blend", "-40"), r"--blend"),
    ("predict-batch-0", "--batch-size 0", predict("--batch-size", "0"), r"--batch-size"),
    ("predict-device-banana", "--device banana", predict("--device", "banana"), r"--device"),
    (
        "predict-format-banana",
        "--output-format banana",
        predict("--output-format", "banana"),
        r"--output-format",
    ),
    ("predict-chunk-0", "--chunk-size 0", predict("--chunk-size", "0"), r"--chunk-size"),
    (
        "predict-input-no-equals",
        "--input raw (no =PATH)",
        ("predict", "{model2d}", "--input", "raw"),
        r"ID=PATH",
    ),
    (
        "predict-input-unknown-id",
        "--input nope=PATH for a model without input nope",
        ("predict", "{model2d}", "--input", "nope=in/a.tif"),
        r"no input 'nope'",
    ),
    (
        "predict-input-and-arguments",
        "--input and image arguments together",
        ("predict", "{model2d}", "in/a.tif", "--input", "raw=in/a.tif"),
        r"not both",
    ),
    ("predict-stack-file", "--stack on a file", predict("--stack"), r"--stack reads folders"),
    (
        "predict-slices-3d-model",
        "--slices with a 3D model",
        predict("--slices", model="{model3d}"),
        r"--slices",
    ),
]

CASES: list[Case] = [
    *(usage(i, f"predict: {w} is a usage error before any work", a, m) for i, w, a, m in _PREDICT),
    usage(
        "predict-weights-banana",
        "predict: --weights banana names the formats the package has",
        predict("--weights", "banana"),
        r"banana",
        exit=(1, 2),
    ),
    usage("test-no-models", "test without a package", ("test",), r"Missing argument", area="B"),
    usage(
        "test-junit-parent-is-file",
        "test --junit PATH below a file is refused before any test runs",
        ("test", "{model2d}", "--no-bioimageio", "--junit", "blocker/report.xml"),
        r"--junit",
        setup=lambda ctx: b.text(ctx.dir / "blocker"),
        check=no_test_ran,
        area="T",
    ),
    usage(
        "test-junit-is-folder",
        "test --junit FOLDER is refused before any test runs",
        ("test", "{model2d}", "--no-bioimageio", "--junit", "in"),
        r"--junit",
        check=no_test_ran,
        area="T",
    ),
    usage(
        "test-device-banana",
        "test --device banana is a usage error before any test runs",
        ("test", "{model2d}", "--no-bioimageio", "--device", "banana"),
        r"--device",
        check=no_test_ran,
        area="B",
    ),
    usage(
        "test-weights-banana",
        "test --weights banana names the formats the package has",
        ("test", "{model2d}", "--no-bioimageio", "--weights", "banana"),
        r"banana",
        exit=(1, 2),
        area="B",
    ),
    usage(
        "test-missing-package",
        "test on a missing package fails with one line",
        ("test", "nope.zip", "--no-bioimageio"),
        r"no such model package",
        exit=1,
        area="B",
    ),
    usage("validate-no-args", "validate without a package", ("validate",), r"Missing argument", area="B"),
    usage(
        "validate-missing",
        "validate on a missing package",
        ("validate", "nope.zip"),
        r"invalid",
        exit=1,
        area="B",
    ),
    usage("info-no-args", "info without a package", ("info",), r"Missing argument", area="B"),
    usage(
        "info-two-args",
        "info with two packages",
        ("info", "{model2d}", "{model3d}"),
        r"unexpected extra",
        area="B",
    ),
    usage(
        "info-missing",
        "info on a missing package",
        ("info", "nope.zip"),
        r"no such model package",
        exit=1,
        area="B",
    ),
    # train
    usage("train-no-usecase", "train without a use case", train(), r"name a use case", area="T"),
    usage(
        "train-unknown-usecase",
        "train an unknown use case",
        train("no_such_case", "--data", "in", "--out", "run"),
        r"no_such_case",
        area="T",
    ),
    usage(
        "train-no-out",
        "train without --out",
        train("membrane_segmentation", "--data", "in"),
        r"--out",
        area="T",
    ),
    usage(
        "train-no-data",
        "train without --data",
        train("membrane_segmentation", "--out", "run"),
        r"--data",
        area="T",
    ),
    usage(
        "train-data-missing",
        "train with a missing --data folder",
        train("membrane_segmentation", "--data", "nope", "--out", "run"),
        r"nope",
        area="T",
    ),
    *(
        usage(
            f"train-{name}",
            f"train {' '.join(args)}",
            train("membrane_segmentation", "--data", "in", "--out", "run", *args),
            message,
            area="T",
        )
        for name, args, message in (
            ("epochs-0", ("--epochs", "0"), r"--epochs"),
            ("epochs-words", ("--epochs", "abc"), r"--epochs"),
            ("set-unknown", ("--set", "nope=1"), r"nope"),
            ("set-lr-negative", ("--set", "lr=-1"), r"lr"),
            ("set-lr-words", ("--set", "lr=abc"), r"lr"),
            ("grid-unknown", ("--grid", "nope=1,2"), r"nope"),
            ("device-banana", ("--device", "banana"), r"--device"),
        )
    ),
    # package
    *(
        usage(
            f"package-{name}",
            f"package {' '.join(args)}",
            ("package", "run", *args),
            message,
            setup=package_dir,
            area="P",
        )
        for name, args, message in (
            ("test-size-0", ("--test-size", "0"), r"--test-size"),
            ("halo-negative", ("--halo", "-5"), r"--halo"),
            ("weights-banana", ("--weights", "banana"), r"--weights"),
            ("version-not-semver", ("--model-version", "banana"), r"--model-version|version"),
        )
    ),
    usage(
        "package-missing-run",
        "package a run folder that does not exist",
        ("package", "nope"),
        r"nope",
        setup=None,
        exit=(1, 2),
        area="P",
    ),
    usage(
        "package-run-is-file",
        "package a run folder that is a file",
        ("package", "blocker"),
        r"blocker",
        setup=lambda ctx: b.text(ctx.dir / "blocker"),
        area="P",
    ),
    # evaluate
    usage(
        "evaluate-missing-images",
        "evaluate with a missing image folder",
        ("evaluate", "{model2d}", "nope", "in", "--usecase", "membrane_segmentation"),
        r"nope",
        area="T",
    ),
    usage(
        "evaluate-labels-file",
        "evaluate with a file as the label folder",
        ("evaluate", "{model2d}", "in", "in/a.tif", "--usecase", "membrane_segmentation"),
        r"not a folder",
        area="T",
    ),
    usage(
        "evaluate-unknown-usecase",
        "evaluate --usecase of an unknown use case",
        ("evaluate", "{model2d}", "in", "in", "--usecase", "no_such_case"),
        r"no_such_case",
        area="T",
    ),
    usage(
        "evaluate-no-usecase",
        "evaluate a package that names no use case, without --usecase",
        ("evaluate", "{model2d}", "in", "in"),
        r"--usecase",
        area="T",
    ),
    usage(
        "evaluate-output-is-folder",
        "evaluate -o FOLDER",
        ("evaluate", "{model2d}", "in", "in", "--usecase", "membrane_segmentation", "-o", "in"),
        r"in",
        area="T",
    ),
    usage(
        "evaluate-output-parent-is-file",
        "evaluate -o below a file is refused before any work",
        ("evaluate", "{model2d}", "in", "in", "--usecase", "membrane_segmentation", "-o", "blocker/r.json"),
        r"blocker",
        setup=lambda ctx: (IMAGE(ctx), b.text(ctx.dir / "blocker")),
        area="T",
    ),
    # explain
    usage("explain-no-inputs", "explain without images", ("explain", "{model2d}"), r"INPUT", area="B"),
    usage(
        "explain-device-banana",
        "explain --device banana",
        ("explain", "{model2d}", "in/a.tif", "--device", "banana", "-o", "out"),
        r"--device",
        area="B",
    ),
    usage(
        "explain-missing-input",
        "explain a missing image",
        ("explain", "{model2d}", "in/nope.tif", "-o", "out"),
        r"nope\.tif|image-to-value",  # either usage error may come first
        area="B",
    ),
    usage(
        "explain-segmentation-model",
        "explain a model without value outputs: one line",
        ("explain", "{model2d}", "in/a.tif", "-o", "out"),
        r"(?i)value|explain|output",
        exit=(1, 2),
        area="B",
    ),
]
