"""Files that try to run code or to exhaust the machine: a pickle whose ``__reduce__`` calls code as
the state dict, and a "billion laughs" rdf.yaml. Each fails at once, in one line, running nothing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from emzoo.errors import BackendError, PackageError
from emzoo.package.safe_yaml import check_yaml, expanded_size
from tests.package.statedict import REPO, edit_rdf, sha256

BOMB = "\n".join(
    [
        "format_version: 0.5.4",
        "type: model",
        'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 12)]
    + ["name: *a11", ""]
)  # 8**12 = 68 billion strings once expanded


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled code ran')",))


def test_no_unpickling_without_weights_only():
    """Every torch.load in emzoo/ and training/ passes weights_only=True."""
    for folder in ("emzoo", "training"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load":
                    if getattr(node.func.value, "id", None) != "torch":
                        continue
                    flags = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                    assert flags.get("weights_only") is True, f"{path}:{node.lineno}"


def test_pickled_code_as_the_state_dict_fails_cleanly(trust_base, tmp_path):
    torch = pytest.importorskip("torch")
    import shutil

    from emzoo.runtime.predictor import Predictor

    marker = tmp_path / "unpickled"
    package = tmp_path / "pickle-package"
    shutil.copytree(trust_base, package)
    torch.save({"weight": _RunsCode(marker)}, package / "weights.pt")
    assert not marker.exists()

    def point_at_it(content):
        content["weights"]["pytorch_state_dict"]["sha256"] = sha256(package / "weights.pt")

    edit_rdf(package, point_at_it)
    with pytest.raises(BackendError) as e:
        Predictor(package, weight_format="pytorch_state_dict", trust_package_code=True, device="cpu")
    message = str(e.value)
    assert "\n" not in message and "weights.pt" in message and "not a plain state dict" in message
    assert "weights_only=True" in message
    assert not marker.exists()


def test_alias_expansion_is_bounded():
    assert expanded_size(__import__("yaml").compose("a: &x [1, 2]\nb: *x\nc: *x")) == 13
    with pytest.raises(PackageError, match="billion laughs"):
        check_yaml(BOMB, "rdf.yaml")
    with pytest.raises(PackageError, match="into themselves"):
        check_yaml("a: &x [1, *x]", "rdf.yaml")
    check_yaml((REPO / "zoo_models" / "em-membrane-unet2d" / "rdf.yaml").read_text(), "zoo")


def test_billion_laughs_rdf_is_refused_within_a_second(tmp_path):
    """In a folder, in a zip, and through ``emzoo validate`` (a subprocess: before the fix, it ran
    until killed)."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    (folder / "rdf.yaml").write_text(BOMB)
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w") as z:
        z.writestr("rdf.yaml", BOMB)
    code = (
        "import json, sys, time\n"
        "from emzoo.errors import EmzooError\n"
        "from emzoo.package.load import open_model\n"
        "out = []\n"
        "for source in sys.argv[1:]:\n"
        "    start = time.perf_counter()\n"
        "    try:\n"
        "        open_model(source)\n"
        "        out.append(['opened', '', 0.0])\n"
        "    except EmzooError as e:\n"
        "        out.append([type(e).__name__, str(e), time.perf_counter() - start])\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(tmp_path / "bomb.zip")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    for kind, message, seconds in json.loads(proc.stdout):
        assert kind == "PackageError" and "billion laughs" in message and "\n" not in message
        assert seconds < 1.0
    cli = subprocess.run(
        [sys.executable, "-m", "emzoo", "validate", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert cli.returncode == 1 and "billion laughs" in cli.stderr and "Traceback" not in cli.stderr
