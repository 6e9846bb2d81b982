"""``emzoo train USE_CASE --data DIR --out RUN_DIR``: train a use case of ``training/`` (needs torch)."""

from __future__ import annotations

from pathlib import Path

import click

from emzoo.cli.options import device_option
from emzoo.errors import UsageError

_MULTI = ("--set", "--grid")


class _TrainCommand(click.Command):
    """Lets ``--set`` and ``--grid`` take several ``KEY=VALUE`` words: ``--set a=1 b=2`` is read as
    ``--set a=1 --set b=2`` (a word with ``=`` after such an option belongs to it)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        expanded: list[str] = []
        current = None  # the --set or --grid whose words are being read
        for arg in args:
            if arg in _MULTI:
                current = arg
            elif current is not None and not arg.startswith("-") and "=" in arg:
                if expanded[-1] != current:  # a further word: repeat the option before it
                    expanded.append(current)
            else:
                current = None
            expanded.append(arg)
        return super().parse_args(ctx, expanded)


def _list() -> str:
    from emzoo.train.discovery import broken_usecases, discover, training_dirs

    found = discover()
    rows = []
    for name in sorted(found):
        doc = (found[name].__doc__ or "").strip().splitlines()
        rows.append((name, doc[0].strip() if doc else ""))
    rows.extend((folder.name, f"BROKEN: {error}") for folder, error in broken_usecases().items())
    width = max((len(name) for name, _ in rows), default=0)
    lines = [f"Use cases in {', '.join(str(d) for d in training_dirs())}:"]
    lines.extend(f"  {name:<{width}}  {text}".rstrip() for name, text in rows)
    if not found:
        lines.append("  (none; set EMZOO_TRAINING_DIR to the folder that holds them)")
    return "\n".join(lines)


def _epoch_time(uc, data_dir: Path | None, run_dir: Path | None, overrides, device: str) -> str:
    """The epoch time for ``--show-params``: recorded by the run in ``--out``, else measured on
    ``--data`` (a few real training steps), else how to get it."""
    from emzoo.train.trainer import measure_epoch_time, recorded_epoch_time

    recorded = recorded_epoch_time(run_dir) if run_dir is not None else None
    if recorded is not None:
        return str(recorded)
    if data_dir is None:
        return (
            "time per epoch: add --data DIR to measure it on your data and this machine "
            "(or --out RUN_DIR of an earlier run to read it from its log.csv)"
        )
    return str(measure_epoch_time(uc, data_dir, overrides=overrides, device=device))


@click.command("train", cls=_TrainCommand)
@click.argument("use_case", required=False)
@click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), help="Folder with the training images and labels."
)
@click.option("--out", "run_dir", type=click.Path(path_type=Path), help="Run folder to write (or resume).")
@click.option("--epochs", type=int, help="Number of epochs (overrides the parameter; extends a resumed run).")
@click.option(
    "--minutes",
    type=click.FloatRange(min=0),
    metavar="M",
    help="Time budget of this call in minutes (overrides the use case's `minutes` parameter where it has "
    "one; 0: none). Checked before every step: the epoch under way is validated and saved, then training "
    "stops; --resume goes on with a new budget. The learning rate falls from lr to 0 over the budget.",
)
@click.option(
    "--init",
    "init",
    metavar="MODEL",
    help="Start from the pytorch_state_dict weights of this package (zip, folder or rdf.yaml) instead of "
    "random ones: fine-tuning. Its network must be the run's (same layers and sizes).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last completed epoch.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE ...", help="Change parameters.")
@click.option("--grid", multiple=True, metavar="KEY=V1,V2 ...", help="Train every combination (grid search).")
@device_option
@click.option("--list", "list_", is_flag=True, help="List the use cases and exit.")
@click.option(
    "--show-params",
    is_flag=True,
    help="Show USE_CASE's parameters with explanations and the time per epoch (read from the run in "
    "--out, or measured on a few training steps on --data) and exit.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def command(
    use_case,
    data_dir,
    run_dir,
    epochs,
    minutes,
    init,
    resume,
    overrides,
    grid,
    device,
    list_,
    show_params,
    quiet,
):
    """Train USE_CASE (see --list) on --data into the run folder --out.

    \b
    emzoo train membrane_segmentation --data data/isbi2012_membranes --out runs/membranes
    emzoo train membrane_segmentation --out runs/membranes --resume --epochs 120
    emzoo train membrane_segmentation --data DIR --out runs/grid --grid lr=1e-3,3e-4 batch_size=2,4
    emzoo train denoising --data my_noisy_images --init zoo_models/em-denoise-n2v --out runs/mine
    """
    if list_:
        click.echo(_list())
        return
    if not use_case:
        raise UsageError("name a use case (emzoo train USE_CASE ...); 'emzoo train --list' shows them")
    from emzoo.train.discovery import get_usecase
    from emzoo.train.params import format_params, load_param_file

    uc = get_usecase(use_case)
    if show_params:
        if uc.params_file is None:
            raise UsageError(f"use case {use_case!r} declares no params_file")
        click.echo(format_params(load_param_file(uc.params_file)))
        click.echo(_epoch_time(uc, data_dir, run_dir, overrides, device))
        return
    if run_dir is None:
        raise UsageError("--out is required: the run folder to write (or to continue with --resume)")
    if grid:
        if init is not None or minutes is not None:
            raise UsageError(
                "--grid trains from scratch with each run's own parameters: leave out --init/--minutes"
            )
        from emzoo.train.grid import grid_search

        rows = grid_search(
            uc,
            data_dir,
            run_dir,
            grid,
            overrides=overrides,
            epochs=epochs,
            resume=resume,
            device=device,
            progress=not quiet,
        )
        best = rows[0]
        name = uc.main_metric[0]
        click.echo(
            f"best: {run_dir / best['run']} ({name} = {best.get(f'val_{name}')}); "
            f"summary in {run_dir / 'grid_summary.csv'}"
        )
        return
    from emzoo.train.trainer import train

    result = train(
        uc,
        data_dir,
        run_dir,
        overrides=overrides,
        epochs=epochs,
        minutes=minutes,
        init=init,
        resume=resume,
        device=device,
        progress=not quiet,
    )
    name = uc.main_metric[0]
    status = "stopped at the time limit" if result.status == "time_limit" else result.status
    click.echo(
        f"{status} after {result.epochs_completed} epochs; best epoch {result.best_epoch} "
        f"({name} = {result.best_metrics.get(name, float('nan')):.4g}); run folder {result.run_dir}"
    )
    if result.status == "time_limit":
        click.echo(f"go on with: emzoo train {uc.name} --out {result.run_dir} --resume [--minutes M]")
