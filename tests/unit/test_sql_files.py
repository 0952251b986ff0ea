"""SQL files: split by PostgreSQL's parser, and every file of the project parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from hospitaldb.engine.sql.script import SqlScriptError, load_statements, split_statements
from hospitaldb.engine.steps import STEPS, sql_file
from hospitaldb.paths import PROJECT_SQL_DIR


def test_split_respects_literals_comments_and_dollar_quotes():
    statements = split_statements(
        "-- header; with :name\nSELECT 'a; :b';\nDO $$ BEGIN PERFORM 1; END $$;\n/* c; */ SELECT $t$x;y$t$\n",
        "x.sql",
    )
    assert [s.text for s in statements] == [
        "SELECT 'a; :b'",
        "DO $$ BEGIN PERFORM 1; END $$",
        "SELECT $t$x;y$t$",
    ]
    assert [s.line for s in statements] == [2, 3, 4]
    assert statements[1].location == "x.sql:3"


def test_syntax_error_names_file_and_line():
    with pytest.raises(SqlScriptError, match=r'x\.sql:3: syntax error at or near "FORM"'):
        split_statements("SELECT 1;\n\nSELECT * FORM t;\n", "x.sql")


def test_empty_file_is_an_error(tmp_path: Path):
    empty = tmp_path / "empty.sql"
    empty.write_text("-- nothing here\n")
    with pytest.raises(SqlScriptError, match="holds no SQL statement"):
        load_statements(empty)


@pytest.mark.parametrize(
    "path", sorted(PROJECT_SQL_DIR.rglob("*.sql")), ids=lambda p: str(p.relative_to(PROJECT_SQL_DIR))
)
def test_every_sql_file_parses_and_opens_with_a_comment(path: Path):
    assert load_statements(path)
    assert path.read_text().startswith("--"), "each SQL file opens with a comment on what and why"


def test_every_step_has_its_sql_file_and_none_truncates():
    for step in STEPS:
        text = sql_file(step).read_text().upper()
        assert "TRUNCATE" not in "\n".join(line for line in text.splitlines() if not line.startswith("--"))
