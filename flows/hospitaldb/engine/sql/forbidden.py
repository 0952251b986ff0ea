"""What a refresh step may never run, opt-out or not.

A step changes data, never who may read or own it: no GRANT, REVOKE, ALTER ... OWNER,
REASSIGN OWNED, roles or row-level security policies (set once by an administrator:
`hospitaldb roles`). And it never writes the audit trail (etl_audit), which records the
refresh and is not the refresh's to rewrite. Read from the step's parsed statements; the
body of a DO block is opaque to the parser, as for the blocking lint.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import AlterTableType

from hospitaldb.engine.sql.analysis import StepSql, targets_of
from hospitaldb.engine.sql.script import SqlScriptError, Statement

# Statements that change who may read, write or own what: never a refresh's business.
PRIVILEGE_STATEMENTS = (
    ast.GrantStmt,
    ast.GrantRoleStmt,
    ast.AlterDefaultPrivilegesStmt,
    ast.AlterOwnerStmt,
    ast.ReassignOwnedStmt,
    ast.CreateRoleStmt,
    ast.AlterRoleStmt,
    ast.AlterRoleSetStmt,
    ast.DropRoleStmt,
    ast.CreatePolicyStmt,
    ast.AlterPolicyStmt,
)
AUDIT_SCHEMA = "etl_audit"


def forbidden(statement: Statement) -> str | None:
    """Why a step may never run this statement, or None."""
    tree = statement.tree
    where = f"{statement.location}: {statement.summary}"
    changes_owner = isinstance(tree, ast.AlterTableStmt) and any(
        getattr(command, "subtype", None) == AlterTableType.AT_ChangeOwner for command in tree.cmds or ()
    )
    if isinstance(tree, PRIVILEGE_STATEMENTS) or changes_owner:
        return (
            f"{where} changes who may read, write or own something. A refresh step never does: grants "
            "and owners are set once by an administrator (hospitaldb roles, docs/security.md)"
        )
    audit = sorted(name for name in targets_of(tree) if name.split(".")[0] == AUDIT_SCHEMA)
    if audit:
        return (
            f"{where} writes {', '.join(audit)}. The audit trail records the refresh; only the flow "
            "writes it, never a step's SQL"
        )
    return None


class ForbiddenSql(SqlScriptError):
    """Step files hold statements no refresh may run; nothing was run."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"{len(reasons)} statement(s) a refresh may never run: " + "; ".join(reasons))


def forbidden_in(step_sql: StepSql) -> list[str]:
    """Why each statement of a step that no refresh may run is refused."""
    return [reason for statement in step_sql.statements if (reason := forbidden(statement))]
