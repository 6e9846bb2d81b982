"""The ``particle_counting`` use case: YOLO labels, density targets, crops, the split, evaluation and
a counting package (synthetic data always; the real STEM images when ../shared/data is there)."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.errors import InputError
from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, resolve_params
from tests.conftest import shared
from tests.train.usecases import sibling


@pytest.fixture(scope="module")
def uc():
    return get_usecase("particle_counting")


@pytest.fixture(scope="module")
def data(uc):
    return sibling(uc, "data")


@pytest.fixture(scope="module")
def params(uc):
    return resolve_params(load_param_file(uc.params_file), dict(uc.tiny_params))


@pytest.fixture(scope="module")
def tiny(uc, tmp_path_factory):
    return uc.make_tiny_data(tmp_path_factory.mktemp("particles"))


def test_yolo_boxes_in_pixels(data, tmp_path):
    label = tmp_path / "a.txt"
    label.write_text("0 0.5 0.25 0.1 0.2\n0 0.1 0.9 0 0\n")
    boxes = data.read_boxes(label, (200, 100))  # h, w
    assert boxes.centres.tolist() == [[49.5, 49.5], [179.5, 9.5]]  # pixel indices: pixel 0 spans 0..1
    assert boxes.sizes[0] == pytest.approx(np.sqrt(10 * 40)) and boxes.sizes[1] == data.MIN_BOX_PX
    label.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(InputError, match="5 numbers"):
        data.read_boxes(label, (10, 10))
    label.write_text("0 12 40 3 3\n")
    with pytest.raises(InputError, match="normalised"):
        data.read_boxes(label, (10, 10))


def test_each_blob_sums_to_one_and_crops_count_fractions(data):
    centres = np.array([[20.0, 20.0], [50.3, 70.8], [-0.5, 40.0]])  # the last on the top edge
    density = data.render_density((100, 100), centres, np.array([2.0, 4.0, 3.0]))
    assert density[:50].sum() + density[50:].sum() == pytest.approx(density.sum())
    assert density.sum() == pytest.approx(2.5, abs=0.02)  # the blob on the top edge is half inside
    assert density[10:30, 10:30].sum() == pytest.approx(1.0, abs=1e-3)
    assert np.unravel_index(np.argmax(density[:40]), (40, 100)) == (20, 20)


def test_check_data_names_the_problem(uc, data, tiny, tmp_path):
    uc.check_data(tiny)
    with pytest.raises(InputError, match="no 'images/' folder"):
        uc.check_data(tmp_path)
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    (broken / "labels").mkdir()
    for p in (tiny / "images").iterdir():
        (broken / "images" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="no label file for 8 of 8 images"):
        uc.check_data(broken)


def test_split_falls_back_to_a_seeded_split(uc, tiny, params):
    split = uc.split(tiny, params)
    assert sorted(n for names in split.values() for n in names) == sorted(
        p.name for p in (tiny / "images").iterdir()
    )
    assert len(split["test"]) == 1 and len(split["val"]) == 1 and split == uc.split(tiny, params)


def test_training_crops_are_reproducible_and_their_targets_count(uc, tiny, params):
    sets = uc.datasets(tiny, params)
    train = sets["train"]
    x, y = train[0]
    assert x.shape == y.shape == (1, params["crop_size"], params["crop_size"])
    assert np.array_equal(x.numpy(), train[0][0].numpy())
    train.set_epoch(3)
    assert not np.array_equal(x.numpy(), train[0][0].numpy())
    assert all(float(train[i][1].sum()) >= 0 for i in range(4))
    vx, vy = sets["val"][0]
    assert vx.shape[-1] == 64 and float(vy.sum()) > 2


def test_metrics_of_a_perfect_and_an_empty_map(uc, tiny, params):
    target = uc.datasets(tiny, params)["val"][0][1].numpy()
    perfect = uc.metrics(target, target)
    assert perfect["count_abs_error"] == 0 and perfect["f1"] == 1.0
    empty = uc.metrics(np.zeros_like(target), target)
    assert empty["count_rel_error"] == pytest.approx(1.0) and empty["f1"] == 0.0


def test_evaluate_scores_the_model_and_the_log_baseline(uc, data, tiny, params):
    """``predict`` returns the true density: counts are right, centres are found."""
    truth = {}
    for _, raw, boxes in data.load_raw(tiny, data.split(tiny)["test"]):
        truth[raw.tobytes()] = data.render_density(
            raw.shape, boxes.centres, data.blob_sigmas(boxes.sizes, params)
        )

    def predict(image):
        return {"density": truth[np.asarray(image[0]).tobytes()][None]}

    result = uc.evaluate(predict, tiny, params)
    assert result["dataset_role"] == "test" and result["sample_count"] == 1
    assert set(result["metrics"]) == {
        "count_mae",
        "count_rel_error",
        "precision",
        "recall",
        "f1",
        "peak_count_mae",
    }
    assert result["metrics"]["count_rel_error"] < 0.1 and result["metrics"]["recall"] > 0.5
    assert set(result["baseline"]["metrics"]) == {"count_mae", "count_rel_error", "precision", "recall", "f1"}
    assert result["baseline"]["name"].startswith("LoG blobs")
    assert all(len(k) <= 16 for k in result["metrics"])  # bioimage.io keeps metric names to 16 characters


def test_bright_field_detection(data):
    rng = np.random.default_rng(0)
    haadf = rng.normal(30, 5, (64, 64))
    haadf[20:30, 20:30] = 200
    assert not data.is_bright_field(haadf)
    assert data.is_bright_field(255 - haadf)


def package_counter(uc, tiny, params, output, evaluate=None):
    """An untrained counting network (seed 0) packaged with the use case's counting settings."""
    torch = pytest.importorskip("torch")
    from emzoo.package.spec import Tolerance
    from emzoo.packaging import BuildOptions, package_module

    torch.manual_seed(0)
    return package_module(
        uc.build_model(params).eval(),
        uc.packaging(params),
        uc.sample_input(tiny),
        output,
        architecture=uc.architecture(params),
        evaluate=evaluate,
        extra_config=uc.package_config(params),
        # an untrained network's density is ~1e-5: emzoo's default atol (1% of that maximum) trips
        # bioimageio.spec's "atol <= 1% of the test output's maximum" by float noise, so give a small one
        options=BuildOptions(
            test_size=64,
            test_with_bioimageio=False,
            weight_formats=("onnx", "torchscript"),
            reproducibility=Tolerance(atol=1e-9),
        ),
    )


