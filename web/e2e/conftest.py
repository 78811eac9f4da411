"""Browser tests of the explainer: the app served by `amlab explain`, Debian's headless
Chromium driven by Playwright, and every request that does not go to 127.0.0.1 aborted (and
recorded), which proves the app works offline. Screenshots go to web/test-artifacts/
(git-ignored)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
CHROMIUM = os.environ.get("AMLAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def base_url():
    """The app as a user gets it: `amlab explain --port 0 --no-browser` in its own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "amlab.cli", "explain", "--port", "0", "--no-browser"],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    if "serving http://127.0.0.1:" not in line:
        proc.kill()
        raise RuntimeError(f"amlab explain did not start: {line}{proc.stderr.read()}")
    yield line.split("serving ")[1].split()[0]
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: `make browser-deps` installs it (apt-get install chromium)"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


class Offline:
    """A page whose requests outside 127.0.0.1 are aborted and listed; page errors listed."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1300, "height": 1000})
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def _route(self, route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def offline(browser):
    session = Offline(browser)
    yield session
    session.context.close()
    assert session.blocked == [], f"the app tried to reach the network: {session.blocked}"
    assert session.errors == [], f"errors in the page: {session.errors}"


def move_range(page, testid: str, value: float) -> None:
    """Move a range input as a user's drag does: value, input event, change on release."""
    page.locator(f"[data-testid={testid}]").evaluate(
        """(el, v) => {
            el.value = v;
            el.dispatchEvent(new Event('input', {bubbles: true}));
            el.dispatchEvent(new Event('change', {bubbles: true}));
        }""",
        str(value),
    )


@pytest.fixture
def set_range():
    return move_range


def read_array(page, testid: str, attribute: str) -> np.ndarray:
    """The JSON array the page writes into an attribute of [data-testid=<testid>]."""
    return np.array(json.loads(page.get_attribute(f"[data-testid={testid}]", attribute)))


@pytest.fixture
def read():
    return read_array
