"""What of a PostgreSQL error may be shown: the allowlist, decided by SQLSTATE, never by the message's words."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hospitaldb.engine.allowlist import message_may_be_shown, names_of


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
