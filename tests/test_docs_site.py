"""The documentation site as a reader on a hospital network sees it: no request leaves this machine.

The site is built as `python3 dev.py docs` builds it (mkdocs, strict), into a folder of the test's
own, from the assets that build keeps (build/docs-assets: it fetched them from the npm registry;
here the registry is a closed loopback port), and served on loopback. Headless Chromium (Debian's
`chromium`) opens the home page and the lineage page, driven through its DevTools protocol, which
reports every request the page makes (its scripts, styles, fonts, workers). Each Mermaid diagram
must be drawn (Material replaces its source block with the drawing once Mermaid ran), and no
request of the page may go to another host. Chromium resolves no name but loopback's either,
so a request that tried would fail here as it would on a closed network.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.sync.client import connect

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.tools.docs.site import SHIPPED

# Debian's chromium here; GitHub's runners have Google Chrome, driven the same way.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-port=0",
]
PAGES = {"": 1, "get-started/": 1}  # the home page's pipeline, and the lineage: Mermaid diagrams on each
DRAWN = (
    "document.querySelectorAll('pre.mermaid').length === 0 && document.querySelectorAll('div.mermaid').length"
)


class Page:
    """One Chromium tab, driven over the DevTools protocol; every request of the page, workers included."""

    def __init__(self, websocket_url: str) -> None:
        self.socket = connect(websocket_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.requests: list[str] = []
        self.loaded = False
        self.replies: dict[int, dict[str, Any]] = {}
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call(
            "Target.setAutoAttach", self.session, autoAttach=True, waitForDebuggerOnStart=True, flatten=True
        )
        self.call("Network.enable", self.session)
        self.call("Page.enable", self.session)

    def send(self, method: str, session: str | None = None, **params: Any) -> int:
        message_id = next(self.ids)
        message = {"id": message_id, "method": method, "params": params}
        self.socket.send(json.dumps({**message, **({"sessionId": session} if session else {})}))
        return message_id

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        message_id = self.send(method, session, **params)
        while message_id not in self.replies:
            message = json.loads(self.socket.recv(timeout=60))
            if "id" in message:
                self.replies[message["id"]] = message
            else:
                self.event(message)
        reply = self.replies.pop(message_id)
        assert "error" not in reply, reply
        return reply.get("result", {})

    def event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Target.attachedToTarget":  # a worker (search): its requests count too
            self.send("Network.enable", params["sessionId"])
            self.send("Runtime.runIfWaitingForDebugger", params["sessionId"])

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, drawn: int, timeout: float = 60) -> int:
        """Navigate; wait for the load and for the diagrams; return how many were drawn."""
        self.call("Page.navigate", self.session, url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.call("Runtime.evaluate", self.session, expression="0")  # takes the events in
            found = self.evaluate(DRAWN) if self.loaded else 0
            if found == drawn:
                time.sleep(1)  # anything the drawing set off, on record too
                self.call("Runtime.evaluate", self.session, expression="0")
                return found
            time.sleep(0.25)
        return self.evaluate(DRAWN) or 0


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CHROMIUM is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium; .ci/run installs it)")
    missing = [asset.package for asset in SHIPPED if not asset.cached.exists()]
    if missing:
        pytest.skip(f"run `python3 dev.py docs` once: it fetches {', '.join(missing)} from the npm registry")
    site = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "npm_config_registry": "http://127.0.0.1:9/"},
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return site


@pytest.fixture(scope="module")
def site_origin(built_site: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(built_site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    chromium = subprocess.Popen(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listening = ""
        for line in chromium.stderr:
            if "DevTools listening on " in line:
                listening = line.split("DevTools listening on ", 1)[1].strip()
                break
        assert listening, "Chromium did not start its DevTools endpoint"
        opened = Page(listening)
        yield opened
        opened.socket.close()
    finally:
        chromium.kill()
        chromium.wait()


@pytest.mark.parametrize("path", list(PAGES))
def test_the_diagrams_are_drawn_and_no_request_leaves_this_machine(site_origin, page, path):
    drawn = page.open(f"{site_origin}/{path}", PAGES[path])

    assert drawn == PAGES[path], "a diagram still shows as its source: Mermaid did not run"
    assert f"{site_origin}/javascripts/mermaid.min.js" in page.requests, "Mermaid came from the site itself"
    elsewhere = [
        url for url in page.requests if not url.startswith((site_origin, "data:", "blob:", "about:"))
    ]
    assert elsewhere == [], "requests that would leave this machine"


def test_the_built_site_names_no_host_a_page_would_load_from(built_site):
    """No page, stylesheet or script asks another host for anything: what a reader's browser loads."""
    attributes = re.compile(r'(?:src|href)="(https?://[^"]+)"')
    css_urls = re.compile(r"url\(['\"]?(https?://[^)'\"]+)")
    # Quoted addresses in scripts, but for two kinds that load nothing: XML namespaces (Mermaid's
    # SVG) and Material's repository facts (GitHub's, or a host in a variable: GitLab's), asked
    # only where mkdocs.yml sets repo_url.
    script_urls = re.compile(r"[\"'`](https?://(?!www\.w3\.org/)(?!api\.github\.com/)(?!\$\{)[^\"'`\s]+)")
    found = {}
    for path in built_site.rglob("*"):
        if path.suffix not in (".html", ".css", ".js"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        pattern = {".html": attributes, ".css": css_urls, ".js": script_urls}[path.suffix]
        hosts = {urlsplit(url).hostname for url in pattern.findall(text)} - {"127.0.0.1", "localhost"}
        if hosts:
            found[str(path.relative_to(built_site))] = sorted(hosts)
    assert found == {}
    assert "repo_url" not in (PROJECT_ROOT / "mkdocs.yml").read_text(), "it would ask api.github.com"
