"""Bad and odd inputs to ``emzoo predict``: missing, empty, truncated, lying, wrong shapes, every dtype,
mixed folders, symlink loops, odd names, duplicate stems."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.reliability import builders as b
from tests.reliability.harness import Case, Ctx, Result

Writer = Callable[[Path], object]


def case(id: str, what: str, args: tuple[str, ...] = (), exit=0, message: str | None = None, **kw) -> Case:
    """A case of this table (inputs; area A unless given)."""
    return Case(id, "inputs", what, args, exit, message, **{"area": "A", **kw})


def files(specs: dict[str, Writer]) -> Callable[[Ctx], None]:
    """A setup writing each relative path with its writer."""

    def setup(ctx: Ctx) -> None:
        for rel, writer in specs.items():
            path = ctx.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            writer(path)

    return setup


def predict(*args: str, model: str = "{model2d}") -> tuple[str, ...]:
    return ("predict", model, *args, "-o", "out", "-q")


def good(shape=(64, 64), dtype=np.uint8) -> Writer:
    return lambda p: b.tif(p, b.noise(shape, dtype))


def then(writer: Writer, action: Callable[[Path], object]) -> Writer:
    def write(p: Path) -> None:
        writer(p)
        action(p)

    return write


def empty(p: Path) -> None:
    p.write_bytes(b"")


def outputs_exist(*names: str) -> Callable[[Ctx, Result], None]:
    def check(ctx: Ctx, result: Result) -> None:
        for name in names:
            ctx.expect((ctx.out / name).exists(), f"expected output {name} is missing")

    return check


def output_like_input(output: str, shape: tuple[int, ...]) -> Callable[[Ctx, Result], None]:
    """The output exists, has the input's spatial shape and finite values."""

    def check(ctx: Ctx, result: Result) -> None:
        from emzoo.io import read_image

        path = ctx.out / output
        if not path.exists():
            ctx.fail(f"expected output {output} is missing")
            return
        data = np.asarray(read_image(path).data)
        ctx.expect(data.shape[-len(shape) :] == shape, f"{output}: shape {data.shape}, input {shape}")
        ctx.expect(bool(np.isfinite(data).all()), f"{output}: non-finite values")

    return check


def symlink(target: str) -> Writer:
    return lambda p: os.symlink(target, p)


def _with(data: np.ndarray, value: float) -> np.ndarray:
    data = data.copy()
    data[5, 7] = value
    return data


def _dtype_cases() -> list[Case]:
    cases = []
    for dtype in (
        "uint8",
        "uint16",
        "uint32",
        "int8",
        "int16",
        "int32",
        "float16",
        "float32",
        "float64",
        "bool",
    ):
        cases.append(
            case(
                f"in-dtype-tif-{dtype}",
                f"a {dtype} TIFF is predicted; the output has its size and finite values",
                predict("in/a.tif"),
                0,
                r"done: 1, skipped: 0, failed: 0",
                setup=files({"in/a.tif": good(dtype=dtype)}),
                check=output_like_input("a_prob.tif", (64, 64)),
                area="A/C",
            )
        )
    for dtype in ("float64", "bool"):
        cases.append(
            case(
                f"in-dtype-npy-{dtype}",
                f"a {dtype} .npy array is predicted",
                predict("in/a.npy"),
                0,
                r"done: 1, skipped: 0, failed: 0",
                setup=files({"in/a.npy": lambda p, d=dtype: b.npy(p, b.noise((64, 64), d))}),
                check=output_like_input("a_prob.tif", (64, 64)),
                area="A/C",
            )
        )
    for dtype in ("int8", "float32"):
        cases.append(
            case(
                f"in-dtype-mrc-{dtype}",
                f"a {dtype} MRC image is predicted (MRC in, MRC out)",
                predict("in/a.mrc"),
                0,
                r"done: 1, skipped: 0, failed: 0",
                setup=files({"in/a.mrc": lambda p, d=dtype: b.mrc(p, b.noise((64, 64), d))}),
                check=output_like_input("a_prob.mrc", (64, 64)),
                area="A/C",
            )
        )
    return cases


