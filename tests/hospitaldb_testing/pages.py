"""A page's shell commands, run as a person would type them, through bash.

For the tests that follow the docs word for word (the README's Deploy block, the cutover of
docs/from-airflow.md): a line ending in `&` starts a process that keeps running (a server, a
worker) until the test is done with it; every other line must succeed. `run_script` runs a block
in one shell (its exports reach the next lines); `ShellSession` runs line by line, for a test
that checks what each line did.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from hospitaldb.paths import PROJECT_ROOT

COMMENT = re.compile(r"\s+#\s.*$")


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, re.S)


def commands_of(block: str) -> list[str]:
    """The block's commands, one per line, comments dropped."""
    return [COMMENT.sub("", line).strip() for line in block.splitlines() if line.strip()]


def run_script(lines: list[str], env: dict[str, str], log: Path, timeout: float = 900) -> str:
    """Run the lines in one bash (stopping at the first that fails); return what it printed.

    What its `&` lines started is stopped with it: they share its process group. Its output goes
    to log, not a pipe, which they would hold open after bash is done.
    """
    script = "\n".join(["set -euo pipefail", *lines])
    with log.open("w") as output:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        process.wait(timeout=timeout)
    finally:
        _stop_group(process)
    printed = log.read_text()
    assert process.returncode == 0, f"the block failed:\n{printed[-5000:]}"
    return printed


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (a server, a worker), then SIGKILL to what is left after 60 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        process.poll()  # reaped, the group's leader no longer counts as in it
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


class ShellSession:
    """Runs commands in one environment; what a line starts with `&` is stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.background: list[tuple[subprocess.Popen, Path]] = []

    def run(self, command: str, timeout: float = 600, env: dict[str, str] | None = None) -> str:
        """Run one line; return what it printed. A line ending in `&` is started and left running."""
        if command.endswith("&"):
            log = self.logs / f"background-{len(self.background)}.log"
            with log.open("w") as output:
                process = subprocess.Popen(
                    ["bash", "-c", f"exec {command[:-1]}"],
                    cwd=PROJECT_ROOT,
                    env=env or self.env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.background.append((process, log))
            return ""
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=PROJECT_ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"`{command}` failed:\n{output}\n{self.background_output()}"
        return output

    def background_output(self) -> str:
        return "\n".join(f"--- {log.name}:\n{log.read_text()[-2000:]}" for _, log in self.background)

    def stop(self) -> None:
        for process, _ in self.background:
            _stop_group(process)


@contextlib.contextmanager
def shell_session(env: dict[str, str], logs: Path) -> Iterator[ShellSession]:
    session = ShellSession(env, logs)
    try:
        yield session
    finally:
        session.stop()
