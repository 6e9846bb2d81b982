"""Packages built by emzoo carry the out-of-distribution statistics of their training images."""

from __future__ import annotations

import zipfile

import numpy as np
import yaml

from tests.packaging.conftest import UNET_KWARGS, UNET_SOURCE, fake_evaluate, unet_info


def crops(image: np.ndarray, size: int, n: int, offset: int = 0) -> list[np.ndarray]:
    step = max((min(image.shape) - size) // max(n - 1, 1), 1)
    return [image[offset + k * step // 2 :][:size, k * step :][:, :size] for k in range(n)]


def test_package_module_records_the_training_images_statistics(tmp_path, unet, em_image, em_sample):
    from emzoo.packaging import BuildOptions, package_module

    out = package_module(
        unet,
        unet_info(),
        em_sample,
        tmp_path / "unet.zip",
        architecture=(UNET_SOURCE, "UNet", UNET_KWARGS),
        evaluate=fake_evaluate,
        ood_images=(crops(em_image, 128, 5), crops(em_image, 128, 2, offset=40)),
        options=BuildOptions(test_size=128, test_with_bioimageio=False),
    )
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        card = z.read("README.md").decode()
    ood = rdf["config"]["emzoo"]["ood"]
    assert ood["calibration"]["reference_images"] == 5 and len(ood["reference"]) == 5
    assert "membrane.confident" in ood["features"] and ood["threshold"] > 0
    assert ood["measured"]["held_out_images"] == 2 and 0 <= ood["measured"]["false_warning_rate"] <= 1
    assert "## Out-of-distribution check" in card and "reference (training) images" in card
    # the network's own features: the ONNX network cut at its last pooling step, shipped with the
    # training images' cells, both named (with their sha256) in config.emzoo.ood.embedding
    with zipfile.ZipFile(out) as z:
        assert {"ood_embedding.onnx", "ood_embedding_reference.npy"} <= set(z.namelist())
    attached = {a["source"] for a in rdf.get("attachments", [])}
    assert {"ood_embedding.onnx", "ood_embedding_reference.npy"} <= attached
    assert ood["embedding"]["threshold"] > 0 and ood["embedding"]["cells"] == 5 * 4
    assert "network's own features count too" in card
