"""``emzoo validate MODEL...``: format check only (bioimageio.spec), fast, for CI."""

from __future__ import annotations

import sys

import click

from emzoo.errors import EmzooError


@click.command("validate")
@click.argument("models", nargs=-1, required=True)
def command(models):
    """Check that each MODEL package is a valid bioimage.io description; stop at the first invalid one."""
    from emzoo.package.load import describe, locate

    for source in models:
        try:
            _, rdf = locate(source)
            spec = describe(rdf, source)
        except EmzooError as e:
            click.echo(f"invalid  {source}: {e}", err=True)
            sys.exit(1)
        click.echo(f"valid    {source}: {spec.name} (format {spec.format_version})")
