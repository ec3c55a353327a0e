"""Fixtures of the browser tests: a real server (``python -m MedTransWeb``) and Debian's chromium via Playwright.

The server runs in its own process on a free loopback port (``--port 0``; the URL is read from its output),
with empty user model folders so only the shipped bundles are seen. Chromium is ``/usr/bin/chromium``
(``apt-get install chromium``; ``make test`` installs it): no browser is ever downloaded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "Testing" / "artifacts"
SERVER_START_TIMEOUT_S = 120
# Small, so that a "huge" upload is cheap to make.
MAX_UPLOAD_MB = 1
URL_PATTERN = re.compile(r"running at (http://\S+)")


class WebServer:
    """A ``python -m MedTransWeb`` process; ``output`` collects its stdout and stderr lines."""

    def __init__(self, home: Path) -> None:
        env = dict(os.environ, HOME=str(home), MEDTRANS_MODELS=str(home / "models"), PYTHONUNBUFFERED="1")
        self.output: list[str] = []
        self._url_found = threading.Event()
        self.url = ""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "MedTransWeb",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--max-upload-mb",
                str(MAX_UPLOAD_MB),
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # its own process group: stop() ends the translation processes too
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip())
            match = URL_PATTERN.search(line)
            if match and not self.url:
                self.url = match.group(1)
                self._url_found.set()

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not self._url_found.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(self.output[-30:])
                raise RuntimeError(f"the web app did not start (exit code {self.process.returncode}):\n{tail}")
        return self.url

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory) -> Iterator[WebServer]:
    server = WebServer(tmp_path_factory.mktemp("web-home"))
    try:
        server.wait_ready(SERVER_START_TIMEOUT_S)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); make test does")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(request, browser, web_server):
    """A fresh page on the app (one state per server: each test starts from what the last one left).

    When the test fails, the end of the server's output is added to the report.
    """
    from .browsing import open_page  # here: browsing imports the tests' helpers, which import this module

    yield from open_page(browser, web_server, (1600, 900))
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        noise = ("WindowResizeEvent", "ConfigureEvent", "vtkObject.cxx")
        relevant = [line for line in web_server.output if line.strip() and not any(n in line for n in noise)]
        report.sections.append(("web server output (last 40 lines)", "\n".join(relevant[-40:])))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