def _bad_file_cases() -> list[Case]:
    """Zero-byte, truncated and text files under every image suffix: one failure line, exit 1."""
    makers = {
        "tif": good(),
        "png": lambda p: b.png(p, b.noise()),
        "jpg": lambda p: b.jpeg(p, b.noise()),
        "mrc": lambda p: b.mrc(p, b.noise((64, 64), np.float32)),
        "npy": lambda p: b.npy(p, b.noise()),
    }
    cases = []
    for suffix, maker in makers.items():
        name = f"a.{suffix}"
        for kind, writer in (
            ("zero-byte", empty),
            ("truncated", then(maker, lambda p: b.truncate(p, 0.4))),
            ("text", lambda p: b.text(p)),
        ):
            if kind == "zero-byte" and suffix in ("jpg", "npy"):
                continue
            cases.append(
                case(
                    f"in-{kind}-{suffix}",
                    f"a {kind} .{suffix} file fails alone with one line naming it",
                    predict(f"in/{name}"),
                    1,
                    rf"done: 0, skipped: 0, failed: 1.*failed in/a\.{suffix}: \S",
                    setup=files({f"in/{name}": writer}),
                )
            )
    cases.append(
        case(
            "in-truncated-tif-zlib",
            "a truncated zlib-compressed TIFF fails with one line",
            predict("in/a.tif"),
            1,
            r"failed: 1.*a\.tif: \S",
            setup=files(
                {"in/a.tif": then(lambda p: b.tif(p, b.noise((256, 256)), compression="zlib"), b.truncate)}
            ),
        )
    )
    return cases


GOOD = {"in/a.tif": good()}

