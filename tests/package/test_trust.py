"""A package's own Python code (the architecture of pytorch_state_dict weights) runs only when it
is trusted: by the user (trust_package_code, --trust-package-code, EMZOO_TRUST_PACKAGE_CODE=1), as
emzoo's own zoo, or as a package emzoo built. A marker file shows whether the code ran."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.errors import BackendError
from emzoo.package.load import ModelPackage, open_model
from emzoo.package.trust import TRUST_ENV, is_trusted
from tests.package.statedict import REPO, marked_copy

torch = pytest.importorskip("torch", reason="state-dict packages need torch")


@pytest.fixture
def marker(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    return tmp_path / "package-code-ran"


@pytest.fixture
def only_state_dict(trust_base, tmp_path, marker):
    return marked_copy(trust_base, tmp_path / "only-state-dict", marker)


@pytest.fixture
def image(tmp_path):
    import numpy as np
    import tifffile

    path = tmp_path / "em.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    return path


def test_untrusted_state_dict_is_refused_in_the_api(only_state_dict, marker):
    from emzoo.runtime.predictor import Predictor

    for fmt in (None, "pytorch_state_dict"):
        with pytest.raises(BackendError) as e:
            Predictor(only_state_dict, weight_format=fmt, device="cpu")
        message = str(e.value)
        assert "\n" not in message and "unet.py" in message and "trust_package_code" in message
        assert TRUST_ENV in message
    assert not marker.exists()


def test_trusted_state_dict_runs_its_code(only_state_dict, marker):
    from emzoo.runtime.predictor import Predictor

    predictor = Predictor(only_state_dict, trust_package_code=True, device="cpu")
    assert predictor.weights.format == "pytorch_state_dict" and marker.exists()


def test_trust_from_the_environment(only_state_dict, marker, monkeypatch):
    from emzoo.runtime.predictor import Predictor

    monkeypatch.setenv(TRUST_ENV, "1")
    Predictor(open_model(only_state_dict), device="cpu")
    assert marker.exists()


def test_cli_predict_refuses_and_names_the_flag(only_state_dict, marker, image, tmp_path):
    out = tmp_path / "out"
    for extra in ([], ["--weights", "pytorch_state_dict"]):
        result = CliRunner().invoke(
            main, ["predict", str(only_state_dict), str(image), "-o", str(out), *extra]
        )
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "unet.py" in lines[0] and "--trust-package-code" in lines[0], lines
        assert not marker.exists()
    result = CliRunner().invoke(
        main, ["predict", str(only_state_dict), str(image), "-o", str(out), "-q", "--trust-package-code"]
    )
    assert result.exit_code == 0, result.output
    assert marker.exists()


def test_code_free_weights_are_preferred_and_state_dict_asked_for_is_refused(trust_base, tmp_path, marker):
    from emzoo.runtime.predictor import Predictor

    both = marked_copy(trust_base, tmp_path / "both", marker, keep=("torchscript", "pytorch_state_dict"))
    assert Predictor(both, device="cpu").weights.format == "torchscript"
    with pytest.raises(BackendError, match=r"run its torchscript weights with weight_format=torchscript"):
        Predictor(both, weight_format="pytorch_state_dict", device="cpu")
    assert not marker.exists()


def test_explain_needs_the_flag_too(counter_base, marker, image, tmp_path):
    counter = marked_copy(counter_base, tmp_path / "counter", marker)
    args = ["explain", str(counter), str(image), "-o", str(tmp_path / "maps")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "nets.py" in result.output and "--trust-package-code" in result.output
    assert not marker.exists()
    result = CliRunner().invoke(main, [*args, "--trust-package-code"])
    assert result.exit_code == 0, result.output
    assert marker.exists()


def test_explain_prefers_torchscript_over_untrusted_code(counter_base, tmp_path, marker, image):
    both = marked_copy(counter_base, tmp_path / "both", marker, keep=("torchscript", "pytorch_state_dict"))
    result = CliRunner().invoke(main, ["explain", str(both), str(image), "-o", str(tmp_path / "maps")])
    assert result.exit_code == 0, result.output
    assert "(torchscript)" in result.output and not marker.exists()


def test_packages_emzoo_built_are_trusted(trust_base, marker):
    from emzoo.runtime.predictor import Predictor

    predictor = Predictor(trust_base, weight_format="pytorch_state_dict", device="cpu")
    assert predictor.weights.format == "pytorch_state_dict"


def test_forged_config_or_hash_does_not_make_code_trusted(trust_base, tmp_path, marker):
    """Changed code is untrusted whatever the rdf claims (its config, the declared sha256)."""
    from tests.package.statedict import edit_rdf

    forged = marked_copy(trust_base, tmp_path / "forged", marker)
    original_sha = open_model(trust_base).spec.weights["pytorch_state_dict"].architecture.sha256

    def claim(content):
        content["weights"]["pytorch_state_dict"]["architecture"]["sha256"] = original_sha
        content["config"]["emzoo"]["trusted"] = True

    edit_rdf(forged, claim)
    package = ModelPackage(open_model(trust_base).spec, forged, forged / "rdf.yaml", str(forged))
    assert not is_trusted(package.root, package.spec.weights["pytorch_state_dict"])
    assert not marker.exists()


def test_the_repository_zoo_is_trusted_and_a_copy_of_it_is_not(tmp_path, marker):
    zoo = REPO / "zoo_models" / "em-membrane-unet2d"
    if not (zoo / "rdf.yaml").is_file():
        pytest.skip("zoo_models/em-membrane-unet2d is not packaged")
    weights = open_model(zoo).spec.weights["pytorch_state_dict"]
    assert is_trusted(zoo, weights)
    copy = tmp_path / "zoo-copy"
    copy.mkdir()
    shutil.copy(zoo / "unet.py", copy / "unet.py")
    (copy / "unet.py").write_text((zoo / "unet.py").read_text() + "\n# changed\n")
    assert not is_trusted(copy, weights)


def test_error_hints_name_only_formats_the_package_has(trust_base, monkeypatch):
    """Without PyTorch, the hint to run the onnx weights appears only for a package that has them."""
    import sys
    from dataclasses import replace

    from emzoo.runtime.backends import load_backend

    package = open_model(trust_base)  # torchscript and pytorch_state_dict: no onnx
    monkeypatch.setitem(sys.modules, "torch", None)
    for fmt in ("torchscript", "pytorch_state_dict"):
        with pytest.raises(BackendError) as e:
            load_backend(package, package.spec.weights[fmt], "cpu")
        assert "need PyTorch" in str(e.value) and "onnx" not in str(e.value)
    onnx = replace(package.spec.weights["torchscript"], format="onnx", source="weights.onnx")
    with_onnx = replace(package, spec=replace(package.spec, weights={**package.spec.weights, "onnx": onnx}))
    with pytest.raises(BackendError, match="run the package's onnx weights with weight_format=onnx"):
        load_backend(with_onnx, with_onnx.spec.weights["torchscript"], "cpu")
