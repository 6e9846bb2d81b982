"""The packaged zoo models: valid, self-reproducing (emzoo and bioimageio.core), and sensible on real
data they were not trained on."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from emzoo.cli import main
from tests.conftest import REPO, shared

ZOO = sorted(p.parent for p in (REPO / "zoo_models").glob("*/rdf.yaml"))


def zoo(name: str):
    path = REPO / "zoo_models" / name
    if not (path / "rdf.yaml").is_file():
        pytest.skip(f"zoo_models/{name} is not packaged yet")
    return path


@pytest.mark.parametrize("package", ZOO, ids=lambda p: p.name)
def test_zoo_package_validates_and_reproduces_itself(package):
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(package)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["test", str(package)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for fmt in ("onnx", "torchscript", "pytorch_state_dict"):  # every zoo model ships all three
        for check in ("bioimageio.core test_model", "reproduce test outputs (emzoo)"):
            assert any(check in line and fmt in line and " pass " in line for line in lines), (fmt, check)


@pytest.mark.parametrize("package", ZOO, ids=lambda p: p.name)
def test_zoo_package_carries_its_held_out_evaluation(package):
    from bioimageio.spec import load_model_description

    descr = load_model_description(package / "rdf.yaml", perform_io_checks=False)
    evaluation = descr.config.bioimageio.evaluations[0]  # the model's own; [1]: the OOD check's separation
    # a self-supervised model may be scored on the noisy images it trained on (never on their clean
    # targets): its role then says "train", as the card explains
    roles = ("test", "independent") + (("train",) if "self-supervised" in descr.tags else ())
    assert evaluation.dataset_role in roles and evaluation.sample_count >= 1
    assert len(evaluation.metrics) == len(evaluation.results) >= 2
    assert "baseline" in (evaluation.results_summary or "")
    card = (package / "README.md").read_text()
    assert "emzoo train" in card and "emzoo package" in card  # reproducible from documented commands


def test_membrane_model_asks_for_tta_and_reports_the_challenge_scores():
    """Issue 12: the membrane package runs with test-time augmentation by default, and its card and
    evaluations carry the ISBI challenge's V_rand and V_info with and without it (`emzoo evaluate`)."""
    import json

    from bioimageio.spec import load_model_description

    model = zoo("em-membrane-unet2d")
    descr = load_model_description(model / "rdf.yaml", perform_io_checks=False)
    assert descr.config.emzoo["tta"] is True
    evaluation = descr.config.bioimageio.evaluations[0]
    results = dict(zip(evaluation.metrics_long, (r[0] for r in evaluation.results), strict=True))
    for name in ("v_rand", "v_info", "v_rand_no_tta", "v_info_no_tta", "dice", "adapted_rand_error"):
        assert 0.0 < results[name] <= 1.0, name
    assert results["v_rand"] >= results["v_rand_no_tta"]  # measured: 0.932 vs 0.925
    baseline = json.loads((model / "evaluation.json").read_text())["baseline"]["metrics"]
    assert results["v_rand"] > baseline["v_rand"] and results["v_info"] > baseline["v_info"]


def test_membrane_model_on_the_30_unlabelled_slices(tmp_path):
    model = zoo("em-membrane-unet2d")
    unlabeled = shared("isbi2012_membranes", "unlabeled")
    labels = sorted(shared("isbi2012_membranes", "train", "label").glob("*.png"))
    result = CliRunner().invoke(main, ["predict", str(model), str(unlabeled), "-o", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    maps = sorted(tmp_path.glob("*_membrane_probability.tif"))
    assert len(maps) == 30
    from PIL import Image

    label_fraction = np.mean([np.mean(np.asarray(Image.open(p)) == 0) for p in labels])  # ~ membrane share
    for path in maps[::6]:  # a handful
        probability = tifffile.imread(path)
        assert probability.shape == (512, 512) and probability.dtype == np.float32
        assert probability.min() >= 0.0 and probability.max() <= 1.0
        fraction = float(np.mean(probability > 0.5))
        assert abs(fraction - label_fraction) < 0.1, (path.name, fraction, label_fraction)
        confident = np.mean((probability < 0.1) | (probability > 0.9))
        assert confident > 0.6, (path.name, confident)  # a segmentation, not a blur


def _labelled(labels, name: str, shape: tuple[int, int]) -> tuple[int, float]:
    """Number of YOLO boxes in ``name``'s label file and their median size (sqrt(w h), px)."""
    rows = [
        line.split() for line in (labels / f"{Path(name).stem}.txt").read_text().splitlines() if line.strip()
    ]
    sizes = [np.sqrt(float(r[3]) * shape[1] * float(r[4]) * shape[0]) for r in rows]
    return len(rows), float(np.median(sizes))


def test_particle_counter_counts_and_sizes_near_the_labels(tmp_path):
    """Four held-out test images (640 and 2048 px, HAADF and bright field): one count per image near
    the labelled one, diameters near the labelled box sizes, and every file the issue asks for."""
    model = zoo("em-particle-counter")
    images = shared("stem_nanoparticles", "images")
    labels = shared("stem_nanoparticles", "labels")
    names = ("Cu4.jpg", "PtCo1.jpg", "Ru2.jpg", "PtW2.jpg")  # held-out test images
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in names:
        shutil.copy(images / name, inputs / name)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(model), str(inputs), "-o", str(out), "--overlay", "-q"])
    assert result.exit_code == 0, result.output
    with open(out / "counts.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = {r["file"]: r for r in reader}
    assert reader.fieldnames == ["file", "count", "mean_diameter_px", "median_diameter_px"]  # one count
    errors, size_errors = [], []
    for name in names:
        shape = tifffile.imread(out / f"{Path(name).stem}_heat.tif").shape
        true, true_size = _labelled(labels, name, shape)
        errors.append(abs(float(rows[name]["count"]) - true) / true)
        size_errors.append(abs(float(rows[name]["median_diameter_px"]) - true_size) / true_size)
        with open(out / f"{Path(name).stem}_centres.csv", newline="") as f:
            centres = list(csv.DictReader(f))
        assert list(centres[0]) == ["y", "x", "diameter_px", "score"]
        assert len(centres) == float(rows[name]["count"])  # the count is the number of centres
        assert (out / f"{Path(name).stem}_overlay.png").is_file()
        assert (out / f"{Path(name).stem}_sizes.png").is_file()
    assert (out / "sizes.png").is_file()
    assert np.median(errors) < 0.25, errors
    assert max(size_errors) < 0.35, size_errors


def test_denoiser_runs_tiled_on_a_4096_micrograph_and_keeps_its_calibration(tmp_path):
    model = zoo("em-denoise-n2v")
    micrograph = shared("cryoem_micrographs", "epu2.9_example.mrc")
    result = CliRunner().invoke(main, ["predict", str(model), str(micrograph), "-o", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    from emzoo.io import read_image

    (out,) = tmp_path.glob("epu2.9_example_*.mrc")
    denoised = read_image(out)
    assert denoised.shape == (4096, 4096)
    assert denoised.meta.pixel_size["x"] == pytest.approx(0.6666, abs=1e-3)
