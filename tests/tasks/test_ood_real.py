"""The out-of-distribution check on real EM images (skipped without ../shared/data): a small
``emzoo calibrate`` run end to end, and ``emzoo predict --ood warn|skip|fail`` with the calibrated
zoo models on images of another modality and on the particle counter's own images."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
import yaml

from tests.conftest import REPO, shared

MEMBRANE = REPO / "zoo_models" / "em-membrane-unet2d"
COUNTER = REPO / "zoo_models" / "em-particle-counter"


def emzoo(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emzoo", *args], capture_output=True, text=True, cwd=cwd, timeout=900
    )


def calibrated(package):
    if "ood" not in yaml.safe_load((package / "rdf.yaml").read_text())["config"]["emzoo"]:
        pytest.skip(f"{package.name} is not calibrated yet (python benchmarks/ood_separation.py --write)")
    return package


def test_calibrate_a_small_set_end_to_end(tmp_path):
    slices = shared("isbi2012_membranes", "train", "image")
    reference = [str(slices / f"{k}.png") for k in range(6)]
    out = tmp_path / "calibrated.zip"
    before = (MEMBRANE / "rdf.yaml").read_bytes()
    result = emzoo(
        "calibrate",
        str(MEMBRANE),
        *reference,
        "--held-out",
        str(slices / "17.png"),
        "--held-out",
        str(slices / "18.png"),
        "--other",
        f"SEM={shared('sem_denoising', 'BSE.jpg')}",
        "--other",
        f"noisy TEM={shared('noisy_tem', 'bioimageio_demo_inputs')}",
        "-o",
        str(out),
        "-q",
    )
    assert result.returncode == 0, result.stderr
    assert "reference images: 6, held-out: 2" in result.stdout
    assert "overall" in result.stdout and "AUROC 1.000" in result.stdout
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        card = z.read("README.md").decode()
    ood = rdf["config"]["emzoo"]["ood"]
    assert len(ood["reference"]) == 6 and ood["measured"]["separation"]["SEM"]["auroc"] == 1.0
    (evaluation,) = [e for e in rdf["config"]["bioimageio"]["evaluations"] if e["metrics"][0] == "auroc"]
    assert evaluation["evaluation_factors"] == ["SEM", "noisy TEM", "overall"]
    assert "emzoo calibrate" in card and "| SEM | 1 | 1.000 | 100% |" in card
    assert emzoo("validate", str(out)).returncode == 0
    assert (MEMBRANE / "rdf.yaml").read_bytes() == before  # the original is left as it was
    again = emzoo("calibrate", str(MEMBRANE), *reference, "-o", str(out), "-q")
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_counter_separation_small(tmp_path):
    """The particle counter's check, small: six 640 px STEM training images (HAADF and bright field)
    as reference, three other HAADF images held out, against ssTEM and tomogram slices. The network's
    own features, read during the predictions, set the tomogram slices apart (AUROC 1.000, all
    flagged; 0.89 on the image and output features alone). The only other bright-field 640 px image,
    PtCo1, is not held out here: beside a single bright-field reference (PtCo3) its network-feature
    score lies at the threshold (ratio 1.00); the zoo calibration has three bright-field references."""
    stem = shared("stem_nanoparticles", "images")
    reference = [str(stem / f"{n}.jpg") for n in ("Cu1", "Pt2", "PtCo3", "PtCo", "Ru1", "Ru3")]
    held = [a for n in ("Pd1", "Ru2", "Cu4") for a in ("--held-out", str(stem / f"{n}.jpg"))]
    slices = shared("isbi2012_membranes", "train", "image")
    others = [a for k in range(5) for a in ("--other", f"ssTEM={slices / f'{k}.png'}")]
    others += ["--other", f"tomogram={shared('cryoet_tomogram', 'tomo.tif')}"]
    out = tmp_path / "counter.zip"
    result = emzoo("calibrate", str(COUNTER), *reference, *held, *others, "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert "false warnings on the held-out images: 0.0%" in result.stdout
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if "AUROC" in line}
    assert {"ssTEM", "tomogram", "overall"} <= set(rows)
    aurocs = {kind: float(line.split("AUROC")[1].split()[0]) for kind, line in rows.items()}
    assert min(aurocs.values()) >= 0.8 and aurocs["tomogram"] >= 0.95, result.stdout
    assert "network features: 216 training cells" in result.stdout  # 6 images x 3 x 3 crops x 4 cells
    assert "read during the predictions" in result.stdout
    with zipfile.ZipFile(out) as z:
        ood = yaml.safe_load(z.read("rdf.yaml"))["config"]["emzoo"]["ood"]
        assert {"ood_embedding.onnx", "ood_embedding_reference.npy"} <= set(z.namelist())
    assert ood["schema"] == 2 and "spectrum2px" in ood["features"] and "sparsity1px" in ood["features"]
    assert ood["embedding"]["node"].startswith("/unet/encoders")


def test_predict_flags_another_modality_by_each_policy(tmp_path):
    model = calibrated(MEMBRANE)
    sem = shared("sem_denoising", "BSE.jpg")
    warned = emzoo("predict", str(model), str(sem), "-o", str(tmp_path / "warn"), "-q")
    assert warned.returncode == 0, warned.stderr
    assert "warning:" in warned.stdout and "out of distribution (score" in warned.stdout
    (record,) = (tmp_path / "warn").glob("*.provenance.json")
    ood = json.loads(record.read_text())["ood"]
    assert ood["out_of_distribution"] is True and ood["score"] > ood["threshold"] and ood["reasons"]
    skipped = emzoo("predict", str(model), str(sem), "-o", str(tmp_path / "skip"), "--ood", "skip", "-q")
    assert skipped.returncode == 0, skipped.stderr
    assert "no output written (--ood skip)" in skipped.stdout
    assert not list((tmp_path / "skip").glob("*.tif"))
    failed = emzoo("predict", str(model), str(sem), "-o", str(tmp_path / "fail"), "--ood", "fail", "-q")
    assert failed.returncode == 1
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "the run stops here (--ood fail)" in line


def test_predict_keeps_a_training_like_slice_in_distribution(tmp_path):
    model = calibrated(MEMBRANE)
    slice_ = shared("isbi2012_membranes", "unlabeled", "0.png")
    result = emzoo("predict", str(model), str(slice_), "-o", str(tmp_path), "--ood", "fail", "-q")
    assert result.returncode == 0, result.stderr
    (record,) = tmp_path.glob("*.provenance.json")
    ood = json.loads(record.read_text())["ood"]
    assert ood["out_of_distribution"] is False and ood["score"] < ood["threshold"]


def test_counter_gives_no_false_warning_on_its_own_images(tmp_path):
    """Issue 11: none of the 25 STEM images (training, validation, test; bright field and HAADF)
    is out of distribution for the counter."""
    model = calibrated(COUNTER)
    images = shared("stem_nanoparticles", "images")
    result = emzoo("predict", str(model), str(images), "-o", str(tmp_path), "--ood", "fail", "-q")
    assert result.returncode == 0, result.stderr
    assert "out of distribution" not in result.stdout


def test_counter_flags_a_noisy_tem_image_by_its_network_features(tmp_path):
    """The counter's image features put a noisy TEM tile of tissue inside the spread of its diverse
    STEM training images; its network's features do not (noisy TEM: 84 % flagged, AUROC 1.000)."""
    model = calibrated(COUNTER)
    image = shared("noisy_tem", "mouse_liver_demo", "0.tif")
    result = emzoo("predict", str(model), str(image), "-o", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    assert "out of distribution (network features" in result.stdout
    (record,) = tmp_path.glob("*.provenance.json")
    ood = json.loads(record.read_text())["ood"]
    assert ood["out_of_distribution"] is True and ood["embedding_score"] > ood["embedding_threshold"]
    assert ood["score"] < ood["threshold"]  # the image features alone would not have flagged it
