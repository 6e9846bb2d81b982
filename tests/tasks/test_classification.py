"""The classification output kind (``emzoo.tasks.classification``): ``emzoo predict`` on a classifier
package with a PSI writes ``<stem>_class.csv`` and ``classes.csv`` with the verdicts, and says them in
its summary; run through the real CLI in a subprocess, on a tiny package and on the zoo package."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emzoo.tasks.classification import class_row
from emzoo.tasks.psi import Psi

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
ZOO = ROOT / "zoo_models" / "em-modality-classifier"
CLASSES = ("bright", "dark")


def _psi() -> Psi:
    """Node 0 sits near +4 on bright images and near -4 on dark ones; node 1 the other way round."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 300)
    sign = np.where(labels == 0, 1.0, -1.0)[:, None]
    logits = sign * np.array([[4.0, -4.0]]) + rng.normal(0, 0.3, (600, 2))
    return Psi.fit(logits, labels, CLASSES)


def test_a_row_holds_the_verdict_the_argmax_and_the_psi_per_class():
    psi = _psi()
    assert class_row("a.tif", np.array([4.0, -4.0]), psi)["class"] == "bright"
    row = class_row("b.tif", np.array([0.0, 0.0]), psi)  # neither node's own range: an outlier
    assert row["class"] == "unknown" and row["predicted"] == "bright" and row["probability"] == 0.5
    assert set(row) == {"file", "class", "predicted", "probability", "psi_bright", "psi_dark"}


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    """A two-class package whose logits are ``8 * (mean - 0.5)`` and its negative, with the PSI above."""
    torch = pytest.importorskip("torch", reason="building the package needs torch")
    from emzoo.packaging import BuildOptions, package_module
    from emzoo.packaging.info import PackagingInfo, TensorInfo

    class MeanLogits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(2, 3)) - 0.5
            return torch.cat([8 * m, -8 * m], dim=1)

    info = PackagingInfo(
        name="tiny classifier",
        description="bright or dark: for tests only",
        task="classification",
        inputs=(TensorInfo(id="raw", axes="cyx", channel_names=("raw",)),),
        outputs=(TensorInfo(id="logits", axes="c", channel_names=CLASSES),),
        authors=({"name": "emzoo tests"},),
        license="MIT",
        cite=({"text": "emzoo tests", "doi": "10.5281/zenodo.1"},),
        tags=("test",),
        pixel_size={},
        pixel_unit=None,
        training_data={
            "name": "synthetic",
            "source": "https://example.org",
            "license": "MIT",
            "split": "none",
        },
        intended_use="tests of the classification output kind",
        limitations="none that matter",
    )
    target = tmp_path_factory.mktemp("classifier") / "classifier.zip"
    sample = np.full((1, 64, 64), 0.9, np.float32)
    options = BuildOptions(test_with_bioimageio=False, weight_formats=("onnx", "torchscript"), test_size=64)
    extra = {"output_kind": "classification", "psi": _psi().to_dict()}
    return package_module(MeanLogits(), info, sample, target, extra_config=extra, options=options)


def _predict(model: Path, inputs: list[Path], out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "emzoo", "predict", str(model), *map(str, inputs), "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_writes_the_verdicts_per_image_and_per_run(tiny_classifier, tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for name, level in (("bright", 1.0), ("dark", 0.0), ("grey", 0.5)):
        tifffile.imwrite(images / f"{name}.tif", (level + rng.normal(0, 0.01, (80, 96))).astype(np.float32))
    out = tmp_path / "out"
    result = _predict(tiny_classifier, [images], out)
    table = {row["file"]: row for row in _rows(out / "classes.csv")}
    assert {k: v["class"] for k, v in table.items()} == {
        "bright.tif": "bright",
        "dark.tif": "dark",
        "grey.tif": "unknown",
    }
    assert list(table["grey.tif"]) == ["file", "class", "predicted", "probability", "psi_bright", "psi_dark"]
    assert float(table["bright.tif"]["psi_bright"]) > 0.9 and float(table["bright.tif"]["psi_dark"]) < 0.1
    (one,) = _rows(out / "dark_class.csv")
    assert one == table["dark.tif"]
    assert (out / "dark_logits.csv").is_file()  # the raw output, as for any value output
    assert "bright.tif: bright" in result.stdout and "grey.tif: unknown" in result.stdout
    assert "classes of 3 images" in result.stdout


def test_a_later_run_adds_its_rows_to_the_table(tiny_classifier, tmp_path):
    import tifffile

    out = tmp_path / "out"
    for name, level in (("a", 1.0), ("b", 0.0)):
        tifffile.imwrite(tmp_path / f"{name}.tif", np.full((64, 64), level, np.float32))
        _predict(tiny_classifier, [tmp_path / f"{name}.tif"], out)
    assert [(r["file"], r["class"]) for r in _rows(out / "classes.csv")] == [
        ("a.tif", "bright"),
        ("b.tif", "dark"),
    ]


def test_the_zoo_classifier_names_the_types_of_real_images(tmp_path):
    if not (ZOO / "rdf.yaml").is_file():
        pytest.skip(f"{ZOO} is not built")
    if not DATA.is_dir():
        pytest.skip(f"the shared data ({DATA}) is absent")
    inputs = {
        "25.png": (DATA / "isbi2012_membranes/unlabeled/25.png", "ssTEM"),
        "Ru2.jpg": (DATA / "stem_nanoparticles/images/Ru2.jpg", "HAADF_STEM"),
        "6_3.tif": (DATA / "noisy_tem/noisy_patches_7x7/6_3.tif", "noisy_TEM"),
    }
    out = tmp_path / "out"
    result = _predict(ZOO, [path for path, _ in inputs.values()], out)
    rows = {row["file"]: row for row in _rows(out / "classes.csv")}
    assert {name: rows[name]["predicted"] for name in inputs} == {name: c for name, (_, c) in inputs.items()}
    for name in inputs:
        assert rows[name]["class"] in (rows[name]["predicted"], "unsure", "unknown")
        assert f"{name}: {rows[name]['class']}" in result.stdout


def test_a_volume_slice_by_slice_gets_one_verdict_and_one_row_per_slice(tiny_classifier, tmp_path):
    import tifffile

    volume = np.stack([np.full((64, 64), level, np.float32) for level in (1.0, 0.0)])
    tifffile.imwrite(tmp_path / "stack.tif", volume, metadata={"axes": "ZYX"})
    out = tmp_path / "out"
    command = [sys.executable, "-m", "emzoo", "predict", str(tiny_classifier), str(tmp_path / "stack.tif")]
    result = subprocess.run(
        [*command, "--slices", "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = _rows(out / "classes.csv")
    # the mean of a bright and a dark slice's logits is in neither class's range
    assert row["file"] == "stack.tif" and row["class"] == "unknown"
    rows = _rows(out / "stack_class.csv")
    assert [(r["file"], r["class"]) for r in rows] == [
        ("stack.tif", "unknown"),
        ("stack.tif[z=0]", "bright"),
        ("stack.tif[z=1]", "dark"),
    ]
