"""Damaged and hostile model packages: zip bombs, path traversal, links in zips, bad hashes, missing
files, b.garbage weights, malicious pickles, package code without trust, YAML bombs."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.reliability import builders as b
from tests.reliability.cases_inputs import files, good
from tests.reliability.harness import Case, Ctx, Result

IMAGE = {"in/a.tif": good()}
TRUST = r"--trust-package-code"


def case(id: str, what: str, args: tuple[str, ...] = (), exit=0, message: str | None = None, **kw) -> Case:
    """A case of this table (packages; area B unless given)."""
    return Case(id, "packages", what, args, exit, message, **{"area": "B", **kw})


def package(resource: str = "model2d", then: Callable[[Path], object] | None = None):
    """A setup: the input image and a copy of the package (a folder ``pkg``), changed by ``then``."""

    def setup(ctx: Ctx) -> None:
        files(IMAGE)(ctx)
        source = ctx.res.get(resource)
        folder = ctx.dir / "pkg"
        if source.is_file():
            b.unzip(source, folder)
        else:
            b.copy_tree(source, folder)
        if then is not None:
            then(folder)

    return setup


def zipped(make: Callable[[Ctx, Path], object]):
    """A setup: the input image and ``pkg.zip`` made by ``make(ctx, tiny 2D zip)``."""

    def setup(ctx: Ctx) -> None:
        files(IMAGE)(ctx)
        make(ctx, ctx.res.get("model2d"))

    return setup


def predict_pkg(*args: str, model: str = "pkg") -> tuple[str, ...]:
    return ("predict", model, "in/a.tif", *args, "-o", "out", "-q")


def zip_with(*entries: tuple[zipfile.ZipInfo | str, bytes]):
    return lambda ctx, source: b.add_zip_entries(source, ctx.dir / "pkg.zip", list(entries))


def traversal(ctx: Ctx, source: Path) -> None:
    b.add_zip_entries(source, ctx.dir / "pkg.zip", [(f"../evil-{ctx.case.id}.txt", b"escaped")])


def absolute(ctx: Ctx, source: Path) -> None:
    b.add_zip_entries(source, ctx.dir / "pkg.zip", [(str(ctx.dir / "evil-absolute.txt"), b"escaped")])


def nothing_escaped(ctx: Ctx, result: Result) -> None:
    cache = Path(ctx.env["EMZOO_CACHE_DIR"])
    for p in (cache / "packages" / f"evil-{ctx.case.id}.txt", cache / f"evil-{ctx.case.id}.txt"):
        ctx.expect(not p.exists(), f"a zip entry escaped to {p}")
    ctx.expect(not (ctx.dir / "evil-absolute.txt").exists(), "an absolute zip entry was written")


def bomb(ctx: Ctx, source: Path) -> None:
    """64 MiB of zeros: a 64 KiB entry."""
    b.add_zip_entries(source, ctx.dir / "pkg.zip", [("bomb.bin", b"\0" * (64 * 2**20))])


def truncated_zip(ctx: Ctx, source: Path) -> None:
    target = ctx.dir / "pkg.zip"
    target.write_bytes(source.read_bytes())
    b.truncate(target, 0.6)


def declared_bomb(ctx: Ctx, source: Path) -> None:
    """Entries whose headers declare 3.9 GB each: 11.7 GB in all, above the 8 GiB default limit."""
    target = ctx.dir / "pkg.zip"
    names = [f"bomb{i}.bin" for i in range(3)]
    b.add_zip_entries(source, target, [(n, b"\0" * 1000) for n in names])
    for n in names:
        b.patch_zip_sizes(target, n, 3_900_000_000)


def lying_sizes(ctx: Ctx, source: Path) -> None:
    """An entry of 32 MB that its headers say is 100 bytes."""
    target = ctx.dir / "pkg.zip"
    b.add_zip_entries(source, target, [("notes.bin", b"\0" * (32 * 2**20))])
    b.patch_zip_sizes(target, "notes.bin", 100)


CASES: list[Case] = [
    case(
        "pkg-missing",
        "a missing package is one line",
        predict_pkg(model="nope.zip"),
        1,
        r"nope\.zip: no such model package",
        setup=files(IMAGE),
    ),
    case(
        "pkg-text-as-zip",
        "a text file named .zip is not a package",
        predict_pkg(model="pkg.zip"),
        1,
        r"not a model package",
        setup=lambda ctx: (files(IMAGE)(ctx), b.text(ctx.dir / "pkg.zip")),
    ),
    case(
        "pkg-empty-zip",
        "an empty zip has no description",
        predict_pkg(model="pkg.zip"),
        1,
        r"no rdf\.yaml",
        setup=lambda ctx: (files(IMAGE)(ctx), zipfile.ZipFile(ctx.dir / "pkg.zip", "w").close()),
    ),
    case(
        "pkg-truncated-zip",
        "a truncated zip is refused with one line",
        predict_pkg(model="pkg.zip"),
        1,
        r"pkg\.zip: .*(?i:not a model package|damaged|not a valid zip)",
        setup=zipped(truncated_zip),
    ),
    case(
        "pkg-bad-crc",
        "a zip entry with a bad CRC is refused as damaged",
        predict_pkg(model="pkg.zip"),
        1,
        r"(?i)damaged|crc",
        setup=zipped(lambda ctx, src: b.corrupt_zip_entry(src, ctx.dir / "pkg.zip", "weights.onnx")),
        area="A",
    ),
    case(
        "pkg-zip-bomb",
        "a zip that unpacks to more than EMZOO_MAX_PACKAGE_BYTES is refused",
        predict_pkg(model="pkg.zip"),
        1,
        r"more than the limit.*EMZOO_MAX_PACKAGE_BYTES",
        setup=zipped(bomb),
        env={"EMZOO_MAX_PACKAGE_BYTES": str(16 * 2**20)},
        area="A",
    ),
    case(
        "pkg-zip-bomb-declared",
        "a zip declaring 11.7 GB is refused before unpacking, under the default limit",
        predict_pkg(model="pkg.zip"),
        1,
        r"more than the limit",
        setup=zipped(declared_bomb),
        timeout=60,
        area="A",
    ),
    case(
        "pkg-zip-lying-sizes",
        "a zip entry larger than its headers say is refused",
        predict_pkg(model="pkg.zip"),
        1,
        r"(?i)damaged|crc|more than|limit",
        setup=zipped(lying_sizes),
        env={"EMZOO_MAX_PACKAGE_BYTES": str(16 * 2**20)},
        area="A",
    ),
    case(
        "pkg-zip-traversal",
        "a zip entry ../evil.txt is refused and nothing escapes",
        predict_pkg(model="pkg.zip"),
        1,
        r"unsafe zip entry",
        setup=zipped(traversal),
        check=nothing_escaped,
        area="A",
    ),
    case(
        "pkg-zip-absolute",
        "an absolute zip entry is refused and nothing is written there",
        predict_pkg(model="pkg.zip"),
        1,
        r"unsafe zip entry",
        setup=zipped(absolute),
        check=nothing_escaped,
        area="A",
    ),
    case(
        "pkg-zip-backslash",
        "a zip entry ..\\evil.txt is refused",
        predict_pkg(model="pkg.zip"),
        1,
        r"unsafe zip entry",
        setup=zipped(zip_with(("..\\evil.txt", b"escaped"))),
        area="A",
    ),
    case(
        "pkg-zip-drive",
        "a zip entry C:evil.txt is refused",
        predict_pkg(model="pkg.zip"),
        1,
        r"unsafe zip entry",
        setup=zipped(zip_with(("C:evil.txt", b"escaped"))),
        area="A",
    ),
    case(
        "pkg-zip-symlink",
        "a symbolic link in a zip is refused",
        predict_pkg(model="pkg.zip"),
        1,
        r"unsafe zip entry 'link' is a symbolic link",
        setup=zipped(zip_with((b.symlink_entry(), b"/etc/passwd"))),
        area="A",
    ),
    case(
        "pkg-bad-hash",
        "weights that do not match their sha256 are refused",
        predict_pkg(),
        1,
        r"(?i)(hash|sha256) mismatch (for|of)? ?\S*weights\.onnx",
        setup=package(then=b.flip_byte("weights.onnx")),
    ),
    case(
        "pkg-missing-weights",
        "a package without its weights file: one line",
        predict_pkg(),
        1,
        r"(?i)weights\.onnx",
        setup=package(then=lambda f: (f / "weights.onnx").unlink()),
    ),
    case(
        "pkg-garbage-onnx",
        "random bytes as ONNX weights (hash updated): one line",
        predict_pkg("--weights", "onnx"),
        1,
        r"(?i)onnx",
        setup=package(then=b.garbage("weights.onnx")),
        area="C",
    ),
    case(
        "pkg-pickle-torchscript",
        "a malicious pickle as TorchScript weights: refused, its code never runs",
        predict_pkg("--weights", "torchscript"),
        1,
        r"(?i)torchscript",
        setup=package(then=b.pickled_torchscript),
        marker=False,
    ),
    case(
        "pkg-pickle-state-dict",
        "a malicious pickle as state-dict weights of a trusted package: refused, never unpickled",
        predict_pkg("--weights", "pytorch_state_dict"),
        1,
        r"(?i)weights\.pt",
        setup=package("sd", then=b.pickled_weights),
        marker=False,
    ),
    case(
        "pkg-pickle-state-dict-test",
        "emzoo test (with bioimageio.core) on malicious state-dict weights: fails, never unpickled",
        ("test", "pkg", "--weights", "pytorch_state_dict"),
        1,
        r"FAIL",
        setup=package("sd", then=b.pickled_weights),
        marker=False,
        timeout=180,
    ),
    case(
        "pkg-pickle-test-tensor",
        "emzoo test on a package whose test input is a pickled object array: fails, never unpickled",
        ("test", "pkg", "--no-bioimageio"),
        1,
        r"FAIL",
        setup=package(then=b.pickled_test_tensor),
        marker=False,
    ),
    case(
        "pkg-pickle-test-tensor-core",
        "bioimageio.core's test on a pickled test input: fails, never unpickled",
        ("test", "pkg", "--weights", "onnx"),
        1,
        r"FAIL",
        setup=package(then=b.pickled_test_tensor),
        marker=False,
        timeout=180,
    ),
    case(
        "pkg-invalid-yaml",
        "an rdf.yaml that is not YAML: one line",
        predict_pkg(),
        1,
        r"not valid YAML",
        setup=package(then=b.write_rdf("name: [unclosed\n  : -")),
    ),
    case(
        "pkg-rdf-not-mapping",
        "an rdf.yaml holding a list: one line",
        predict_pkg(),
        1,
        r"not a YAML mapping",
        setup=package(then=b.write_rdf("- a\n- b\n")),
    ),
    case(
        "pkg-rdf-invalid",
        "an rdf.yaml that bioimageio.spec rejects: one line naming the field",
        predict_pkg(),
        1,
        r"not a valid bioimage\.io model package",
        setup=package(then=b.edit_rdf("min: 52", "min: -3")),
        area="C",
    ),
    case(
        "pkg-weights-outside",
        "weights whose source points outside the package are refused",
        predict_pkg(),
        1,
        r"(?i)outside|not a valid|weights",
        setup=package(then=b.edit_rdf("source: weights.onnx", "source: ../../../../../../etc/hostname")),
    ),
    case(
        "pkg-no-rdf",
        "a folder without a description: one line",
        predict_pkg(),
        1,
        r"no rdf\.yaml",
        setup=package(then=lambda f: (f / "rdf.yaml").unlink()),
    ),
    case(
        "pkg-yaml-alias-bomb-predict",
        "a billion-laughs rdf.yaml is refused at once by predict",
        predict_pkg(),
        1,
        r"(?i)alias|anchor",
        setup=package(then=b.alias_bomb),
        timeout=30,
    ),
    case(
        "pkg-yaml-alias-bomb-validate",
        "a billion-laughs rdf.yaml is refused at once by validate",
        ("validate", "pkg"),
        1,
        r"(?i)alias|anchor",
        setup=package(then=b.alias_bomb),
        timeout=30,
    ),
    case(
        "pkg-yaml-alias-bomb-test",
        "a billion-laughs rdf.yaml is refused at once by test",
        ("test", "pkg"),
        1,
        r"(?i)alias|anchor",
        setup=package(then=b.alias_bomb),
        timeout=30,
    ),
    case(
        "pkg-yaml-deep-nesting",
        "an rdf.yaml nested 100000 deep: one line, no RecursionError",
        predict_pkg(),
        1,
        r"(?i)yaml|nest|deep",
        setup=package(then=b.deep_nesting),
        timeout=30,
    ),
    case(
        "pkg-untrusted-predict",
        "predict with untrusted package code (state-dict weights) is refused; the code never runs",
        predict_pkg("--weights", "pytorch_state_dict"),
        1,
        TRUST,
        setup=package("evil"),
        marker=False,
    ),
    case(
        "pkg-untrusted-default-weights",
        "predict without --weights on an untrusted package runs its ONNX weights, not its code",
        predict_pkg(),
        0,
        r"done: 1",
        setup=package("evil"),
        marker=False,
    ),
    case(
        "pkg-untrusted-test-core",
        "emzoo test of untrusted state-dict weights: not run, bioimageio.core's test never reached",
        ("test", "pkg", "--weights", "pytorch_state_dict"),
        0,
        r"not run.*" + TRUST,
        setup=package("evil"),
        marker=False,
        timeout=180,
    ),
    case(
        "pkg-untrusted-test-all",
        "emzoo test of an untrusted package: ONNX checks pass, state-dict checks not run",
        ("test", "pkg", "--no-bioimageio"),
        0,
        r"not run",
        setup=package("evil"),
        marker=False,
    ),
    case(
        "pkg-untrusted-explain",
        "emzoo explain on an untrusted package does not run its code",
        ("explain", "pkg", "in/a.tif", "-o", "out"),
        (1, 2),
        r"(?i)trust-package-code|value|explain",
        setup=package("evil"),
        marker=False,
    ),
    case(
        "pkg-untrusted-info",
        "emzoo info on an untrusted package does not run its code",
        ("info", "pkg"),
        0,
        r"tiny sd",
        setup=package("evil"),
        marker=False,
    ),
    case(
        "pkg-untrusted-validate",
        "emzoo validate on an untrusted package does not run its code",
        ("validate", "pkg"),
        0,
        r"valid ",
        setup=package("evil"),
        marker=False,
    ),
    case(
        "pkg-trusted-flag",
        "positive control: --trust-package-code runs the package code (the marker appears)",
        predict_pkg("--weights", "pytorch_state_dict", "--trust-package-code"),
        0,
        r"done: 1",
        setup=package("evil"),
        marker=True,
    ),
    case(
        "pkg-trusted-env",
        "positive control: EMZOO_TRUST_PACKAGE_CODE=1 runs the package code",
        predict_pkg("--weights", "pytorch_state_dict"),
        0,
        r"done: 1",
        setup=package("evil"),
        env={"EMZOO_TRUST_PACKAGE_CODE": "1"},
        marker=True,
    ),
    case(
        "pkg-trusted-test",
        "positive control: emzoo test --trust-package-code reproduces the state-dict weights",
        ("test", "pkg", "--weights", "pytorch_state_dict", "--trust-package-code", "--no-bioimageio"),
        0,
        r"passed",
        setup=package("evil"),
        marker=True,
    ),
    case(
        "pkg-built-by-emzoo-trusted",
        "a package emzoo built runs its state-dict weights without the flag",
        predict_pkg("--weights", "pytorch_state_dict"),
        0,
        r"done: 1",
        setup=package("sd"),
    ),
    case(
        "pkg-test-bad-hash",
        "emzoo test on weights with a wrong sha256 fails with the mismatch",
        ("test", "pkg", "--no-bioimageio"),
        1,
        r"(?i)hash mismatch|sha256 mismatch",
        setup=package(then=b.flip_byte("weights.onnx")),
    ),
    case(
        "pkg-info-ok",
        "emzoo info on the tiny package describes it",
        ("info", "{model3d}"),
        0,
        r"tiny unet3d",
    ),
    case(
        "pkg-validate-invalid",
        "emzoo validate on an invalid package says invalid",
        ("validate", "pkg"),
        1,
        r"invalid +pkg",
        setup=package(then=b.edit_rdf("min: 52", "min: -3")),
    ),
]
