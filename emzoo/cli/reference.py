"""The command-line reference: the ``--help`` of ``emzoo`` and of every subcommand as one markdown page.

``python -m emzoo.cli.reference docs/cli.md`` writes the page (with no argument, or ``-``, it prints
it). The help is rendered at a fixed width (:data:`WIDTH`) so the page is the same on every terminal;
``tests/test_cli_reference.py`` checks that ``docs/cli.md`` is what this renders now. The optional
commands (``train``, ``package``, ``evaluate``, ``explain``) appear only where torch is installed, as
in the ``[dev]`` install the page is generated from.

>>> paths = [path for path, _, _ in iter_commands()]
>>> paths[0], "emzoo predict" in paths
('emzoo', True)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

#: Width the help is wrapped at (click's ``terminal_width`` and ``max_content_width``).
WIDTH = 100

REGENERATE = "python -m emzoo.cli.reference docs/cli.md"


def _root() -> click.Command:
    from emzoo.cli import main

    return main


def iter_commands(
    command: click.Command | None = None, name: str = "emzoo", width: int = WIDTH
) -> Iterator[tuple[str, click.Command, click.Context]]:
    """``(path, command, context)`` for ``command`` (default: ``emzoo``) and, depth first in name
    order, every visible subcommand; ``path`` is the command line that runs it (``"emzoo predict"``)
    and ``context`` renders its help at ``width`` columns."""
    command = _root() if command is None else command
    settings = {**command.context_settings, "terminal_width": width, "max_content_width": width}
    yield from _walk(command, click.Context(command, info_name=name, **settings), name)


def _walk(command: click.Command, ctx: click.Context, path: str):
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            # terminal_width, max_content_width and help_option_names are inherited from the parent
            sub_ctx = click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
            yield from _walk(sub, sub_ctx, f"{path} {name}")


def render_markdown(width: int = WIDTH) -> str:
    """The reference page: an index of the commands, then each command's ``--help`` verbatim."""
    commands = list(iter_commands(width=width))
    lines = [
        "# Command-line reference",
        "",
        f"<!-- Generated from the commands' --help by `{REGENERATE}`: do not edit by hand. -->",
        "",
        "The `--help` of every `emzoo` command (`emzoo COMMAND -h` prints the same).",
        "",
    ]
    for path, command, _ in commands[1:]:
        anchor = path.replace(" ", "-")
        lines.append(f"- [`{path}`](#{anchor}): {command.get_short_help_str(limit=width)}")
    for path, command, ctx in commands:
        help_text = "\n".join(line.rstrip() for line in command.get_help(ctx).splitlines())
        lines += ["", f"## {path}", "", "```text", help_text, "```"]
    return "\n".join(lines) + "\n"


def write_reference(path: str | Path, width: int = WIDTH) -> Path:
    """Write :func:`render_markdown` to ``path``."""
    path = Path(path)
    path.write_text(render_markdown(width), encoding="utf-8")
    return path


def _main(argv: list[str]) -> int:
    if len(argv) > 1 or argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {REGENERATE}   (no argument or '-': print the page)", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    if not argv or argv[0] == "-":
        sys.stdout.write(render_markdown())
    else:
        print(f"wrote {write_reference(argv[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
