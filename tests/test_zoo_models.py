"""The packaged zoo models: valid, self-reproducing (emzoo and bioimageio.core), and sensible on real
data they were not trained on."""

from __future__ import annotations

import csv

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


def test_particle_counter_counts_near_the_labels(tmp_path):
    model = zoo("em-particle-counter")
    images = shared("stem_nanoparticles", "images")
    labels = shared("stem_nanoparticles", "labels")
    result = CliRunner().invoke(main, ["predict", str(model), str(images), "-o", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "counts.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert len(rows) == len(list(images.iterdir()))
    assert all(float(r["count"]) > 0 for r in rows.values())
    errors = []
    for name in ("Cu4.jpg", "PtCo1.jpg", "Ru2.jpg", "PtW2.jpg"):  # held-out test images
        true = sum(
            1 for line in (labels / name.replace(".jpg", ".txt")).read_text().splitlines() if line.strip()
        )
        errors.append(abs(float(rows[name]["count"]) - true) / true)
    assert np.median(errors) < 0.5, errors
    assert (tmp_path / "Cu4_centres.csv").read_text().startswith("y,x,score")


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
