"""The ``emzoo`` command: thin click commands over the library.

Each command lives in its own module and is added to :data:`main` below. User mistakes raise
:class:`emzoo.errors.EmzooError` and are printed as one line (exit 2 for usage, 1 for failures),
never as a traceback.
"""

from __future__ import annotations

import logging
import sys

import click

from emzoo.cli.options import flag_names
from emzoo.errors import EmzooError
from emzoo.version import __version__


class EmzooGroup(click.Group):
    """Turns emzoo's own errors into one-line messages with the right exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EmzooError as e:
            command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
            click.echo(f"Error: {e.render(flag_names(command))}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=EmzooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="emzoo")
@click.option("-v", "--verbose", is_flag=True, help="Log what emzoo decides (tiles, halos, devices).")
def main(verbose: bool) -> None:
    """Run, test and build bioimage.io deep-learning models for electron microscopy."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def _register() -> None:
    from emzoo.cli import calibrate, info, predict, test, validate

    for module in (predict, test, validate, info, calibrate):
        main.add_command(module.command)
    for optional in ("train", "package", "evaluate", "explain"):
        try:
            module = __import__(f"emzoo.cli.{optional}", fromlist=["command"])
        except ModuleNotFoundError as e:
            if e.name != f"emzoo.cli.{optional}":
                raise
            continue
        main.add_command(module.command)


_register()
