"""Training and evaluation inputs: empty and mismatched data, resume without, with a damaged, an
incomplete or a hostile checkpoint; evaluate with labels that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.reliability import builders as b
from tests.reliability.harness import Case, Ctx

TINY = ("--set", "iterations_per_epoch=1", "batch_size=2", "crop_size=32", "depth=2", "features=4")
UC = "membrane_segmentation"
CHECKPOINT = r"(?i)latest\.pt"


def case(id: str, what: str, args: tuple[str, ...] = (), exit=0, message: str | None = None, **kw) -> Case:
    """A case of this table (training; area T unless given)."""
    return Case(id, "training", what, args, exit, message, **{"area": "T", **kw})


def data(n: int = 10, image=(64, 64), label=(64, 64), values=(0, 255), labels: bool = True):
    """A setup: ``data/image`` and ``data/label`` PNGs."""

    def setup(ctx: Ctx) -> None:
        g = b.rng(1)
        for i in range(n):
            b.png(ctx.dir / "data" / "image" / f"{i}.png", g.integers(0, 255, image, dtype=np.uint8))
            if labels:
                mask = np.where(g.random(label) > 0.7, values[0], values[1]).astype(np.uint8)
                b.png(ctx.dir / "data" / "label" / f"{i}.png", mask)

    return setup


def run_copy(change=None):
    """A setup: a copy of the one-epoch run as ``run``, changed by ``change(run folder)``."""

    def setup(ctx: Ctx) -> None:
        b.copy_tree(ctx.res.get("run"), ctx.dir / "run")
        if change is not None:
            change(ctx.dir / "run")

    return setup


def _latest(run: Path) -> Path:
    return run / "weights" / "latest.pt"


def truncated(run: Path) -> None:
    b.truncate(_latest(run), 0.5)


def missing_keys(run: Path) -> None:
    import torch

    state = torch.load(_latest(run), weights_only=True)
    del state["optimizer"], state["rng"]
    torch.save(state, _latest(run))


def wrong_shapes(run: Path) -> None:
    import torch

    state = torch.load(_latest(run), weights_only=True)
    state["model"] = {k: torch.zeros(3, 3) for k in state["model"]}
    torch.save(state, _latest(run))


def pickle_payload(run: Path) -> None:
    b.torch_pickle(_latest(run))


def corrupt_config(run: Path) -> None:
    (run / "config.json").write_text("{ not json")


def other_usecase(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    config["use_case"] = "denoising"
    (run / "config.json").write_text(json.dumps(config))


def resume(*extra: str) -> tuple[str, ...]:
    return ("train", UC, "--out", "run", "--resume", "--epochs", "2", "-q", *extra)


def train_tiny(*extra: str) -> tuple[str, ...]:
    return ("train", UC, "--data", "data", "--out", "out/run", "--epochs", "1", "-q", *TINY, *extra)


def evaluate(*extra: str, labels: str = "data/label") -> tuple[str, ...]:
    return ("evaluate", "{model2d}", "data/image", labels, "--usecase", UC, *extra)


def _resume_case(id: str, what: str, change, message: str, **kw) -> Case:
    return case(
        f"train-resume-{id}", what, resume(), (1, 2), message, setup=run_copy(change), outputs=(), **kw
    )


def _small_labels(ctx: Ctx) -> None:
    data()(ctx)
    b.png(ctx.dir / "data" / "label" / "3.png", np.zeros((32, 32), np.uint8))


def _text_label(ctx: Ctx) -> None:
    data()(ctx)
    b.text(ctx.dir / "data" / "label" / "3.png")


CASES: list[Case] = [
    case(
        "train-ok",
        "positive control: one tiny epoch trains and writes a readable run folder",
        train_tiny(),
        0,
        r"finished after 1 epochs",
        setup=data(),
        timeout=180,
    ),
    case(
        "train-resume-ok",
        "positive control: resuming the one-epoch run for a second epoch",
        resume(),
        0,
        r"finished after 2 epochs",
        setup=run_copy(),
        outputs=("run",),
        scratch=("run",),
        timeout=180,
    ),
    case(
        "train-empty-data",
        "an empty data folder: one line",
        train_tiny(),
        (1, 2),
        r"data",
        setup=lambda ctx: (ctx.dir / "data").mkdir(),
    ),
    case(
        "train-label-size-mismatch",
        "labels of another size than their images: one line",
        train_tiny(),
        (1, 2),
        r"(?i)size|shape",
        setup=data(label=(32, 32)),
    ),
    case(
        "train-label-values",
        "labels with values other than 0 and 255: one line",
        train_tiny(),
        (1, 2),
        r"labels must be",
        setup=data(values=(7, 255)),
    ),
    case(
        "train-existing-run",
        "training into a run folder that holds a run, without --resume: usage error",
        ("train", UC, "--data", "data", "--out", "run", *TINY),
        2,
        r"already holds a run",
        setup=lambda ctx: (data()(ctx), run_copy()(ctx)),
        outputs=(),
    ),
    case(
        "train-resume-without-run",
        "--resume with no checkpoint: usage error",
        resume(),
        2,
        r"nothing to resume",
        setup=lambda ctx: (ctx.dir / "run").mkdir(),
        outputs=(),
    ),
    _resume_case("truncated", "--resume with a truncated checkpoint: one line", truncated, CHECKPOINT),
    _resume_case(
        "missing-keys",
        "--resume with a checkpoint missing the optimizer and RNG: one line naming them",
        missing_keys,
        CHECKPOINT + r".*(?:optimizer|rng)",
    ),
    _resume_case(
        "wrong-shapes", "--resume with weights of the wrong shapes: one line", wrong_shapes, CHECKPOINT
    ),
    _resume_case(
        "pickle-payload",
        "--resume with a checkpoint holding a pickle payload: refused by weights_only, one line",
        pickle_payload,
        CHECKPOINT,
        marker=False,
    ),
    _resume_case(
        "corrupt-config", "--resume with a damaged config.json: one line", corrupt_config, r"config\.json"
    ),
    _resume_case(
        "other-usecase",
        "--resume of a run of another use case: usage error",
        other_usecase,
        r"is a run of 'denoising'",
    ),
    case(
        "train-resume-changed-params",
        "--resume with changed parameters: usage error",
        resume("--set", "lr=0.5"),
        2,
        r"cannot change lr",
        setup=run_copy(),
        outputs=(),
    ),
    # evaluate
    case(
        "eval-ok",
        "positive control: evaluate prints the metrics and saves the report",
        evaluate("-o", "out/report.json"),
        0,
        r"mean",
        setup=data(),
    ),
    case(
        "eval-tta",
        "evaluate --tta scores the test-time-augmented outputs and says so in the header",
        evaluate("--tta"),
        0,
        r", tta\]",
        setup=data(),
    ),
    case(
        "eval-label-size-mismatch",
        "evaluate with a label of another size than its image: one line naming it",
        evaluate(),
        (1, 2),
        r"3\.png.*(?i:size|shape)",
        setup=_small_labels,
    ),
    case(
        "eval-label-unreadable",
        "evaluate with a label that is not an image: one line naming it",
        evaluate(),
        1,
        r"3\.png",
        setup=_text_label,
    ),
    case(
        "eval-missing-labels",
        "evaluate with images that have no label: one line",
        evaluate(),
        1,
        r"no label file",
        setup=lambda ctx: (data()(ctx), (ctx.dir / "data" / "label" / "3.png").unlink()),
    ),
]
