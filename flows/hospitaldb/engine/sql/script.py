"""SQL files split into statements by PostgreSQL's own parser (pglast), each parsed once.

A naive split on ';' breaks on $$ bodies, comments and string literals, so the
parser decides where statements end. Parsing the whole file before running any
of it also means a syntax error fails the step before it touches the database.

One parse gives both the statements and their trees: each Statement keeps its tree,
and every reader (targets, the blocking lint, lineage, parallel grouping, checks)
reads that tree. A run reads its files through one SqlFiles, so each file is read
and parsed once per run, however many readers it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pglast
from pglast.parser import ParseError

from hospitaldb.engine.db.errors import RefreshError
from hospitaldb.paths import display_path
from hospitaldb.statuses import RunStatus
from hospitaldb.text import shorten

SUMMARY_LENGTH = 100


class SqlScriptError(RefreshError, ValueError):
    """A SQL file that cannot be read or parsed; the message names file and line. Nothing ran."""

    status = RunStatus.REFUSED


@dataclass(frozen=True)
class Statement:
    """One statement of a SQL file, with where it stands in that file and its parse tree."""

    text: str
    source: str
    line: int
    number: int
    node: Any = field(default=None, compare=False, repr=False)

    @property
    def tree(self) -> Any:
        """The parse tree made when the file was split; a statement made by hand is parsed on first use."""
        if self.node is None:
            (raw,) = parse(self.text, self.source)
            object.__setattr__(self, "node", raw.stmt)
        return self.node

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def summary(self) -> str:
        """The statement's first line, for logs and error messages."""
        return shorten(self.text.splitlines()[0], SUMMARY_LENGTH)


@dataclass(frozen=True)
class SqlFile:
    """A SQL file as read and parsed: its text (comments are read from it) and its statements."""

    path: Path
    source: str
    text: str
    statements: tuple[Statement, ...]


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def parse(sql: str, source: str = "<sql>") -> tuple[Any, ...]:
    """PostgreSQL's parse of sql: its raw statements. SqlScriptError naming the line of a syntax error."""
    try:
        return pglast.parse_sql(sql)
    except ParseError as error:
        message, offset = error.args[0], error.args[1]
        raise SqlScriptError(
            f"{source}:{line_of(sql, offset)}: {message}. Fix the SQL in that file; nothing was run."
        ) from None


def split_statements(sql: str, source: str = "<sql>") -> list[Statement]:
    """Split SQL text into statements, each with its tree, from one parse of the whole text."""
    statements = []
    for number, raw in enumerate(parse(sql, source), start=1):
        # Parser locations are character offsets; a length of 0 means "to the end".
        end = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(sql)
        chunk = sql[raw.stmt_location : end]
        line = line_of(sql, raw.stmt_location + len(chunk) - len(chunk.lstrip()))
        statements.append(Statement(chunk.strip(), source, line, number, raw.stmt))
    return statements


def read_sql_file(path: Path, source: str | None = None, text: str | None = None) -> SqlFile:
    """Read (unless its text is given) and split one SQL file. `source` names it in messages."""
    if text is None:
        text = read_text(path)
    statements = split_statements(text, source or str(path))
    if not statements:
        raise SqlScriptError(f"{source or path} holds no SQL statement")
    return SqlFile(path, source or str(path), text, tuple(statements))


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise SqlScriptError(f"cannot read SQL file {path}: {error.strerror}") from None


def load_statements(path: Path, source: str | None = None) -> list[Statement]:
    """Read and split one SQL file, for a caller that reads it once anyway."""
    return list(read_sql_file(path, source).statements)


class SqlFiles:
    """The SQL files one run reads: each read once, and parsed once, on first use."""

    def __init__(self) -> None:
        self._texts: dict[Path, str] = {}
        self._files: dict[Path, SqlFile] = {}

    def text(self, path: Path) -> str:
        key = path.resolve()
        if key not in self._texts:
            self._texts[key] = read_text(path)
        return self._texts[key]

    def load(self, path: Path, source: str | None = None) -> SqlFile:
        key = path.resolve()
        if key not in self._files:
            self._files[key] = read_sql_file(path, source or display_path(path), self.text(path))
        return self._files[key]
