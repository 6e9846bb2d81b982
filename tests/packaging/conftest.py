"""Fixtures of the packaging tests: a briefly trained small U-Net, a small image-to-value network,
their metadata, a real (or, without ../shared/data, synthetic) EM sample, and their packages, built
once per session."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA

torch = pytest.importorskip("torch", reason="packaging needs torch (pip install -e '.[train]')")
pytest.importorskip("onnxruntime", reason="packaging checks the ONNX export with onnxruntime")

from emzoo.packaging.info import PackagingInfo, TensorInfo  # noqa: E402

HERE = Path(__file__).resolve().parent
UNET_SOURCE = HERE.parents[1] / "emzoo" / "architectures" / "unet.py"
UNET_KWARGS = {"depth": 2, "features": 4}
ISBI_IMAGE = SHARED_DATA / "isbi2012_membranes" / "train" / "image" / "0.png"
CITE = ({"text": "Ronneberger O. et al. (2015) U-Net. MICCAI 2015", "doi": "10.1007/978-3-319-24574-4_28"},)
TRAINING_DATA = {
    "name": "ISBI 2012 membranes",
    "source": "https://imagej.net/events/isbi-2012-segmentation-challenge",
    "license": "research use",
    "split": "slices 0-16 train, 17-19 validation, 20-24 test",
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small networks run fastest on one thread; with two threads on a busy 2-core machine, OpenMP
    waiting made a training step 60x slower (0.85 s instead of 0.014 s). Restored after each module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_em(size: int = 192, seed: int = 0) -> np.ndarray:
    """Dark curvy 'membranes' on a bright noisy background, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    field = np.sin(11 * xx + 3 * np.sin(7 * yy)) * np.cos(9 * yy + 2 * np.sin(5 * xx))
    image = 170 - 110 * (np.abs(field) < 0.12) + rng.normal(0, 12, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def em_image() -> np.ndarray:
    """A real ISBI 2012 slice (512x512 uint8), or a synthetic one without the shared data."""
    if ISBI_IMAGE.is_file():
        from emzoo.io import read_image

        return np.asarray(read_image(ISBI_IMAGE).data)
    return synthetic_em(256)


@pytest.fixture(scope="session")
def em_sample(em_image) -> np.ndarray:
    """A 192x192 crop: the sample image of the test packages (``yx``)."""
    return np.ascontiguousarray(em_image[:192, :192])


def _train_briefly(model, image: np.ndarray, steps: int = 15):
    """A few Adam steps towards 'dark = membrane', so that outputs and BatchNorm statistics are not
    those of a fresh initialisation."""
    torch.manual_seed(0)
    x = torch.from_numpy(((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32))[None, None]
    y = (x < -0.5).float()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        i, j = (step * 17) % (x.shape[-2] - 64), (step * 29) % (x.shape[-1] - 64)
        crop, target = x[..., i : i + 64, j : j + 64], y[..., i : i + 64, j : j + 64]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(crop), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="session")
def unet(em_image):
    from emzoo.architectures.unet import UNet

    torch.manual_seed(0)
    return _train_briefly(UNet(**UNET_KWARGS), em_image)


@pytest.fixture(scope="session")
def counter():
    from tests.packaging.nets import Counter

    torch.manual_seed(0)
    return Counter().eval()


def unet_info(**changes) -> PackagingInfo:
    info = PackagingInfo(
        name="Test membrane U-Net",
        description="A small U-Net, briefly trained, for the packaging tests.",
        task="semantic segmentation",
        inputs=(
            TensorInfo(
                "raw",
                "cyx",
                ("raw",),
                "ssTEM image",
                processing=({"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"]}},),
            ),
        ),
        outputs=(
            TensorInfo(
                "membrane",
                "cyx",
                ("membrane",),
                "membrane probability",
                processing=({"id": "sigmoid"},),
                data_range=(0.0, 1.0),
            ),
        ),
        authors=({"name": "Test Author", "affiliation": "Test Lab"},),
        license="MIT",
        cite=CITE,
        tags=("unet", "membrane-segmentation"),
        pixel_size={"y": 4.0, "x": 4.0},
        pixel_unit="nanometer",
        training_data=dict(TRAINING_DATA),
        intended_use="Testing emzoo's packaging.",
        limitations="Trained for 15 steps: useless for real images.",
    )
    return replace(info, **changes)


def counter_info(**changes) -> PackagingInfo:
    info = PackagingInfo(
        name="Test EM counter",
        description="A small image-to-value network (three scores per image) for the packaging tests.",
        task="counting",
        inputs=(
            TensorInfo(
                "raw",
                "cyx",
                ("raw",),
                "EM image",
                processing=(
                    {
                        "id": "scale_range",
                        "kwargs": {"axes": ["y", "x"], "min_percentile": 1, "max_percentile": 99},
                    },
                ),
            ),
        ),
        outputs=(TensorInfo("scores", "c", ("count", "score_a", "score_b"), "one count and two scores"),),
        authors=({"name": "Test Author"},),
        license="CC-BY-4.0",
        cite=CITE,
        tags=("counting",),
        pixel_size={"y": 4.0, "x": 4.0},
        pixel_unit="nanometer",
        training_data=dict(TRAINING_DATA),
        intended_use="Testing image-to-value packages.",
        limitations="Random weights.",
    )
    return replace(info, **changes)


def fake_evaluate(predict):
    """A use case's evaluate(): runs the packaged model and reports made-up metrics."""
    out = predict(synthetic_em(128, seed=3))
    assert all(np.isfinite(v).all() for v in out.values())
    return {
        "dataset_role": "test",
        "sample_count": 1,
        "metrics": {"dice": 0.61, "adapted_rand_error": 0.25},
        "baseline": {"name": "Otsu threshold", "metrics": {"dice": 0.52, "adapted_rand_error": 0.41}},
        "samples": [{"name": "synthetic", "metrics": {"dice": 0.61}}],
    }


@pytest.fixture(scope="session")
def unet_zip(tmp_path_factory, unet, em_sample) -> Path:
    from emzoo.packaging import BuildOptions, package_module

    out = tmp_path_factory.mktemp("unet") / "unet.zip"
    return package_module(
        unet,
        unet_info(),
        em_sample,
        out,
        architecture=(UNET_SOURCE, "UNet", UNET_KWARGS),
        evaluate=fake_evaluate,
        training={"epochs": 1, "batch_size": 1, "lr": 0.01, "loss": "BCEWithLogitsLoss"},
        training_images=[em_sample],
        options=BuildOptions(test_size=128, test_with_bioimageio=False),
    )


@pytest.fixture(scope="session")
def counter_folder(tmp_path_factory, counter, em_sample) -> Path:
    from emzoo.packaging import BuildOptions, package_module

    out = tmp_path_factory.mktemp("counter") / "em-counter"
    return package_module(
        counter,
        counter_info(),
        em_sample,
        out,
        architecture=(HERE / "nets.py", "Counter", {}),
        evaluate=lambda predict: {
            "dataset_role": "independent",
            "sample_count": 1,
            "metrics": {"mae": float(abs(predict(em_sample)["scores"][0] - 3.0))},
            "baseline": {"name": "blob_log", "metrics": {"mae": 2.0}},
        },
        options=BuildOptions(test_size=96, test_with_bioimageio=False),
    )
