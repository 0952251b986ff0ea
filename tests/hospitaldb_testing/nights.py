"""Random nights of source changes, for the property test of incremental refresh.

A change is drawn as numbers (which visit, which patient, how many days) and resolved against the
rows the database holds when it is applied, so every drawn change is valid whatever came before
it, and Hypothesis can shrink a failing night to its smallest form.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from hypothesis import strategies as st

from hospitaldb.paths import PROJECT_SQL_DIR

STEP_CHOICES = (
    ("refresh_phase2_materialized_views", "refresh_phase3_reporting_tables", "refresh_dashboards"),
    ("refresh_phase2_materialized_views", "refresh_phase3_reporting_tables"),  # dashboards skipped
    ("refresh_dashboards",),  # only the dashboards: nothing new upstream
)

pick = st.integers(min_value=0, max_value=10_000)  # the n-th row (modulo how many there are)
money = st.integers(min_value=1, max_value=90_000).map(lambda cents: cents / 100)
days = st.integers(min_value=-400, max_value=3)

CHANGES = st.one_of(
    st.tuples(st.just("new_visit"), pick, pick, days, st.lists(money, max_size=2), st.booleans()),
    st.tuples(st.just("move_visit"), pick, pick, pick, days),
    st.tuples(st.just("delete_visit"), pick),  # the newest visits first: a patient's latest, or only
    st.tuples(st.just("refund"), pick, money),
    st.tuples(st.just("move_payment"), pick, pick),
    st.tuples(st.just("bill_status"), pick, st.sampled_from(["paid", "partially_paid", "pending", "denied"])),
    st.tuples(st.just("delete_bill"), pick),
    st.tuples(st.just("rename_branch"), pick, st.text("NSEW", min_size=1, max_size=3)),
    st.tuples(st.just("doctor_moves"), pick, pick),
    st.tuples(st.just("patient_moves"), pick, pick, st.booleans()),
    st.tuples(st.just("new_patient"), pick),
    st.tuples(st.just("twice"), pick, days),  # one visit changed twice in one batch
    st.tuples(st.just("flash_visit"), pick),  # inserted, then deleted, in one batch
    st.tuples(st.just("truncate_payments")),
)


@dataclass(frozen=True)
class Night:
    changes: list[tuple[Any, ...]]
    steps: tuple[str, ...]


NIGHTS = st.lists(
    st.builds(Night, st.lists(CHANGES, min_size=1, max_size=6), st.sampled_from(STEP_CHOICES)),
    min_size=1,
    max_size=4,
)


def apply_changes(url: str, changes: list[tuple[Any, ...]]) -> None:
    """One loader's batch: every change in one transaction, as a nightly load commits."""
    connection = psycopg2.connect(url)
    try:
        with connection, connection.cursor() as cursor:
            for change in changes:
                APPLY[change[0]](cursor, *change[1:])
    finally:
        connection.close()


def _nth(cursor: Any, query: str, n: int) -> Any:
    cursor.execute(f"SELECT count(*) FROM ({query}) AS q")
    count = cursor.fetchone()[0]
    if not count:
        return None
    cursor.execute(f"{query} OFFSET %s LIMIT 1", (n % count,))
    row = cursor.fetchone()
    return row[0] if len(row) == 1 else row


def _next_id(cursor: Any, table: str, column: str) -> int:
    cursor.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM staging.{table}")
    return cursor.fetchone()[0]


def _new_visit(
    cursor: Any, patient: int, doctor: int, shift: int, amounts: list[float], paid: bool
) -> int | None:
    patient_id = _nth(cursor, "SELECT patient_id FROM staging.patients ORDER BY 1", patient)
    found = _nth(cursor, "SELECT doctor_id, branch_id FROM staging.doctors ORDER BY 1", doctor)
    if patient_id is None or found is None:
        return None
    doctor_id, branch_id = found
    visit_id = _next_id(cursor, "visits", "visit_id")
    cursor.execute(
        "INSERT INTO staging.visits VALUES (%s, %s, %s, %s, "
        "(SELECT max(visit_date) FROM staging.visits) + %s, 'outpatient')",
        (visit_id, patient_id, doctor_id, branch_id, shift),
    )
    for amount in amounts:
        billing_id = _next_id(cursor, "billing", "billing_id")
        cursor.execute(
            "INSERT INTO staging.billing VALUES (%s, %s, 'GEN', %s, %s, current_date)",
            (billing_id, visit_id, amount, "paid" if paid else "pending"),
        )
        if paid:
            cursor.execute(
                "INSERT INTO staging.payments VALUES (%s, %s, %s, current_date, 'card')",
                (_next_id(cursor, "payments", "payment_id"), billing_id, amount),
            )
    return visit_id


