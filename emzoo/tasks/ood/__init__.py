"""Is an input unlike the model's training data? One verdict per input: a score, the package's
threshold, yes or no, and the reasons in words.

Packages carry the statistics of their training images' features in ``config.emzoo.ood``
(:mod:`emzoo.tasks.ood.score`; the features: :mod:`emzoo.tasks.ood.features`), recorded when emzoo
packages a model or by ``emzoo calibrate`` for any package. The score is the distance of the
input's features (raw image statistics, and the statistics of the model's outputs once it has run)
to the nearest training image's; above the threshold calibrated on in-distribution images the input
is out of distribution. Two reasons flag an input on their own: a pixel size far from the training
data's (``config.emzoo.training_data``) and a constant image. A package without statistics is
checked for these two only.

``emzoo predict --ood warn|skip|fail`` says what then happens (a warning in the summary; no output
for that input; the run stops); every input's :meth:`Verdict.record` goes to its provenance.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from emzoo.errors import InputError
from emzoo.io.meta import Image
from emzoo.io.units import convert, short_unit
from emzoo.tasks.ood.embedding import load_embedding
from emzoo.tasks.ood.features import IMAGE_FEATURES, image_features, output_features
from emzoo.tasks.ood.score import OodStats, schema_note, score

log = logging.getLogger(__name__)
OodPolicy = Literal["warn", "skip", "fail"]
POLICIES: tuple[str, ...] = ("warn", "skip", "fail")
PIXEL_SIZE_FACTOR = 1.5  # a pixel size off by more than this factor either way is a reason
SHOWN_REASONS = 3  # the features that differ most are named, at most this many
_WORDS = {f.name: f.words for f in IMAGE_FEATURES}


class OutOfDistribution(InputError):
    """An input out of distribution under ``ood="fail"``: the run stops here."""


@dataclass(frozen=True)
class Verdict:
    """One input's out-of-distribution verdict (``score``/``threshold`` None: the package has no
    statistics, only the pixel size and constant-image checks ran)."""

    score: float | None
    threshold: float | None
    out_of_distribution: bool
    reasons: tuple[str, ...] = ()
    embedding_score: float | None = None  # the network's features (emzoo.tasks.ood.embedding)
    embedding_threshold: float | None = None

    def record(self) -> dict[str, Any]:
        """``{score, threshold, out_of_distribution, reasons}`` (and the network-feature score and
        threshold where the package has them): what the provenance record keeps."""
        found = {
            "score": None if self.score is None else round(self.score, 4),
            "threshold": None if self.threshold is None else round(self.threshold, 4),
            "out_of_distribution": self.out_of_distribution,
            "reasons": list(self.reasons),
        }
        if self.embedding_score is not None and self.embedding_threshold is not None:
            found["embedding_score"] = round(self.embedding_score, 5)
            found["embedding_threshold"] = round(self.embedding_threshold, 5)
        return found

    def text(self) -> str:
        """The verdict as one line of a summary."""
        shown = "; ".join(self.reasons)
        scores = []
        if _above(self.score, self.threshold):
            scores.append(f"score {self.score:.3g} > threshold {self.threshold:.3g}")
        if _above(self.embedding_score, self.embedding_threshold):
            scores.append(f"network features {self.embedding_score:.3g} > {self.embedding_threshold:.3g}")
        if not scores:
            return shown  # the pixel size or a constant image only
        return f"out of distribution ({'; '.join(scores)}): {shown}"


def _above(score: float | None, threshold: float | None) -> bool:
    """Whether a score is above its threshold (False when either is missing)."""
    return score is not None and threshold is not None and score > threshold


def ood_stats(emzoo_config: dict[str, Any]) -> OodStats | None:
    """The package's statistics (``config.emzoo.ood``), or None when it has none or has them in
    another schema (:func:`~emzoo.tasks.ood.score.schema_note`: then only the pixel size and the
    constant-image checks run)."""
    entry = (emzoo_config or {}).get("ood")
    if not entry or schema_note(entry) is not None:
        return None
    return OodStats.from_dict(entry)


class Check:
    """The check of one input: its image features once, then a verdict before the model runs (image
    features only) and after it (with the outputs' features)."""

    def __init__(self, emzoo_config: dict[str, Any], image: Image, spec=None, package=None, predictor=None):
        """``spec`` (the package's :class:`~emzoo.package.spec.ModelSpec`) is needed for verdicts
        with outputs; ``package`` (the loaded :class:`~emzoo.package.load.ModelPackage`) for the
        network's features, where the package records them; ``predictor`` (the
        :class:`~emzoo.runtime.predictor.Predictor` about to predict ``image`` in one call) reads
        them during that prediction, where the package's were read so: then the verdict with the
        outputs has them, the one before the run not."""
        self.spec, self.image = spec, image
        self.stats = ood_stats(emzoo_config)
        entry = (emzoo_config or {}).get("ood")
        self.embedding, self.package = None, package
        if self.stats is not None and package is not None:
            self.embedding = load_embedding(package, (entry or {}).get("embedding"))
        self.embedding_score = None
        self.tapped = None  # the network's features, read during the prediction
        if self.embedding is not None and predictor is not None:
            self.tapped = self.embedding.tap(predictor, image)
        if self.embedding is not None and self.tapped is None:
            self.embedding_score = self._crop_score()
        self.note = schema_note(entry) if entry else None  # statistics this emzoo cannot use
        if self.note is not None:
            _warn_once(self.note)
        with np.errstate(all="ignore"):
            self.features = image_features(image) if self.stats is not None else {}
        self.hard = _pixel_size_reasons(image, (emzoo_config or {}).get("training_data") or {})
        if not self.features and _constant(image):
            self.hard.append("it is constant (one grey value everywhere): there is nothing to predict from")

    def _crop_score(self) -> float | None:
        """The network-feature score of the image's central crop, run through the cut network."""
        with np.errstate(all="ignore"):
            return self.embedding.score(self.package.spec, self.image)

    def verdict(self, outputs: dict[str, Image] | None = None) -> Verdict:
        """The verdict; ``outputs`` (the prediction, in memory) add the output features."""
        if self.stats is None or not self.features:
            notes = (*self.hard, *([self.note] if self.note else []))
            return Verdict(None, None, bool(self.hard), notes)
        values = dict(self.features)
        if outputs is not None and self.tapped is not None and self.embedding_score is None:
            self.embedding_score = self.embedding.score_tapped(self.tapped)
            if self.embedding_score is None:  # the prediction did not read them: the crop on its own
                self.embedding_score = self._crop_score()
        if outputs is not None and self.spec is not None:
            with np.errstate(all="ignore"):
                values |= output_features(self.spec, self.image, outputs)
        result = score(self.stats, values)
        reasons = list(self.hard)
        flagged = result.score > result.threshold
        if flagged:
            reasons += [_deviation_text(*d) for d in result.deviations[:SHOWN_REASONS] if d[4] >= 1.0]
            if len(reasons) == len(self.hard):
                reasons.append("its features, taken together, are unlike every training image's")
        e_score = self.embedding_score
        e_threshold = None if self.embedding is None else self.embedding.threshold
        if _above(e_score, e_threshold):
            flagged = True
            reasons.append("the model's network sees it unlike every training image (its own features)")
        return Verdict(
            result.score, result.threshold, flagged or bool(self.hard), tuple(reasons), e_score, e_threshold
        )


def assess(spec, image: Image, outputs: dict[str, Image] | None = None) -> Verdict:
    """The verdict on ``image`` for the package ``spec`` (a :class:`~emzoo.package.spec.ModelSpec`),
    with the prediction's ``outputs`` when it has run."""
    return Check(spec.emzoo, image, spec).verdict(outputs)


def check_input(emzoo_config: dict[str, Any], image: Image) -> list[str]:
    """Plain-language reasons why ``image`` looks unlike the training data of a package with this
    ``config.emzoo``, judged before the model runs (image features only); [] if it looks fine."""
    verdict = Check(emzoo_config, image).verdict()
    return [verdict.text()] if verdict.out_of_distribution else []


def policy_note(verdict: Verdict, shown: str, policy: OodPolicy) -> str | None:
    """The summary line for an input (``shown``: its path as the summary writes it), or None when it
    is in distribution; under ``fail`` an input out of distribution raises :class:`OutOfDistribution`."""
    if not verdict.out_of_distribution:
        return None
    if policy == "fail":
        raise OutOfDistribution(f"{shown}: {verdict.text()}; the run stops here ({{ood=fail}})")
    if policy == "skip":
        return f"skipped {shown}, no output written ({{ood=skip}}): {verdict.text()}"
    return f"warning: {shown}: {verdict.text()}"


@functools.lru_cache(maxsize=8)
def _warn_once(note: str) -> None:
    log.warning("this package: %s", note)


def _deviation_text(feature: str, value: float, low: float, high: float, z: float) -> str:
    if feature in _WORDS:
        words = _WORDS[feature]
    else:  # an output feature: "<output id>.<statistic>"
        tid, _, stat = feature.partition(".")
        words = f"the {stat} of its {tid!r} output"
    return f"{words} is {value:.3g}, the training images' {low:.3g}..{high:.3g}"


def _constant(image: Image) -> bool:
    from emzoo.tasks.ood.features import plane

    a = plane(image)
    return a.size > 0 and np.isfinite(a).all() and float(a.max()) == float(a.min())


def _pixel_size_reasons(image: Image, training: dict[str, Any]) -> list[str]:
    train_px, train_unit = training.get("pixel_size") or {}, training.get("unit")
    meta = image.meta
    if not train_px or not train_unit or not meta.pixel_size or not meta.unit:
        return []
    off = []
    for axis, size in meta.pixel_size.items():
        if axis not in train_px or not size:
            continue
        try:
            mine = convert(size, meta.unit, train_unit)
        except ValueError:
            continue
        factor = mine / train_px[axis]
        if factor > PIXEL_SIZE_FACTOR or factor < 1 / PIXEL_SIZE_FACTOR:
            off.append((axis, mine, train_px[axis], factor))
    if not off:
        return []
    axes = "/".join(a for a, *_ in off)
    _, mine, train, factor = off[0]
    unit = short_unit(train_unit)
    return [
        f"its pixel size along {axes} is {mine:.4g} {unit}, the training data's {train:.4g} {unit} "
        f"({factor:.3g}x): structures appear at another scale than the model learned; "
        f"resample the image to about {train:.4g} {unit}/px for reliable results"
    ]
