"""What the em_modality package says about itself (:class:`~emzoo.packaging.info.PackagingInfo`)."""

from __future__ import annotations

from typing import Any

from emzoo.packaging.info import PackagingInfo, TensorInfo

from . import data

CITE = (
    {
        "text": "Matuszewski D.J., Sintorn I.-M. (2022) Interpreting deep learning output for out-of-"
        "distribution detection. arXiv:2211.03637 (the probability score interpreter, PSI)",
        "url": "https://arxiv.org/abs/2211.03637",
    },
    {
        "text": "Cardona A. et al. (2010) An integrated micro- and macroarchitectural analysis of the "
        "Drosophila brain by computer-assisted serial section electron microscopy. PLoS Biol 8(10) "
        "(ISBI 2012 ssTEM data)",
        "doi": "10.1371/journal.pbio.1000500",
    },
    {
        "text": "Gen A. et al., STEM automated nanoparticle analysis with YOLOv8 and SAM (HAADF and "
        "bright-field STEM images)",
        "url": "https://github.com/ArdaGen/STEM-Automated-Nanoparticle-Analysis-YOLOv8-SAM",
    },
    {
        "text": "Lu C. et al. (2024) EMDiffuse: a diffusion-based deep learning method augmenting "
        "ultrastructural imaging and volume electron microscopy (noisy TEM tiles)",
        "url": "https://github.com/Luchixiang/EMDiffuse",
    },
)


def _section(markdown: str, heading: str) -> str:
    start = markdown.find(heading)
    if start < 0:
        return ""
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start + len(heading) : end if end > 0 else None].strip()


def packaging_info(params: dict[str, Any], raw: TensorInfo, output_id: str, readme: str) -> PackagingInfo:
    g, p = params["grid"], params["patch"]
    return PackagingInfo(
        name="EM image-type classifier (patch CNN + PSI)",
        description=(
            "Tells which kind of electron micrograph an image is (ssTEM of stained tissue, HAADF STEM, "
            f"bright-field STEM of nanoparticles, noisy TEM) from a {g} x {g} grid of {p} px patches, "
            "and with the probability score interpreter (PSI) whether it is of a type the network never "
            "saw (unknown)."
        ),
        task="classification",
        inputs=(raw,),
        outputs=(
            TensorInfo(
                id=output_id,
                axes="c",
                channel_names=data.CLASSES,
                description=(
                    f"raw class logits, the mean over the {g * g} patches of the image; emzoo predict "
                    "turns them into softmax probabilities, PSI scores and a verdict (config.emzoo.psi)"
                ),
            ),
        ),
        authors=({"name": "emzoo developers"},),
        license="MIT",
        cite=CITE,
        tags=(
            "electron-microscopy",
            "classification",
            "image-type",
            "out-of-distribution",
            "psi",
            "tem",
            "stem",
            "haadf",
            "cnn",
            "2d",
        ),
        pixel_size={},  # the image types come at very different (and partly unknown) pixel sizes
        pixel_unit=None,
        training_data={
            "name": "EM image types: ISBI 2012 ssTEM, STEM nanoparticles (HAADF, bright-field), noisy TEM",
            "source": "https://imagej.net/events/isbi-2012-segmentation-challenge",
            "license": "research use (ISBI 2012); MIT (STEM nanoparticles, EMDiffuse)",
            "split": "by image, fixed in training/em_modality/data.py: see the use case notes",
        },
        intended_use=(
            "Sorting EM images by type before choosing a model for them (e.g. the membrane model for "
            "ssTEM, the particle counter for STEM), and flagging images of a type none of the four "
            "classes covers. One verdict per image: a class, 'unsure' or 'unknown'."
        ),
        limitations=(
            "Four image types from one or two sources each: a new microscope, stain, sample or pixel "
            "size of a known type may be called unsure or unknown, and an unknown type that shares a "
            "known type's texture (e.g. SEM of particles) may be taken for it. Most images of the "
            "unknown types tested get the verdict unsure (their logits lie in the lower tail of the "
            "noisy-TEM class, whose training images are varied), none unknown: treat unsure as 'not "
            "clearly a known type', and compare auroc_max_psi with auroc_max_softmax in the "
            f"evaluation. Images smaller than {p} px are "
            "extended by repeating their edge pixels."
        ),
        extra_card_sections={
            "Use case notes": _section(readme, "## Split") + "\n\n" + _section(readme, "## Whole images"),
            "Verdicts (PSI)": _section(readme, "## The PSI"),
        },
    )