def test_counting_package_counts(uc, tiny, params, tmp_path):
    """An untrained network packaged with the use case's counting settings: the runtime finds
    them in config.emzoo and counts with them; the package reproduces its test output."""
    pytest.importorskip("onnxruntime")
    from emzoo.checks.testing import reproduce
    from emzoo.package.load import open_model
    from emzoo.runtime.predictor import Predictor
    from emzoo.tasks import counting

    def evaluate(predict):
        return uc.evaluate(predict, tiny, params)

    output = package_counter(uc, tiny, params, tmp_path / "counter.zip", evaluate=evaluate)
    package = open_model(output)
    config = counting.counting_config(package)
    assert config == counting.CountingConfig.from_dict(uc.package_config(params)["counting"])
    assert reproduce(package, "onnx")[0]
    assert "count_mae" in package.spec.emzoo["evaluation"]["metrics"]
    from emzoo.io import read_image

    image = read_image(next((tiny / "images").iterdir()))
    result = counting.count_outputs(Predictor(package, device="cpu").predict(image), config)
    assert np.isfinite(result.count) and result.centres.shape[1] == 3


# -- the real STEM images -----------------------------------------------------------------------------


def test_documented_split_of_the_stem_images(uc, data):
    root = shared("stem_nanoparticles")
    split = uc.split(root, {})
    assert [len(split[k]) for k in ("train", "val", "test")] == [15, 4, 6]
    materials = {k: sorted(data.material(n) for n in v) for k, v in split.items()}
    assert materials["test"] == ["Cu", "Pd", "Pt", "PtCo", "PtW", "Ru"]
    assert set(materials["train"]) == set(materials["test"])
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))
    uc.check_data(root.parent)  # the parent folder is found too


def test_real_boxes_and_contrast(data):
    root = shared("stem_nanoparticles")
    bright_field = {i.name for i in data.items(root) if data.is_bright_field(data.read_gray(i.image))}
    assert bright_field == {
        f"{s}.jpg" for s in ("PtC1", "PtC2", "Pt_carbon1", "Pt_carbon2", "PtCo1", "PtCo3")
    }
    ((_, raw, boxes),) = data.load_raw(root, ["Cu4.jpg"])
    assert raw.shape == (640, 640) and raw.dtype == np.uint8 and len(boxes) == 39


def test_predict_cli_writes_counts_centres_and_overlays(uc, tiny, params, tmp_path):
    """``emzoo predict`` on a counting package: counts.csv (one row per image), centre points per
    image, overlays with --overlay; a re-run keeps the rows of skipped images."""
    import csv
    import math

    from click.testing import CliRunner

    from emzoo.cli import main

    package = package_counter(uc, tiny, params, tmp_path / "counter")
    images = sorted((tiny / "images").iterdir())
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", str(package), str(tiny / "images"), "-o", str(out), "--overlay", "-q"]
    )
    assert result.exit_code == 0, result.output
    with open(out / "counts.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == sorted(p.name for p in images)
    assert set(rows[0]) == {"file", "count"}  # one count column
    # an untrained density map may integrate to a negative count; the table must still be numbers
    assert all(math.isfinite(float(r["count"])) for r in rows)
    for image in images:
        assert (out / f"{image.stem}_centres.csv").read_text().startswith("y,x,score")
        assert (out / f"{image.stem}_overlay.png").is_file()
    result = CliRunner().invoke(main, ["predict", str(package), str(images[0]), "-o", str(out), "-q"])
    assert result.exit_code == 0 and "skipped: 1" in result.output
    with open(out / "counts.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows
