"""Packages whose code must not run untrusted: a tiny U-Net package and an image-to-value one (for
``emzoo explain``), each with torchscript and state-dict weights, built once per session; and copies
whose architecture file leaves a marker file when it is imported (what the code of a package from
anywhere could do), with their other weights dropped."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
UNET_SOURCE = REPO / "emzoo" / "architectures" / "unet.py"
UNET_KWARGS = {"depth": 1, "features": 2}


def _info():
    from emzoo.packaging.info import PackagingInfo, TensorInfo

    zmuv = {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"]}}
    return PackagingInfo(
        name="trust test unet",
        description="random weights, for the package-code trust tests only",
        task="semantic segmentation",
        inputs=(TensorInfo(id="raw", axes="cyx", channel_names=("raw",), processing=(zmuv,)),),
        outputs=(TensorInfo(id="prob", axes="cyx", channel_names=("fg",), processing=({"id": "sigmoid"},)),),
        authors=({"name": "emzoo tests"},),
        license="MIT",
        cite=({"text": "emzoo tests", "doi": "10.5281/zenodo.1"},),
        tags=("test",),
        pixel_size={"y": 1.0, "x": 1.0},
        pixel_unit="nanometer",
        training_data={"name": "random", "source": "synthetic", "license": "MIT", "split": "none"},
        intended_use="tests",
        limitations="random weights",
    )


def build_base(folder: Path) -> Path:
    """A folder package with torchscript and pytorch_state_dict weights (built once per folder)."""
    target = folder / "trust-base"
    if (target / "rdf.yaml").is_file():
        return target
    torch = pytest.importorskip("torch", reason="building the test package needs torch")
    from emzoo.architectures.unet import UNet
    from emzoo.packaging import BuildOptions, package_module

    torch.manual_seed(0)
    sample = np.random.default_rng(0).integers(0, 255, (96, 96)).astype(np.uint8)
    options = BuildOptions(
        test_with_bioimageio=False, test_size=64, weight_formats=("torchscript", "pytorch_state_dict")
    )
    folder.mkdir(parents=True, exist_ok=True)
    return package_module(
        UNet(**UNET_KWARGS),
        _info(),
        sample,
        target,
        architecture=(UNET_SOURCE, "UNet", UNET_KWARGS),
        options=options,
    )


def edit_rdf(package: Path, change) -> None:
    """Rewrite ``package``'s rdf.yaml through ``change(content)`` (a test fixture: plain YAML)."""
    rdf = package / "rdf.yaml"
    content = yaml.safe_load(rdf.read_text(encoding="utf-8"))
    change(content)
    rdf.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def marked_copy(
    base: Path, dest: Path, marker: Path, keep: tuple[str, ...] = ("pytorch_state_dict",)
) -> Path:
    """A copy of ``base`` whose architecture file writes ``marker`` when imported, with the weight
    formats ``keep`` only (and the architecture's sha256 updated: a well-formed package)."""
    shutil.copytree(base, dest)
    rdf = yaml.safe_load((dest / "rdf.yaml").read_text(encoding="utf-8"))
    arch = dest / rdf["weights"]["pytorch_state_dict"]["architecture"]["source"]
    code = f"from pathlib import Path as _P\n_P({str(marker)!r}).write_text('package code ran')\n"
    arch.write_text(arch.read_text(encoding="utf-8") + "\n" + code, encoding="utf-8")

    def change(content):
        for fmt in list(content["weights"]):
            if fmt not in keep:
                del content["weights"][fmt]
        if "pytorch_state_dict" in content["weights"]:
            content["weights"]["pytorch_state_dict"]["architecture"]["sha256"] = sha256(arch)

    edit_rdf(dest, change)
    return dest


@pytest.fixture(scope="session")
def trust_base(tmp_path_factory) -> Path:
    return build_base(tmp_path_factory.getbasetemp() / "trust-models")


@pytest.fixture(scope="session")
def counter_base(tmp_path_factory) -> Path:
    """The packaging tests' image-to-value network, with torchscript and state-dict weights."""
    target = tmp_path_factory.getbasetemp() / "trust-models" / "counter"
    if (target / "rdf.yaml").is_file():
        return target
    torch = pytest.importorskip("torch", reason="building the test package needs torch")
    from emzoo.packaging import BuildOptions, package_module
    from tests.packaging.conftest import HERE, counter_info, synthetic_em
    from tests.packaging.nets import Counter

    torch.manual_seed(0)
    options = BuildOptions(
        test_size=96, test_with_bioimageio=False, weight_formats=("torchscript", "pytorch_state_dict")
    )
    return package_module(
        Counter().eval(),
        counter_info(),
        synthetic_em(192),
        target,
        architecture=(HERE / "nets.py", "Counter", {}),
        options=options,
    )
