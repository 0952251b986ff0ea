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


def _imports(path) -> set[str]:
    """Every hospitaldb module a module imports, wherever: top level, functions, TYPE_CHECKING blocks."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hospitaldb"):
            for alias in node.names:  # `from hospitaldb.engine import lineage` imports a module too
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if _module_path(submodule) else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("hospitaldb"))
    return {name for name in names if _module_path(name)}


def _module_path(name: str):
    base = PACKAGE.parent.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def test_no_import_circle_in_the_package_type_checking_imports_included():
    modules = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }
    imports = {name: _imports(path) - {name} for name, path in modules.items()}
    circles = []
    state: dict[str, str] = {}  # depth-first search: "open" while on the path, "done" after

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for imported in sorted(imports.get(name, ())):
            if state.get(imported) == "open":
                circles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles: " + "; ".join(circles)


MODULES_PER_FOLDER = 12
# Layers, lowest first: each imports only from its own layer and those below. The flows
# (refresh, freshness, run_context) sit on report; local and tools on top, and tools, which run
# offline and at deploy time, never import local (what a person runs here).
LAYERS = {"engine": 0, "record": 1, "report": 2, "refresh": 3, "freshness": 3, "run_context": 3}
TOP = 4  # local, tools
# Inside the engine: sessions and errors, then step names, the SQL, the checks, the plans and runner.
ENGINE_LAYERS = {"db": 0, "steps": 1, "sql": 2, "checks": 3, "changes": 3, "run": 4}


def test_no_folder_holds_more_than_12_modules():
    crowded = [
        f"{folder.relative_to(PROJECT_ROOT)}: {count}"
        for folder in [PACKAGE, *(path for path in PACKAGE.rglob("*") if path.is_dir())]
        if (count := len(list(folder.glob("*.py")))) > MODULES_PER_FOLDER
    ]
    assert not crowded, "split these folders by job: " + "; ".join(crowded)


def _layer(module: str) -> tuple[tuple[int, int], str] | None:
    """A module's layer and part (engine, record, ...); None for the shared base (settings, paths, ...)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    if parts[1] in ("local", "tools"):
        return (TOP, 0), parts[1]
    if parts[1] == "engine" and len(parts) > 2:
        return (0, ENGINE_LAYERS[parts[2]]), parts[1]
    return ((LAYERS[parts[1]], 0), parts[1]) if parts[1] in LAYERS else None


def test_no_import_runs_up_the_layers_and_tools_never_import_local():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        mine = _layer(module)
        for imported in sorted(_imports(path)):
            theirs = _layer(imported)
            if mine is None or theirs is None:
                continue
            if theirs[0] > mine[0] or (mine[1] == "tools" and theirs[1] == "local"):
                upward.append(f"{module} -> {imported}")
    assert not upward, "imports up the layers: " + "; ".join(upward)


# Where a process begins: the flows, the state hooks Prefect calls, the commands. Each reads
# the SQL project once and hands it down; nothing below them makes its own.
SQL_PROJECT_READ_AT = {
    "refresh.py",  # the refresh run (in its RunContext)
    "freshness.py",  # the freshness check's flow
    "report/hooks.py",  # a state hook in a worker's process, reading a run back from etl_audit
    "tools/validation.py",  # hospitaldb validate / lineage
    "tools/docs/pages.py",  # the generated pages
    "tools/roles.py",  # hospitaldb roles
    "local/changes_command.py",  # hospitaldb changes status (which form each step runs next)
}


def test_the_sql_project_is_read_only_where_a_process_begins():
    made_in = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SqlFiles":
                made_in.add(str(path.relative_to(PACKAGE)))
    assert made_in == SQL_PROJECT_READ_AT, f"SqlFiles() made in {sorted(made_in - SQL_PROJECT_READ_AT)}"
