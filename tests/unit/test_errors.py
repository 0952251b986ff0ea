"""What of a PostgreSQL error may be shown: the allowlist, decided by SQLSTATE, never by the message's words."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hospitaldb.engine.db.allowlist import may_show, message_may_be_shown, names_of, names_proven


@pytest.mark.parametrize(
    ("sqlstate", "shown"),
    [
        ("42P01", True),  # undefined table: names an object
        ("42601", True),  # syntax error: quotes the SQL file, not data
        ("42501", True),  # permission denied
        ("08006", True),  # connection failure
        ("55P03", True),  # lock timeout
        ("57014", True),  # statement timeout
        ("40P01", True),  # deadlock
        ("23505", False),  # unique violation: DETAIL has the key
        ("23502", False),  # not null: DETAIL has the row
        ("23514", False),  # check: DETAIL has the row
        ("23503", False),  # foreign key: DETAIL has the key
        ("22P02", False),  # bad cast: the message quotes the value
        ("22007", False),  # bad date: the message quotes the value
        ("22003", False),  # out of range
        ("21000", False),  # duplicate rows in a view: DETAIL has the row
        ("P0001", False),  # RAISE: says anything
        ("XX000", False),  # internal error
    ],
)
def test_the_message_is_shown_only_for_classes_that_name_objects(sqlstate, shown):
    assert message_may_be_shown(sqlstate, raised_in_a_function=False) is shown


def test_inside_a_function_only_fixed_texts_are_shown():
    # A function's SQL may be built from data: `relation "<a patient's name>" does not exist`.
    assert message_may_be_shown("42P01", raised_in_a_function=True) is False
    assert message_may_be_shown("57014", raised_in_a_function=True) is True  # statement timeout
    assert message_may_be_shown("55P03", raised_in_a_function=True) is True  # lock timeout


def test_the_names_beside_the_message_are_identifiers():
    diag = SimpleNamespace(
        schema_name="reporting", table_name="revenue_summary", column_name=None, constraint_name="paid_check"
    )
    assert names_of(diag) == " on reporting.revenue_summary, constraint paid_check"
    assert (
        names_of(SimpleNamespace(schema_name=None, table_name=None, column_name=None, constraint_name=None))
        == ""
    )


STEP_SQL = "INSERT INTO clinic_mart.ward_counts SELECT ward_id, count(*) FROM clinic_raw.patients GROUP BY 1"


@pytest.mark.parametrize(
    ("sqlstate", "message", "in_function", "shown"),
    [
        # Names the statement holds: our SQL, shown.
        ("42P01", 'relation "clinic_raw.patients" does not exist', False, True),
        ("42703", 'column "ward_id" does not exist', False, True),
        ("42601", 'syntax error at or near "GROUP"', False, True),
        ("42501", "permission denied for table ward_counts", False, True),
        # A row's value cast to a name: quoted back as a name the statement does not hold.
        ("42P01", 'relation "Quixotepatient" does not exist', False, False),
        ("42704", 'unrecognized configuration parameter "Quixotepatient"', False, False),
        ("42704", 'role "Quixotepatient" does not exist', False, False),
        ("55P03", 'could not obtain lock on relation "Quixotepatient"', False, False),
        # A fixed-text SQLSTATE: its fixed words anywhere, any other words nowhere.
        ("57014", "canceling statement due to statement timeout", True, True),
        ("55P03", "canceling statement due to lock timeout", True, True),
        ("40P01", "deadlock detected", True, True),
        ("57014", "bad patient Zelda Quixotepatient", True, False),
        # Fixed texts of classes whose other messages quote values: shown, they hold none.
        ("22012", "division by zero", False, True),
        ("22003", "integer out of range", True, True),
        ("21000", "more than one row returned by a subquery used as an expression", False, True),
        ("22003", 'value "918273645" is out of range for type smallint', False, False),
        ("22P02", 'invalid input syntax for type integer: "NOTE-SECRET-4242"', False, False),
        ("P0001", "division by zero", True, False),  # a RAISE's words, however innocent
    ],
)
def test_a_message_is_shown_only_when_its_words_hold_no_value(sqlstate, message, in_function, shown):
    assert may_show(sqlstate, message, raised_in_a_function=in_function, statement=STEP_SQL) is shown


def test_names_are_proven_against_the_statement_and_sql_the_code_writes_itself_needs_no_proof():
    assert names_proven('relation "CLINIC_RAW.PATIENTS" does not exist', STEP_SQL)
    assert names_proven("permission denied for table ward_counts", STEP_SQL)  # nothing quoted
    assert not names_proven('relation "Quixotepatient" does not exist', STEP_SQL)
    assert names_proven('relation "x" does not exist', None)


SUMMARY_SQL = 'INSERT INTO reporting.revenue_summary SELECT branch_id, "Odd ""name""" FROM staging.billing'


@pytest.mark.parametrize(
    ("message", "proven"),
    [
        ('relation "reporting.revenue_summary" does not exist', True),
        ('column "Odd "name"" does not exist', False),  # a quote in a name: not doubled, withheld
        ('column "branch_id" does not exist', True),
        # A patient's value cast to a name, inside an identifier of ours: no longer "proven".
        ('relation "Mary" does not exist', False),
        ('role "venue" does not exist', False),
        ('relation "reporting.Mary" does not exist', False),
        # An unquoted dotted name: PostgreSQL prints some bare (42601, from a value cast to regclass).
        ("improper relation name (too many dotted names): mary.ann.smith.jones", False),
        ('syntax error at or near "branch_id"', True),
        ('relation "summary"" does not exist', False),  # unmatched quote
    ],
)
def test_a_quoted_name_is_proven_only_as_a_whole_identifier_of_the_statement(message, proven):
    assert names_proven(message, SUMMARY_SQL) is proven


def test_names_beside_an_error_raised_in_a_function_are_not_shown():
    # `RAISE ... USING TABLE = full_name` puts any value in table_name.
    diag = SimpleNamespace(
        schema_name="public",
        table_name="Mary Quixotepatient",
        column_name=None,
        constraint_name=None,
        context="PL/pgSQL function leak() line 3 at RAISE",
    )
    assert names_of(diag) == ""
