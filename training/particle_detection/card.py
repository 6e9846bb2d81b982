"""What the detector's package says about itself: name, description, citations, intended use and
limitations, and the card sections taken from this folder's README.md."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from emzoo.packaging.info import PackagingInfo, TensorInfo

DATA_URL = "https://github.com/ArdaGen/STEM-Automated-Nanoparticle-Analysis-YOLOv8-SAM"
ANCHOR = (
    "Published anchor on this data set: YOLOv8 box mAP@0.5 = 0.78 (Genc et al., Ultramicroscopy 2025); "
    "compare it with box_ap50 here (a different, fixed test split of 6 images)."
)
METRICS_LONG = {
    "f1": "centre F1: predicted centres matched one-to-one (Hungarian) to labelled particles within half "
    "the box's smaller side",
    "precision": "matched centres / predicted centres",
    "recall": "matched particles / labelled particles",
    "count_rel_error": "|count - true count| / true count, per image (mean over images)",
    "count_rel_error_median": "median over images of the relative count error",
    "box_ap50": "box average precision at IoU 0.5: square boxes of the predicted diameter, ranked by score",
    "f1_min": "the lowest per-image centre F1",
}


def section(markdown: str, heading: str) -> str:
    start = markdown.find(heading)
    if start < 0:
        return ""
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start + len(heading) : end if end > 0 else None].strip()


def packaging_info(
    params: dict[str, Any], raw: TensorInfo, outputs: tuple[TensorInfo, ...], readme: Path, pc: ModuleType
) -> PackagingInfo:
    text = readme.read_text(encoding="utf-8")
    return PackagingInfo(
        name="EM nanoparticle detector (centre heat map + diameter)",
        description=(
            "Fully convolutional CenterNet-style U-Net for HAADF and bright-field STEM images of supported "
            "metal nanoparticles: a centre heat map (a peak of about 1 at each particle centre) and a "
            "diameter map (px). The count is the number of heat-map maxima above a score threshold "
            "calibrated on validation images; each centre gets the diameter read there. " + ANCHOR
        ),
        task="counting",
        inputs=(raw,),
        outputs=outputs,
        authors=({"name": "emzoo developers"},),
        license="MIT",
        cite=(
            {
                "text": "Genc A. et al. (2025) STEM automated nanoparticle analysis with YOLOv8 and SAM, "
                "Ultramicroscopy (data set: annotated HAADF/bright-field STEM images of nanoparticles)",
                "url": DATA_URL,
            },
            {
                "text": "Zhou X., Wang D., Kraehenbuehl P. (2019) Objects as Points. arXiv:1904.07850",
                "url": "https://arxiv.org/abs/1904.07850",
            },
            {
                "text": "Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for "
                "Biomedical Image Segmentation. MICCAI 2015",
                "doi": "10.1007/978-3-319-24574-4_28",
            },
        ),
        tags=(
            "electron-microscopy",
            "stem",
            "haadf",
            "bright-field",
            "nanoparticles",
            "catalysis",
            "counting",
            "detection",
            "particle-size",
            "centernet",
            "unet",
            "2d",
        ),
        pixel_size={},
        pixel_unit=None,
        training_data={
            "name": "STEM nanoparticles (25 HAADF/bright-field STEM images with YOLO boxes)",
            "source": DATA_URL,
            "license": "MIT",
            "split": "by image: test "
            + ", ".join(pc.TEST)
            + "; validation "
            + ", ".join(pc.VAL)
            + "; the other 15 train",
        },
        intended_use=(
            "Detecting, counting and sizing supported metal nanoparticles in HAADF-STEM (bright particles) "
            "or bright-field STEM/TEM (dark particles) images with particles of about 6-150 px. emzoo "
            "predict writes per image the centres (y, x, diameter, score), one count, mean and median "
            "diameters, a size histogram and an overlay."
        ),
        limitations=(
            "Trained on 15 images of six catalyst systems from one source. The JPEGs carry no pixel size, so "
            "the model works in pixels: rescale images whose particles are far outside 6-150 px. Touching "
            "particles of very different sizes may merge or split (the peak finder uses one fixed minimum "
            "distance). Check the overlay before trusting a count."
        ),
        extra_card_sections={
            "Use case notes": section(text, "## Split") + "\n\n" + section(text, "## Design"),
            "How to count": section(text, "## Counting with the package"),
            "Published anchor": ANCHOR,
        },
    )


def per_image_table(samples: list[dict[str, Any]], means: dict[str, dict[str, float]]) -> str:
    """The test images one per row (the packaged model's scores, then the LoG and Otsu baselines'
    F1), with ``means`` at the bottom (the evaluation's ``metrics``, with the median count error,
    and the baselines' mean metrics, keyed like the samples): the card's per-image table."""
    rows = [
        "| image | particles | count | F1 | precision | recall | count error | box AP@0.5 "
        "| LoG F1 | Otsu F1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in samples:
        m = s["metrics"]
        rows.append(
            f"| {s['name']} | {s['true_count']} | {s['count']:.0f} | {m['f1']:.3f} | {m['precision']:.3f} | "
            f"{m['recall']:.3f} | {m['count_rel_error']:.3f} | {m['box_ap50']:.3f} | "
            f"{s['baseline_metrics']['f1']:.3f} | {s['otsu_metrics']['f1']:.3f} |"
        )
    m = means["metrics"]
    rows.append(
        f"| **mean** | | | {m['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
        f"{m['count_rel_error']:.3f} (median {m['count_rel_error_median']:.3f}) | {m['box_ap50']:.3f} | "
        f"{means['baseline_metrics']['f1']:.3f} | {means['otsu_metrics']['f1']:.3f} |"
    )
    return "\n".join(rows)
