"""Use-case discovery (``training/``, ``EMZOO_TRAINING_DIR``) and the documented parameter files."""

from __future__ import annotations

from pathlib import Path

import pytest

from emzoo.errors import UsageError
from emzoo.train import discovery, usecase
from emzoo.train.params import format_params, load_param_file, parse_value, resolve_params

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "training" / "_template"


@pytest.fixture
def isolated_registry(monkeypatch):
    """Discovery state and registry of this test only."""
    monkeypatch.setattr(discovery, "_imported", {})
    monkeypatch.setattr(discovery, "_folder_of", {})
    monkeypatch.setattr(usecase, "_USECASES", {})


def test_training_dir_from_the_environment(tmp_path, monkeypatch, isolated_registry):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "usecase.py").write_text(
        "from emzoo.train.usecase import UseCase, register_usecase\n"
        "@register_usecase\nclass Plain(UseCase):\n    '''A plain one.'''\n    name = 'plain'\n"
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__init__.py").write_text("import not_a_module_anywhere\n")
    (tmp_path / "_skipped").mkdir()
    (tmp_path / "_skipped" / "usecase.py").write_text("raise RuntimeError('imported')\n")
    (tmp_path / "notes").mkdir()  # no python: not a use case
    monkeypatch.setenv("EMZOO_TRAINING_DIR", str(tmp_path))
    assert set(discovery.discover()) == {"plain"}
    assert discovery.usecase_folder("plain") == tmp_path / "plain"
    broken = discovery.broken_usecases()
    assert list(broken) == [tmp_path / "broken"] and "not_a_module_anywhere" in broken[tmp_path / "broken"]
    with pytest.raises(UsageError, match="cannot be imported: ModuleNotFoundError"):
        discovery.get_usecase("broken")
    with pytest.raises(UsageError, match=r"unknown use case 'nope' \(known: plain\)"):
        discovery.get_usecase("nope")


def test_default_training_dir_is_the_checkout():
    assert (
        discovery.training_dirs() == [REPO / "training"] or "EMZOO_TRAINING_DIR" in __import__("os").environ
    )


def test_template_is_skipped_but_its_parameters_are_valid():
    assert "my_use_case" not in discovery.discover()
    params = load_param_file(TEMPLATE / "params.yaml")
    assert "lr" in params and "learning rate" in params["lr"].help.lower()
    assert "epochs = 50" in format_params(params)


def _write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_parameter_file_errors(tmp_path):
    with pytest.raises(UsageError, match="has no help text"):
        load_param_file(_write(tmp_path, "lr: {value: 1.0, help: ''}\n"))
    with pytest.raises(UsageError, match="needs exactly 'value' and 'help'"):
        load_param_file(_write(tmp_path, "lr: 0.1\n"))
    with pytest.raises(UsageError, match="write a float with a dot"):
        load_param_file(_write(tmp_path, "lr: {value: 1e-3, help: step size}\n"))
    with pytest.raises(UsageError, match="the trainer needs the parameter"):
        load_param_file(_write(tmp_path, "lr: {value: 1.0e-3, help: step size}\n"))


def test_values_are_converted_to_the_type_of_the_default():
    assert parse_value("lr", "3e-4", 1.0e-3) == pytest.approx(3e-4)
    assert parse_value("batch_size", "8", 4) == 8
    assert parse_value("flips", "off", True) is False
    assert parse_value("sizes", "1,2", [4]) == [1, 2]
    for name, text, default in (("batch_size", "2.5", 4), ("flips", "maybe", True), ("lr", "nan", 1.0)):
        with pytest.raises(UsageError, match=f"{name}="):
            parse_value(name, text, default)


def test_resolve_params_with_words_and_mappings():
    defaults = load_param_file(TEMPLATE / "params.yaml")
    params = resolve_params(defaults, ["lr=3e-4", "batch_size=2"])
    assert params["lr"] == pytest.approx(3e-4) and params["batch_size"] == 2 and params["epochs"] == 50
    assert resolve_params(defaults, {"epochs": 3})["epochs"] == 3
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        resolve_params(defaults, ["lr"])