CASES: list[Case] = [
    case(
        "in-missing-file",
        "a missing input file is a usage error naming it",
        predict("in/nope.tif"),
        2,
        r"nope\.tif: no such file",
    ),
    case(
        "in-empty-folder",
        "an empty input folder is a usage error",
        predict("in"),
        2,
        r"holds no image",
        setup=lambda ctx: ctx.inp.mkdir(),
    ),
    case(
        "in-only-hidden-and-unknown",
        "a folder of hidden images and non-images holds no input",
        predict("in"),
        2,
        r"holds no image",
        setup=files({"in/.a.tif": good(), "in/notes.txt": b.text}),
    ),
    case(
        "in-unknown-suffix",
        "a file emzoo cannot read fails with the known formats",
        predict("in/notes.txt"),
        1,
        r"notes\.txt: not an image format emzoo reads",
        setup=files({"in/notes.txt": b.text}),
    ),
    *_bad_file_cases(),
    case(
        "in-3d-to-2d-model",
        "a volume for a 2D model fails and suggests --slices",
        predict("in/v.tif"),
        1,
        r"3 dimensions.*--slices",
        setup=files({"in/v.tif": good((5, 64, 64))}),
        area="A/C",
    ),
    case(
        "in-2d-to-3d-model",
        "a 2D image for a 3D model fails with one line",
        predict("in/a.tif", model="{model3d}"),
        1,
        r"failed: 1.*a\.tif: \S",
        setup=files(GOOD),
        area="A/C",
    ),
    case(
        "in-rgb-to-1-channel",
        "an RGB image for a 1-channel model fails and says to convert it",
        predict("in/rgb.tif"),
        1,
        r"channel",
        setup=files({"in/rgb.tif": lambda p: b.tif(p, b.noise((64, 64, 3)), photometric="rgb")}),
        area="C",
    ),
    case(
        "in-4d-to-2d-model",
        "a 4D TIFF (time, z, y, x) for a 2D model fails with one line",
        predict("in/t.tif"),
        1,
        r"failed: 1.*t\.tif: \S",
        setup=files({"in/t.tif": lambda p: b.tif(p, b.noise((2, 3, 64, 64)), photometric="minisblack")}),
        area="A/C",
    ),
    case(
        "in-too-small-8px",
        "an 8x8 image (below the model's 52 px minimum) is padded and predicted at its size",
        predict("in/a.tif"),
        0,
        r"done: 1",
        setup=files({"in/a.tif": good((8, 8))}),
        check=output_like_input("a_prob.tif", (8, 8)),
        area="C",
    ),
    case(
        "in-too-small-1px",
        "a 1x1 image is predicted (with the constant-image warning)",
        predict("in/a.tif"),
        0,
        r"done: 1.*constant",
        setup=files({"in/a.tif": good((1, 1))}),
        check=output_like_input("a_prob.tif", (1, 1)),
        area="C",
    ),
    case(
        "in-thin-3x300",
        "a 3x300 strip is predicted at its size",
        predict("in/a.tif"),
        0,
        r"done: 1",
        setup=files({"in/a.tif": good((3, 300))}),
        check=output_like_input("a_prob.tif", (3, 300)),
        area="C",
    ),
    case(
        "in-constant",
        "a constant image is predicted, with a warning",
        predict("in/a.tif"),
        0,
        r"constant",
        setup=files({"in/a.tif": lambda p: b.tif(p, np.full((64, 64), 7, np.uint8))}),
        check=output_like_input("a_prob.tif", (64, 64)),
        area="C",
    ),
    case(
        "in-huge-claimed-tif",
        "a TIFF claiming 100000x100000 px over 64 bytes fails quickly with one line",
        predict("in/a.tif"),
        1,
        r"failed: 1.*a\.tif: \S",
        setup=files({"in/a.tif": lambda p: b.tiff_claiming(p, 100_000, 100_000)}),
        timeout=60,
    ),
    case(
        "in-huge-claimed-tif-4g",
        "a TIFF claiming 4294967295 x 4294967295 px fails quickly with one line",
        predict("in/a.tif"),
        1,
        r"failed: 1.*a\.tif: \S",
        setup=files({"in/a.tif": lambda p: b.tiff_claiming(p, 2**32 - 1, 2**32 - 1)}),
        timeout=60,
    ),
    case(
        "in-huge-claimed-png",
        "a PNG claiming 100000x100000 px fails quickly with one line",
        predict("in/a.png"),
        1,
        r"failed: 1.*a\.png: \S",
        setup=files({"in/a.png": lambda p: b.png_claiming(p, 100_000, 100_000)}),
        timeout=60,
    ),
    case(
        "in-huge-claimed-npy",
        "an .npy claiming (100000, 100000) over 16 bytes fails with one line",
        predict("in/a.npy"),
        1,
        r"failed: 1.*a\.npy: \S",
        setup=files({"in/a.npy": lambda p: b.npy_claiming(p, (100_000, 100_000))}),
        timeout=60,
    ),
    case(
        "in-huge-claimed-mrc",
        "an MRC header claiming 50000x50000 px over 64 bytes fails: truncated",
        predict("in/a.mrc"),
        1,
        r"a\.mrc: .*(?i:smaller than its header|truncated)",
        setup=files({"in/a.mrc": lambda p: b.mrc_claiming(p, 50_000, 50_000, 1)}),
        timeout=60,
    ),
    case(
        "in-overflow-mrc",
        "an MRC header whose size product overflows 64 bits fails with one line, no crash",
        predict("in/a.mrc"),
        1,
        r"failed: 1.*a\.mrc: .*(?i:header|truncated|too large|corrupt)",
        setup=files({"in/a.mrc": lambda p: b.mrc_claiming(p, 2**31 - 1, 2**31 - 1, 2**31 - 1)}),
        timeout=60,
    ),
    case(
        "in-negative-mrc",
        "an MRC header with a negative size fails with one line",
        predict("in/a.mrc"),
        1,
        r"failed: 1.*a\.mrc: .*(?i:header|negative|corrupt)",
        setup=files({"in/a.mrc": lambda p: b.mrc_claiming(p, -5, 64, 1)}),
    ),
    case(
        "in-mrc-bad-mode",
        "an MRC file with an unknown data mode fails and lists the known modes",
        predict("in/a.mrc"),
        1,
        r"a\.mrc: .*mode",
        setup=files({"in/a.mrc": lambda p: b.patch(b.mrc(p, b.noise((64, 64), np.float32)), 12, "<i", 99)}),
    ),
    case(
        "in-npy-pickle",
        "an .npy object array (a pickle payload) is refused without unpickling it",
        predict("in/a.npy"),
        1,
        r"failed: 1.*a\.npy: \S",
        setup=files(
            {"in/a.npy": lambda p: b.npy(p, np.array([b.Payload()], dtype=object), allow_pickle=True)}
        ),
        marker=False,
    ),
    case(
        "in-nan",
        "a float image with NaN pixels is refused with a line that says so",
        predict("in/a.tif"),
        1,
        r"a\.tif: .*(?i:nan|non-finite|not finite)",
        setup=files({"in/a.tif": lambda p: b.tif(p, _with(b.noise((64, 64), np.float32), np.nan))}),
    ),
    case(
        "in-inf",
        "a float image with an infinite pixel is refused with a line that says so",
        predict("in/a.tif"),
        1,
        r"a\.tif: .*(?i:inf|non-finite|not finite)",
        setup=files({"in/a.tif": lambda p: b.tif(p, _with(b.noise((64, 64), np.float32), np.inf))}),
    ),
    *_dtype_cases(),
    case(
        "in-png-16bit",
        "a 16-bit PNG is predicted",
        predict("in/a.png"),
        0,
        r"done: 1",
        setup=files({"in/a.png": lambda p: b.png(p, b.noise((64, 64), np.uint16))}),
        check=output_like_input("a_prob.tif", (64, 64)),
    ),
    case(
        "in-jpeg",
        "a JPEG is predicted",
        predict("in/a.jpg"),
        0,
        r"done: 1",
        setup=files({"in/a.jpg": lambda p: b.jpeg(p, b.noise())}),
        check=output_like_input("a_prob.tif", (64, 64)),
    ),
    case(
        "in-volume-3d-model",
        "a 32^3 volume is predicted by the 3D model",
        predict("in/v.tif", model="{model3d}"),
        0,
        r"done: 1",
        setup=files({"in/v.tif": good((32, 32, 32))}),
        check=output_like_input("v_prob.tif", (32, 32, 32)),
        area="C",
    ),
    case(
        "in-slices",
        "--slices runs the 2D model on each slice of a volume",
        ("predict", "{model2d}", "in/v.tif", "--slices", "-o", "out", "-q"),
        0,
        r"done: 1",
        setup=files({"in/v.tif": good((5, 64, 64))}),
        check=output_like_input("v_prob.tif", (5, 64, 64)),
    ),
    case(
        "in-stack",
        "--stack reads a folder of slices as one volume for the 3D model",
        ("predict", "{model3d}", "in/stack", "--stack", "-o", "out", "-q"),
        0,
        r"done: 1",
        setup=files({f"in/stack/{i:02d}.tif": good((32, 32)) for i in range(8)}),
        check=output_like_input("stack_prob.tif", (8, 32, 32)),
    ),
    case(
        "in-stack-mixed-sizes",
        "--stack with slices of different sizes fails with one line",
        ("predict", "{model3d}", "in/stack", "--stack", "-o", "out", "-q"),
        1,
        r"failed: 1.*stack: \S",
        setup=files({"in/stack/1.tif": good((32, 32)), "in/stack/2.tif": good((40, 32))}),
    ),
]
