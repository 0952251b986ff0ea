"""SQL files split into statements by PostgreSQL's own parser (pglast).

A naive split on ';' breaks on $$ bodies, comments and string literals, so the
parser decides where statements end. Parsing the whole file before running any
of it also means a syntax error fails the step before it touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pglast
from pglast.parser import ParseError

from hospitaldb.engine.errors import RefreshError, RunStatus
from hospitaldb.text import shorten

SUMMARY_LENGTH = 100


class SqlScriptError(RefreshError, ValueError):
    """A SQL file that cannot be read or parsed; the message names file and line. Nothing ran."""

    status = RunStatus.REFUSED


@dataclass(frozen=True)
class Statement:
    """One statement of a SQL file, with where it stands in that file."""

    text: str
    source: str
    line: int
    number: int

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def summary(self) -> str:
        """The statement's first line, for logs and error messages."""
        return shorten(self.text.splitlines()[0], SUMMARY_LENGTH)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def split_statements(sql: str, source: str = "<sql>") -> list[Statement]:
    """Split SQL text into statements; raise SqlScriptError naming the line of a syntax error."""
    try:
        slices = pglast.split(sql, only_slices=True)
    except ParseError as error:
        message, offset = error.args[0], error.args[1]
        raise SqlScriptError(
            f"{source}:{line_of(sql, offset)}: {message}. Fix the SQL in that file; nothing was run."
        ) from None
    return [
        Statement(text=sql[part], source=source, line=line_of(sql, part.start), number=number)
        for number, part in enumerate(slices, start=1)
    ]


def load_statements(path: Path, source: str | None = None) -> list[Statement]:
    """Read and split one SQL file. `source` names it in messages (defaults to the path)."""
    try:
        sql = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SqlScriptError(f"cannot read SQL file {path}: {error.strerror}") from None
    statements = split_statements(sql, source or str(path))
    if not statements:
        raise SqlScriptError(f"{source or path} holds no SQL statement")
    return statements
