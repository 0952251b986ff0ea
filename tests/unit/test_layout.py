"""The package stays readable in one sitting: no module over 300 lines, no function over 60."""

from __future__ import annotations

import ast

from hospitaldb.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "flows" / "hospitaldb"
MODULE_LINES, FUNCTION_LINES = 300, 60
# The flow's docstring is the parameter help the Prefect UI shows: it stays with the flow.
LONGER_ON_PURPOSE = {"hospitaldb_refresh"}


def test_no_module_over_300_lines_and_no_function_over_60():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(PROJECT_ROOT)
        if len(text.splitlines()) > MODULE_LINES:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name not in LONGER_ON_PURPOSE
            ):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "split these: " + "; ".join(too_long)
