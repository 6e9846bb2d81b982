"""Every command and option of ``emzoo`` explains itself, and docs/cli.md is the help as it is now."""

from __future__ import annotations

import click
import pytest

from emzoo.cli.reference import REGENERATE, iter_commands, render_markdown
from tests.conftest import REPO

COMMANDS = list(iter_commands())


def test_the_optional_commands_are_there():
    # docs/cli.md is generated from the [dev] install, which has torch: all of them are listed
    paths = {path for path, _, _ in COMMANDS}
    for name in ("predict", "test", "validate", "info", "train", "package", "evaluate", "explain"):
        assert f"emzoo {name}" in paths


@pytest.mark.parametrize(("path", "command", "ctx"), COMMANDS, ids=[path for path, _, _ in COMMANDS])
def test_command_and_its_options_have_help(path, command, ctx):
    assert (command.help or command.short_help or "").strip(), f"{path}: the command has no help text"
    missing = [
        "/".join(param.opts)
        for param in command.get_params(ctx)
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert not missing, f"{path}: options without help text: {', '.join(missing)}"


def test_docs_cli_md_is_up_to_date():
    page = REPO / "docs" / "cli.md"
    current = page.read_text(encoding="utf-8") if page.is_file() else ""
    assert current == render_markdown(), f"docs/cli.md is out of date: run {REGENERATE}"
