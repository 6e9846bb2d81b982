"""Detection metrics of counting models: label files, one-to-one matching, AP@0.5, and `emzoo evaluate`
on the counter with YOLO boxes and point CSVs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from emzoo.errors import InputError
from emzoo.metrics import match_pairs
from emzoo.tasks.detection import Particles, box_ap50, detection_scores, read_particle_labels
from tests.conftest import REPO, shared


def test_yolo_boxes_become_pixel_centres_and_sizes(tmp_path):
    label = tmp_path / "a.txt"
    label.write_text("0 0.5 0.25 0.1 0.2\n\n1 0.0 1.0 0.05 0.05 0.9\n")
    p = read_particle_labels(label, (100, 200))  # height 100, width 200
    np.testing.assert_allclose(p.centres, [[24.5, 99.5], [99.5, -0.5]])
    np.testing.assert_allclose(p.sizes, [[20, 20], [5, 10]])
    np.testing.assert_allclose(p.match_radii(), [10, 2.5])


def test_point_csv_with_and_without_diameter(tmp_path):
    (tmp_path / "p.csv").write_text("x,y,diameter_px\n3,4,10\n5,6,2\n")
    p = read_particle_labels(tmp_path / "p.csv", (50, 50))
    np.testing.assert_allclose(p.centres, [[4, 3], [6, 5]])
    np.testing.assert_allclose(p.match_radii(), [5, 1])
    (tmp_path / "napari.csv").write_text("index,axis-0,axis-1\n0,7,8\n")
    q = read_particle_labels(tmp_path / "napari.csv", (50, 50))
    np.testing.assert_allclose(q.centres, [[7, 8]])
    assert q.sizes is None and q.match_radii(3.0).tolist() == [3.0]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.txt", "0 0.5 0.5 0.1\n", "line 1: not a YOLO box"),
        ("bad2.txt", "0 a b c d\n", "line 1: not a YOLO box"),
        ("bad.csv", "a,b\n1,2\n", "needs a header with 'y' and 'x'"),
        ("bad2.csv", "y,x\n1,zz\n", "line 2: not a point"),
        ("labels.json", "{}", "must be YOLO boxes (.txt"),
    ],
)
def test_unreadable_label_layouts_are_one_input_error(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_particle_labels(tmp_path / name, (10, 10))


def test_matching_is_one_to_one_and_maximal():
    true = np.array([[0.0, 0.0], [0.0, 4.0]])
    # greedy nearest matching would pair the middle prediction with the first particle and lose one
    predicted = np.array([[0.0, 1.5], [0.0, -2.0]])
    pairs = match_pairs(predicted, true, max_distance=np.array([3.0, 3.0]))
    assert sorted(pairs) == [(0, 1), (1, 0)]
    assert match_pairs(np.zeros((0, 2)), true, max_distance=np.ones(2)) == []


def test_scores_and_ap_on_hand_made_cases():
    truth = Particles(np.array([[10.0, 10.0], [40.0, 40.0]]), sizes=np.array([[10.0, 10.0], [10.0, 10.0]]))
    perfect = np.array([[10.0, 10.0, 0.9], [40.0, 40.0, 0.8]])
    s = detection_scores(perfect, truth, diameters=np.array([10.0, 10.0]))
    assert (s["precision"], s["recall"], s["f1"], s["count_rel_error"], s["box_ap50"]) == (1, 1, 1, 0, 1)
    # a false detection scored above the true ones: precision 1/2 at recall 1/2, 2/3 at recall 1, and
    # the interpolated envelope takes 2/3 for both halves of the recall axis
    extra = np.array([[70.0, 70.0, 0.99], *perfect])
    assert box_ap50(extra[:, :2], extra[:, 2], np.full((3, 2), 10.0), truth) == pytest.approx(2 / 3)
    # boxes of the wrong size find the centre (F1) but not the box (IoU < 0.5)
    s = detection_scores(perfect, truth, diameters=np.array([3.0, 3.0]))
    assert s["f1"] == 1 and s["box_ap50"] == 0
    nothing = detection_scores(np.zeros((0, 3)), Particles(np.zeros((0, 2))))
    assert nothing["f1"] == 1 and nothing["count_rel_error"] == 0


def _emzoo(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "emzoo", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.slow
def test_evaluate_counter_with_yolo_boxes_and_point_csv(tmp_path):
    data = shared("stem_nanoparticles")
    images, boxes, points = tmp_path / "images", tmp_path / "boxes", tmp_path / "points"
    for d in (images, boxes, points):
        d.mkdir()
    shutil.copy(data / "images" / "Cu4.jpg", images)
    shutil.copy(data / "labels" / "Cu4.txt", boxes)
    truth = read_particle_labels(boxes / "Cu4.txt", (640, 640))
    rows = "\n".join(f"{y},{x}" for y, x in truth.centres)
    (points / "Cu4.csv").write_text("y,x\n" + rows + "\n")
    report_path = tmp_path / "report.json"
    done = _emzoo(
        "evaluate", "zoo_models/em-particle-counter", str(images), str(boxes), "-o", str(report_path)
    )
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[1].split()
    assert header[:4] == ["image", "precision", "recall", "f1"] and "count_rel_error" in header
    assert "box_ap50" in header  # the zoo counter predicts sizes
    report = json.loads(report_path.read_text())
    assert report["samples"][0]["metrics"]["true_count"] == len(truth)
    assert 0 <= report["metrics"]["f1"] <= 1
    done = _emzoo("evaluate", "zoo_models/em-particle-counter", str(images), str(points))
    assert done.returncode == 0, done.stderr
    assert "mean" in done.stdout
    # the same image as RGB (as several of the data set's JPEGs are): boxes scaled by its y and x, not
    # by its channel axis, so the scores are those of the grey image
    from PIL import Image

    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.open(images / "Cu4.jpg").convert("RGB").save(rgb / "Cu4.png")
    rgb_report = tmp_path / "rgb.json"
    done = _emzoo("evaluate", "zoo_models/em-particle-counter", str(rgb), str(boxes), "-o", str(rgb_report))
    assert done.returncode == 0, done.stderr
    grey_f1 = report["samples"][0]["metrics"]["f1"]
    assert json.loads(rgb_report.read_text())["samples"][0]["metrics"]["f1"] == pytest.approx(
        grey_f1, abs=0.02
    )


def test_evaluate_counter_with_unreadable_labels_is_one_line(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    shutil.copy(REPO / "examples" / "membranes" / "0.png", images)
    (labels / "0.json").write_text("{}")
    done = _emzoo("evaluate", "zoo_models/em-particle-counter", str(images), str(labels))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "must be YOLO boxes" in done.stderr