def _move_visit(cursor: Any, visit: int, patient: int, doctor: int, shift: int) -> None:
    visit_id = _nth(cursor, "SELECT visit_id FROM staging.visits ORDER BY 1", visit)
    patient_id = _nth(cursor, "SELECT patient_id FROM staging.patients ORDER BY 1", patient)
    found = _nth(cursor, "SELECT doctor_id, branch_id FROM staging.doctors ORDER BY 1", doctor)
    if visit_id is None or patient_id is None or found is None:
        return
    cursor.execute(
        "UPDATE staging.visits SET patient_id = %s, doctor_id = %s, branch_id = %s, "
        "visit_date = visit_date + %s WHERE visit_id = %s",
        (patient_id, *found, shift, visit_id),
    )


def _delete_visit(cursor: Any, visit: int) -> None:
    visit_id = _nth(
        cursor, "SELECT visit_id FROM staging.visits ORDER BY visit_date DESC, visit_id", visit % 5
    )
    if visit_id is not None:
        _remove_visit(cursor, visit_id)


def _remove_visit(cursor: Any, visit_id: int) -> None:
    cursor.execute(
        "DELETE FROM staging.payments WHERE billing_id IN (SELECT billing_id FROM staging.billing WHERE visit_id = %s)",
        (visit_id,),
    )
    cursor.execute("DELETE FROM staging.billing WHERE visit_id = %s", (visit_id,))
    cursor.execute("DELETE FROM staging.visits WHERE visit_id = %s", (visit_id,))


def _refund(cursor: Any, bill: int, amount: float) -> None:
    billing_id = _nth(cursor, "SELECT billing_id FROM staging.billing ORDER BY 1", bill)
    if billing_id is not None:
        cursor.execute(
            "INSERT INTO staging.payments VALUES (%s, %s, %s, current_date, 'refund')",
            (_next_id(cursor, "payments", "payment_id"), billing_id, -amount),
        )


def _move_payment(cursor: Any, payment: int, bill: int) -> None:
    payment_id = _nth(cursor, "SELECT payment_id FROM staging.payments ORDER BY 1", payment)
    billing_id = _nth(cursor, "SELECT billing_id FROM staging.billing ORDER BY 1", bill)
    if payment_id is not None and billing_id is not None:
        cursor.execute(
            "UPDATE staging.payments SET billing_id = %s WHERE payment_id = %s", (billing_id, payment_id)
        )


def _bill_status(cursor: Any, bill: int, status: str) -> None:
    billing_id = _nth(cursor, "SELECT billing_id FROM staging.billing ORDER BY 1", bill)
    if billing_id is not None:
        cursor.execute("UPDATE staging.billing SET status = %s WHERE billing_id = %s", (status, billing_id))


def _delete_bill(cursor: Any, bill: int) -> None:
    billing_id = _nth(cursor, "SELECT billing_id FROM staging.billing ORDER BY 1", bill)
    if billing_id is not None:
        cursor.execute("DELETE FROM staging.payments WHERE billing_id = %s", (billing_id,))
        cursor.execute("DELETE FROM staging.billing WHERE billing_id = %s", (billing_id,))


def _rename_branch(cursor: Any, branch: int, suffix: str) -> None:
    branch_id = _nth(cursor, "SELECT branch_id FROM staging.branches ORDER BY 1", branch)
    cursor.execute(
        "UPDATE staging.branches SET branch_name = branch_name || ' ' || %s WHERE branch_id = %s",
        (suffix, branch_id),
    )


