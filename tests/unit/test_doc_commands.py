"""Every command a page tells a person to type exists, and takes every option it is given.

Read from README.md and docs/**/*.md: each line of a fenced shell block, and each command quoted in
prose or a table (an inline code span), for `prefect`, `hospitaldb` (or `python flows/refresh.py`,
the same options) and `python3 dev.py`. Each is parsed by the installed program's own parser, with
nothing run: Prefect's command line (cyclopts) resolves the command and binds its arguments;
`hospitaldb`'s subcommands parse theirs with argparse, stopped right after parsing; `dev.py`'s
commands are looked up in its table (`dev.py demo` passes its options to the refresh's parser).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from hospitaldb.local import command as hospitaldb_command
from hospitaldb.paths import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]
SHELL_FENCES = {"bash", "sh", "shell", "console", ""}
FENCE = re.compile(r"^```(\S*)\s*\n(.*?)^```", re.M | re.S)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PROGRAMS = ("prefect", "hospitaldb", ".venv/bin/hospitaldb", "python", "python3")
SEPARATORS = {"&&", "||", ";", "|", "&"}
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
# A placeholder (ID, <flow-run-id>) stands for a value: parsed as one that fits any type.
PLACEHOLDER = re.compile(r"^(?:<[^>]+>|[A-Z][A-Z_]*)$")
SAMPLE_VALUE = "00000000-0000-4000-8000-000000000000"
# Where a page says "and any options": nothing to check.
ANY_ARGUMENTS = {"ARGS", "[ARGS]", "OPTIONS", "[OPTIONS]"}


def commands_in(line: str) -> Iterator[list[str]]:
    """The commands of one line of shell: comments dropped, split at `&&`, `;`, `|`, `&`."""
    lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        tokens = list(lexer)
    except ValueError:  # not shell (an unbalanced quote in prose)
        return
    command: list[str] = []
    for token in [*tokens, ";"]:
        if token in SEPARATORS:
            while command and ASSIGNMENT.match(command[0]):
                command.pop(0)
            if command:
                yield command
            command = []
        else:
            command.append(token)


def ours(command: list[str]) -> bool:
    """A command of ours with something to check: a program named alone is a mention."""
    if command[0] in ("python", "python3"):
        return len(command) > 1 and command[1] in ("dev.py", "flows/refresh.py")
    return command[0] in PROGRAMS and len(command) > 1 and command[-1] not in ("…", "...")


def commands_on(page: Path) -> Iterator[tuple[str, str, bool]]:
    """(page, command, typed) for every command of ours on the page: typed when a shell block
    holds it, else quoted in prose or a table (where it may be named without its arguments)."""
    text = page.read_text(encoding="utf-8")
    name = str(page.relative_to(PROJECT_ROOT))
    for fence in FENCE.finditer(text):
        if fence.group(1) in SHELL_FENCES:
            for line in re.sub(r"\\\n\s*", " ", fence.group(2)).splitlines():
                yield from ((name, shlex.join(c), True) for c in commands_in(line) if ours(c))
    for span in CODE_SPAN.findall(FENCE.sub("", text)):
        yield from ((name, shlex.join(c), False) for c in commands_in(span) if ours(c))


ALL_COMMANDS = sorted(set(found for page in PAGES for found in commands_on(page)))


class Parsed(Exception):
    """Raised in place of running a command, once its arguments are parsed."""


def parsed_only(parser: argparse.ArgumentParser, args: list[str] | None = None, namespace=None):
    found, unknown = argparse.ArgumentParser.parse_known_args(parser, args, namespace)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    raise Parsed(found)


def hospitaldb_problem(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str | None:
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parsed_only)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            code = hospitaldb_command.main(argv)
    except Parsed:
        return None
    except SystemExit as exit:
        code = exit.code
    return (
        None if code == 0 else errors.getvalue().strip().splitlines()[-1] if errors.getvalue() else "failed"
    )


def prefect_problem(argv: list[str]) -> str | None:
    # The application behind `prefect` (prefect.cli.app is the function that runs it): parse_args
    # resolves the command, lazily loaded, and binds every argument, running nothing.
    from cyclopts import CycloptsError
    from prefect.cli._app import _app

    try:
        _app.parse_args(argv, print_error=False, exit_on_error=False, help_on_error=False)
    except CycloptsError as error:
        return str(error).strip()
    return None


def dev_commands() -> set[str]:
    """dev.py's own table of commands (a script beside the package, loaded by path)."""
    spec = importlib.util.spec_from_file_location("dev", PROJECT_ROOT / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    return set(dev.COMMANDS)


def dev_problem(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str | None:
    if not argv or argv[0] not in dev_commands():
        return f"dev.py has no command {argv[:1]}"
    if argv[0] == "demo":  # its options are the refresh's
        return hospitaldb_problem(["refresh", *argv[1:]], monkeypatch)
    return None


MISSING_ARGUMENT = ("requires an argument", "arguments are required", "Missing argument")


def test_the_pages_tell_people_to_type_commands_of_each_program():
    programs = {shlex.split(command)[0].split("/")[-1] for _, command, _ in ALL_COMMANDS}
    assert programs >= {"prefect", "hospitaldb", "python3"}, programs
    assert len(ALL_COMMANDS) > 40


@pytest.mark.parametrize(("page", "command", "typed"), ALL_COMMANDS)
def test_every_command_a_page_gives_exists_and_takes_its_options(page, command, typed, monkeypatch):
    tokens = [
        SAMPLE_VALUE if PLACEHOLDER.match(token) else token
        for token in shlex.split(command)
        if token not in ANY_ARGUMENTS
    ]
    if tokens[0] == "prefect":
        problem = prefect_problem(tokens[1:])
    elif tokens[0].endswith("hospitaldb"):
        problem = hospitaldb_problem(tokens[1:], monkeypatch)
    elif tokens[1] == "flows/refresh.py":
        problem = hospitaldb_problem(["refresh", *tokens[2:]], monkeypatch)
    else:
        problem = dev_problem(tokens[2:], monkeypatch)
    if problem and not typed and any(words in problem for words in MISSING_ARGUMENT):
        problem = None  # named in prose without its arguments: the command and its options exist
    assert problem is None, f"{page}: `{command}`: {problem}"
