"""The model cards of zoo_models/ say what works as written: every ``emzoo`` command in them runs from
the repository root on paths that exist in the repository, no path of the machine that built them, no
``pip install "emzoo[...]"`` (emzoo is not on a package index). One command per card is run for real."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from emzoo.packaging.card import run_section
from tests.conftest import REPO

CARDS = sorted(REPO.glob("zoo_models/*/README.md"))
IDS = [card.parent.name for card in CARDS]

#: ``emzoo`` commands whose positional arguments and ``--input`` values are inputs that must exist
READS_INPUTS = {"predict", "test", "validate", "info", "evaluate", "explain"}
#: options followed by a value; ``-o``/``--output``/``--out``/``--junit`` values are outputs
VALUE_OPTIONS = {
    "-o", "--output", "--out", "--junit", "--weights", "--device", "--tile", "--halo", "--blend",
    "--batch-size", "--output-format", "--chunk-size", "--dask", "--input", "--data", "--set", "--grid",
}  # fmt: skip
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|home|root|Users|mnt|scratch)/")
PIP_INSTALL = re.compile(r"pip install[^\n`]*")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block of a Markdown text."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def emzoo_commands(text: str) -> list[list[str]]:
    """The ``emzoo ...`` command lines of the shell blocks (comments dropped), split like a shell."""
    commands = []
    for lang, body in fenced_blocks(text):
        if lang not in ("", "bash", "sh", "shell", "console"):
            continue
        for line in body.splitlines():
            if line.strip().startswith("emzoo "):
                commands.append(shlex.split(line, comments=True))
    return commands


def is_placeholder(word: str) -> bool:
    """``IMAGE.tif``, ``MODEL``, ``RUN_DIR``: a name the card explains, in capitals."""
    stem = Path(word).name.split(".")[0]
    return bool(stem) and stem.upper() == stem and any(c.isalpha() for c in stem)


def missing_inputs(words: list[str]) -> list[str]:
    """The inputs of one ``emzoo`` command that are not paths of the repository (relative to its root)."""
    if len(words) < 2 or words[1] not in READS_INPUTS:
        return []
    missing, k = [], 2
    while k < len(words):
        word = words[k]
        if word in VALUE_OPTIONS:
            value = words[k + 1] if k + 1 < len(words) else ""
            if word == "--input":
                missing += [p for p in [value.partition("=")[2]] if not _exists(p)]
            k += 2
            continue
        if not word.startswith("-") and not _exists(word):
            missing.append(word)
        k += 1
    return missing


def _exists(path: str) -> bool:
    if Path(path).is_absolute():  # reported as an absolute path
        return True
    return is_placeholder(path) or any(REPO.glob(path)) or (REPO / path).exists()


def problems(text: str) -> list[str]:
    """What in a card (or a generated card section) does not work as written."""
    found = [f"a path of the machine that built it: {m.group(0)!r}" for m in MACHINE_PATH.finditer(text)]
    for m in PIP_INSTALL.finditer(text):
        command = m.group(0)
        if re.search(r"""["']?emzoo\[""", command) and not re.search(r"@ |\.whl", command):
            found.append(f"emzoo is not on a package index: {command!r}")
    for words in emzoo_commands(text):
        found += [f"{' '.join(words)!r}: no such path {p!r}" for p in missing_inputs(words)]
        found += [f"{' '.join(words)!r}: absolute path {w!r}" for w in words if w.startswith("/")]
    for lang, body in fenced_blocks(text):
        if lang == "python":
            for path in re.findall(r"""["']((?:zoo_models|examples)/[^"']+)["']""", body):
                if not _exists(path):
                    found.append(f"python example: no such path {path!r}")
    return found


def test_the_zoo_has_cards():
    assert len(CARDS) >= 3, CARDS


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_card_commands_work_as_written(card: Path):
    assert problems(card.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_card_how_to_run_is_what_the_packager_writes(card: Path):
    text = card.read_text(encoding="utf-8")
    start = text.index("## How to run it\n")
    section = text[start : text.index("\n## ", start + 1)].rstrip("\n")
    assert section == run_section(f"zoo_models/{card.parent.name}")


@pytest.mark.parametrize("package", ["model.zip", "zoo_models/em-membrane-unet2d"])
def test_generated_run_section_works_as_written(package: str):
    section = run_section(package)
    # "model.zip" is wherever the user keeps the zip: the one path that is not the repository's
    assert [p for p in problems(section) if "no such path 'model.zip'" not in p] == []
    assert "emzoo predict" in section
    if package.endswith(".zip"):  # a zip holds its sample image inside: the card names a placeholder
        assert "IMAGE.tif" in section


def test_the_checks_catch_what_they_should():
    bad = (
        "```bash\npip install 'emzoo[cpu]'\nemzoo predict zoo_models/em-membrane-unet2d nowhere.tif -o x/\n"
        "emzoo test /work/main/zoo_models/em-membrane-unet2d\n```\n"
    )
    found = problems(bad)
    assert len(found) == 4, found  # pip line, missing input, machine path, absolute path
    good = (
        '```bash\npip install -e ".[cpu]"\npip install "emzoo[cpu] @ git+<EMZOO_GIT_URL>"\n'
        "emzoo predict zoo_models/em-membrane-unet2d examples/membranes/ -o predictions/\n"
        "emzoo predict MODEL IMAGE.tif --input raw=examples/membranes/0.png\n```\n"
    )
    assert problems(good) == []


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_card_predict_command_runs_from_the_repository_root(card: Path, tmp_path: Path):
    predicts = [w for w in emzoo_commands(card.read_text(encoding="utf-8")) if w[1:2] == ["predict"]]
    assert predicts, f"{card}: no emzoo predict command"
    words = predicts[0]
    k = words.index("-o")
    args = [*words[1:k], "-o", str(tmp_path / "out"), *words[k + 2 :], "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "emzoo", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    # an image output, or the value table of an image-to-value model (a classifier's logits)
    assert any(name.endswith((".tif", ".csv")) for name in written), written


@pytest.mark.parametrize("readme", sorted(REPO.glob("training/*/README.md")), ids=lambda p: p.parent.name)
def test_use_case_readmes_name_no_path_of_this_machine(readme: Path):
    text = readme.read_text(encoding="utf-8")
    assert [m.group(0) for m in MACHINE_PATH.finditer(text)] == []