def _doctor_moves(cursor: Any, doctor: int, branch: int) -> None:
    doctor_id = _nth(cursor, "SELECT doctor_id FROM staging.doctors ORDER BY 1", doctor)
    branch_id = _nth(cursor, "SELECT branch_id FROM staging.branches ORDER BY 1", branch)
    cursor.execute("UPDATE staging.doctors SET branch_id = %s WHERE doctor_id = %s", (branch_id, doctor_id))


def _patient_moves(cursor: Any, patient: int, branch: int, renamed: bool) -> None:
    patient_id = _nth(cursor, "SELECT patient_id FROM staging.patients ORDER BY 1", patient)
    branch_id = _nth(cursor, "SELECT branch_id FROM staging.branches ORDER BY 1", branch)
    cursor.execute(
        "UPDATE staging.patients SET home_branch_id = %s, "
        "full_name = CASE WHEN %s THEN full_name || ' Jr' ELSE full_name END WHERE patient_id = %s",
        (branch_id, renamed, patient_id),
    )


def _new_patient(cursor: Any, branch: int) -> None:
    branch_id = _nth(cursor, "SELECT branch_id FROM staging.branches ORDER BY 1", branch)
    cursor.execute(
        "INSERT INTO staging.patients VALUES (%s, 'New Patient', '1990-01-01', 'X', %s, current_date)",
        (_next_id(cursor, "patients", "patient_id"), branch_id),
    )


def _twice(cursor: Any, visit: int, shift: int) -> None:
    visit_id = _nth(cursor, "SELECT visit_id FROM staging.visits ORDER BY 1", visit)
    if visit_id is not None:
        cursor.execute(
            "UPDATE staging.visits SET visit_date = visit_date + %s WHERE visit_id = %s", (shift, visit_id)
        )
        cursor.execute("UPDATE staging.visits SET visit_type = 'emergency' WHERE visit_id = %s", (visit_id,))


def _flash_visit(cursor: Any, patient: int) -> None:
    visit_id = _new_visit(cursor, patient, patient, 1, [10.0], True)
    if visit_id is not None:
        _remove_visit(cursor, visit_id)


def _truncate_payments(cursor: Any) -> None:
    cursor.execute("TRUNCATE staging.payments")


APPLY = {
    "new_visit": _new_visit,
    "move_visit": _move_visit,
    "delete_visit": _delete_visit,
    "refund": _refund,
    "move_payment": _move_payment,
    "bill_status": _bill_status,
    "delete_bill": _delete_bill,
    "rename_branch": _rename_branch,
    "doctor_moves": _doctor_moves,
    "patient_moves": _patient_moves,
    "new_patient": _new_patient,
    "twice": _twice,
    "flash_visit": _flash_visit,
    "truncate_payments": _truncate_payments,
}


# How the dashboards' incremental form knows the newest visit moved (every patient recomputed then).
RECENCY_RULE = "CREATE TEMP TABLE recency ON COMMIT DROP AS\nSELECT"


def with_a_wrong_delta(folder: Path, form: str, right: str, wrong: str) -> Path:
    """The reference SQL, copied to folder, with `right` replaced by `wrong` in incremental/<form>."""
    shutil.copytree(PROJECT_SQL_DIR, folder)
    path = folder / "incremental" / form
    text = path.read_text()
    assert right in text, f"{right!r} is no longer in incremental/{form}"
    path.write_text(text.replace(right, wrong, 1))
    return folder


def without_recency_rule(folder: Path) -> Path:
    """One delta wrong: recency not measured again when the newest visit moves. It passes every
    check; only the property test and the drift check see it."""
    text = (PROJECT_SQL_DIR / "incremental" / "refresh_dashboards.sql").read_text()
    start = text.index(RECENCY_RULE)
    rule = text[start : text.index(";", start)]
    return with_a_wrong_delta(
        folder,
        "refresh_dashboards.sql",
        rule,
        "CREATE TEMP TABLE recency ON COMMIT DROP AS SELECT false AS moved",
    )


def ignoring_refunds(folder: Path) -> Path:
    """One delta wrong: step 1 does not recompute the billing lines whose payments changed."""
    return with_a_wrong_delta(
        folder,
        "refresh_phase2_materialized_views.sql",
        "UNION SELECT billing_id FROM pg_temp.changed_payments\n",
        "",
    )
