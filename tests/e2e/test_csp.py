"""The Content-Security-Policy is enforced in the browser, and the suite notices breaches.

The ``page`` fixture (tests/e2e/conftest.py) fails any browser test whose pages
log a CSP violation; home, login, chat and registry are all visited by the other
browser tests. This test proves that the check can fail: it breaks the policy on
purpose, in its own browser context, and expects Chromium to report it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import is_csp_violation

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_inline_script_and_style_are_refused_and_reported(browser: Any, live_server: Any) -> None:
    context = browser.new_context(locale="ja-JP")
    try:
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda message: messages.append(message.text))
        response = page.goto(f"{live_server.url}/")
        assert response is not None and response.status == 200
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy

        # No CSP violation from our own page: htmx and app.js run as files, without eval.
        page.wait_for_load_state("networkidle")
        assert not [m for m in messages if is_csp_violation(m)], messages
        assert page.evaluate("typeof htmx") == "object"

        # What an injected payload would try: inline script and inline style.
        page.evaluate(
            """() => {
                const script = document.createElement("script");
                script.textContent = "window.__injected = true";
                document.body.appendChild(script);
                document.body.insertAdjacentHTML("beforeend", '<p id="styled" style="color: red">x</p>');
            }"""
        )
        page.wait_for_function("() => true")
        assert page.evaluate("window.__injected === undefined")
        assert page.evaluate("getComputedStyle(document.getElementById('styled')).color") != "rgb(255, 0, 0)"
        violations = [m for m in messages if is_csp_violation(m)]
        assert any("script-src" in m for m in violations), messages
        assert any("style-src" in m for m in violations), messages
    finally:
        context.close()
