"""The Prefect UI pictures of docs/images/, made again from real runs: `python3 dev.py screenshots`.

Starts an embedded PostgreSQL with a small demo HospitalDB and a real Prefect server with its UI,
runs one refresh that completes and one that a data check refuses (a payment that overpays a
bill), and photographs what a user sees with headless Chromium (`apt-get install chromium`).
Nothing is staged: the pictures are the runs' own pages and artifacts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
HOSPITALDB = str(Path(sys.executable).with_name("hospitaldb"))
OVERPAYMENT = (
    "UPDATE staging.payments SET amount = amount + 100000 "
    "WHERE payment_id = (SELECT min(payment_id) FROM staging.payments)"
)
WINDOW = "1440,1000"


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("screenshots: needs Chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    from hospitaldb.engine.db.database import target_from_url
    from hospitaldb.local.demo import build_demo_database, start_embedded_postgres
    from hospitaldb_testing.prefect_servers import prefect_server

    with tempfile.TemporaryDirectory(prefix="hospitaldb-screenshots-") as work:
        admin = start_embedded_postgres(Path(work) / "pgdata", delete_at_exit=True)
        url = target_from_url(admin, "embedded").with_database("hospitaldb").url
        url = url.render_as_string(hide_password=False)
        build_demo_database(url, visits=2000)
        with prefect_server(Path(work) / "prefect", ui=True, schedules=False) as env:
            env = {**env, "HOSPITALDB_DATABASE_URL": url}
            api = env["PREFECT_API_URL"]
            completed = refresh(env)
            execute(url, OVERPAYMENT)
            failed = refresh(env)
            ui = api.removesuffix("/api")
            IMAGES.mkdir(parents=True, exist_ok=True)
            photograph(chromium, f"{ui}/runs/flow-run/{completed}", IMAGES / "run-completed.png")
            summary = artifact_id(api, failed, "hospitaldb-refresh-summary")
            photograph(chromium, f"{ui}/artifacts/artifact/{summary}", IMAGES / "run-failed-summary.png")
            steps = artifact_id(api, completed, "hospitaldb-refresh-steps")
            photograph(chromium, f"{ui}/artifacts/artifact/{steps}", IMAGES / "run-steps-table.png")
    print(f"screenshots: {', '.join(sorted(path.name for path in IMAGES.glob('*.png')))} in {IMAGES}")
    return 0


def refresh(env: dict[str, str]) -> str:
    """One `hospitaldb refresh` on the server; the id of its flow run."""
    subprocess.run([HOSPITALDB, "refresh", "--retries", "0"], env=env, cwd=ROOT, capture_output=True)
    (run,) = api_post(env["PREFECT_API_URL"], "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
    return run["id"]


def artifact_id(api: str, flow_run_id: str, key: str) -> str:
    body = {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [flow_run_id]}}, "limit": 1}
    (artifact,) = api_post(api, "/artifacts/filter", body)
    return artifact["id"]


def api_post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        api + path, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def execute(url: str, statement: str) -> None:
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def photograph(chromium: str, page: str, path: Path) -> None:
    """The page as headless Chromium renders it once its scripts have run."""
    subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",  # as root in a container; the page is our own loopback server
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WINDOW}",
            "--virtual-time-budget=20000",
            f"--screenshot={path}",
            page,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


if __name__ == "__main__":
    sys.exit(main())
