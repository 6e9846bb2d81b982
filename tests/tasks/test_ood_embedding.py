"""The network's own features in the out-of-distribution check (emzoo.tasks.ood.embedding): cutting a
package's ONNX network at its last pooling step, the cells of an embedding, the leave-one-image-out
threshold, and a calibrated package whose predictions report the network-feature score."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml
from scipy import ndimage

from emzoo.io.meta import Image, ImageMeta
from emzoo.tasks.ood.embedding import (
    FROM_PREDICTION,
    GRID,
    MODEL_FILE,
    REFERENCE_FILE,
    Embedder,
    cells,
    crops,
    cut_network,
    distance,
    fit_reference,
)
from tests.conftest import REPO

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def tissue(rng, shape=(256, 256)):
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    return (100 + 30 * smooth / smooth.std() + rng.normal(0, 5, shape)).astype(np.float32)


def onnx_of(package, tmp_path):
    with zipfile.ZipFile(package) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        name = rdf["weights"]["onnx"]["source"]
        z.extract(name, tmp_path)
    return tmp_path / name


def test_cut_network_ends_at_the_input_of_the_last_pool(tiny_unet2d, predictor2d, tmp_path):
    import onnx

    source = onnx_of(tiny_unet2d, tmp_path)
    pools = [n for n in onnx.load(str(source)).graph.node if n.op_type == "MaxPool"]
    node = cut_network(source, tmp_path / MODEL_FILE)
    assert node == pools[-1].input[0]
    cut = onnx.load(str(tmp_path / MODEL_FILE))
    assert [o.name for o in cut.graph.output] == [node]
    assert not [n for n in cut.graph.node if n.op_type in ("Resize", "ConvTranspose")]  # no decoder
    found = Embedder(tmp_path / MODEL_FILE).embed(predictor2d.spec, tissue(np.random.default_rng(0)))
    assert found.shape[0] == GRID * GRID and found.shape[1] % 2 == 0
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0)


def test_cells_cover_only_the_unpadded_image():
    activations = np.zeros((1, 3, 8, 8))
    activations[0, :, :4, :4] = 1.0  # the image's part; the rest is padding
    activations[0, 1, :2, :2] = 5.0
    found = cells(activations, valid=(32, 32), padded=(64, 64))
    assert found.shape == (4, 6)
    assert not np.allclose(found[0], found[3])  # the top-left cell differs from the bottom-right


def test_threshold_is_four_spacings_and_a_stranger_is_far():
    rng = np.random.default_rng(1)
    base = rng.normal(size=16) + 4
    images = [base + rng.normal(0, 0.2, (4, 16)) for _ in range(6)]
    fit = fit_reference(images)
    assert fit.threshold == pytest.approx(4 * fit.spacing)
    assert distance(fit.vectors, images[2], fit.owners, exclude=2) <= fit.threshold
    stranger = rng.normal(size=(4, 16)) * 5
    assert distance(fit.vectors, stranger) > fit.threshold


def test_a_training_image_gives_a_grid_of_crops():
    image = Image(np.zeros((1200, 900)), ImageMeta(axes="yx"))
    planes = crops(image, 3)
    assert len(planes) == 9 and all(p.shape == (512, 512) for p in planes)
    assert len(crops(Image(np.zeros((300, 300)), ImageMeta(axes="yx")), 3)) == 1


def test_calibrated_package_records_network_features_and_predict_reports_them(
    tiny_unet2d, predictor2d, tmp_path
):
    from emzoo.tasks.ood.calibrate import calibrate
    from emzoo.tasks.ood.package import write_calibrated

    rng = np.random.default_rng(2)
    ref = [(f"ref{k}", Image(tissue(rng), ImageMeta(axes="yx"))) for k in range(5)]
    held = [(f"held{k}", Image(tissue(rng), ImageMeta(axes="yx"))) for k in range(2)]
    noise = [("noise", Image(rng.normal(100, 30, (256, 256)).astype(np.float32), ImageMeta(axes="yx")))]
    result = calibrate(predictor2d, ref, held, {"noise": noise})
    assert result.embedding is not None and len(result.embedding.fit.vectors) == 5 * GRID * GRID
    assert all(s.embedding_score is not None for s in [*result.held_out, *result.others["noise"]])
    out = write_calibrated(tiny_unet2d, tmp_path / "calibrated.zip", result)
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        entry = yaml.safe_load(z.read("rdf.yaml"))["config"]["emzoo"]["ood"]["embedding"]
    assert {MODEL_FILE, REFERENCE_FILE} <= names
    assert entry["threshold"] == pytest.approx(result.embedding.fit.threshold, rel=1e-4)
    assert entry["read"] == FROM_PREDICTION  # the cells were read during the calibration's predictions
    image = tmp_path / "tissue.tif"
    import tifffile

    big = tissue(rng, (700, 640))  # larger than the crop: read during the prediction, it differs
    tifffile.imwrite(image, big)
    from emzoo.runtime.predictor import Predictor
    from emzoo.tasks.ood import Check

    predictor = Predictor(out, device="cpu")
    check = Check(
        predictor.spec.emzoo, Image(big, ImageMeta(axes="yx")), predictor.spec, predictor.package, predictor
    )
    during = check.verdict(predictor.predict(Image(big, ImageMeta(axes="yx")))).embedding_score
    alone = Check(predictor.spec.emzoo, Image(big, ImageMeta(axes="yx")), predictor.spec, predictor.package)
    assert check.tapped is not None and alone.tapped is None
    assert during is not None and abs(during - alone.embedding_score) > 1e-6
    done = subprocess.run(
        [sys.executable, "-m", "emzoo", "predict", str(out), str(image), "-o", str(tmp_path / "p"), "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (record,) = (tmp_path / "p").glob("*.provenance.json")
    ood = json.loads(record.read_text())["ood"]
    assert ood["embedding_threshold"] == pytest.approx(entry["threshold"], rel=1e-3)
    assert ood["embedding_score"] == pytest.approx(during, abs=1e-4)  # emzoo predict reads it as it runs


def test_held_out_acquisitions_loosen_thresholds_set_by_near_duplicate_training_images(predictor2d):
    """Adjacent slices of one volume as the only training images: their spacing is tiny, so alone it
    would call every new acquisition of the same tissue unusual. With held-out images the thresholds
    cover them, the false-warning rate is measured cross-fitted, and white noise stays out."""
    from emzoo.tasks.ood.calibrate import calibrate

    rng = np.random.default_rng(5)
    base = tissue(rng)
    ref = [
        (f"slice{k}", Image(base + rng.normal(0, 1, base.shape).astype(np.float32), ImageMeta(axes="yx")))
        for k in range(5)
    ]
    held = [(f"new{k}", Image(tissue(rng), ImageMeta(axes="yx"))) for k in range(8)]
    noise = [("noise", Image(rng.normal(100, 30, (256, 256)).astype(np.float32), ImageMeta(axes="yx")))]
    plain = calibrate(predictor2d, ref, [], {"noise": noise})
    result = calibrate(predictor2d, ref, held, {"noise": noise})
    assert result.cross_fitted is not None and result.false_warning_rate() == result.cross_fitted
    assert result.stats.threshold > plain.stats.threshold  # the rule alone: too tight for new images
    assert result.embedding.fit.threshold >= plain.embedding.fit.threshold
    assert np.mean([plain.ratio(s) > 1 for s in result.held_out]) >= 0.5
    assert result.false_warning_rate() <= 0.25
    assert result.separation()["noise"]["flagged"] == 1.0
