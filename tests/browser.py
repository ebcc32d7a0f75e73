"""A real Chromium for the browser tests: Debian's, driven by Playwright.

Playwright never downloads a browser here: it starts ``/usr/bin/chromium``
(the Debian package, which ``.ci/run`` installs) with the flags this machine's
closed network needs. Screenshots go to ``test-artifacts/`` at the top of the
checkout, kept after the run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent.parent / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> Path:
    """Debian's Chromium; fails the test with the install step if it is missing."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the browser tests drive "
            "Debian's Chromium. Install it with `apt-get install chromium` "
            "(.ci/run does it).",
            pytrace=False,
        )
    return CHROMIUM


@contextmanager
def chromium(extra_args: Sequence[str] = ()) -> Iterator[Browser]:
    """A headless Chromium, closed on exit; ``extra_args`` are more flags."""
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable),
            headless=True,
            args=[*CHROMIUM_FLAGS, *extra_args],
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot_path(name: str) -> Path:
    """Where the screenshot ``name`` is kept: ``test-artifacts/<name>.png``."""
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
