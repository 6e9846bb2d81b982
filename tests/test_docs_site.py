"""The documentation site builds offline and cleanly (``mkdocs build --strict``), its generated zoo page is
current, the docs stand on their own (nothing outside the repository), and the wheel that the install
guide builds holds emzoo's data files."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from emzoo.packaging.zoo_table import REGENERATE, render_markdown
from tests.conftest import REPO

DOCS = REPO / "docs"
DOC_FILES = [*sorted(DOCS.glob("*.md")), REPO / "README.md"]
OUTSIDE = re.compile(r"\.\./shared|BIOIMAGEIO_PITFALLS")


def _needs(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs {module} (pip install -e '.[{extra}]')")


def test_site_builds_strict_and_offline(tmp_path: Path):
    _needs("mkdocs", "docs")
    _needs("material", "docs")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner, not a build warning
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("index", "install", "predict", "big_data", "napari", "trust", "new_use_case", "publishing"):
        assert (site / f"{page}.html").is_file(), page
    assert "emzoo predict" in (site / "cli.html").read_text(encoding="utf-8")
    assert "held-out" in (site / "zoo.html").read_text(encoding="utf-8")
    # the notebooks are downloadable files of the site; their data and helpers are not pages
    assert (site / "notebooks" / "01_predict_em_images.ipynb").is_file()
    assert not (site / "notebooks" / "data").exists()


def test_docs_zoo_md_is_up_to_date():
    page = DOCS / "zoo.md"
    current = page.read_text(encoding="utf-8") if page.is_file() else ""
    assert current == render_markdown(), f"docs/zoo.md is out of date: run {REGENERATE}"


def test_zoo_page_has_every_package_and_its_baseline():
    page = render_markdown()
    for rdf in REPO.glob("zoo_models/*/rdf.yaml"):
        assert f"`zoo_models/{rdf.parent.name}`" in page
    assert page.count("| metric | this model |") == len(list(REPO.glob("zoo_models/*/evaluation.json")))


@pytest.mark.parametrize("doc", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_docs_stand_on_their_own(doc: Path):
    text = doc.read_text(encoding="utf-8")
    found = sorted({m.group(0) for m in OUTSIDE.finditer(text)})
    assert not found, f"{doc.name} refers to files outside the repository: {found}"


def from_an_index(command: str) -> list[str]:
    """The requirements of a ``pip install ...`` line that ask a package index for emzoo (which is
    not on one); a clone (``-e .``), a direct reference (``emzoo[cpu] @ git+URL``) or a wheel is fine.

    >>> from_an_index('pip install "emzoo[cpu]"'), from_an_index('pip install "emzoo[cpu] @ git+URL"')
    (['emzoo[cpu]'], [])
    """
    args = re.split(r"&&|;|#|, |\)", command.removeprefix("pip install"))[0]
    words = re.findall(r""""[^"]*"|'[^']*'|\S+""", args)
    return [w.strip("\"'") for w in words if re.match(r"emzoo(\[[^\]]*\])?$", w.strip("\"'"))]


@pytest.mark.parametrize("doc", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_docs_install_emzoo_only_in_ways_that_work(doc: Path):
    for command in re.findall(r"pip install[^\n`]*", doc.read_text(encoding="utf-8")):
        assert from_an_index(command) == [], f"{doc.name}: {command!r} cannot work"


def test_the_install_check_catches_an_index_install():
    assert from_an_index("pip install 'emzoo[cpu,train]' --extra-index-url X") == ["emzoo[cpu,train]"]
    assert from_an_index("pip install emzoo distributed") == ["emzoo"]
    for fine in (
        'pip install -e ".[cpu]"',
        'pip install "dist/emzoo-0.1.0-py3-none-any.whl[cpu]"',
        "pip install onnxruntime, or the [cpu] extra of emzoo",
    ):
        assert from_an_index(fine) == [], fine


def test_wheel_builds_with_the_data_files(tmp_path: Path):
    _needs("setuptools", "dev")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "emzoo", source / "emzoo", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (source / "dist").glob("emzoo-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [
        p.relative_to(REPO).as_posix()
        for p in (REPO / "emzoo").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert data, "emzoo/ has no data files to check"
    assert [name for name in data if name not in names] == []
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "napari.manifest" in zipfile.ZipFile(wheel).read(entry_points).decode()
