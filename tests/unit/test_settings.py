"""Every HOSPITALDB_* variable is read through hospitaldb.settings and documented on the configuration page."""

from __future__ import annotations

import re
import subprocess

from hospitaldb import settings
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.tools.docs.pages import settings_table

NAME = re.compile(r"\bHOSPITALDB_[A-Z0-9_]*[A-Z0-9]\b")
# dev.py reads HOSPITALDB_VENV before the package is installed (see settings.VENV).
READ_BEFORE_INSTALL = {"dev.py"}


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return [name for name in listed.stdout.split() if (PROJECT_ROOT / name).is_file()]


def documented_rows() -> dict[str, str]:
    """Variable name -> its row, in the table the configuration page shows (drawn at build time)."""
    page = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    assert "<!-- generated: settings -->" in page, "the configuration page shows the settings table"
    table = settings_table()
    return {match[1]: match[0] for match in re.finditer(r"^\| `(HOSPITALDB_\w+)` \|.*$", table, re.M)}


def test_the_configuration_page_lists_every_setting_and_nothing_else():
    rows = documented_rows()
    assert set(rows) == {setting.name for setting in settings.ALL}
    for setting in settings.ALL:
        assert setting.meaning.split(" (")[0].split(";")[0] in rows[setting.name], setting.name


def test_every_variable_named_anywhere_is_a_documented_setting():
    known = {setting.name for setting in settings.ALL}
    unknown = {
        (name, path)
        for path in tracked_files()
        # The changelog is history: it names the variables a version removed.
        if not path.endswith((".json", ".png")) and path != "CHANGELOG.md"
        for name in NAME.findall((PROJECT_ROOT / path).read_text(errors="ignore"))
        if name not in known
    }
    assert unknown == set()


def test_python_reads_variables_only_through_settings():
    reads = re.compile(r"os\.environ(?:\.get)?\(?\[?\s*[\"']HOSPITALDB_|getenv\(\s*[\"']HOSPITALDB_")
    offenders = [
        path
        for path in tracked_files()
        if path.endswith(".py") and path not in READ_BEFORE_INSTALL and not path.startswith("tests/")
        if reads.search((PROJECT_ROOT / path).read_text())
    ]
    assert offenders == []


def test_a_setting_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv(settings.ALERT_FROM.name, "  first@example.org ")
    assert settings.ALERT_FROM.read() == "first@example.org"
    monkeypatch.setenv(settings.ALERT_FROM.name, "")
    assert settings.ALERT_FROM.read("fallback") == "fallback"


def test_the_audit_is_required_in_a_deployments_run_unless_relaxed_with_a_warning(monkeypatch):
    import logging

    from hospitaldb.run_context import audit_required

    warnings: list[str] = []
    logger = logging.getLogger("test-audit-required")
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger.addHandler(handler)
    monkeypatch.delenv("HOSPITALDB_AUDIT_REQUIRED", raising=False)
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__ID", raising=False)
    assert audit_required(logger) is False, "a local run"
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "0b4a3e0e-0000-4000-8000-000000000001")
    assert audit_required(logger) is True, "a deployment's run"
    assert warnings == []
    monkeypatch.setenv("HOSPITALDB_AUDIT_REQUIRED", "false")
    assert audit_required(logger) is False
    assert len(warnings) == 1 and warnings[0].startswith("HOSPITALDB_AUDIT_REQUIRED=false")
