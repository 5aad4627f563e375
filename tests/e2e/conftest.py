"""Playwright driving Debian's Chromium against a live test server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("GENNAI_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
    if not os.path.exists(executable):
        pytest.fail("Debian's chromium is required for the browser tests: `make browser` installs it")
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls
    # made by the test itself are still synchronous and safe here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def is_csp_violation(text: str) -> bool:
    """Chromium reports each refusal of the Content-Security-Policy on the console."""
    return "Content Security Policy" in text


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; a test fails if any page it opened broke the Content-Security-Policy.

    Every browser test (home, login, chat, registry, console) thereby proves that our
    templates need no inline script, inline style or eval under the policy in
    gennai/settings/base.py.
    """
    context = browser.new_context(locale="ja-JP", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    violations: list[str] = []
    context.on(
        "console",
        lambda message: violations.append(f"{message.page.url if message.page else '?'}: {message.text}")
        if is_csp_violation(message.text)
        else None,
    )
    try:
        yield page
    finally:
        context.close()
    if violations:
        pytest.fail("Content-Security-Policy violations:\n" + "\n".join(violations))
