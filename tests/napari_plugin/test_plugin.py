"""The plugin as napari finds it: the manifest validates, npe2 discovers it, its reader answers
through npe2, and the non-Qt modules (and ``import emzoo``) import neither napari nor Qt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")

import npe2
import numpy as np

from emzoo.errors import UsageError
from emzoo.io.meta import Image as EmImage
from emzoo.io.meta import ImageMeta
from emzoo.napari_plugin import engine
from emzoo.napari_plugin.card import card_of, open_card, zoo_models
from emzoo.napari_plugin.layers import META_KEY
from emzoo.package.load import open_model
from tests.napari_plugin.conftest import COUNTER, MEMBRANE, ZOO, write_mrc


def test_the_manifest_validates_and_is_discovered(plugins):
    npe2_cli = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2_cli), "validate", "emzoo"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = plugins.get_manifest("emzoo")
    assert [w.display_name for w in manifest.contributions.widgets] == ["Run model"]
    assert {tuple(w.layer_types) for w in manifest.contributions.writers} == {("image",), ("labels",)}


def test_npe2_reads_an_mrc_with_the_plugin(plugins, tmp_path, rng):
    path = write_mrc(tmp_path / "m.mrc", rng.random((32, 32), dtype=np.float32), 1.5)
    ((_, attributes, kind),) = npe2.read([str(path)], stack=False, plugin_name="emzoo")
    assert kind == "image" and attributes["scale"] == pytest.approx((1.5, 1.5))


def test_import_emzoo_and_the_plugins_logic_stay_without_qt():
    code = (
        "import sys, emzoo, emzoo.cli; a = [m for m in ('napari', 'qtpy', 'PyQt6') if m in sys.modules]; "
        "import emzoo.napari_plugin.reading, emzoo.napari_plugin.writing, emzoo.napari_plugin.engine, "
        "emzoo.napari_plugin.card; b = [m for m in ('napari', 'qtpy', 'PyQt6') if m in sys.modules]; "
        "print(a, b)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


def test_the_zoo_models_and_their_cards():
    found = zoo_models()
    assert {MEMBRANE.name, COUNTER.name} <= set(found) and found[MEMBRANE.name] == MEMBRANE
    assert zoo_models(ZOO / "missing") == {}
    card = card_of(open_model(COUNTER))
    metrics = {m.name: m for m in card.metrics}
    assert "f1" in metrics and isinstance(metrics["f1"].value, float)
    assert metrics["f1"].baseline is not None and card.baseline  # measured against a baseline
    assert any("held-out metrics" in line for line in card.lines())


def test_a_card_from_bioimageio_evaluations_only():
    _, card = open_card(MEMBRANE)
    spec = open_model(MEMBRANE).spec
    spec_without_own = type(spec)(**{**spec.__dict__, "emzoo": {}})
    plain = card_of(spec_without_own)
    assert [m.name for m in plain.metrics] == list(spec.evaluations[0]["metrics"])
    assert all(isinstance(m.value, float) for m in plain.metrics)  # [[0.8]] -> 0.8
    assert card.metrics


def test_tile_text_and_messages():
    assert engine.parse_tile("") is None and engine.parse_tile("auto") is None
    assert engine.parse_tile("512") == (512,) and engine.parse_tile("256,512") == (256, 512)
    with pytest.raises(UsageError) as info:
        engine.parse_tile("0")
    assert engine.message(info.value).startswith("Tile")
    assert engine.message(ValueError("a\nb")) == "ValueError: a b"


def test_cancelled_before_or_during_a_run(membrane_crop):
    predictor = engine.load_predictor(MEMBRANE, device="cpu", tile=(128, 128))
    image = EmImage(membrane_crop, ImageMeta("yx"))
    with pytest.raises(engine.Cancelled):
        engine.predict_images(predictor, {"raw": image}, cancelled=lambda: True)
    seen = []
    with pytest.raises(engine.Cancelled):
        engine.predict_images(
            predictor, {"raw": image}, progress=lambda d, t: seen.append((d, t)), cancelled=lambda: bool(seen)
        )
    assert len(seen) == 1 and seen[0][1] > 1  # stopped after the first batch of several tiles


def test_integer_outputs_become_labels_with_the_input_scale():
    spec = open_model(MEMBRANE).spec
    tid = spec.outputs[0].id
    labels = np.zeros((64, 64), np.uint8)
    labels[10:20, 10:20] = 1
    prediction = engine.Prediction({tid: EmImage(labels, ImageMeta("yx"))})
    ref = engine.Reference("img", "yx", {"y": 4.0, "x": 4.0}, {"y": "nanometer", "x": "nanometer"})
    layers, rows = engine.output_layers(prediction, spec, ref)
    ((_, kwargs, kind),) = layers
    assert kind == "labels" and kwargs["scale"] == (4.0, 4.0) and rows == []
    assert kwargs["metadata"][META_KEY]["pixel_size"] == {"y": 4.0, "x": 4.0}
