"""A tensor inside the network read during a prediction (emzoo.runtime.inner, Predictor.tap): the
blocks' shares partition the image, tiles read what one whole-image call computes, the outputs stay
as they were, and backends that cannot hand the tensor back say so."""

from __future__ import annotations

import itertools
import zipfile

import numpy as np
import pytest
import yaml
from scipy import ndimage

from emzoo.io.meta import Image, ImageMeta
from emzoo.runtime.inner import RegionStatistics, owned
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import TileSettings
from emzoo.runtime.tiling import plan_axis

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def tissue(shape=(256, 256), seed=0):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    return (100 + 30 * smooth / smooth.std() + rng.normal(0, 5, shape)).astype(np.float32)


@pytest.fixture(scope="module")
def last_pool_input(tiny_unet2d):
    import onnx

    with zipfile.ZipFile(tiny_unet2d) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        model = onnx.load_from_string(z.read(rdf["weights"]["onnx"]["source"]))
    return [n for n in model.graph.node if n.op_type == "MaxPool"][-1].input[0]


def read(predictor, node, image, boxes):
    statistics = RegionStatistics(node, boxes)
    assert predictor.tap(statistics)
    outputs = predictor.predict(Image(image, ImageMeta(axes="yx")))
    return outputs, statistics.cells()


@pytest.mark.parametrize("blend", [0, 12])
def test_the_blocks_shares_partition_the_axis(blend):
    ax = plan_axis(1000, 256, 32, align=8, blend=blend)
    shares = [owned(ax, j) for j in range(ax.n_blocks)]
    assert ax.n_blocks > 2 and shares[0][0] == 0 and shares[-1][1] >= 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shares))


def test_region_statistics_are_those_of_the_whole_tensor():
    tensor = np.random.default_rng(1).normal(size=(1, 3, 8, 12))
    whole = RegionStatistics("t", [(0, 16, 4, 24)])
    whole.add(tensor, origin=(0, 0), size=(16, 24), owned=((0, 16), (0, 24)))
    parts = RegionStatistics("t", [(0, 16, 4, 24)])
    for start, share in ((0, (0, 12)), (8, (12, 24))):  # two overlapping blocks of 16 px (8 tensor px)
        block = tensor[..., start // 2 : start // 2 + 8]
        parts.add(block, origin=(0, start), size=(16, 16), owned=((0, 16), share))
    (a,), (b,) = whole.cells(), parts.cells()
    assert a.shape == (4, 6) and np.allclose(a, b)
    cell = tensor[0, :, :4, 2:7].reshape(3, -1)  # y 0-8 and x 4-14 px: tensor pixels 0-3 and 2-6
    assert np.allclose(a[0], np.concatenate([cell.mean(1), cell.std(1)]))


def test_tiles_read_what_one_whole_image_call_computes(tiny_unet2d, last_pool_input):
    image = tissue((320, 320))
    boxes = [(32, 288, 32, 288)]
    _, whole = read(Predictor(tiny_unet2d, device="cpu"), last_pool_input, image, boxes)
    tiled = Predictor(tiny_unet2d, device="cpu", settings=TileSettings(tile=(128, 128), halo=32))
    _, parts = read(tiled, last_pool_input, image, boxes)
    assert tiled.last_plan is not None and tiled.last_plan.n_tiles > 1
    assert np.allclose(whole[0], parts[0], rtol=1e-3, atol=1e-4)


def test_the_outputs_are_unchanged_and_the_tap_lasts_one_run(tiny_unet2d, last_pool_input):
    image = tissue()
    plain = Predictor(tiny_unet2d, device="cpu").predict(Image(image, ImageMeta(axes="yx")))
    tapped = Predictor(tiny_unet2d, device="cpu")
    outputs, found = read(tapped, last_pool_input, image, [(0, 256, 0, 256)])
    assert found[0] is not None and np.array_equal(outputs["prob"].data, plain["prob"].data)
    later = RegionStatistics(last_pool_input, [(0, 256, 0, 256)])
    tapped.predict(Image(image, ImageMeta(axes="yx")))  # no tap asked for this run
    assert later.cells() == [None]


def test_test_time_augmentation_reads_the_blocks_as_they_are(tiny_unet2d, last_pool_input):
    image, boxes = tissue(), [(0, 256, 0, 256)]
    _, plain = read(Predictor(tiny_unet2d, device="cpu"), last_pool_input, image, boxes)
    augmented = Predictor(tiny_unet2d, device="cpu", settings=TileSettings(tta=True))
    _, found = read(augmented, last_pool_input, image, boxes)
    assert np.allclose(plain[0], found[0], atol=1e-5)


def test_a_crop_sized_image_reads_what_the_cut_network_computes(tiny_unet2d, last_pool_input, tmp_path):
    from emzoo.tasks.ood.embedding import Embedder, crop_boxes, cut_network, tapped_cells

    with zipfile.ZipFile(tiny_unet2d) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        z.extract(rdf["weights"]["onnx"]["source"], tmp_path)
    node = cut_network(tmp_path / rdf["weights"]["onnx"]["source"], tmp_path / "cut.onnx")
    assert node == last_pool_input
    image = tissue((200, 232))
    predictor = Predictor(tiny_unet2d, device="cpu")
    statistics = RegionStatistics(node, crop_boxes(image.shape))
    assert predictor.tap(statistics)
    predictor.predict(Image(image, ImageMeta(axes="yx")))
    alone = Embedder(tmp_path / "cut.onnx").embed(predictor.spec, image.astype(np.float64))
    assert np.allclose(tapped_cells(statistics), alone, atol=1e-5)


def test_torchscript_weights_cannot_be_tapped(tiny_unet2d, last_pool_input):
    pytest.importorskip("torch")
    predictor = Predictor(tiny_unet2d, device="cpu", weight_format="torchscript")
    assert not predictor.tap(RegionStatistics(last_pool_input, [(0, 64, 0, 64)]))
    assert not Predictor(tiny_unet2d, device="cpu").tap(RegionStatistics("no such tensor", [(0, 8, 0, 8)]))
