"""The `hospitaldb` command: every flow parameter is a refresh option, and one version everywhere."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from hospitaldb import package_version
from hospitaldb.local.cli import password_warning, refresh_parser
from hospitaldb.local.command import COMMANDS, main
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.refresh import hospitaldb_refresh
from hospitaldb.tools.container_image import default_tag

HOSPITALDB = Path(sys.executable).with_name("hospitaldb")


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`hospitaldb COMMAND --help`, in this process (the console script itself: the version test)."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_refresh_help_lists_every_flow_parameter_and_nothing_the_flow_does_not_take(capsys):
    listed = set(re.findall(r"^  (--[a-z-]+)", help_of("refresh", capsys), re.MULTILINE))
    flow_options = {
        "--" + name.replace("_", "-") for name in inspect.signature(hospitaldb_refresh.fn).parameters
    }
    assert flow_options <= listed, f"not offered: {sorted(flow_options - listed)}"
    assert listed - flow_options == {"--database-url", "--demo", "--demo-visits"}


def test_an_option_not_given_is_not_passed_and_the_flows_defaults_apply():
    parsed = vars(refresh_parser().parse_args(["--dry-run", "--no-upkeep", "--parallel-views", "2"]))
    assert parsed == {
        "database_url": None,
        "demo": False,
        "demo_visits": 20_000,
        "dry_run": True,
        "upkeep": False,
        "parallel_views": 2,
    }
    old_names = vars(refresh_parser().parse_args(["--statement-timeout", "5", "--lock-timeout", "2"]))
    assert old_names["statement_timeout_seconds"] == 5.0 and old_names["lock_timeout_seconds"] == 2.0


def test_a_value_the_flow_would_refuse_is_refused_before_anything_starts(capsys):
    with pytest.raises(SystemExit):
        refresh_parser().parse_args(["--steps", "refresh_everything"])
    assert "invalid choice: 'refresh_everything'" in capsys.readouterr().err


def test_one_version_in_pyproject_prefect_yaml_the_command_the_image_and_the_changelog():
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    deployments = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]
    assert {deployment["version"] for deployment in deployments} == {version}
    assert package_version() == version
    done = subprocess.run([str(HOSPITALDB), "--version"], capture_output=True, text=True)
    assert done.stdout.strip() == f"hospitaldb {version}"
    assert default_tag().endswith(f":{version}")
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## (\S+)", changelog, re.MULTILINE)[1] == version, "the newest CHANGELOG entry"


def test_every_subcommand_answers_help_and_an_unknown_one_says_what_there_is(capsys):
    for name in COMMANDS:
        assert help_of(name, capsys).startswith("usage:"), name
    assert main(["refrsh"]) == 2
    assert "no command 'refrsh'" in capsys.readouterr().err


def test_a_password_on_the_command_line_is_warned_about_and_never_repeated(capsys):
    assert main(["refresh", "--database-url", "mysql://clerk:S3cret-pw@db.example/hospitaldb"]) == 2
    err = capsys.readouterr().err
    assert "holds a password" in err and "~/.pgpass" in err
    assert "S3cret-pw" not in err
    for url in ("postgresql://clerk@db.example/hospitaldb", None):
        assert password_warning(url) is None
    assert password_warning("postgresql://clerk@db.example/hospitaldb?password=S3cret-pw")
